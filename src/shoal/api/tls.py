"""The CLI's side of mutual TLS, on ``_ssl`` (the C module the ``ssl`` module wraps).

Why not ``ssl``: importing it costs ~27 ms of a ~110 ms CLI call on the development machine
(it turns every OpenSSL constant into a Python enum and pulls in base64), while ``_ssl`` costs
~8 ms. The CLI needs only a blocking client socket, so it uses the C objects directly: the same
OpenSSL calls ``ssl.SSLSocket`` makes (``_SSLContext._wrap_socket``, ``do_handshake``,
``read``/``write``), the same exception classes (``ssl`` re-exports ``_ssl``'s), and the same
checks as ``shoal.security.tls.client_ssl_context``: TLS 1.2 or later, only the project CA,
the server's name checked by OpenSSL, the kit's certificate presented. The server and the site
agent keep the ``ssl`` module (decisions/0011).
"""

from __future__ import annotations

import _ssl
import io
import os

from shoal.security.kitfiles import load_identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket
    from typing import Any

SSLError = _ssl.SSLError
SSLCertVerificationError = _ssl.SSLCertVerificationError
SSLEOFError = _ssl.SSLEOFError
SSLZeroReturnError = _ssl.SSLZeroReturnError


def client_context(kit_dir: str) -> Any:
    """A client context for the admin kit in ``kit_dir`` (its ``startup/`` files)."""
    # PROTOCOL_TLS_CLIENT starts with CERT_REQUIRED and hostname checking on.
    ctx = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = _ssl.PROTO_TLSv1_2
    return load_identity(ctx, os.path.join(kit_dir, "startup"), "client")


class TLSSocket:
    """A connected client socket after the handshake: ``sendall``, a buffered reader, timeouts."""

    def __init__(self, context: Any, raw: socket, server_hostname: str) -> None:
        self._raw = raw  # the C object keeps only a weak reference to it
        self._tls = context._wrap_socket(raw, False, server_hostname)
        self._tls.do_handshake()

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._tls.write(view) :]

    def reader(self) -> io.BufferedReader:
        return io.BufferedReader(_TLSReader(self._tls), 64 * 1024)

    def settimeout(self, timeout: float | None) -> None:
        self._raw.settimeout(timeout)

    def close(self) -> None:
        self._raw.close()

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def shutdown(self) -> None:
        """End the connection under a thread blocked reading it (``close`` alone does not wake
        it on Linux): its read sees the end at once."""
        try:
            self._raw.shutdown(2)  # SHUT_RDWR
        except OSError:
            pass  # already closed or never connected: nothing waits on it


class _TLSReader(io.RawIOBase):
    """Decrypted bytes as a raw stream; the peer closing (cleanly or not) reads as end of file,
    as ``ssl.SSLSocket`` does by default."""

    def __init__(self, tls: Any) -> None:
        super().__init__()
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            count: int = self._tls.read(len(buffer), buffer)
        except (SSLZeroReturnError, SSLEOFError):
            return 0
        return count
