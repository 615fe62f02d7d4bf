"""A site's models down and results up over blocking TLS in threads of their own (decisions/0055).

The agent's event loop keeps the control channel and the small calls. The bytes of a model or
a result go through ``shoal.api.http.Connection``, the CLI's blocking HTTPS client, in a worker
thread: there OpenSSL decrypts straight into the reader's buffer and encrypts straight from the
file's, where asyncio's TLS passes every byte through two memory BIOs and Python callbacks per
record. Measured on 100 MB over loopback: the agent's CPU per download 0.14-0.19 s down to
0.09-0.11, per upload 0.13-0.18 down to 0.08, the server's unchanged (docs/performance.md).

A transfer keeps the rules of ``shoal.wire.idle``: it ticks its ``Progress`` as bytes move, and
when the watch on the event loop cancels it (no byte for the idle timeout, or its job aborted),
its connection is shut under the thread, whose blocked call then fails at once. Connections are
kept alive between transfers for ``KEEP_IDLE`` seconds, so a round's download and upload do not
each pay a handshake.
"""

from __future__ import annotations

import asyncio
import json
import select
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

from shoal.api.http import Connection, ProtocolError, Response
from shoal.api.tls import SSLError
from shoal.errors import ShoalError
from shoal.wire.idle import Progress

T = TypeVar("T")

#: What ends one attempt of a transfer (the caller resumes it) rather than failing its job.
BROKEN = (ConnectionError, TimeoutError, SSLError, ProtocolError)
#: Seconds a connection is kept for the next transfer: a big model's rounds come seconds apart;
#: an older one may have been dropped by the server or a proxy between, and is not tried.
KEEP_IDLE = 10.0
#: Transfers at once (each holds a thread while its bytes move).
THREADS = 8


class BulkLink:
    """Blocking HTTPS connections to the server at ``host:port`` for transfers, with the
    agent's TLS ``context``; a transfer whose connection makes no progress for ``idle``
    seconds fails in its thread too (the socket's own timeout), whatever the event loop does."""

    def __init__(self, host: str, port: int, context: Any, idle: float) -> None:
        self._host = host
        self._port = port
        self._context = context
        self._idle = idle
        self._kept: list[tuple[float, Connection]] = []  # (when it was last used, connection)
        self._moving: set[Connection] = set()  # in a transfer now
        self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="shoal-bulk")

    async def exchange(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        progress: Progress,
        answer: Callable[[Response], T],
        body: IO[bytes] | None = None,
    ) -> T:
        """Send one request (``body`` streamed, ``progress`` ticked as it goes) and hand the
        response to ``answer``, in the transfer's thread; ``answer`` reads the body whole (the
        connection is then kept for the next transfer) or raises."""
        conn = self._take()

        def run() -> tuple[T, bool]:
            response = conn.request(method, target, body, headers, lambda _: progress.tick())
            result = answer(response)
            return result, response.headers.get("connection", "").lower() != "close"

        future = asyncio.get_running_loop().run_in_executor(self._threads, run)
        self._moving.add(conn)
        try:
            result, reusable = await asyncio.shield(future)
        except asyncio.CancelledError:
            conn.interrupt()  # the thread's blocked read or write fails at once
            await asyncio.wait([future])
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise
        finally:
            self._moving.discard(conn)
        if reusable:
            self._kept.append((time.monotonic(), conn))
        else:
            conn.close()
        return result

    def _take(self) -> Connection:
        """The newest kept connection that is young and not closed by the server, else a new one."""
        while self._kept:
            since, conn = self._kept.pop()
            if time.monotonic() - since < KEEP_IDLE and not _readable(conn):
                return conn
            conn.close()
        return Connection(self._host, self._port, self._context, self._idle)

    def close(self) -> None:
        """Close the kept connections, end the transfers still moving (the agent is stopping: its
        threads must not hold its exit), and let the threads go."""
        for conn in self._moving:
            conn.interrupt()
        for _, conn in self._kept:
            conn.close()
        self._kept.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _readable(conn: Connection) -> bool:
    """Whether an idle connection has something to read: the server closed it (or broke the
    protocol); either way it is not used again."""
    fileno = conn.fileno()
    if fileno is None:
        return False
    ready, _, _ = select.select([fileno], [], [], 0)
    return bool(ready)


def json_answer(response: Response) -> Any:
    """The response's body as JSON if the server says it is JSON (its answers are small), else
    None with the body unread."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    raw = response.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {raw[:200]!r}") from exc


def raise_if_task_closed(said: Any) -> None:
    """TASK_NOT_OPEN (a ShoalError) if the server's answer ``said`` the task is over for this
    site: its round ended without it, so its model or its result is not wanted any more."""
    if isinstance(said, dict) and said.get("error_code") == "TASK_NOT_OPEN":
        raise ShoalError.from_wire(said)
