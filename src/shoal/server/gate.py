"""The server's front door: per-client connection caps and a TLS handshake timeout.

Every socket costs the server a file descriptor from the moment it is accepted, whoever opened
it, long before any certificate is seen. Left alone, a peer that opens connections and never
finishes the TLS handshake (asyncio holds such a socket 60 s) or one that sends its request
head a byte at a time (aiohttp waits an hour) can spend the server's descriptors until nobody,
admins included, gets in. So the listening socket is served by a gate instead of by aiohttp
directly: it counts the open connections of each peer address and closes one past the cap at
once, then performs the TLS handshake itself, within ``tls_handshake_timeout``, and only then
hands the connection to aiohttp's request handler. The request head timeout is aiohttp's own
timer for a connection that has no complete request to handle (``keepalive_timeout``), which
the server sets from the same settings: it never runs while a request is being handled, so long
polls, WebSocket channels and slow but moving transfers are not cut by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("shoal.server")

#: Connections the kernel queues, handshake done, before the server accepts them. aiohttp's 128
#: overflowed when a federation's sites all (re)connected at once (a server restart, a network
#: blip): the kernel dropped the rest, and each dropped SYN cost its agent a 1, 3, 7 s retry.
#: The kernel caps it at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG = 4096
#: The receive buffer asyncio gives each TLS connection (``SSLProtocol.max_size``): 256 KiB,
#: allocated and zero-filled up front, so resident from the handshake on. With 2,000 sites
#: connected that was 500 MiB of the server's memory for buffers that a control channel never
#: fills. 64 KiB still takes four full TLS records per read (decisions/0039).
TLS_READ_BUFFER = 64 * 1024
#: What one connection reads at a time while a site's result streams in (``bulk_reads``):
#: asyncio's own default, a quarter of the event loop's turns per byte of TLS_READ_BUFFER's.
BULK_TLS_READ_BUFFER = 256 * 1024
REFUSAL_LOG_EVERY = 60.0  # seconds between log lines about one peer's refused connections
REFUSALS_REMEMBERED = 4096  # addresses whose last refusal line is remembered before pruning


@dataclass(frozen=True)
class ConnectionSettings:
    """The server's connection limits (``local/limits.json``; see README, "Server settings")."""

    tls_handshake_timeout: float = 10.0  # seconds from accept to a finished TLS handshake
    request_head_timeout: float = 30.0  # seconds a connection may go without a whole request head
    max_connections_per_ip: int = 256  # open connections (handshaking or not) of one peer address


