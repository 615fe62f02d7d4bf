"""What `poc stop` and `poc start` take for a running service, with real processes.

A recorded pid is the service only while that process is alive (a zombie is not), started at
the recorded time and runs shoal on a kit of the workspace; anything else is a stale entry,
never signalled. The services here are real site agents (`shoal site start`) of a prepared
POC: with no server they keep retrying, as a site does, until they are stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Cli

from shoal.errors import ShoalError
from shoal.provision import services
from shoal.provision.poc import prepare_poc
from shoal.provision.services import running_services, start_poc, stop_poc


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOAL_POC_WORKSPACE", raising=False)
    workspace = tmp_path / "poc"
    prepare_poc(workspace, n_sites=1)
    (workspace / "run").mkdir()
    return workspace.resolve()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left is killed and reaped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def site_argv(ws: Path) -> list[str]:
    return [sys.executable, "-m", "shoal", "site", "start", "-k", str(ws / "kits" / "site-1")]


def spawn(argv: list[str], procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Output goes to <tmp>/spawned.log (stdout is a pipe, for the zombie test's keeper)."""
    with (Path(os.environ["SHOAL_HOME"]).parent / "spawned.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
    procs.append(proc)
    return proc


def why(ws: Path, pid: int) -> str:
    """What the process looked like, for a failure message."""
    return (
        f"stat {services._proc_stat(pid)}, cmdline {services._cmdline(pid)}, "
        f"recorded {(ws / 'run' / 'started.json').read_text()}, "
        f"log: {(ws.parent / 'spawned.log').read_text()[-2000:]}"
    )


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_recorded_service_is_recognised_and_stopped(
    ws: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    site = spawn(site_argv(ws), started)
    services._record(ws, {"site-1": site.pid})
    assert running_services(ws) == {"site-1": site.pid}, why(ws, site.pid)
    assert stop_poc(ws)["stopped"] == ["site-1"]
    assert site.poll() is not None and not (ws / "run" / "pids.json").exists()


def test_a_pid_now_held_by_another_program_is_never_signalled(
    ws: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """After a crash or a reboot the recorded pid may be anybody's: stop leaves it alone."""
    other = spawn([sys.executable, "-c", "import time; time.sleep(300)"], started)
    (ws / "run" / "pids.json").write_text(json.dumps({"server": other.pid}))  # no start time known
    assert running_services(ws) == {}
    assert stop_poc(ws) == {"status": "stopped", "workspace": str(ws), "stopped": [], "killed": []}
    assert other.poll() is None


def test_a_shoal_process_started_after_the_record_is_not_the_service(
    ws: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Same pid, even the same command line, but a later start time: a reused pid."""
    site = spawn(site_argv(ws), started)
    services._record(ws, {"site-1": site.pid})
    record = json.loads((ws / "run" / "started.json").read_text())
    assert record["site-1"][0] == site.pid
    record["site-1"][1] -= 1  # what was recorded belonged to an earlier process
    (ws / "run" / "started.json").write_text(json.dumps(record))
    assert running_services(ws) == {}
    assert stop_poc(ws)["stopped"] == [] and site.poll() is None


KEEPER = """
import subprocess, sys, time
service = subprocess.Popen(sys.argv[1:], start_new_session=True, stdout=subprocess.DEVNULL)
print(service.pid, flush=True)
time.sleep(300)  # and never reap it
"""


def test_a_zombie_counts_as_gone(ws: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """A service whose parent is not us (poc start has exited) is, once it exits, a zombie
    of that parent until the parent reaps it: the process still "exists" (kill 0 succeeds),
    but it is dead, and stop must say so instead of SERVICE_FAILED."""
    keeper = spawn([sys.executable, "-c", KEEPER, *site_argv(ws)], started)
    assert keeper.stdout is not None
    site_pid = int(keeper.stdout.readline())
    try:
        services._record(ws, {"site-1": site_pid})
        assert running_services(ws) == {"site-1": site_pid}, why(ws, site_pid)
        began = time.monotonic()
        result = stop_poc(ws, grace=20)
        assert result["stopped"] == ["site-1"] and result["killed"] == []
        assert time.monotonic() - began < 15  # gone on SIGTERM, not waited out to the grace
        assert exists(site_pid) and not services._alive(site_pid)  # a zombie: there, but dead
        assert running_services(ws) == {}
    finally:
        if services._alive(site_pid):  # not our child: the started fixture cannot reach it
            os.killpg(site_pid, signal.SIGKILL)


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_start_refuses_a_negative_timeout_and_starts_nothing(ws: Path, timeout: float) -> None:
    with pytest.raises(ShoalError) as err:
        start_poc(ws, timeout=timeout)
    assert err.value.code == "INVALID_ARGS"
    assert not (ws / "run" / "pids.json").exists() and not (ws / "logs" / "server.log").exists()


@pytest.mark.parametrize("timeout", ["-1", "-0.5"])
def test_cli_start_refuses_a_negative_timeout(ws: Path, tmp_path: Path, timeout: str) -> None:
    code, doc = Cli(home=tmp_path / "home").json("poc", "start", "--workspace", ws, "--timeout", timeout)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "--timeout" in doc["message"], doc
