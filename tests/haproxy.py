"""A real TCP load balancer for the replica tests: Debian's HAProxy in front of server replicas.

TCP mode, TLS passed through (each replica terminates mutual TLS itself, as in production,
docs/scale-out.md). ``balance first``: every new connection goes to the first replica that is
up, so sites and admins all sit on one replica until it dies (cross-replica delivery of tasks is
not built yet, decisions/0041). Health checks every 100 ms mark a dead replica down within a
few hundred milliseconds; a connection that finds its replica gone is sent to the next one
(``option redispatch``). A missing haproxy fails loudly (``make test`` installs it through
scripts/system-deps.sh): a skipped replica test is a takeover nobody tested.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONFIG = """\
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 3
    option redispatch 1

frontend shoal
    bind {host}:{port}
    default_backend replicas

backend replicas
    balance first
    default-server inter 100ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


def haproxy_bin() -> str:
    """The haproxy executable (AssertionError saying how to install it)."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise AssertionError(
            "HAProxy is not installed (no haproxy on PATH or in /usr/sbin): apt-get install haproxy "
            "(scripts/system-deps.sh, which make test runs, does this)"
        )
    return found


class HAProxy:
    """HAProxy balancing ``port`` on ``host`` over the replicas' addresses, in their order."""

    def __init__(self, folder: Path, host: str, port: int, replicas: list[tuple[str, int]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        servers = "\n".join(f"    server r{i} {h}:{p} check" for i, (h, p) in enumerate(replicas, 1))
        self.config = folder / "haproxy.cfg"
        self.config.write_text(CONFIG.format(host=host, port=port, servers=servers))
        self.log = folder / "haproxy.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [haproxy_bin(), "-f", str(self.config), "-db"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        """Return once the frontend accepts connections (haproxy binds before it serves)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"haproxy never listened: {self.log.read_text()}"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
