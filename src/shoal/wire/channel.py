"""JSON-lines messages over an inherited socket: how a job process talks to its parent.

A site agent hands its training process one end of a socketpair, and the server hands each job
controller one the same way. Messages are one JSON object per line; model weights never travel
here (they go through safetensors files beside the job), so a message is small unless the job's
code makes it long (metrics, meta, an error's traceback): MAX_MESSAGE_BYTES bounds it. Standard
library only: the client API imports this inside the user's training script.
"""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Any

from shoal import settings

if TYPE_CHECKING:
    import asyncio

CHANNEL_FD_ENV = settings.CHANNEL_FD
#: The longest line a parent reads from its job process (asyncio's default is 64 KiB, which a
#: result's metrics could pass). A longer line, or one that is not JSON, breaks the channel:
#: the parent fails the job saying so and kills the process, which nobody would read any more.
MAX_MESSAGE_BYTES = 16 * 2**20
#: The close code the server gives a site's control channel (WebSocket) that a newer connection
#: of the same site replaced. Its agent waits its longest backoff before coming back, so two
#: agents started with one site's kit take turns every few seconds instead of many times a second.
CLOSE_REPLACED = 4000
#: The close code of a site channel whose first message was not a good hello, or that broke the
#: protocol (a second hello): the server could not use what the agent said about itself.
CLOSE_MALFORMED = 4001
#: A live metric's name (``flare.log_metric``): it is a key of the job's stats and of
#: metrics_summary.json, and it rides every relay of the metric.
METRIC_KEY_MAX = 200

# What one site may add to a job's live view (meta's ``notices``, stats' per-site ``metrics``),
# which is sent to everyone who looks at the job: bounded, whatever a site or its script sends.
# Past a cap the rest is dropped and one notice per site says so (docs/reliability.md).
#: Distinct metric names one site may report in one job (``log_metric`` and result metrics alike).
METRIC_KEYS_PER_SITE = 100
#: Notices one site may add to one job, and all notices one job may hold.
NOTICES_PER_SITE = 20
NOTICES_PER_JOB = 50
#: A notice longer than this is cut (its start and end kept, saying how much was cut).
NOTICE_CHARS_MAX = 1000


class UnreadableMessage(Exception):
    """A line from a job process that is too long or not a JSON object: the channel is broken."""


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The parent's read of the next message; None at the end of the channel. The reader must
    be opened with ``limit=MAX_MESSAGE_BYTES``."""
    try:
        line = await reader.readline()
        if not line:
            return None
        message = json.loads(line)
    except ValueError as exc:  # asyncio's line-limit error is a ValueError, as is bad JSON
        raise UnreadableMessage(str(exc)) from exc
    if not isinstance(message, dict):
        raise UnreadableMessage(f"a message must be a JSON object, not {type(message).__name__}")
    return message


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class SyncChannel:
    """The child's end: blocking send and receive on the inherited socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.settimeout(None)
        self._buffer = bytearray()

    @classmethod
    def from_env(cls) -> SyncChannel:
        """Open the channel whose file descriptor the parent put in the environment."""
        fd = settings.whole_number(CHANNEL_FD_ENV)
        if fd is None:
            raise RuntimeError(
                f"{CHANNEL_FD_ENV} is not set: this script must be started by a shoal site or server"
            )
        return cls(socket.socket(fileno=fd))

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(encode(message))

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or None when the parent closed the channel (it ended or died);
        TimeoutError if none came within ``timeout`` seconds, after which the channel is as
        good as before. (A socket file with a timeout is not: once a read timed out, every
        later read fails, so a workflow whose round deadline passed lost its channel.) A
        ``timeout`` of 0 returns what has already arrived, without waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            # Past the deadline the read does not wait (a timeout of 0), but what has arrived
            # is still taken: only a read that finds nothing times out.
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(2**16)
            except (TimeoutError, BlockingIOError):
                raise TimeoutError(f"no message within {timeout:g} s") from None
            except OSError:
                return None
            finally:
                self._sock.settimeout(None)  # sends block as long as they need
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        message: dict[str, Any] = json.loads(line)
        return message

    def wait_closed(self, timeout: float) -> None:
        """After its last message, read and drop whatever comes until the parent closes the
        channel (it has read that message) or ``timeout`` passes. Exiting at once could let the
        parent write into a closed socket, and asyncio's answer to that error also throws away
        the lines it had not read yet: the last message among them."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.receive(left) is None:
                    return
            except (TimeoutError, ValueError):
                return

    def close(self) -> None:
        self._sock.close()
