r"""Progress drawn in place on a terminal: a status line redrawn with ``\r``, and a bar.

Only for people: ``live(args)`` is true when the output is human text and both stdout and
stderr are terminals. Everything else (``--format json``/``jsonl``, a pipe, a file, ``TERM=dumb``)
gets no carriage return and no escape sequence, byte for byte what it got before. The line is
drawn on stderr (stdout keeps the command's answer), its text escaped as all human text is
(``shoal.cli.output.terminal_safe``: a site's name or a metric's key can move no cursor), and
cut to the terminal's width so it never wraps (a wrapped line cannot be redrawn in place).

Imported only by the commands that draw (monitor, submit, download, simulate), never on the
CLI's start-up path. Standard library only.
"""

from __future__ import annotations

import sys
import time

from shoal import settings
from shoal.cli.output import terminal_columns, terminal_safe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

CLEAR_TO_END = "\x1b[K"
REDRAW_EVERY = 0.1  # seconds between two redraws of a transfer (its bytes come in 1 MiB pieces)
#: A transfer smaller than this is over before a bar could say anything: no bar at all.
LARGE_TRANSFER = 4 * 2**20
BAR_WIDTH = 20


def live(args: Any) -> bool:
    """Draw progress in place? Human output (``--format txt``) on a terminal: stdout and stderr
    both, so ``shoal job submit ... | cat`` and ``2>log`` stay plain."""
    if getattr(args, "format", "txt") != "txt" or settings.text(settings.TERM) == "dumb":
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#######-------------]``: ``fraction`` (clamped to 0..1) of ``width`` cells filled."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def size_text(size: float) -> str:
    """Bytes for people, in powers of 1024: ``512 B``, ``3.0 KiB``, ``12.4 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    whole = int(max(0.0, seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class StatusLine:
    """One line of stderr redrawn in place. ``above`` prints a lasting line over it (a notice)
    and draws it again below; ``done`` leaves the terminal on a fresh line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.text = ""

    def show(self, text: str) -> None:
        width = max(10, terminal_columns() - 1)  # the last column would wrap on some terminals
        safe = terminal_safe(text.replace("\n", " "))
        self.text = safe if len(safe) <= width else safe[: width - 1] + "…"
        self.stream.write("\r" + self.text + CLEAR_TO_END)
        self.stream.flush()

    def above(self, text: str) -> None:
        self.stream.write("\r" + CLEAR_TO_END + terminal_safe(text.rstrip("\n")) + "\n")
        self.stream.write(self.text + CLEAR_TO_END if self.text else "")
        self.stream.flush()

    def clear(self) -> None:
        """Take the line away (what follows is printed where it was)."""
        if self.text:
            self.stream.write("\r" + CLEAR_TO_END)
            self.stream.flush()
            self.text = ""

    def done(self) -> None:
        """Keep the line as it was last drawn, and move below it."""
        if self.text:
            self.stream.write("\n")
            self.stream.flush()
            self.text = ""


class Transfer:
    """A transfer's progress, called with (bytes done, bytes in all or None) as pieces go:
    ``uploading job.zip  12.0 MiB / 40.0 MiB [######--------------] 30%  25.1 MiB/s  0:00:01 left``.
    Nothing is drawn for a transfer under LARGE_TRANSFER bytes."""

    def __init__(self, verb: str, name: str, line: StatusLine | None = None) -> None:
        self.verb, self.name = verb, name
        self.line = line or StatusLine()
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        if total is None or total < LARGE_TRANSFER:
            return
        now = time.monotonic()
        if self._drawn_at and now - self._drawn_at < REDRAW_EVERY and done < total:
            return
        self._drawn_at = now
        self.line.show(self.text(now))

    def text(self, now: float) -> str:
        total = self.total or 0
        took = max(now - self.started, 1e-6)
        rate = self.done / took
        words = f"{self.verb} {self.name}  {size_text(self.done)} / {size_text(total)} "
        words += f"{bar(self.done / total if total else 1.0)} {100 * self.done // max(total, 1):3d}%"
        if self.done >= total:
            return words + f"  {size_text(rate)}/s  in {clock(took)}"
        left = (total - self.done) / rate if rate > 0 else None
        return words + f"  {size_text(rate)}/s" + (f"  {clock(left)} left" if left is not None else "")

    def finish(self) -> None:
        """Leave the last drawing (at 100%) on the screen, and the cursor below it."""
        if self.total is not None and self.total >= LARGE_TRANSFER:
            self.line.show(self.text(time.monotonic()))
        self.line.done()
