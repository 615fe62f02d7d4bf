"""FedStatsRecipe: federated statistics of every site's CSV, run by the built-in stats client."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, ClassVar

from shoal.errors import ShoalError
from shoal.recipes.base import Recipe, knob
from shoal.workflows.fedstats import ALL_STATISTICS


@dataclass(kw_only=True)
class FedStatsRecipe(Recipe):
    """Federated statistics: per-feature count, sum, mean, std, min, max and histogram of every site's data.

    Sites run the built-in client ``shoal.fl.clients.stats`` (allowed where custom code is not)
    on a numeric CSV with a header; a site with fewer than ``min_count`` rows withholds all its
    numbers. Results: ``statistics.json`` in the job's workspace (see docs/fedstats.md).
    """

    recipe_name: ClassVar[str] = "fedstats"
    workflow: ClassVar[str] = "fedstats"

    train_script: str | None = knob(None, "unused: sites run the built-in stats client")
    client_module: str | None = knob("shoal.fl.clients.stats", "the built-in client that answers both passes")
    data: str = knob(
        "data/{site}.csv",
        "each site's CSV ({site} becomes the site name; relative paths look in the app's custom/ first)",
    )
    min_count: int = knob(10, "a site with fewer rows withholds all its numbers")
    bins: int = knob(10, "equal-width histogram bins over each feature's global [min, max]")
    statistics: list[str] = knob(list(ALL_STATISTICS), "what to report (std is ddof=0; std_sample ddof=1)")

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ShoalError("INVALID_ARGS", f"min_count must be at least 1, got {self.min_count}")
        if self.bins < 1:
            raise ShoalError("INVALID_ARGS", f"bins must be at least 1, got {self.bins}")
        unknown = [s for s in self.statistics if s not in ALL_STATISTICS]
        if unknown or not self.statistics:
            raise ShoalError(
                "INVALID_ARGS",
                f"unknown statistics {unknown}" if unknown else "statistics must name at least one",
                hint=f"Choose from {', '.join(ALL_STATISTICS)}.",
            )
        if not self.data:
            raise ShoalError("INVALID_ARGS", "data must name each site's CSV file")
        if not self.train_args:
            data = self.data if re.fullmatch(r"[\w@%+=:,./{}-]+", self.data) else shlex.quote(self.data)
            self.train_args = f"--data {data} --min-count {self.min_count}"
        super().__post_init__()

    def workflow_args(self) -> dict[str, Any]:
        return {
            **super().workflow_args(),
            "statistics": list(self.statistics),
            "min_count": self.min_count,
            "bins": self.bins,
        }
