"""The audit log: who did what to which job, when, with which certificate (one JSON line each)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from shoal.security.identity import Identity


class AuditLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def record(
        self, who: Identity | None, action: str, target: dict[str, Any], outcome: dict[str, Any]
    ) -> None:
        entry = {
            "time": time.time(),
            "who": who.name if who else None,
            "org": who.org if who else None,
            "role": who.role if who else None,
            "kind": who.kind if who else None,
            "cert_serial": who.serial if who else None,
            "action": action,
            **target,
            **outcome,
        }
        self._file.write(json.dumps(entry, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
