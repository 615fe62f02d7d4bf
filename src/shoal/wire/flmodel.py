"""FLModel: what a training script receives from the server and sends back, and what a workflow
works with (both sides agree on it, so it lives in shoal.wire; user code imports shoal.fl)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FLModel:
    """Weights plus what the server needs to aggregate them.

    ``params`` maps tensor names to numpy arrays (or torch tensors, converted at the edge).
    ``num_examples`` weights this update in FedAvg; ``metrics`` are numbers the server
    aggregates per round (weighted the same way) and records in metrics_summary.json.
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    num_examples: int = 1
    current_round: int | None = None
    total_rounds: int | None = None