class ConnectionGate:
    """Open connections per peer address, and when each peer was last told about a refusal."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}
        self._refusal_logged: dict[str, float] = {}

    def admit(self, peer: str) -> bool:
        count = self.open.get(peer, 0)
        if count >= self.cap:
            now = time.monotonic()
            if now - self._refusal_logged.get(peer, -REFUSAL_LOG_EVERY) >= REFUSAL_LOG_EVERY:
                if len(self._refusal_logged) >= REFUSALS_REMEMBERED:  # many addresses: forget old ones
                    self._refusal_logged = {
                        p: t for p, t in self._refusal_logged.items() if now - t < REFUSAL_LOG_EVERY
                    }
                self._refusal_logged[peer] = now
                log.warning("refusing connections from %s: it holds %d open (the cap)", peer, count)
            return False
        self.open[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        count = self.open.get(peer, 0) - 1
        if count > 0:
            self.open[peer] = count
        else:
            self.open.pop(peer, None)


class GateProtocol(asyncio.Protocol):
    """One accepted connection: admitted or closed, TLS done within the timeout, then relayed
    to the aiohttp handler made for it (which sees an ordinary TLS transport)."""

    def __init__(
        self,
        make_handler: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext,
        settings: ConnectionSettings,
        gate: ConnectionGate,
    ) -> None:
        self._make_handler = make_handler
        self._ssl_context = ssl_context
        self._settings = settings
        self._gate = gate
        self._peer: str | None = None  # set while the connection counts against its peer
        self._handler: asyncio.Protocol | None = None
        self._early: list[bytes] = []  # what arrived between the handshake and the handler
        self._early_eof = False
        self._lost = False
        self._handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = transport
        assert isinstance(raw, asyncio.Transport)
        peername = raw.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        if not self._gate.admit(peer):
            raw.abort()
            return
        self._peer = peer
        raw.pause_reading()  # the ClientHello waits in the kernel until start_tls reads it
        self._handshake = asyncio.get_running_loop().create_task(self._start_tls(raw))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,
                self,
                self._ssl_context,
                server_side=True,
                ssl_handshake_timeout=self._settings.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, EOFError, TimeoutError, RuntimeError):
            # No certificate, a foreign CA, a peer that never finished or went away: nothing to
            # serve (asyncio has closed the socket). The handshake's own failures are logged
            # by the TLS layer at debug level; a gate cannot tell an attack from a bad network.
            raw.abort()
            self._release()
            return
        if self._lost or tls is None:
            self._release()
            return
        try:
            handler = self._make_handler()
            handler.connection_made(tls)
        except Exception:  # a bug, not the peer's doing: log it, and the connection goes
            log.exception("serving a connection from %s failed", self._peer)
            tls.abort()
            self._release()
            return
        self._handler = handler
        for data in self._early:
            handler.data_received(data)
        self._early.clear()
        if self._early_eof:
            handler.eof_received()

    def _release(self) -> None:
        if self._peer is not None:
            self._gate.release(self._peer)
            self._peer = None

    # From here on the TLS layer calls these (the gate is the protocol on top of TLS).

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            self._early.append(data)
        else:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is None:
            self._early_eof = True
            return None
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._release()
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


class GatedSite(web.TCPSite):
    """aiohttp's TCP site with the gate in front: TLS is done by the gate, not by aiohttp."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        settings: ConnectionSettings,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
        self._tls = ssl_context
        self._settings = settings
        self.gate = ConnectionGate(settings.max_connections_per_ip)

    async def start(self) -> None:
        shrink_tls_read_buffers()
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GateProtocol(server, self._tls, self._settings, self.gate),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )


def shrink_tls_read_buffers() -> None:
    """Give every TLS connection this process makes from now on a TLS_READ_BUFFER receive
    buffer instead of asyncio's 256 KiB. ``max_size`` is a class attribute of asyncio's TLS
    protocol (CPython 3.11-3.13): if a Python lacks it, nothing is changed."""
    from asyncio import sslproto

    if isinstance(getattr(sslproto.SSLProtocol, "max_size", None), int):
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


@contextlib.contextmanager
def bulk_reads(transport: object) -> Iterator[None]:
    """Let one TLS connection read BULK_TLS_READ_BUFFER at a time while a large body streams in
    (a site's result), then give it back the small buffer every connection keeps. A 100 MB
    upload read 64 KiB at a time costs the event loop 1,600 turns (each a decryption call, a
    parser feed and a file write); 256 KiB, 400: ~6 % of the server's CPU in a 100 MB round.
    Only a connection moving a result holds the larger buffer, and only while it moves it.
    Like ``shrink_tls_read_buffers``, this reads asyncio's ``max_size`` (an instance attribute
    here, shadowing the class's) and changes nothing where a Python lacks it."""
    protocol: Any = getattr(transport, "_ssl_protocol", None)
    if protocol is None or not isinstance(getattr(protocol, "max_size", None), int):
        yield
        return
    protocol.max_size = BULK_TLS_READ_BUFFER
    try:
        yield
    finally:
        del protocol.max_size  # the class's small one again
        buffer = getattr(protocol, "_ssl_buffer", None)
        if isinstance(buffer, bytearray) and len(buffer) > TLS_READ_BUFFER:
            # asyncio grows it to max_size and never shrinks it: a connection kept open after
            # an upload (its control channel's peer, say) would hold the large one for good
            protocol._ssl_buffer = bytearray(TLS_READ_BUFFER)
            protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)
