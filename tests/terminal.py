"""Run the real CLI on a terminal: a pseudo-terminal (``os.openpty``) as its stdin, stdout and
stderr, of a known size, and everything it drew read back as the terminal received it."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass

from tests.conftest import Cli

#: Drawing in place: a carriage return that is not the terminal's own line end (a pty turns
#: each "\n" into "\r\n"), or an escape sequence.
REDRAW_MARKS = ("\x1b[",)


@dataclass
class Screen:
    returncode: int
    output: str  # what the terminal received, stdout and stderr interleaved as written

    @property
    def redraws(self) -> bool:
        """Did the command draw in place (a lone ``\\r`` or an escape sequence)?"""
        lone_cr = any(not part.startswith("\n") for part in self.output.split("\r")[1:])
        return lone_cr or any(mark in self.output for mark in REDRAW_MARKS)


def run_in_terminal(cli: Cli, *args: str, columns: int = 120, rows: int = 40, timeout: float = 120) -> Screen:
    """``shoal ARGS`` with a terminal of ``columns`` x ``rows`` as its stdin, stdout and stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in cli.env().items() if k != "COLUMNS"}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"shoal {' '.join(args)} ran past {timeout}s"
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return Screen(proc.returncode, b"".join(chunks).decode(errors="replace"))


def drawn_in_place(text: str) -> bool:
    """Does ``text`` (a pipe's capture) hold anything only a terminal should get?"""
    return "\r" in text or "\x1b" in text
