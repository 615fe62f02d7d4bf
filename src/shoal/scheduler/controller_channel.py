"""The server's side of the channel to a job's workflow process: lines out, batched per turn of
the event loop, and the end of it once the workflow's last word is read.

Owned by ``shoal.scheduler.runner.JobRun`` (its ``channel``), which reads the workflow's lines
itself; whether the run has an outcome (then nothing more is written) is the run's to say.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shoal.wire.channel import encode
from shoal.wire.messages import Message
from shoal.wire.messages import encode as encode_message

#: The most bytes of lines that may wait for the workflow to read them before a small result
#: goes to it by file instead of inside its message (``JobRun.takes_result_bytes``): 16 MiB is
#: ~50 results of INLINE_BYTES, or a round of 2,000 results of a small model many times over.
CONTROLLER_BACKLOG_BYTES = 16 * 2**20


class ControllerChannel:
    """Lines to the workflow; ``ended`` says whether the run has an outcome."""

    def __init__(self, ended: Callable[[], bool]) -> None:
        self._ended = ended
        self.writer: asyncio.StreamWriter | None = None  # set once the workflow is started
        self._lines: list[bytes] = []  # encoded lines for the next write (``send``)
        self._bytes = 0  # their length

    def send(self, message: Message) -> None:
        """Queue a line for the workflow; the lines queued in one turn of the event loop go out in
        one write (``flush``). A round's results arrive together from many sites: one socket
        write each cost the server ~0.25 ms per site (a system call that also wakes the
        controller process), more than the rest of taking a small result."""
        # Once there is an outcome the controller is ending (its last word read, or it is being
        # killed for an abort): nothing more is written to it.
        if self.writer is not None and not self.writer.is_closing() and not self._ended():
            if not self._lines:
                asyncio.get_running_loop().call_soon(self.flush)
            line = encode(encode_message(message))
            self._lines.append(line)
            self._bytes += len(line)

    def flush(self, ending: bool = False) -> None:
        """Write the queued lines in order, unless the controller is being ended meanwhile (an
        abort: see ``send``); ``ending``: its last word is read and it still waits for our
        lines up to EOF (``release``)."""
        lines, self._lines = self._lines, []
        self._bytes = 0
        writer = self.writer
        if lines and writer is not None and not writer.is_closing() and (ending or not self._ended()):
            writer.write(b"".join(lines))

    def release(self) -> None:
        """Its last word is read: close our side, which is what the controller waits for before
        exiting. Until then it is alive to receive whatever we send, so a write never meets a
        closed socket; asyncio would answer that with an error that also discards the lines not
        yet read, such as this very outcome (SyncChannel.wait_closed)."""
        self.flush(ending=True)  # what was queued before its last word, in order
        if self.writer is not None and self.writer.can_write_eof() and not self.writer.is_closing():
            try:
                self.writer.write_eof()
            except OSError:
                pass

    def takes_bytes(self, encoded_size: int) -> bool:
        """Whether a message of ``encoded_size`` more bytes may be queued: only while the lines
        waiting for the workflow to read them stay under CONTROLLER_BACKLOG_BYTES."""
        writer = self.writer
        if writer is None or writer.is_closing():
            return False
        queued = self._bytes + writer.transport.get_write_buffer_size()
        return queued + encoded_size <= CONTROLLER_BACKLOG_BYTES

    def close(self) -> None:
        """The workflow's process has ended: our side goes."""
        if self.writer is not None:
            self.writer.close()
