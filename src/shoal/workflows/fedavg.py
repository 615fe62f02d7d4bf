"""FedAvg: each round, every site trains on the global model; the new global model is the
example-weighted mean of their updates."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from shoal.privacy.central import JobPrivacy, read_job_privacy
from shoal.wire.flmodel import FLModel
from shoal.workflows.aggregate import UpdateMismatch, WeightedSum
from shoal.workflows.base import BadUpdate, RoundFailed, Workflow, WorkflowContext
from shoal.workflows.secure_round import secure_round
from shoal.workflows.update_checks import read_through


class FedAvg(Workflow):
    """Arguments (``config_fed_server.json`` "args"):

    - ``num_rounds`` (int, default 1)
    - ``min_responses`` (int, default: the job's min_clients): results needed to close a round
    - ``round_timeout`` (seconds, default 0 = none): deadline for each round
    - ``initial_model`` (path inside the app folder to a .safetensors file; default: sites start
      from their own initial weights and round 0 receives an empty model)
    - ``task_meta`` (JSON object, default {}): sent with every task, e.g. FedProx's ``{"mu": 0.01}``
    - ``secure_aggregation`` (bool, default false): the server learns only each round's sum
      (``shoal.workflows.secure_round``); ``secagg_threshold`` (int, default a majority of the job's
      sites, at least 2): the sites that must stay until a round is unmasked; ``secagg_neighbors``
      (int, default: every other site): SecAgg+'s sparse graph, each site pairs and shares with
      that many partners only (the threshold then counts among a site's partners and itself)

    The job's ``privacy`` block in meta.json (docs/privacy.md) adds central DP (``server_dp``),
    accounting of what was spent, and a budget that ends training before it is exceeded.
    """

    min_rounds = 1  # a subclass that can do without training lowers it
    #: FedAvg resumes from its last finished round after a server restart: each round's global
    #: model and its state (the next round, the privacy ledger and noise generator) are
    #: checkpointed; the round history rides in the context's part of the checkpoint.
    resumable = True

    def __init__(
        self,
        ctx: WorkflowContext,
        *,
        num_rounds: int = 1,
        initial_model: str | None = None,
        task_meta: dict[str, Any] | None = None,
        secure_aggregation: bool = False,
        secagg_threshold: int | None = None,
        secagg_neighbors: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(ctx, **extra)
        if num_rounds < self.min_rounds:
            raise ValueError(f"num_rounds must be at least {self.min_rounds}")
        self.num_rounds = num_rounds
        self.initial_model_path = initial_model
        self.task_meta = dict(task_meta or {})
        self.privacy = JobPrivacy(read_job_privacy(ctx.app_dir))
        self.secure_aggregation = secure_aggregation
        self.secagg_threshold = secagg_threshold or max(2, len(ctx.sites) // 2 + 1)
        if secure_aggregation and (self.privacy.server_dp or {}).get("adaptive"):
            raise ValueError(
                "secure_aggregation does not combine with adaptive clipping: it needs each update's "
                "norm, which the server never sees (docs/privacy.md)"
            )
        if secure_aggregation and not 2 <= self.secagg_threshold <= len(ctx.sites):
            raise ValueError(f"secagg_threshold must be from 2 to the job's {len(ctx.sites)} sites")
        self.secagg_neighbors = secagg_neighbors
        if secagg_neighbors is not None:
            if not secure_aggregation or secagg_neighbors < 2:
                raise ValueError("secagg_neighbors (at least 2) goes with secure_aggregation")
            if self.secagg_threshold > secagg_neighbors + 1:
                raise ValueError(
                    f"secagg_threshold {self.secagg_threshold} exceeds the {secagg_neighbors + 1} holders of "
                    "each site's shares (secagg_neighbors + 1)"
                )
        self.stopped_by: str | None = None  # why training ended before num_rounds, if it did
        self.next_round = 0  # the round train() starts from: 0, or the one after a checkpoint
        self._restored: FLModel | None = None  # the checkpoint's global model, when resumed

    def checkpoint_state(self) -> dict[str, Any]:
        return {"next_round": self.next_round, "privacy": self.privacy.state()}

    def restore(self, state: dict[str, Any], model: FLModel) -> None:
        next_round = state.get("next_round")
        if type(next_round) is not int or not 0 <= next_round <= self.num_rounds:
            raise ValueError(
                f"the checkpoint's next round {next_round!r} does not fit {self.num_rounds} rounds"
            )
        self.next_round = next_round
        self.privacy.restore(state.get("privacy") or {})
        self._restored = model

    def train(self, model: FLModel, keep_last: bool = False) -> tuple[FLModel, dict[str, FLModel]]:
        """Run every round from ``model``; return the global model and, with ``keep_last``, each
        site's update of the last round in memory (for workflows that evaluate them; plain
        FedAvg streams every update and never holds one whole). ``model``'s arrays are only
        read; the arrays of the rounds' models are this loop's until it returns: each round's
        sum is made in the last one's (decisions/0054), so a subclass that keeps a round's
        model past its round keeps a copy."""
        last: dict[str, FLModel] = {}
        made_here = False  # ``model`` is one this loop made (not the caller's): its arrays are ours
        for rnd in range(self.next_round, self.num_rounds):
            blocked = self.privacy.blocked(self.ctx.active_sites())
            if blocked is not None:
                if rnd == 0:
                    raise RoundFailed(f"no round can run: {blocked}")
                self.stopped_by = f"stopped after {rnd} of {self.num_rounds} rounds: {blocked}"
                break
            if self.secure_aggregation:
                task = FLModel(params=model.params, meta={**self.task_meta, **model.meta})
                del model
                clip_norm = self.privacy.clip_norm if self.privacy.server_dp else None
                mean, metrics, metas = secure_round(
                    self, task, rnd, self.num_rounds, self.secagg_threshold, clip_norm, self.secagg_neighbors
                )
                for site, meta in sorted(metas.items()):
                    self.privacy.record(site, meta)
                # central noise on the unmasked mean of the clipped updates (weights 1)
                model = FLModel(params=self.privacy.noised(mean, len(metas)))
                self.ctx.record_round(rnd, metrics, sorted(metas))
                if self.privacy.active:
                    self.ctx.report_privacy(self.privacy.report())
                self._checkpoint(rnd, model)
                continue
            # central DP clips each update around the round's global model: it is kept for that
            global_params = dict(model.params) if self.privacy.server_dp else {}
            # Once its task is out, the last round's model lives in its file: its arrays, if
            # this loop made them and nothing else reads them, hold the new sum (decisions/0054).
            acc = WeightedSum(reuse=model.params if made_here and not global_params else None)
            answered: list[str] = []
            summed: list[str] = []  # the sites whose updates are in the sum, first one first
            final = keep_last and rnd == self.num_rounds - 1
            updates = self.collect(
                "train",
                FLModel(params=model.params, meta={**self.task_meta, **model.meta}),
                round_number=rnd,
                total_rounds=self.num_rounds,
                checks_on_read=True,  # every update is read below, checked in the same pass
            )
            # Once the task is sent the last global model lives in its file: letting go of it here
            # (collect does too) keeps one model in memory while updates arrive, the running sum
            # (in the last model's arrays, when the sum took them).
            del model
            with closing(updates):  # a refused update ends the round here: its task closes at once
                for site, update in updates:
                    if final:
                        whole = dict(update.params)  # read (and checked) whole, kept for the caller
                        update = FLModel(
                            params=whole, metrics=update.metrics, num_examples=update.num_examples
                        )
                        last[site] = update
                    answered.append(site)
                    self._fold(site, update, acc, summed, global_params)
            if acc.count == 0:
                raise RoundFailed(f"round {rnd}: no site reported any training examples (num_examples 0)")
            model = FLModel(params=self.privacy.noised(acc.result(), acc.count))
            made_here = True
            del global_params
            self.ctx.record_round(rnd, acc.metrics(), sorted(answered))
            if self.privacy.active:
                self.ctx.report_privacy(self.privacy.report())
            self._checkpoint(rnd, model)
        return model, last

    def _fold(
        self, site: str, update: FLModel, acc: WeightedSum, summed: list[str], global_params: dict[str, Any]
    ) -> None:
        """One site's update into the round's sum; its values pass the server's checks as they
        are read (``checks_on_read``), in the same pass."""
        if update.num_examples == 0:
            # trained on nothing (no data this round): it weighs nothing, yet is held to the checks
            read_through(update.params)
            return
        params, weight = self.privacy.server_update(site, update.params, update.meta, global_params)
        try:
            acc.add(params, update.num_examples if weight is None else weight, update.metrics)
        except UpdateMismatch as exc:
            against = f" (the round's first update came from {summed[0]})" if summed else ""
            raise BadUpdate(site, f"{exc}{against}") from exc
        summed.append(site)

    def _checkpoint(self, rnd: int, model: FLModel) -> None:
        """Round ``rnd`` is done: what resuming after it needs goes to the server."""
        self.next_round = rnd + 1
        if self.resumable:  # a subclass that cannot resume writes no checkpoint
            self.ctx.checkpoint(rnd, model, self.checkpoint_state())

    def run(self) -> None:
        start = self._restored if self._restored is not None else self.initial_model(self.initial_model_path)
        self._restored = None
        model, _ = self.train(start)
        self.ctx.save_model(model)
        self.ctx.write_metrics_summary("fedavg", num_rounds=self.num_rounds, **self.privacy_summary())

    def privacy_summary(self) -> dict[str, Any]:
        """What metrics_summary.json says of privacy: the spend, and why training stopped early."""
        out: dict[str, Any] = {}
        if self.privacy.active:
            out["privacy"] = self.privacy.report()
        if self.stopped_by:
            out["stopped_by"] = self.stopped_by
        return out
