"""Site resources and a job's ``resource_spec``: what a site declares, what a job asks of it.

A site declares in ``<site kit>/local/resources.json`` what its jobs may use, each key optional:
``gpus`` (GPU ids as the driver numbers them, or UUIDs), ``cpus``, ``memory_gib`` and
``max_jobs`` (jobs at once). An absent key is no limit (no GPUs for ``gpus``). A job asks per
site in ``meta.json``, in FLARE's form: ``"resource_spec": {"site-1": {"num_gpus": 1}}`` with
``num_gpus``, ``num_cpus``, ``memory_gib`` (FLARE's ``mem_per_gpu_in_GiB`` is accepted and not
enforced). Both are checked here, by the site at start and by the server on every hello and
submit: a declaration or a spec that cannot be read is refused, never half used. Stdlib only.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DECLARED_KEYS = ("gpus", "cpus", "memory_gib", "max_jobs")
SPEC_KEYS = ("num_gpus", "num_cpus", "memory_gib")
SPEC_INFO_KEYS = ("mem_per_gpu_in_GiB",)  # FLARE's: accepted, not enforced (shoal does not meter GPU memory)
MAX_GPUS = 256


class ResourceError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"'{key}' {problem}")
        self.key = key


def _whole(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ResourceError(key, f"must be a whole number of at least {low}, not {value!r}")
    return value


def _amount(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ResourceError(key, f"must be a number of at least 0, not {value!r}")
    return float(value)


def check_declaration(data: Any) -> dict[str, Any]:
    """A site's declared resources, checked (ResourceError naming the key)."""
    if not isinstance(data, dict):
        raise ResourceError("resources", f"must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(DECLARED_KEYS))
    if unknown:
        raise ResourceError(unknown[0], f"is not a resource; known: {', '.join(DECLARED_KEYS)}")
    out: dict[str, Any] = {}
    if "gpus" in data:
        gpus = data["gpus"]
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise ResourceError("gpus", f"must be a list of at most {MAX_GPUS} GPU ids")
        ids = []
        for gpu in gpus:
            if isinstance(gpu, bool) or not isinstance(gpu, int | str) or str(gpu) in ids:
                raise ResourceError("gpus", f"must hold distinct ids (numbers or UUIDs), not {gpu!r}")
            text = str(gpu)
            if not text or len(text) > 64 or not all(c.isalnum() or c in "-_:" for c in text):
                raise ResourceError("gpus", f"holds an id that is not a GPU id: {gpu!r}")
            ids.append(text)
        out["gpus"] = ids
    if "cpus" in data:
        out["cpus"] = _whole(data["cpus"], "cpus", 1)
    if "memory_gib" in data:
        out["memory_gib"] = _amount(data["memory_gib"], "memory_gib")
    if "max_jobs" in data:
        out["max_jobs"] = _whole(data["max_jobs"], "max_jobs", 1)
    return out


class Need:
    """What one job asks of one site."""

    __slots__ = ("gpus", "cpus", "memory_gib")

    def __init__(self, gpus: int = 0, cpus: int = 0, memory_gib: float = 0.0) -> None:
        self.gpus = gpus
        self.cpus = cpus
        self.memory_gib = memory_gib

    def text(self) -> str:
        parts = [f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}"] if self.gpus else []
        parts += [f"{self.cpus} CPUs"] if self.cpus else []
        parts += [f"{self.memory_gib:g} GiB"] if self.memory_gib else []
        return ", ".join(parts) or "a job slot"


def check_spec(spec: Any) -> dict[str, Need]:
    """A job's resource_spec, checked (ResourceError naming the site and key)."""
    if not isinstance(spec, dict):
        raise ResourceError("resource_spec", "must be an object of site name -> needs")
    out: dict[str, Need] = {}
    for site, raw in spec.items():
        if not isinstance(raw, dict):
            raise ResourceError(f"resource_spec.{site}", 'must be an object such as {"num_gpus": 1}')
        unknown = sorted(set(raw) - {*SPEC_KEYS, *SPEC_INFO_KEYS})
        if unknown:
            known = ", ".join(SPEC_KEYS)
            raise ResourceError(f"resource_spec.{site}.{unknown[0]}", f"is unknown; known: {known}")
        for key in SPEC_INFO_KEYS:
            if key in raw:
                _amount(raw[key], f"resource_spec.{site}.{key}")
        out[str(site)] = Need(
            gpus=_whole(raw.get("num_gpus", 0), f"resource_spec.{site}.num_gpus", 0),
            cpus=_whole(raw.get("num_cpus", 0), f"resource_spec.{site}.num_cpus", 0),
            memory_gib=_amount(raw.get("memory_gib", 0), f"resource_spec.{site}.memory_gib"),
        )
    return out


def never_fits(declared: dict[str, Any], need: Need) -> str | None:
    """Why ``need`` exceeds what the site declared at all (so it could never start), or None."""
    have_gpus = len(declared.get("gpus", []))
    if need.gpus > have_gpus:
        return f"asks for {need.text()} but the site has {have_gpus} GPU{'s' if have_gpus != 1 else ''}"
    if "cpus" in declared and need.cpus > declared["cpus"]:
        return f"asks for {need.cpus} CPUs but the site has {declared['cpus']} for jobs"
    if "memory_gib" in declared and need.memory_gib > declared["memory_gib"]:
        return f"asks for {need.memory_gib:g} GiB but the site has {declared['memory_gib']:g} GiB for jobs"
    return None
