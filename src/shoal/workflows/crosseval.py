"""Cross-site evaluation: every site evaluates every site's model and the global one.

Training runs first (FedAvg, ``num_rounds``; 0 evaluates the initial model only). The sites'
own models are their updates of the last round, which the server already receives, so no site
ships anything extra. Then one "validate" task per model goes to every site; the answers fill
a matrix, ``cross_site_eval.json``: ``{"models": [...], "validators": [...],
"matrix": {model: {validator: metrics}}}``, where a model is "global" or a site's name.
"""

from __future__ import annotations

from typing import Any

from shoal.wire.flmodel import FLModel
from shoal.workflows.base import RoundFailed, WorkflowContext
from shoal.workflows.fedavg import FedAvg


class CrossSiteEval(FedAvg):
    """Arguments: those of FedAvg (``num_rounds`` may be 0) plus ``evaluate_local`` (bool,
    default true): also evaluate each site's own last update, not only the global model."""

    min_rounds = 0  # evaluate the initial model only

    #: The evaluation after training needs every site's last update in memory, which no
    #: checkpoint holds: a cross-site evaluation job does not resume after a server restart.
    resumable = False

    def __init__(self, ctx: WorkflowContext, *, evaluate_local: bool = True, **extra: Any) -> None:
        super().__init__(ctx, **extra)
        self.evaluate_local = evaluate_local

    def run(self) -> None:
        model = self.initial_model(self.initial_model_path)
        local: dict[str, FLModel] = {}
        if self.num_rounds > 0:
            model, local = self.train(model, keep_last=self.evaluate_local)
            self.ctx.save_model(model)
        elif not model.params:
            raise ValueError("with num_rounds 0 there is nothing to evaluate: give an initial_model")
        candidates = {"global": model, **dict(sorted(local.items()))}
        matrix: dict[str, dict[str, dict[str, float]]] = {}
        for index, (owner, candidate) in enumerate(candidates.items()):
            task = FLModel(params=candidate.params, meta={"model_owner": owner})
            answers = self.collect(
                "validate", task, round_number=index, total_rounds=len(candidates), min_responses=1
            )
            matrix[owner] = {site: dict(result.metrics) for site, result in answers}
            if not matrix[owner]:
                raise RoundFailed(f"no site evaluated the {owner} model")
        validators = sorted({site for row in matrix.values() for site in row})
        self.ctx.write_json(
            "cross_site_eval.json", {"models": list(candidates), "validators": validators, "matrix": matrix}
        )
        self.ctx.write_metrics_summary("cross_site_eval", num_rounds=self.num_rounds, cross_site_eval=matrix)
