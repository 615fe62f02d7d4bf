"""A throwaway Ray cluster for the tests: ``ray start --head --block`` in a session of its own.

Its ports are chosen free (the head's, the Ray client server's, the dashboard's and its agent's;
Ray's defaults are fixed numbers that two runs would share), its files live in a short temporary
folder (Ray's socket paths must stay under 108 bytes), and its object store is small. Ray binds
the machine's own address, not loopback: it resolves 127.0.0.1 to the node's address by design,
so the head's address is whatever it reports. Stopping it kills its whole process group (the
head, the GCS, the raylet, its workers), then removes its folder: nothing outlives the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

STARTUP_TIMEOUT = 120.0


@dataclass
class RayHead:
    address: str  # host:port, as ray.init and shoal simulate --ray take it
    pid: int  # the head's process, leader of the group every Ray process here is in


@contextmanager
def ray_head(cpus: int = 2) -> Iterator[RayHead]:
    """A running Ray head for the ``with`` block."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    argv = [
        str(ray),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={cpus}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--object-store-memory=100000000",
        f"--temp-dir={folder}",
    ]
    log = folder / "head.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    try:
        yield RayHead(_wait_started(proc, log, port), proc.pid)
    finally:
        _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_started(proc: subprocess.Popen[bytes], log: Path, port: int) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Ray runtime started" in text:
            found = re.search(r"ray start --address='([^']+)'", text)
            assert found, text
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"the Ray head exited with {proc.returncode}: {text[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"the Ray head did not start within {STARTUP_TIMEOUT:g} s on port {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the head's process group, SIGKILL to what is left after 5 s; reaped. The
    group is its own (a new session), so nothing else is touched."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(proc.pid):
            proc.poll()  # reap the head itself once it exits; the others are reparented
            time.sleep(0.1)
        if not group_alive(proc.pid):
            break
    proc.wait(30)


def group_alive(pgid: int) -> bool:
    """Whether any process, not a zombie, is still in the group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
