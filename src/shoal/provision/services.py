"""Starting and stopping a POC federation: a server and its sites as background processes.

Each service runs in its own process group (so stop can take down whatever it spawned),
logs to ``<workspace>/logs/<name>.log``, and is recorded in ``<workspace>/run/pids.json``
(name -> pid) with its start time in ``run/started.json``. A recorded pid counts as the
service only while that process is alive (not a zombie), started when recorded, and runs
shoal on a kit of this workspace: after a crash or a reboot the pid may belong to anything,
and stop must never signal that. Readiness is checked over the real admin API, never
guessed from a sleep.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError

READY_POLL = 0.05
KILL_WAIT = 10.0  # after SIGKILL: a process freeing a large heap takes a moment to go
HAVE_PROC = os.path.exists("/proc/self/stat")  # Linux; elsewhere only "does the pid exist"


def _pids_file(workspace: Path) -> Path:
    return workspace / "run" / "pids.json"


def _started_file(workspace: Path) -> Path:
    return workspace / "run" / "started.json"


def _read_record(path: Path) -> dict[str, Any]:
    """A run/ record as a dict; missing or damaged is empty (the services it named are unknown)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) from /proc/<pid>/stat, None if no such pid.

    The command name (field 2) may hold spaces and parentheses: fields are counted after its
    closing parenthesis, where the state is field 3 and the start time field 22."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw.rpartition(b")")[2].split()
    return fields[0].decode(), int(fields[19])


