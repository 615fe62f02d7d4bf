"""A deny list the server honours without a restart: revoked certificates and participants.

``<server kit>/local/revoked.json``: ``{"serials": ["3A9F..."], "names": ["lead@x.org"]}``.
The file is re-read whenever its modification time changes, so revoking takes effect on the
next request. (A certificate revocation list signed by the CA would serve the same purpose;
a plain file keeps the operator's workflow to one edit.)

A damaged file (not JSON, a half-written save, ``"names": "x@y.org"``) never un-revokes
anyone: at start it stops the server (``load`` raises LOCAL_FILE_ERROR naming the file and
the key); while running, the last good list stays in force and the problem is logged, once
per change of the file, until the file is fixed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.security.localfiles import json_object, read_operator_json, string_list

log = logging.getLogger("shoal.server")


class DenyList:
    def __init__(self, path: Path) -> None:
        self.path = path
        # (mtime, size) of the version read: a save finishing within one mtime tick of a
        # half-written read still changes the size, so it is read again.
        self._mtime: tuple[int, int] | None = None
        self._serials: set[str] = set()
        self._names: set[str] = set()

    def load(self) -> None:
        """Read the file now; LOCAL_FILE_ERROR if it is damaged (for start-up)."""
        self._mtime = None
        self._read()

    def refresh(self) -> None:
        """Re-read the file if it changed; a damaged file keeps the last good list in force."""
        try:
            self._read()
        except ShoalError as err:
            log.error("%s; the previous revocation list stays in force", err.detail)

    def _read(self) -> None:
        try:
            stat = os.stat(self.path)
            mtime = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            self._mtime, self._serials, self._names = None, set(), set()
            return
        except OSError:
            mtime = (-1, -1)  # unreadable: _parse says why, and the last good list stays
        if mtime == self._mtime:
            return
        self._mtime = mtime  # a damaged version is reported once, not on every request
        self._serials, self._names = self._parse()

    def _parse(self) -> tuple[set[str], set[str]]:
        data = read_operator_json(self.path)
        data = json_object({} if data is None else data, self.path)
        serials = string_list(data.get("serials", []), self.path, "serials")
        names = string_list(data.get("names", []), self.path, "names")
        return {s.upper().lstrip("0") for s in serials}, set(names)

    def reason(self, who: Identity) -> str | None:
        """Why ``who`` is refused, or None."""
        self.refresh()
        if who.name in self._names:
            return f"participant '{who.name}' is revoked"
        if who.serial and who.serial.upper().lstrip("0") in self._serials:
            return f"certificate {who.serial} is revoked"
        return None
