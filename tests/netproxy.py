"""A TCP proxy on loopback that tests control: cut the link, bring it back, drop replies.

TLS passes through untouched (the proxy only moves bytes), so the peers still authenticate
each other end to end.
"""

from __future__ import annotations

import socket
import threading


class Proxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        # Once a client has sent more than this many bytes on a connection (handshake + request),
        # the server's answers on it are lost. None: nothing is dropped.
        self.drop_replies_after: int | None = None
        # Cut the first connection whose answer (or request) passes this many bytes, once: a
        # transfer broken in the middle while the rest of the link stays up.
        self.cut_once_after_reply_bytes: int | None = None
        self.cut_once_after_request_bytes: int | None = None
        self.cuts = 0
        # Stall the first connection whose answer (or request) passes this many bytes, once: the
        # proxy stops reading and forwarding it but keeps both sockets open, as a TCP path that
        # silently stopped moving would. Only close() releases it.
        self.stall_once_after_reply_bytes: int | None = None
        self.stall_once_after_request_bytes: int | None = None
        self.stalls = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        bound: int = listener.getsockname()[1]
        return bound

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            sent = [0, 0]  # bytes client->server, server->client on this connection
            threading.Thread(target=self._pipe, args=(client, server, False, sent), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True, sent), daemon=True).start()

    def _once(self, fault: str, is_reply: bool, sent: list[int]) -> bool:
        """Whether the one-shot ``fault`` ("cut" or "stall") fires now for this direction."""
        attr = f"{fault}_once_after_{'reply' if is_reply else 'request'}_bytes"
        with self._lock:
            limit = getattr(self, attr)
            if limit is not None and sent[1 if is_reply else 0] > limit:
                setattr(self, attr, None)
                setattr(self, f"{fault}s", getattr(self, f"{fault}s") + 1)
                return True
        return False

    def _pipe(self, src: socket.socket, dst: socket.socket, is_reply: bool, sent: list[int]) -> None:
        try:
            while data := src.recv(65536):
                sent[1 if is_reply else 0] += len(data)
                if self._once("cut", is_reply, sent):
                    break
                if self._once("stall", is_reply, sent):
                    self._released.wait()
                    break
                limit = self.drop_replies_after
                if is_reply and limit is not None and sent[0] > limit:
                    break  # the request went through; its answer is lost on the way back
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones, as a pulled cable would."""
        if self._listener is not None:
            # shutdown first: close alone does not wake the thread blocked in accept(), which
            # would still take one more connection (the site's first reconnect got through).
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self._listen(self.port)

    def close(self) -> None:
        self._released.set()
        self.cut()
