"""A deny list the server honours without a restart: revoked certificates and participants.

``<server kit>/local/revoked.json``: ``{"serials": ["3A9F..."], "names": ["lead@x.org"]}``.
The file is re-read whenever its modification time changes, so revoking takes effect on the
next request. (A certificate revocation list signed by the CA would serve the same purpose;
a plain file keeps the operator's workflow to one edit.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shoal.security.identity import Identity


class DenyList:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._serials: set[str] = set()
        self._names: set[str] = set()

    def _refresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            self._mtime, self._serials, self._names = None, set(), set()
            return
        if mtime == self._mtime:
            return
        data = json.loads(self.path.read_text() or "{}")
        self._serials = {str(s).upper().lstrip("0") for s in data.get("serials", [])}
        self._names = {str(n) for n in data.get("names", [])}
        self._mtime = mtime

    def reason(self, who: Identity) -> str | None:
        """Why ``who`` is refused, or None."""
        self._refresh()
        if who.name in self._names:
            return f"participant '{who.name}' is revoked"
        if who.serial and who.serial.upper().lstrip("0") in self._serials:
            return f"certificate {who.serial} is revoked"
        return None
