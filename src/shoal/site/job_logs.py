"""A site job's logs: the training script's output kept, streamed and uploaded.

The script's stdout and stderr are written twice in the job's folder: as they came
(``log.txt``) and as JSON records stamped with the time the site saw each line (``log.json``).
While the job runs the records stream to the server (``LogChunk``); when it ends both files are
uploaded, cut to their end if the server would refuse them whole. The site's own lines about the
job (why it could not start, a result the server no longer takes) go in ``log.txt`` too.

A part the job (``shoal.site.job.SiteJob``) owns, as decisions/0049 describes: it keeps the
files and their workings; what a failure to keep them means for the job is the job's to decide
(the ``failed`` callable of ``capture``). It sees the agent through ``LogHost`` only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from shoal.wire import routes
from shoal.wire.messages import Message
from shoal.wire.site import LogChunk, SiteNotice
from shoal.wire.status import brief

log = logging.getLogger("shoal.site")

LOG_STREAM_INTERVAL = 0.5  # seconds between live log chunks sent to the server
LOG_CHUNK_MAX = 256 * 1024
OUTPUT_READ = 64 * 1024  # the script's output is read in pieces of this, whatever its lines
RECORD_MAX = 64 * 1024  # a longer output line (a progress bar redrawn with \r) is cut into records
# The server's MAX_LOG_BYTES (shoal.server.site_jobs), which refuses a longer log whole; the
# site does not import server code, and a unit test keeps the two equal.
LOG_UPLOAD_MAX = 64 * 2**20
CUT_NOTE_MAX = 1024  # room kept for the first line of a cut log, which says what was cut
LINE_SEARCH = 2**20  # how far a cut log looks for the start of its first whole line


class LogHost(Protocol):
    """What a job's logs need of the site agent: its name (in each record), its control
    channel (live chunks, a notice that a log was cut) and the site API (the uploads)."""

    name: str

    async def send(self, message: Message, keep: bool = False) -> bool:
        """Report to the server on the control channel."""
        ...

    async def upload(self, path: str, src: Path, headers: dict[str, str]) -> None:
        """PUT a file to the site API."""
        ...


class JobLogs:
    """The log files of one job at a site, in its folder ``folder``."""

    def __init__(self, agent: LogHost, job_id: str, folder: Path) -> None:
        self.agent = agent
        self.job_id = job_id
        self.folder = folder
        self._capture: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.folder / "log.txt"

    @property
    def json_path(self) -> Path:
        return self.folder / "log.json"

    def append(self, line: str) -> None:
        """A line of the site's own in the job's log; best effort: the disk that refuses it
        is often the very failure being logged, and that must still be reported."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(line.rstrip("\n") + "\n")
        except OSError as exc:
            log.warning("job %s: cannot write to its log (%s): %s", self.job_id, exc, line)

    def capture(self, stream: asyncio.StreamReader, failed: Callable[[OSError], Awaitable[None]]) -> None:
        """Start keeping the script's output (``stream``); ``failed`` is told if the disk refuses it."""
        self._capture = asyncio.get_running_loop().create_task(self._capture_output(stream, failed))

    async def _capture_output(
        self, stream: asyncio.StreamReader, failed: Callable[[OSError], Awaitable[None]]
    ) -> None:
        """Write the script's output twice: as it came (log.txt) and as JSON records (log.json),
        one per line, stamped with the time the site saw it. Output is read in pieces, not
        lines: a line of any length (a progress bar that only ever redraws with \\r) must not
        stop the reading, or the script blocks on a full pipe. Past RECORD_MAX a line is cut
        into several records."""
        try:
            await self._write_output(stream)
        except OSError as exc:
            # A full or read-only disk: the job cannot keep its output, so it fails now, saying
            # why, rather than hanging on a script blocked on a pipe nobody reads.
            log.error("job %s: cannot write the script's output: %s", self.job_id, exc)
            await failed(exc)
            while await stream.read(OUTPUT_READ):  # drained, so nothing blocks on the pipe
                pass

    async def _write_output(self, stream: asyncio.StreamReader) -> None:
        with self.path.open("ab") as text, self.json_path.open("a", encoding="utf-8") as records:
            pending = b""
            while chunk := await stream.read(OUTPUT_READ):
                text.write(chunk)
                text.flush()
                *lines, pending = (pending + chunk).split(b"\n")
                while len(pending) >= RECORD_MAX:  # an unfinished line: its full pieces go now
                    cut = _utf8_boundary(pending[:RECORD_MAX])
                    lines.append(pending[:cut])
                    pending = pending[cut:]
                for line in lines:
                    for piece in _pieces(line):
                        records.write(self._record(piece))
                records.flush()
            if pending:
                records.write(self._record(pending))

    def _record(self, line: bytes) -> str:
        record = {
            "asctime": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "site": self.agent.name,
            "job_id": self.job_id,
            "message": line.decode("utf-8", "replace").rstrip("\r"),
        }
        return json.dumps(record) + "\n"

    async def captured(self, grace: float, *, stop: bool) -> None:
        """Wait up to ``grace`` seconds for the output the script wrote before it exited; past
        that, the capture goes on (for a failure report's tail) or is stopped (``stop``: the
        job's end, whose log is uploaded now)."""
        if self._capture is None:
            return
        try:
            await asyncio.wait_for(self._capture if stop else asyncio.shield(self._capture), grace)
        except TimeoutError:
            if stop:
                self._capture.cancel()
        except Exception:  # reported by the capture itself; the job goes on to its exit or end
            log.exception("job %s: capturing the script's output failed", self.job_id)

    async def stream(self, ending: Callable[[], bool]) -> None:
        """Send the script's new log records to the server while it runs (whole lines only),
        until ``ending``. The records (log.json), not the raw output: each line carries the
        time the site saw it, which the raw output has not; log.txt follows when the job ends."""
        offset = 0
        while not ending():
            await asyncio.sleep(LOG_STREAM_INTERVAL)
            try:
                with self.json_path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(LOG_CHUNK_MAX)
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            if not cut and len(data) == LOG_CHUNK_MAX:
                cut = _utf8_boundary(data)  # a line longer than a chunk goes in pieces
            if cut and not ending():
                offset += cut
                chunk = data[:cut].decode("utf-8", "replace")
                await self.agent.send(LogChunk(job_id=self.job_id, file="log.json", data=chunk))

    def tail(self, lines: int = 5, window: int = 8192) -> str:
        """The script's last few lines of output, from the end of its log only (it can be huge)."""
        try:
            with self.path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - window))
                text = f.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return brief("; last output: " + " | ".join(text), 2000) if text else ""

    async def upload(self) -> None:
        """Both files to the server at the job's end; a failed upload is logged, not raised."""
        # One after the other: the server receives both files of a site through the same
        # temporary file name (log.part), so two uploads at once could swap their contents.
        for path, route in (
            (self.path, routes.fill(routes.SITE_JOB_LOG, job_id=self.job_id)),
            (self.json_path, routes.fill(routes.SITE_JOB_LOG, job_id=self.job_id) + "?file=log.json"),
        ):
            try:
                await self._upload_log(path, route)
            except Exception as exc:  # the job's end is still confirmed
                log.warning("job %s: could not upload %s: %s", self.job_id, path.name, exc)

    async def _upload_log(self, path: Path, route: str) -> None:
        """Upload one log file. The server refuses a log past LOG_UPLOAD_MAX whole, so a longer
        one goes as its last part (what explains a failure is at the end), from a line (or
        record) boundary, and the job's meta gets a notice saying it was cut."""
        if not path.exists():
            return  # the script never started, or the disk refused the file: nothing to send
        size = path.stat().st_size
        if size <= LOG_UPLOAD_MAX:
            await self.agent.upload(route, path, {})
            return
        tail = path.with_name(path.name + ".tail")
        try:
            dropped = await asyncio.to_thread(self._write_log_tail, path, tail, size)
            said = (
                f"{path.name} was cut for upload: its first {dropped} of {size} bytes were dropped "
                f"(the server keeps at most {LOG_UPLOAD_MAX // 2**20} MiB); the whole file is in the "
                "site's workspace"
            )
            await self.agent.send(SiteNotice(job_id=self.job_id, message=said), keep=True)
            await self.agent.upload(route, tail, {})
        finally:
            tail.unlink(missing_ok=True)

    def _write_log_tail(self, path: Path, tail: Path, size: int) -> int:
        """Write the end of ``path`` that fits the server's limit to ``tail``, after a first
        line saying how much was cut; the bytes dropped."""
        start = size - (LOG_UPLOAD_MAX - CUT_NOTE_MAX)
        with path.open("rb") as src:
            src.seek(start)
            newline = src.read(LINE_SEARCH).find(b"\n")
            start += newline + 1  # the first whole line; a line longer than LINE_SEARCH is cut
            src.seek(start)
            note = f"shoal site: the first {start} of {size} bytes of this log were cut (server limit)"
            line = self._record(note.encode()) if path == self.json_path else note + "\n"
            with tail.open("wb") as out:
                out.write(line.encode("utf-8")[:CUT_NOTE_MAX])
                shutil.copyfileobj(src, out, OUTPUT_READ)
        return start


def _utf8_boundary(data: bytes) -> int:
    """How much of ``data`` to send so that no UTF-8 character is split: all of it, unless it
    ends inside a multi-byte character; then up to that character's lead byte."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: nothing open
            return len(data)
        if byte >= 0xC0:  # the lead byte of the last character: complete if all of it is here
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)  # not UTF-8: cut anywhere


def _pieces(line: bytes) -> list[bytes]:
    """A line as records of at most RECORD_MAX bytes, cut between characters."""
    pieces = []
    while len(line) > RECORD_MAX:
        cut = _utf8_boundary(line[:RECORD_MAX])
        pieces.append(line[:cut])
        line = line[cut:]
    return [*pieces, line]
