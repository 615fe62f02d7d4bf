"""Starting and stopping a POC federation: a server and its sites as background processes.

Each service runs in its own process group (so stop can take down whatever it spawned),
logs to ``<workspace>/logs/<name>.log``, and is recorded in ``<workspace>/run/pids.json``.
Readiness is checked over the real admin API, never guessed from a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError

READY_POLL = 0.05


def _pids_file(workspace: Path) -> Path:
    return workspace / "run" / "pids.json"


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_services(workspace: Path) -> dict[str, int]:
    """Services recorded for this workspace whose process still exists."""
    path = _pids_file(workspace)
    if not path.exists():
        return {}
    pids: dict[str, int] = json.loads(path.read_text())
    return {name: pid for name, pid in pids.items() if _alive(pid)}


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
    """Start the server, wait for its API, start the sites, wait until all are connected."""
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.provision.kits import set_server_port
    from shoal.provision.poc import load_poc

    poc = load_poc(workspace)
    if running := running_services(workspace):
        raise ShoalError("POC_ALREADY_RUNNING", f"running: {', '.join(sorted(running))}")
    kits = Path(poc["kits_dir"])
    host, port = poc["server"]["host"], int(poc["server"]["port"])
    if not _port_free(host, port):
        port = _free_port(host)
        set_server_port(kits, port)
        poc["server"]["port"] = port
        (workspace / "poc.json").write_text(json.dumps(poc, indent=2))
    logs = workspace / "logs"
    pids: dict[str, int] = {}
    log_paths = {"server": str(logs / "server.log")}
    _pids_file(workspace).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["server"] = _spawn(
            "server",
            [sys.executable, "-m", "shoal", "server", "start", "-k", str(kits / "server")],
            logs / "server.log",
        )
        pids["server"] = procs["server"].pid
        _pids_file(workspace).write_text(json.dumps(pids))
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
        _pids_file(workspace).write_text(json.dumps(pids))
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


def stop_poc(workspace: Path, grace: float = 10.0) -> dict[str, Any]:
    """SIGTERM every service's process group, SIGKILL what remains, and verify all are gone."""
    pids = running_services(workspace)
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.05)
    killed = [name for name, pid in pids.items() if _alive(pid)]
    for name in killed:
        _signal_group(pids[name], signal.SIGKILL)
    time.sleep(0.05 if killed else 0)
    remaining = [name for name, pid in pids.items() if _alive(pid)]
    if remaining:
        raise ShoalError("SERVICE_FAILED", f"still running after SIGKILL: {', '.join(remaining)}")
    _pids_file(workspace).unlink(missing_ok=True)
    return {"status": "stopped", "workspace": str(workspace), "stopped": sorted(pids), "killed": killed}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
