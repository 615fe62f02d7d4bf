"""The site's bulk transfers (decisions/0055) against a real aiohttp server over mutual TLS:
bytes whole, a body cut short is an error (never a short file), a transfer cancelled on the
event loop stops its thread at once, and a kept connection is used again only while the server
keeps it too."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from shoal.api.http import ProtocolError, Response
from shoal.provision.ca import CertificateAuthority, create_ca
from shoal.provision.kits import write_server_kit, write_site_kit
from shoal.security.tls import client_ssl_context, server_ssl_context
from shoal.site.bulk import BROKEN, BulkLink, _readable, json_answer
from shoal.wire.idle import Progress

PROJECT, ORG = "example_project", "example.org"
BODY = bytes(range(256)) * 8192  # 2 MiB


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca: CertificateAuthority = create_ca(PROJECT)
    kits = tmp_path_factory.mktemp("kits")
    write_server_kit(kits, ca, project=PROJECT, org=ORG, port=1, sites=["site-1"])
    write_site_kit(kits, ca, name="site-1", project=PROJECT, org=ORG, port=1)
    return kits


class Server:
    """An aiohttp server on an OS-chosen port; ``peers`` counts the connections it accepted."""

    def __init__(self) -> None:
        self.peers: set[object] = set()
        self.received = 0
        self.ending = asyncio.Event()

    def note(self, request: web.Request) -> None:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)

    async def whole(self, request: web.Request) -> web.StreamResponse:
        self.note(request)
        return web.Response(body=BODY)

    async def cut(self, request: web.Request) -> web.StreamResponse:
        """Says the whole body is coming, sends half, and drops the connection."""
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        await response.write(BODY[: len(BODY) // 2])
        assert request.transport is not None
        request.transport.abort()
        return response

    async def stuck(self, request: web.Request) -> web.StreamResponse:
        """Sends a little, then nothing, holding the connection open."""
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        await response.write(BODY[:1000])
        await self.ending.wait()
        return response

    async def take(self, request: web.Request) -> web.Response:
        self.note(request)
        while chunk := await request.content.readany():
            self.received += len(chunk)
        return web.json_response({"received": self.received})


@contextlib.asynccontextmanager
async def served(kits: Path) -> AsyncIterator[tuple[Server, BulkLink]]:
    server = Server()
    app = web.Application(client_max_size=2**30)
    app.add_routes(
        [
            web.get("/whole", server.whole),
            web.get("/cut", server.cut),
            web.get("/stuck", server.stuck),
            web.put("/take", server.take),
        ]
    )
    runner = web.AppRunner(app, keepalive_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(kits / "server"))
    await site.start()
    port = runner.addresses[0][1]
    link = BulkLink("127.0.0.1", port, client_ssl_context(kits / "site-1"), idle=30)
    yield server, link
    server.ending.set()
    link.close()
    await runner.cleanup()


def run(kits: Path, scenario: Callable[[Server, BulkLink], Awaitable[None]]) -> None:
    """``scenario`` on a fresh server and link, on an event loop of its own."""

    async def main() -> None:
        async with served(kits) as (server, link):
            await scenario(server, link)

    asyncio.run(main())


def _body(response: Response) -> bytes:
    assert response.status == 200, response.status
    return b"".join(response.iter_body())


def test_a_body_comes_whole_and_one_connection_serves_transfers_in_turn(kits: Path) -> None:
    run(kits, _in_turn)


async def _in_turn(server: Server, link: BulkLink) -> None:
    progress = Progress()
    assert await link.exchange("GET", "/whole", {}, progress, _body) == BODY
    sent = io.BytesIO(BODY)
    said = await link.exchange(
        "PUT", "/take", {"Content-Length": str(len(BODY))}, progress, json_answer, body=sent
    )
    assert said == {"received": len(BODY)}
    assert await link.exchange("GET", "/whole", {}, progress, _body) == BODY
    assert len(server.peers) == 1  # kept alive between transfers: one handshake


def test_a_connection_the_server_dropped_while_kept_is_not_used(kits: Path) -> None:
    run(kits, _dropped_while_kept)


async def _dropped_while_kept(server: Server, link: BulkLink) -> None:
    assert await link.exchange("GET", "/whole", {}, Progress(), _body) == BODY
    (_, kept), deadline = link._kept[-1], time.monotonic() + 10
    while not _readable(kept):  # the server's keep-alive (0.5 s) runs out: it closes its end
        assert time.monotonic() < deadline, "the server never closed the idle connection"
        await asyncio.sleep(0.05)
    assert await link.exchange("GET", "/whole", {}, Progress(), _body) == BODY  # no error
    assert len(server.peers) == 2


def test_a_body_cut_short_is_an_error_the_caller_resumes_from(kits: Path) -> None:
    run(kits, _cut_short)


async def _cut_short(server: Server, link: BulkLink) -> None:
    with pytest.raises(BROKEN) as caught:
        await link.exchange("GET", "/cut", {}, Progress(), _body)
    assert isinstance(caught.value, ProtocolError | ConnectionError)


def test_a_cancelled_transfer_stops_its_thread_at_once(kits: Path) -> None:
    """The watch on the event loop (no progress for the idle timeout, or the job aborted) cancels
    the transfer: its connection is shut under the blocked thread, which ends with it."""
    run(kits, _cancelled)


async def _cancelled(server: Server, link: BulkLink) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(link.exchange("GET", "/stuck", {}, Progress(), _body), 0.5)
    assert time.monotonic() - started < 10  # at once, not after the socket's own timeout (30 s here)
    assert await link.exchange("GET", "/whole", {}, Progress(), _body) == BODY  # the link goes on
