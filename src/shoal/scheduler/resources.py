"""What each site's jobs hold of its declared resources, so a job starts only when it fits.

Every job deployed to a site holds a slot there (``max_jobs``) and what its ``resource_spec``
asks of that site: GPU ids (the lowest free ones), CPUs, memory. The scheduler takes a job's
holdings on every site at dispatch, all or nothing, and gives them back when the job ends,
however it ends (finished, failed, aborted, abandoned, or never started).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.wire.resources import Need


@dataclass
class Held:
    gpus: list[str] = field(default_factory=list)
    cpus: int = 0
    memory_gib: float = 0.0


class ResourceBook:
    def __init__(self) -> None:
        self.held: dict[int, dict[str, Held]] = {}  # job id -> site -> what it holds there

    def _at(self, site: str) -> list[tuple[int, Held]]:
        return [(job, sites[site]) for job, sites in self.held.items() if site in sites]

    def shortfall(self, site: str, declared: dict[str, Any], need: Need) -> str | None:
        """What ``site`` lacks now for ``need`` (naming the jobs that hold it), or None."""
        holders = self._at(site)
        jobs = ", ".join(str(j) for j, _ in holders)
        if "max_jobs" in declared and len(holders) >= declared["max_jobs"]:
            return f"runs {len(holders)} job(s) of at most {declared['max_jobs']} (jobs {jobs})"
        used = {g for _, h in holders for g in h.gpus}
        free = [g for g in declared.get("gpus", []) if g not in used]
        if need.gpus > len(free):
            total = len(declared.get("gpus", []))
            return f"needs {need.text()}: {len(free)} of {total} GPUs free (held by jobs {jobs or 'none'})"
        if "cpus" in declared:
            left = declared["cpus"] - sum(h.cpus for _, h in holders)
            if need.cpus > left:
                return f"needs {need.cpus} CPUs: {left} of {declared['cpus']} free (held by jobs {jobs})"
        if "memory_gib" in declared:
            left_mem = declared["memory_gib"] - sum(h.memory_gib for _, h in holders)
            if need.memory_gib > left_mem:
                return f"needs {need.memory_gib:g} GiB: {left_mem:g} of {declared['memory_gib']:g} GiB free"
        return None

    def take(self, job_id: int, site: str, declared: dict[str, Any], need: Need) -> list[str]:
        """Hold ``need`` at ``site`` for the job (checked free by shortfall); its GPU ids."""
        used = {g for _, h in self._at(site) for g in h.gpus}
        gpus = [g for g in declared.get("gpus", []) if g not in used][: need.gpus]
        self.held.setdefault(job_id, {})[site] = Held(gpus, need.cpus, need.memory_gib)
        return gpus

    def release(self, job_id: int) -> None:
        self.held.pop(job_id, None)
