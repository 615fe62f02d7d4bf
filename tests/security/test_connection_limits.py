"""The server's front door against peers that hold connections: a TLS handshake timeout, a
request head timeout, and a cap on one peer address's open connections (``shoal.server.gate``),
with real sockets against a real server; and what those limits must never cut."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import slow_job
from tests.federation import tls_session

pytestmark = pytest.mark.e2e

HANDSHAKE = 2.0
HEAD = 3.0
CAP = 16
FLOOD_FROM = "127.0.0.2"  # another loopback address: the admin's own 127.0.0.1 is a different peer
#: When the module's federation was up with its sites connected: no job runs before the long-poll
#: test's, so their channels sit idle from then on (the other tests only open admin connections).
SITES_IDLE_SINCE: list[float] = []


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    limits = {"tls_handshake_timeout": HANDSHAKE, "request_head_timeout": HEAD, "max_connections_per_ip": CAP}
    federation = start_federation(tmp_path_factory.mktemp("limits"), server_local={"limits.json": limits})
    SITES_IDLE_SINCE.append(time.monotonic())  # poc start returned: both sites are connected
    try:
        yield federation
    finally:
        stop_federation(federation)


def address(fed: Federation) -> tuple[str, int]:
    server = json.loads((fed.kits / "site-1" / "startup" / "fed_site.json").read_text())["server"]
    return str(server["host"]), int(server["port"])


def tls_context(kit: Path) -> ssl.SSLContext:
    from shoal.security.tls import client_ssl_context

    return client_ssl_context(kit)


def seconds_until_closed(sock: socket.socket | ssl.SSLSocket, limit: float, dribble: bytes = b"") -> float:
    """Send ``dribble`` a byte every 0.2 s (or nothing) until the server closes; how long it took."""
    start = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - start < limit:
        if sent < len(dribble):
            try:
                sock.sendall(dribble[sent : sent + 1])
            except OSError:
                return time.monotonic() - start
            sent += 1
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (OSError, ssl.SSLError):
            return time.monotonic() - start
    raise AssertionError(f"the server held the connection for {limit} s (sent {sent} bytes)")


def test_a_connection_that_never_handshakes_is_closed_within_the_timeout(fed: Federation) -> None:
    with socket.create_connection(address(fed), timeout=5) as sock:
        took = seconds_until_closed(sock, HANDSHAKE + 10)
    assert HANDSHAKE - 0.5 <= took <= HANDSHAKE + 2, took


def test_a_request_head_sent_a_byte_at_a_time_is_dropped(fed: Federation) -> None:
    """An authenticated admin (a real certificate) that never finishes its request head."""
    host, port = address(fed)
    head = b"GET /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10_000
    raw = socket.create_connection((host, port), timeout=5)
    with tls_context(fed.kits / "admin@example.com").wrap_socket(raw, server_hostname=host) as sock:
        took = seconds_until_closed(sock, HEAD + 10, dribble=head)
    assert HEAD - 0.5 <= took <= HEAD + 2, took


def test_a_flood_from_one_peer_does_not_lock_admins_out(fed: Federation) -> None:
    """Hundreds of idle connections from one address, against a server with a low file limit:
    past the cap they are closed at once, and an admin elsewhere is still served."""
    pid = int(json.loads((fed.workspace / "run" / "pids.json").read_text())["server"])
    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 150, before[1]))
    flood: list[socket.socket] = []
    try:
        for _ in range(400):
            try:
                flood.append(
                    socket.create_connection(address(fed), timeout=1, source_address=(FLOOD_FROM, 0))
                )
            except OSError:
                pass  # the listen backlog is full: the flood is doing its worst
        assert len(flood) >= 200, len(flood)
        started = time.monotonic()
        proc = fed.cli.run("job", "list", timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 15
        log = (fed.workspace / "logs" / "server.log").read_text()
        assert f"refusing connections from {FLOOD_FROM}: it holds {CAP} open (the cap)" in log
        assert log.count(f"refusing connections from {FLOOD_FROM}") == 1, "one log line, not one per socket"
    finally:
        for sock in flood:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, before)


async def _dribbled_log_upload(fed: Federation, job_id: str) -> int:
    """A site's log upload whose body takes twice the head timeout to arrive, moving all along."""
    host, port = address(fed)

    async def body() -> AsyncIterator[bytes]:
        for i in range(int(HEAD * 2 / 0.5)):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.5)

    async with tls_session(tls_context(fed.kits / "site-1")) as session:
        url = f"https://{host}:{port}/site/v1/jobs/{job_id}/log"
        async with session.put(url, params={"file": "log.txt"}, data=body()) as resp:
            return resp.status


def test_long_polls_monitors_channels_and_slow_transfers_are_not_cut(fed: Federation, tmp_path: Path) -> None:
    """Every one of these spans several head timeouts: none is a request head that is late."""
    log_file = fed.workspace / "logs" / "server.log"
    # the sites' channels sit idle past the head timeout first (the module's other tests, when
    # they ran before this one, took part of that time already)
    time.sleep(max(0.0, SITES_IDLE_SINCE[-1] + HEAD + 1 - time.monotonic()))
    code, doc = fed.cli.json("job", "submit", "-j", slow_job(tmp_path / "slow", rounds=12, delay=0.8))
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    monitor = subprocess.Popen(
        [sys.executable, "-m", "shoal", "job", "monitor", job_id, "--format", "jsonl"],
        env=fed.cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the upload route needs the job running on site-1
            code, meta = fed.cli.json("job", "meta", job_id)
            if meta["data"]["status"] == "RUNNING":
                break
            assert time.monotonic() < deadline, meta
            time.sleep(0.2)
        assert asyncio.run(_dribbled_log_upload(fed, job_id)) == 200
        code, doc = fed.cli.json("job", "wait", job_id, "--timeout", "120", timeout=150)
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        out, err = monitor.communicate(timeout=60)
    finally:
        monitor.kill()
    assert monitor.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["terminal"] is True and events[-1]["status"] == "COMPLETED", events[-1]
    assert len(events) > 2, "the monitor saw the job's progress, not only its end"
    assert "disconnected" not in log_file.read_text(), "a site's control channel was cut"
