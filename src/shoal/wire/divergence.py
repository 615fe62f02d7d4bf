"""Telling a user that a run diverged: a global loss that is not a number or that exploded.

A diverging job still "finishes" (every round ran, exit 0), so without this a user learns of it
only by reading the numbers. The server (job notices: meta, monitor) and the simulator (its
summary) both watch the aggregated metrics of each round through ``LossWatch``, so the two say
the same thing for the same rounds. Standard library only: the server imports it at start.
"""

from __future__ import annotations

import math
from typing import Any

#: A loss this many times its first finite value has exploded (a learning rate too large for
#: the data grows it by orders of magnitude a round; noise between rounds is far below this).
GROWTH_LIMIT = 1000.0


def is_loss(key: str) -> bool:
    """Which metrics are losses: names with "loss" or "mse" in them (loss, val_loss, mse)."""
    lowered = key.lower()
    return "loss" in lowered or "mse" in lowered


class LossWatch:
    """Fed each round's global metrics in order; says once per metric when it diverged."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.reported: set[str] = set()

    def feed(self, round_number: Any, metrics: dict[str, Any]) -> list[str]:
        """Notices for this round (empty when nothing new went wrong). A null value is a
        non-finite one: JSON carries NaN and infinity as null (shoal.wire.jsonout)."""
        out: list[str] = []
        shown = round_number + 1 if isinstance(round_number, int) else "?"
        for key, value in metrics.items():
            if not is_loss(key) or key in self.reported:
                continue
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                self.reported.add(key)
                out.append(
                    f"diverged: the global {key} is not a finite number after round {shown}; "
                    "lower the learning rate or check the data"
                )
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            first = self.first.setdefault(key, float(value))
            if first > 0 and value > first * GROWTH_LIMIT:
                self.reported.add(key)
                out.append(
                    f"diverged: the global {key} grew from {first:.6g} to {float(value):.6g} "
                    f"by round {shown}; lower the learning rate or check the data"
                )
        return out


def divergence_notices(rounds: list[dict[str, Any]]) -> list[str]:
    """Every notice for a finished list of rounds (``{"round": n, "metrics": {...}}``)."""
    watch = LossWatch()
    out: list[str] = []
    for entry in rounds:
        out += watch.feed(entry.get("round"), dict(entry.get("metrics") or {}))
    return out
