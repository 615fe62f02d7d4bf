"""The gate's count of open connections per peer address (the sockets are tested for real in
tests/security/test_connection_limits.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from shoal.server.gate import ConnectionGate


def test_a_peer_is_admitted_up_to_the_cap_and_again_once_one_closes(caplog: pytest.LogCaptureFixture) -> None:
    gate = ConnectionGate(cap=2)
    with caplog.at_level(logging.WARNING, logger="shoal.server"):
        assert gate.admit("10.0.0.1") and gate.admit("10.0.0.1")
        assert not gate.admit("10.0.0.1") and not gate.admit("10.0.0.1")
        assert gate.admit("10.0.0.2"), "another address has its own count"
        gate.release("10.0.0.1")
        assert gate.admit("10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == [
        "refusing connections from 10.0.0.1: it holds 2 open (the cap)"
    ], "one line per address, not one per refused socket"
    for _ in range(3):
        gate.release("10.0.0.1")
    gate.release("10.0.0.2")
    assert gate.open == {}, "released addresses leave nothing behind"


def test_the_server_lifts_a_low_soft_file_limit() -> None:
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = "from shoal.server.app import raise_file_limit; import resource; raise_file_limit(); " + (
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    assert proc.returncode == 0, proc.stderr
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert int(proc.stdout) == max(wanted, 256)


def test_a_connect_storm_waits_in_the_kernel_queue_instead_of_being_dropped() -> None:
    """Sites that all dial at once (a server restart) meet a loop busy with handshakes; the
    kernel keeps the connections it completed until the server accepts them, up to the listen
    backlog. aiohttp's default of 128 dropped the rest, and every dropped SYN cost its agent a
    1-3-7 s retry: 2,000 sites took ~35 s to connect. Here the loop accepts nothing while 400
    clients connect: each must complete at once."""
    import asyncio
    import socket
    import ssl

    from aiohttp import web

    from shoal.server.gate import TLS_READ_BUFFER, ConnectionSettings, GatedSite

    clients = 400

    def storm(port: int) -> int:
        socks, failed = [], 0
        try:
            for _ in range(clients):
                sock = socket.socket()
                sock.settimeout(0.5)  # a dropped SYN is retried after 1 s: a failure here
                try:
                    sock.connect(("127.0.0.1", port))
                except OSError:
                    failed += 1
                socks.append(sock)
        finally:
            for sock in socks:
                sock.close()
        return failed

    async def scenario() -> int:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        settings = ConnectionSettings(max_connections_per_ip=4096)
        site = GatedSite(
            runner, "127.0.0.1", 0, ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings=settings
        )
        await site.start()
        # and each TLS connection's receive buffer is the gate's, not asyncio's 256 KiB
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
        try:
            port = runner.addresses[0][1]
            return storm(port)  # on the loop's own thread: nothing is accepted meanwhile
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == 0


def test_a_body_read_under_bulk_reads_takes_large_pieces_then_the_small_buffer_is_back(
    tmp_path: Path,
) -> None:
    """A site's result streams in 256 KiB at a time instead of the gate's 64 KiB (a quarter of
    the event loop's turns per byte, decisions/0045); once it is in, the connection, which may
    stay open, holds a 64 KiB buffer again."""
    import asyncio
    import io
    import ssl

    import aiohttp
    from aiohttp import web

    from shoal.provision.ca import create_ca
    from shoal.provision.kits import write_server_kit, write_site_kit
    from shoal.security.tls import client_ssl_context, server_ssl_context
    from shoal.server.gate import (
        BULK_TLS_READ_BUFFER,
        TLS_READ_BUFFER,
        ConnectionSettings,
        GatedSite,
        bulk_reads,
    )

    ca = create_ca("p")
    write_server_kit(tmp_path, ca, project="p", org="o", port=1, sites=["site-1"])
    write_site_kit(tmp_path, ca, name="site-1", project="p", org="o", port=1)
    body = b"x" * (4 * 2**20)
    seen: dict[str, Any] = {}

    async def upload(request: web.Request) -> web.Response:
        protocol: Any = getattr(request.transport, "_ssl_protocol", None)
        pieces = []
        with bulk_reads(request.transport):
            seen["during"] = protocol.max_size
            while chunk := await request.content.readany():
                pieces.append(len(chunk))
        seen["largest piece"] = max(pieces)
        seen["after"] = (protocol.max_size, len(protocol._ssl_buffer))
        return web.Response(text=str(sum(pieces)))

    async def scenario() -> str:
        app = web.Application(client_max_size=2 * len(body))
        app.router.add_put("/up", upload)
        runner = web.AppRunner(app)
        await runner.setup()
        site = GatedSite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=server_ssl_context(tmp_path / "server"),
            settings=ConnectionSettings(),
        )
        await site.start()
        try:
            port = runner.addresses[0][1]
            tls: ssl.SSLContext = client_ssl_context(tmp_path / "site-1")
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session,
                session.put(f"https://localhost:{port}/up", data=io.BytesIO(body)) as resp,
            ):
                return await resp.text()
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == str(len(body))
    assert seen["during"] == BULK_TLS_READ_BUFFER
    assert seen["largest piece"] > TLS_READ_BUFFER  # read in large pieces indeed
    assert seen["after"] == (TLS_READ_BUFFER, TLS_READ_BUFFER)
