"""A small HTTP/1.1 client over one TLS socket: what the admin client needs and nothing more.

Why not ``http.client``? It imports the ``email`` package to parse headers, which costs about
20 ms of the CLI's start-up on this class of machine; ``shoal job list`` is called in loops by
scripts and agents (docs/decisions/0004-stdlib-cli.md). This client speaks exactly what the
shoal server sends: status line, headers, then a Content-Length or chunked body.
"""

from __future__ import annotations

import _socket

from shoal.api.tls import TLSSocket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Any

MAX_HEADER_BYTES = 64 * 1024
CHUNK = 1 << 20


class TCPSocket(_socket.socket):
    """The C socket plus a weak-reference slot, which ``_ssl`` needs (``socket.socket`` adds
    the same slot, along with enums and selectors this client does not use)."""

    __slots__ = ("__weakref__",)


class ProtocolError(Exception):
    """The peer did not answer with well-formed HTTP."""


class Response:
    def __init__(self, status: int, headers: dict[str, str], stream: IO[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._stream = stream
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._remaining = int(length) if length is not None else None

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body in pieces (chunked or fixed length)."""
        if self._chunked:
            while True:
                size_line = self._stream.readline(1024)
                if not size_line:
                    raise ProtocolError("connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._stream.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    data = self._stream.read(min(left, CHUNK))
                    if not data:
                        raise ProtocolError("connection closed inside a chunk")
                    left -= len(data)
                    yield data
                self._stream.readline(8)
        elif self._remaining is not None:
            left = self._remaining
            while left:
                data = self._stream.read(min(left, CHUNK))
                if not data:
                    raise ProtocolError("connection closed before the body ended")
                left -= len(data)
                yield data
        else:
            while data := self._stream.read(CHUNK):
                yield data

    def read(self) -> bytes:
        return b"".join(self.iter_body())


class Connection:
    """One keep-alive HTTPS connection to ``host:port``."""

    def __init__(self, host: str, port: int, context: Any, timeout: float) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.timeout = timeout
        self._sock: TLSSocket | None = None
        self._reader: IO[bytes] | None = None

    def connect(self) -> None:
        # An ASCII host goes down as bytes: given a str, getaddrinfo runs it through the idna
        # codec, whose import (with stringprep and unicodedata) is ~3 ms of every CLI call.
        host: str | bytes = self.host.encode("ascii") if self.host.isascii() else self.host
        raw = _open_tcp(host, self.port, self.timeout)
        try:
            raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self._sock = TLSSocket(self.context, raw, self.host)
        except BaseException:
            raw.close()
            raise
        self._reader = self._sock.reader()

    def settimeout(self, timeout: float | None) -> None:
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def fileno(self) -> int | None:
        """The socket's descriptor while connected (to poll an idle kept-alive connection)."""
        return None if self._sock is None else self._sock.fileno()

    def interrupt(self) -> None:
        """Make a request another thread is waiting in fail now (see TLSSocket.shutdown)."""
        if self._sock is not None:
            self._sock.shutdown()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(
        self,
        method: str,
        target: str,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        sent: Callable[[int], None] | None = None,
    ) -> Response:
        """Send a request and read the answer's head; ``sent`` is told the body's bytes sent so
        far after each piece of a streamed body (a progress bar's feed)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None and self._reader is not None
        head = {"Host": f"{self.host}:{self.port}", "Connection": "keep-alive", **(headers or {})}
        if isinstance(body, bytes):
            head["Content-Length"] = str(len(body))
        elif body is None and method in ("POST", "PUT"):
            head["Content-Length"] = "0"
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if isinstance(body, bytes):
            self._sock.sendall(body)
        elif body is not None:
            done = 0
            while data := body.read(CHUNK):
                self._sock.sendall(data)
                done += len(data)
                if sent is not None:
                    sent(done)
        return self._read_response()

    def _read_response(self) -> Response:
        assert self._reader is not None
        status_line = self._reader.readline(MAX_HEADER_BYTES)
        if not status_line:
            raise ConnectionResetError("the server closed the connection without answering")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdecimal():
            raise ProtocolError(f"not an HTTP status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        total = 0
        while True:
            line = self._reader.readline(MAX_HEADER_BYTES)
            total += len(line)
            if total > MAX_HEADER_BYTES:
                raise ProtocolError("response headers too large")
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ProtocolError("connection closed inside the headers")
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return Response(int(parts[1]), headers, self._reader)


def _open_tcp(host: str | bytes, port: int, timeout: float) -> Any:
    """``socket.create_connection`` on ``_socket``: each resolved address in turn, the last
    error if none answers. The ``socket`` module wraps this C module in enums and selectors
    (~5 ms of a CLI call); ``_ssl`` takes the C socket as it is."""
    last: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = TCPSocket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"getaddrinfo returned nothing for {host!r}")
