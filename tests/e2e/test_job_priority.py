"""Job processes run at a lower CPU priority than their host, in a real federation: the server's
job controller and the sites' training scripts (issue 19: an admin's `job list` must not queue
behind training on the same cores)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from shoal.sandbox.priority import session_nice
from tests.e2e.jobs import slow_job
from tests.federation import Federation

pytestmark = pytest.mark.e2e

JOB_NICE = 10  # SHOAL_JOB_NICE's default


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _job_processes(host: int) -> list[int]:
    """The processes the host's fork server (its child) forked for jobs."""
    return [job for fork_server in _children(host) for job in _children(fork_server)]


def test_job_processes_yield_the_cpu_to_their_host(federation: Federation, tmp_path: Path) -> None:
    pids: dict[str, int] = json.loads((federation.workspace / "run" / "pids.json").read_text())
    folder = slow_job(tmp_path / "slow", rounds=200, delay=0.05)
    code, doc = federation.cli.json("job", "submit", "-j", folder)
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    try:
        deadline = time.monotonic() + 30
        seen: dict[str, list[tuple[Observed, Observed]]] = {}
        while time.monotonic() < deadline:
            now = _priorities(pids)
            if all(now.values()):  # the controller on the server, a script on each site
                seen = now
                # past their confinement (a process is seen between its fork and its nice value)
                if all(observed == expected for observed, expected in _pairs(seen)):
                    break
            time.sleep(0.05)
        assert seen, "no job process seen on every host"
        for observed, expected in _pairs(seen):
            assert observed == expected, seen
    finally:
        federation.cli.run("job", "abort", job_id, "--force")


Observed = tuple[int, int | None, bool]  # nice, session group's nice, leads its process group


def _priorities(pids: dict[str, int]) -> dict[str, list[tuple[Observed, Observed]]]:
    """Per host: (what each job process has, what it should have)."""
    out: dict[str, list[tuple[Observed, Observed]]] = {}
    for name, host in pids.items():
        host_nice, host_group = os.getpriority(os.PRIO_PROCESS, host), session_nice(host)
        # Its nice value counts against its host only where the kernel has no autogroups; with
        # them, its session's group must be niced as well (it was 0 before issue 19).
        expected = (
            min(19, host_nice + JOB_NICE),
            None if host_group is None else min(19, host_group + JOB_NICE),
            True,
        )
        out[name] = []
        for proc in _job_processes(host):
            try:
                observed = (
                    os.getpriority(os.PRIO_PROCESS, proc),
                    session_nice(proc),
                    os.getpgid(proc) == proc,
                )
            except OSError:
                continue  # ended meanwhile
            out[name].append((observed, expected))
    return out


def _pairs(seen: dict[str, list[tuple[Observed, Observed]]]) -> list[tuple[Observed, Observed]]:
    return [pair for pairs in seen.values() for pair in pairs]