def _cmdline(pid: int, patience: float = 0.5) -> list[str]:
    """The process's arguments. They read as empty for a moment while it is in exec (a vfork
    parent, such as Popen, runs on before the new argv is in place), so an empty answer from
    a live process is read again for up to ``patience`` seconds; a kernel thread stays empty."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return []
        if raw or time.monotonic() >= deadline or not _alive(pid):
            return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie is not: a killed service that is not our
    child stays one until its own parent (often init) reaps it, and it holds nothing."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    if HAVE_PROC:
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid) if HAVE_PROC else None
    return stat[1] if stat else None


def _is_service(pid: int, started: int | None, workspace: Path) -> bool:
    """Whether ``pid`` is still the recorded service: alive, started when recorded (when that
    was recorded), and running shoal on a kit inside ``workspace``."""
    if not _alive(pid):
        return False
    if not HAVE_PROC:
        return True
    if started is not None and _start_time(pid) != started:
        return False  # the pid was reused by a later process
    args = _cmdline(pid)
    runs_shoal = any(os.path.basename(arg) == "shoal" for arg in args)  # -m shoal, or bin/shoal
    home = workspace.resolve()
    return runs_shoal and any(
        os.path.isabs(arg) and Path(os.path.realpath(arg)).is_relative_to(home) for arg in args
    )


def running_services(workspace: Path) -> dict[str, int]:
    """Services recorded for this workspace that are still running (see _is_service); entries
    whose pid now belongs to another process, or to none, are stale and left out."""
    pids = _read_record(_pids_file(workspace))
    started = _read_record(_started_file(workspace))
    running: dict[str, int] = {}
    for name, pid in pids.items():
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            continue
        record = started.get(name)
        when = record[1] if isinstance(record, list) and len(record) == 2 and record[0] == pid else None
        if _is_service(pid, when, workspace):
            running[name] = pid
    return running


def _record(workspace: Path, pids: dict[str, int]) -> None:
    """pids.json (name -> pid, read by tools and tests as it is) and each one's start time."""
    started = {name: [pid, _start_time(pid)] for name, pid in pids.items()}
    _started_file(workspace).write_text(json.dumps(started))
    _pids_file(workspace).write_text(json.dumps(pids))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _spawn(name: str, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def start_poc(workspace: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Start the server, wait for its API, start the sites, wait until all are connected.

    ``timeout`` bounds the whole wait in seconds; 0 waits as long as it takes (a service that
    exits still ends the wait at once)."""
    if not timeout >= 0:  # also refuses NaN
        raise ShoalError("INVALID_ARGS", f"--timeout must be 0 (no limit) or more seconds, got {timeout:g}")
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.provision.kits import set_server_port
    from shoal.provision.poc import load_poc

    poc = load_poc(workspace)
    kits = Path(poc["kits_dir"])
    host, port = poc["server"]["host"], int(poc["server"]["port"])
    if running := running_services(workspace):
        if set(running) == {"server", *poc["sites"]}:
            # What the user asked for is already there: say so and succeed (a script that
            # starts the POC before its work need not know whether it was up).
            return {
                "status": "running",
                "already_running": True,
                "workspace": str(workspace),
                "server_url": f"https://{host}:{port}",
                "sites": poc["sites"],
                "logs": {name: str(workspace / "logs" / f"{name}.log") for name in ["server", *poc["sites"]]},
                "pids": running,
            }
        raise ShoalError("POC_ALREADY_RUNNING", f"running: {', '.join(sorted(running))}")
    if not _port_free(host, port):
        port = _free_port(host)
        set_server_port(kits, port)
        poc["server"]["port"] = port
        (workspace / "poc.json").write_text(json.dumps(poc, indent=2))
    logs = workspace / "logs"
    pids: dict[str, int] = {}
    log_paths = {"server": str(logs / "server.log")}
    _pids_file(workspace).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout if timeout else math.inf
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["server"] = _spawn(
            "server",
            [sys.executable, "-m", "shoal", "server", "start", "-k", str(kits / "server")],
            logs / "server.log",
        )
        pids["server"] = procs["server"].pid
        _record(workspace, pids)
        client = AdminClient(resolve_admin_kit(None, str(kits / poc["admin"])))
        _wait_for(lambda: _healthy(client), deadline, procs, log_paths, "the server did not answer")
        for site in poc["sites"]:
            log_paths[site] = str(logs / f"{site}.log")
            procs[site] = _spawn(
                site,
                [sys.executable, "-m", "shoal", "site", "start", "-k", str(kits / site)],
                logs / f"{site}.log",
            )
            pids[site] = procs[site].pid
        _record(workspace, pids)
        expected = set(poc["sites"])
        _wait_for(
            lambda: expected <= {s["name"] for s in client.system_status()["sites"]},
            deadline,
            procs,
            log_paths,
            "not every site connected",
        )
    except ShoalError:
        stop_poc(workspace)
        raise
    return {
        "status": "running",
        "workspace": str(workspace),
        "server_url": f"https://{host}:{port}",
        "sites": poc["sites"],
        "logs": log_paths,
        "pids": pids,
    }


def _healthy(client: Any) -> bool:
    try:
        client.health()
    except ShoalError as err:
        if err.code in ("CONNECTION_FAILED", "TIMEOUT"):
            return False
        raise
    return True


def _wait_for(
    check: Any, deadline: float, procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, str], what: str
) -> None:
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise ShoalError(
                    "SERVICE_FAILED", f"{name} exited with code {proc.returncode}; see {logs[name]}"
                )
        if check():
            return
        if time.monotonic() > deadline:
            raise ShoalError("SERVICE_FAILED", f"{what} in time; logs: {', '.join(logs.values())}")
        time.sleep(READY_POLL)


def stop_poc(workspace: Path, grace: float = 10.0, kill_wait: float = KILL_WAIT) -> dict[str, Any]:
    """SIGTERM every service's process group, SIGKILL what remains after ``grace`` seconds, and
    wait up to ``kill_wait`` seconds more until every one is gone (a zombie counts as gone)."""
    pids = running_services(workspace)
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    _wait_gone(pids.values(), grace)
    killed = [name for name, pid in pids.items() if _alive(pid)]
    for name in killed:
        _signal_group(pids[name], signal.SIGKILL)
    _wait_gone([pids[name] for name in killed], kill_wait)
    remaining = [name for name in killed if _alive(pids[name])]
    if remaining:
        raise ShoalError("SERVICE_FAILED", f"still running after SIGKILL: {', '.join(remaining)}")
    _pids_file(workspace).unlink(missing_ok=True)
    _started_file(workspace).unlink(missing_ok=True)
    return {"status": "stopped", "workspace": str(workspace), "stopped": sorted(pids), "killed": killed}


def _wait_gone(pids: Iterable[int], seconds: float) -> None:
    waiting = list(pids)
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in waiting) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
