"""Live log settings for a job's processes: a level, or a mode that changes the line format.

``shoal job log-config`` sends one of these to the server's workflow process and to the sites'
training scripts while they run; each applies it to its root logger on the spot.

Every shoal process logs its times in UTC, marked ``Z`` (``2026-12-02 05:06:10.278Z``): ``job
logs --since`` compares them with the times ``job meta`` reports, which are UTC, and a server
in another time zone than its operator must not shift the filter by hours.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

LINE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = {
    "concise": "%(asctime)s - %(levelname)s - %(message)s",
    "msg_only": "%(message)s",
    "full": LINE_FORMAT,
    "verbose": "%(asctime)s - %(process)d - %(name)s:%(lineno)d - %(levelname)s - %(message)s",
    "reload": LINE_FORMAT,
}
MODES = tuple(FORMATS)


class UtcFormatter(logging.Formatter):
    """Log times in UTC with a ``Z``, whatever the machine's time zone."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%d %H:%M:%S"
    default_msec_format = "%s.%03dZ"


def setup(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """A process's logging: its root logger at ``level``, UTC lines to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(UtcFormatter(LINE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def apply(setting: str) -> None:
    """Apply a level (DEBUG..CRITICAL) or a mode (concise, msg_only, full, verbose, reload)."""
    root = logging.getLogger()
    if setting.upper() in LEVELS:
        root.setLevel(setting.upper())
        return
    if setting not in FORMATS:
        raise ValueError(f"unknown log setting {setting!r}")
    if setting == "reload":
        root.setLevel(logging.INFO)
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(UtcFormatter(FORMATS[setting]))
