"""Live log settings for a job's processes: a level, or a mode that changes the line format.

``shoal job log-config`` sends one of these to the server's workflow process and to the sites'
training scripts while they run; each applies it to its root logger on the spot.
"""

from __future__ import annotations

import logging

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = {
    "concise": "%(asctime)s - %(levelname)s - %(message)s",
    "msg_only": "%(message)s",
    "full": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    "verbose": "%(asctime)s - %(process)d - %(name)s:%(lineno)d - %(levelname)s - %(message)s",
    "reload": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
}
MODES = tuple(FORMATS)


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
        handler.setFormatter(logging.Formatter(FORMATS[setting]))
