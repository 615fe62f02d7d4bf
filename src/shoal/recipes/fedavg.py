"""The recipes that train one model: FedAvg, FedProx, cyclic weight transfer, cross-site eval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import ShoalError
from shoal.recipes.base import Recipe, knob


@dataclass(kw_only=True)
class FedAvgRecipe(Recipe):
    """Federated averaging: sites train on the global model; the mean weighted by examples wins."""

    recipe_name = "fedavg"
    workflow = "fedavg"

    num_rounds: int = knob(1, "training rounds")
    initial_model: str | None = knob(
        None, "a .safetensors file beside job.py to start from (default: the sites' own initial weights)"
    )
    secure_aggregation: bool = knob(False, "the server learns only each round's sum (docs/privacy.md)")
    secagg_threshold: int | None = knob(
        None, "with secure_aggregation: sites that must stay until a round is unmasked (default a majority)"
    )
    secagg_neighbors: int | None = knob(
        None, "with secure_aggregation: SecAgg+'s sparse graph, partners per site (default: every other site)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_rounds < self._min_rounds():
            raise ShoalError("INVALID_ARGS", f"num_rounds must be at least {self._min_rounds()}")
        if self.secure_aggregation and ((self.privacy or {}).get("server_dp") or {}).get("adaptive"):
            raise ShoalError(
                "INVALID_ARGS",
                "secure_aggregation does not combine with adaptive clipping (the server never sees an "
                "update's norm)",
            )
        if self.secagg_threshold is not None and self.secagg_threshold < 2:
            raise ShoalError(
                "INVALID_ARGS", f"secagg_threshold must be at least 2, got {self.secagg_threshold}"
            )
        if self.secagg_neighbors is not None and (not self.secure_aggregation or self.secagg_neighbors < 2):
            raise ShoalError("INVALID_ARGS", "secagg_neighbors (at least 2) goes with secure_aggregation")
        if self.initial_model and self.initial_model not in self.custom_files:
            self.custom_files = [*self.custom_files, self.initial_model]

    def _min_rounds(self) -> int:
        return 1

    def workflow_args(self) -> dict[str, Any]:
        args = {**super().workflow_args(), "num_rounds": self.num_rounds}
        if self.secure_aggregation:
            args["secure_aggregation"] = True
            if self.secagg_threshold is not None:
                args["secagg_threshold"] = self.secagg_threshold
            if self.secagg_neighbors is not None:
                args["secagg_neighbors"] = self.secagg_neighbors
        if self.initial_model:
            args["initial_model"] = f"custom/{self.initial_model.rsplit('/', 1)[-1]}"
        return args


@dataclass(kw_only=True)
class FedProxRecipe(FedAvgRecipe):
    """FedAvg with a proximal term (mu) that keeps each site's training near the global model."""

    recipe_name = "fedprox"

    mu: float = knob(0.01, "weight of the proximal term mu/2·||w - w_global||² (sent as meta 'mu')")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mu < 0:
            raise ShoalError("INVALID_ARGS", f"mu must not be negative, got {self.mu}")

    def workflow_args(self) -> dict[str, Any]:
        return {**super().workflow_args(), "task_meta": {"mu": self.mu}}


@dataclass(kw_only=True)
class CyclicRecipe(FedAvgRecipe):
    """Cyclic weight transfer: the model goes from site to site; each trains on it in turn."""

    recipe_name = "cyclic"
    workflow = "cyclic"

    order: str = knob("fixed", "'fixed' (sites by name) or 'random' (reshuffled each cycle)")
    seed: int = knob(0, "seed of the random order")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in ("fixed", "random"):
            raise ShoalError("INVALID_ARGS", f"order must be 'fixed' or 'random', got {self.order!r}")

    def workflow_args(self) -> dict[str, Any]:
        return {**super().workflow_args(), "order": self.order, "seed": self.seed}


@dataclass(kw_only=True)
class CrossSiteEvalRecipe(FedAvgRecipe):
    """Cross-site evaluation: after FedAvg, every site evaluates every site's model and the global."""

    recipe_name = "cross_site_eval"
    workflow = "cross_site_eval"

    evaluate_local: bool = knob(True, "also evaluate each site's own last update")

    def _min_rounds(self) -> int:
        return 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_rounds == 0 and not self.initial_model:
            raise ShoalError("INVALID_ARGS", "with num_rounds 0, give an initial_model to evaluate")

    def workflow_args(self) -> dict[str, Any]:
        return {**super().workflow_args(), "evaluate_local": self.evaluate_local}
