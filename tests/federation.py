"""A real federation for tests: a POC server and sites as processes on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Cli


@dataclass
class Federation:
    cli: Cli
    workspace: Path

    @property
    def kits(self) -> Path:
        return self.workspace / "kits"


def start_federation(
    home: Path,
    sites: int = 2,
    studies: dict[str, object] | None = None,
    server_local: dict[str, object] | None = None,
    site_local: dict[str, dict[str, object]] | None = None,
    env: dict[str, str] | None = None,
) -> Federation:
    """Prepare and start a POC; ``studies`` goes to the server's studies.json and each
    ``server_local`` entry (file name -> JSON) into the server kit's local/ folder, first;
    ``env`` reaches the CLI and, through ``poc start``, the server and the sites."""
    cli = Cli(home, extra_env=dict(env or {}))
    ws = home / "poc"
    prepared = cli.run("poc", "prepare", "-n", str(sites), "--workspace", ws)
    assert prepared.returncode == 0, prepared.stderr
    if studies is not None:
        (ws / "kits" / "server" / "local" / "studies.json").write_text(json.dumps({"studies": studies}))
    for name, content in (server_local or {}).items():
        (ws / "kits" / "server" / "local" / name).write_text(json.dumps(content))
    for site, files in (site_local or {}).items():
        for name, content in files.items():
            (ws / "kits" / site / "local" / name).write_text(json.dumps(content))
    started = cli.run("poc", "start", "--workspace", ws)
    assert started.returncode == 0, started.stderr + started.stdout
    return Federation(cli, ws)


def stop_federation(fed: Federation) -> None:
    stopped = fed.cli.run("poc", "stop", "--workspace", fed.workspace)
    assert stopped.returncode == 0, stopped.stderr


#: A study whose jobs may run custom workflows on the server (off by default): for the tests of
#: custom workflows, which submit with ``--study`` CUSTOM_CODE_STUDY.
CUSTOM_CODE_STUDY = "custom-code"
CUSTOM_CODE_STUDIES: dict[str, object] = {
    CUSTOM_CODE_STUDY: {"sites": ["site-1", "site-2"], "allow_custom_code": True}
}


@contextmanager
def own_federation(home: Path, **options: Any) -> Iterator[Federation]:
    """A federation of the caller's own (server + 2 sites), stopped on the way out: for tests
    that disturb it (duplicate agents, revocations, restarts) or need other server settings
    (``options`` go to ``start_federation``), and so cannot share the session's."""
    fed = start_federation(home, **options)
    try:
        yield fed
    finally:
        stop_federation(fed)


def server_address(fed: Federation) -> tuple[str, int]:
    """Where the federation's server listens (its host and port from poc.json)."""
    poc = json.loads((fed.workspace / "poc.json").read_text())
    return poc["server"]["host"], int(poc["server"]["port"])


def wait_connected(pid: int, port: int, timeout: float = 30) -> None:
    """Return once process ``pid`` holds an established TCP connection to ``port``: the readiness
    event for "this CLI call is talking to the server" (past its start-up, in its request),
    instead of a sleep guessed long enough on a quiet machine."""
    deadline = time.monotonic() + timeout
    while not _connected(pid, port):
        assert time.monotonic() < deadline, f"process {pid} never connected to port {port}"
        time.sleep(0.02)


def _connected(pid: int, port: int) -> bool:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except (FileNotFoundError, ProcessLookupError):
        return False
    sockets = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
                if state == "01" and remote_port == port and inode in sockets:  # 01: ESTABLISHED
                    return True
    return False


class _TrackingConnector(aiohttp.TCPConnector):
    """A connector that remembers every transport it opens (aiohttp offers no public hook for
    this: its one place that opens them is overridden)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[asyncio.Transport] = []

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> tuple[asyncio.Transport, Any]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        self.opened.append(transport)
        return transport, protocol


@asynccontextmanager
async def tls_session(context: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session whose exit leaves no connection open. aiohttp ends a TLS connection
    (one the server closed, or the session's own on close) with a close_notify exchange that
    needs the event loop to run on, and does not wait for the connections it let go earlier;
    when ``asyncio.run`` then ends the loop, the socket is left to the garbage collector
    (ResourceWarning: unclosed transport), an error in whichever test it is collected in. A
    test's client owes the server no graceful goodbye: what is still open is aborted."""
    connector = _TrackingConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
    for transport in connector.opened:
        transport.abort()
    await asyncio.sleep(0)  # each abort closes its socket in the loop's next pass


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def archive_blobs(fed: Federation) -> set[str]:
    """The blobs that are job archives (zip files): a running job's round checkpoints are blobs
    too (safetensors models), stored and dropped as its rounds go by."""
    root = fed.workspace / "kits" / "server" / "workspace" / "blobs"
    found = set()
    for name in (p.relative_to(root).as_posix() for p in root.glob("??/*")):
        try:
            with (root / name).open("rb") as f:
                if f.read(4) == b"PK\x03\x04":
                    found.add(name)
        except FileNotFoundError:  # a checkpoint dropped meanwhile
            continue
    return found
