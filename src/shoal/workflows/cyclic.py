"""Cyclic weight transfer: the model visits the sites one after another, each training on it.

No averaging: site 2 starts from what site 1 sent, and so on; one round is one full cycle.
Useful when sites are few and their data differ little, and as a baseline against FedAvg.
"""

from __future__ import annotations

import random
from typing import Any

from shoal.wire.flmodel import FLModel
from shoal.workflows.aggregate import mismatch, tensor_specs
from shoal.workflows.base import BadUpdate, RoundFailed, Workflow, WorkflowContext


class Cyclic(Workflow):
    """Arguments (``config_fed_server.json`` "args"):

    - ``num_rounds`` (int, default 1): full cycles over the sites
    - ``order`` ("fixed" or "random", default "fixed"): fixed is the sites sorted by name;
      random reshuffles every cycle with ``seed``
    - ``seed`` (int, default 0), ``initial_model``, ``round_timeout`` (per site visit)
    A site that drops out is skipped; the cycle fails only when no site is left. A site that
    sends back tensors other than those it was given (names, shapes, dtypes) fails the job,
    named: the next site would otherwise train on them and fail in its place.
    """

    def __init__(
        self,
        ctx: WorkflowContext,
        *,
        num_rounds: int = 1,
        order: str = "fixed",
        seed: int = 0,
        initial_model: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(ctx, **extra)
        if num_rounds < 1:
            raise ValueError("num_rounds must be at least 1")
        if order not in ("fixed", "random"):
            raise ValueError(f"order must be 'fixed' or 'random', got {order!r}")
        self.num_rounds = num_rounds
        self.order = order
        self.rng = random.Random(seed)
        self.initial_model_path = initial_model

    def run(self) -> None:
        model = self.initial_model(self.initial_model_path)
        for rnd in range(self.num_rounds):
            sites = sorted(self.ctx.sites)
            if self.order == "random":
                self.rng.shuffle(sites)
            visited: list[str] = []
            metrics: dict[str, float] = {}
            for site in sites:
                if site not in self.ctx.active_sites():
                    continue
                sent = tensor_specs(model.params)  # none in round 0 without an initial model
                try:
                    for _, update in self.collect(
                        "train", model, sites=[site], round_number=rnd, total_rounds=self.num_rounds
                    ):
                        reason = mismatch(sent, update.params) if sent else None
                        if reason is not None:
                            raise BadUpdate(site, f"{reason} (as in the model it was sent)")
                        model = FLModel(params=dict(update.params))
                        metrics = dict(update.metrics)
                        visited.append(site)
                except RoundFailed as exc:
                    if exc.site != site or isinstance(exc, BadUpdate):  # the job was stopped, the
                        raise  # channel closed, or the site sent what no site should train on
            if not visited:
                raise RoundFailed(f"cycle {rnd}: no site took the model")
            self.ctx.record_round(rnd, metrics, visited)
        self.ctx.save_model(model)
        self.ctx.write_metrics_summary("cyclic", num_rounds=self.num_rounds)
