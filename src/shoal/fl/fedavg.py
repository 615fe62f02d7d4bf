"""FedAvg: each round, every site trains on the global model; the new global model is the
example-weighted mean of their updates."""

from __future__ import annotations

from typing import Any

from shoal.fl.aggregate import WeightedSum
from shoal.fl.model import FLModel
from shoal.fl.workflow import Workflow, WorkflowContext


class FedAvg(Workflow):
    """Arguments (``config_fed_server.json`` "args"):

    - ``num_rounds`` (int, default 1)
    - ``min_responses`` (int, default: the job's min_clients): results needed to close a round
    - ``round_timeout`` (seconds, default 0 = none): deadline for each round
    - ``initial_model`` (path inside the app folder to a .safetensors file; default: sites start
      from their own initial weights and round 0 receives an empty model)
    """

    def __init__(
        self,
        ctx: WorkflowContext,
        *,
        num_rounds: int = 1,
        min_responses: int | None = None,
        round_timeout: float = 0.0,
        initial_model: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(ctx, **extra)
        if num_rounds < 1:
            raise ValueError("num_rounds must be at least 1")
        self.num_rounds = num_rounds
        self.min_responses = min_responses or ctx.min_clients
        self.round_timeout = round_timeout
        self.initial_model = initial_model

    def run(self) -> None:
        params = self.ctx.load_app_model(self.initial_model) if self.initial_model else {}
        model = FLModel(params=params)
        for rnd in range(self.num_rounds):
            task_id = self.ctx.send_task("train", model, round_number=rnd, total_rounds=self.num_rounds)
            acc = WeightedSum()
            answered: list[str] = []
            for site, update in self.ctx.results(
                task_id, min_responses=self.min_responses, timeout=self.round_timeout
            ):
                acc.add(update.params, update.num_examples, update.metrics)
                answered.append(site)
            model = FLModel(params=acc.result())
            self.ctx.record_round(rnd, acc.metrics(), sorted(answered))
        self.ctx.save_model(model)
        self.ctx.write_json(
            "metrics_summary.json",
            {"workflow": "fedavg", "num_rounds": self.num_rounds, "rounds": self.ctx.rounds},
        )
