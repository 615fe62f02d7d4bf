"""The server side of a job: the Workflow base class and the context it drives sites with.

A workflow runs in its own process (one per job), talks to the server over an inherited
socket, and exchanges weights as safetensors files in the job's run folder. Write a custom
workflow by subclassing ``Workflow`` in the job's custom code and naming it in
``config_fed_server.json`` as ``{"workflow": {"class": "my_module.MyWorkflow"}, "args": {...}}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.fl.model import FLModel
from shoal.wire.channel import SyncChannel
from shoal.wire.jsonout import dumps
from shoal.wire.logconfig import apply as apply_log_setting
from shoal.wire.models import LazyParams, load_params, save_params
from shoal.workflows.update_checks import UpdateChecks

log = logging.getLogger("shoal.workflow")

#: Metrics a site logs with ``flare.log_metric`` kept per site for metrics_summary.json; beyond
#: this a site's oldest entries are dropped (the live view in stats/monitor still updates).
MAX_LOGGED_PER_SITE = 10_000


class RoundFailed(Exception):
    """Too few sites answered a task: the job cannot go on."""

    def __init__(self, message: str, site: str | None = None) -> None:
        super().__init__(message)
        self.site = site


class BadUpdate(RoundFailed):
    """A site sent a result the workflow cannot use (tensors that do not fit the others', NaN or
    infinite values, an absurd ``num_examples``): the job fails naming that site, as it would
    if the site had failed."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"{site} sent an update that cannot be used: {reason}", site=site)


class WorkflowContext:
    """What a workflow may do: send tasks, collect results, record metrics, save results."""

    def __init__(
        self,
        channel: SyncChannel,
        *,
        job_id: str,
        sites: list[str],
        run_dir: Path,
        workspace: Path,
        app_dir: Path,
        min_clients: int = 1,
        checks: UpdateChecks | None = None,
    ) -> None:
        self._channel = channel
        self.checks = checks or UpdateChecks()
        self.job_id = job_id
        self.sites = list(sites)
        self.run_dir = run_dir
        self.workspace = workspace
        self.app_dir = app_dir
        self.min_clients = min_clients
        self.rounds: list[dict[str, Any]] = []
        self.logged_metrics: dict[str, list[dict[str, Any]]] = {}
        self._failed_sites: dict[str, str] = {}
        self._pending: dict[str, set[str]] = {}
        (run_dir / "models").mkdir(parents=True, exist_ok=True)

    def send_task(
        self,
        task_name: str,
        model: FLModel,
        *,
        sites: list[str] | None = None,
        round_number: int = 0,
        total_rounds: int = 1,
    ) -> str:
        """Push a task and its model to sites; returns the task id to collect results by."""
        task_id = uuid.uuid4().hex[:16]
        for old in (self.run_dir / "models").glob("*.safetensors"):
            old.unlink(missing_ok=True)  # every site fetched it before answering the last task
        model_path = self.run_dir / "models" / f"{task_id}.safetensors"
        save_params(model.params, model_path)
        targets = [s for s in (sites if sites is not None else self.sites) if s not in self._failed_sites]
        self._channel.send(
            {
                "op": "task",
                "task_id": task_id,
                "task_name": task_name,
                "round": round_number,
                "total_rounds": total_rounds,
                "model_path": str(model_path),
                "sites": targets,
                "meta": model.meta,
            }
        )
        self._pending[task_id] = set(targets)
        return task_id

    def results(
        self, task_id: str, *, min_responses: int, timeout: float | None
    ) -> Iterator[tuple[str, FLModel]]:
        """Yield (site, update) as results arrive until every site answered, failed, or time ran out.

        Raises RoundFailed when fewer than ``min_responses`` can still answer. However it ends,
        the server is told the task is closed: it takes no more results for it and removes what
        sites left of theirs (docs/reliability.md, "late results").
        """
        try:
            yield from self._results(task_id, min_responses=min_responses, timeout=timeout)
        finally:
            try:
                self._channel.send({"op": "task_closed", "task_id": task_id})
            except OSError:  # the server is gone; nothing is left to tell
                pass

    def _results(
        self, task_id: str, *, min_responses: int, timeout: float | None
    ) -> Iterator[tuple[str, FLModel]]:
        waiting = self._pending.pop(task_id, set())
        received = 0
        deadline = None if not timeout else time.monotonic() + timeout
        if len(waiting) < min_responses:
            raise RoundFailed(f"only {len(waiting)} sites can take the task, {min_responses} needed")
        while waiting:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if received >= min_responses:
                    log.warning("round deadline passed; going on without %s", sorted(waiting))
                    return
                raise RoundFailed(
                    f"round deadline passed with {received} of {min_responses} needed results; "
                    f"no answer from {', '.join(sorted(waiting))}",
                    site=sorted(waiting)[0],
                )
            try:
                message = self._channel.receive(remaining)
            except TimeoutError:
                continue
            if message is None:
                raise RoundFailed("the server closed the channel")
            op = message.get("op")
            if op == "result" and message.get("task_id") == task_id and message.get("site") in waiting:
                site = str(message["site"])
                waiting.discard(site)
                path = Path(message["path"])
                received += 1
                try:
                    # Tensors load one at a time as the consumer reads them, so aggregating a
                    # large model holds one tensor of the update at a time, not the whole copy.
                    yield site, self._checked(site, path, message)
                finally:
                    # Folded in: its file may go. The server (or the simulator) removes it: the
                    # workflow may read the results handed to it, not change them.
                    self._channel.send({"op": "release", "task_id": task_id, "site": site, "path": str(path)})
            elif op == "result" and message.get("task_id") not in self._pending:
                # for a task already closed (accepted just before it closed): never read
                keys = ("task_id", "site", "path")
                self._channel.send({"op": "release", **{k: message.get(k) for k in keys}})
            elif op == "site_failed":
                site = str(message.get("site"))
                reason = str(message.get("reason", "site failed"))
                self._failed_sites[site] = reason
                if site in waiting:
                    waiting.discard(site)
                    log.warning("site %s dropped out: %s", site, reason)
                    if received + len(waiting) < min_responses:
                        raise RoundFailed(f"site {site} failed: {reason}", site=site)
            elif op == "site_joined":
                # A site that dropped out is back: it takes part from the next task on.
                self._failed_sites.pop(str(message.get("site")), None)
            elif op == "stop":
                raise RoundFailed("the server stopped the job")
            else:
                self._on_side_message(message)

    def _checked(self, site: str, path: Path, message: dict[str, Any]) -> FLModel:
        """A site's result as the workflow gets it, once it passed the server's update checks
        (``self.checks``): a refused one is BadUpdate naming the site, before any workflow code
        has seen a value of it."""
        examples = message.get("num_examples", 1)
        params = LazyParams(path)
        problem = self.checks.num_examples_problem(examples) or self.checks.values_problem(params)
        if problem is not None:
            raise BadUpdate(site, problem)
        return FLModel(
            params=params,
            metrics=dict(message.get("metrics") or {}),
            meta=dict(message.get("meta") or {}),
            num_examples=int(examples),
        )

    def _on_side_message(self, message: dict[str, Any]) -> None:
        """Messages that are not answers to the task at hand: live metrics and log settings."""
        op = message.get("op")
        if op == "metric":
            series = self.logged_metrics.setdefault(str(message.get("site")), [])
            series.append(
                {
                    "key": str(message.get("key")),
                    "value": float(message.get("value", 0.0)),
                    "step": message.get("step"),
                    "round": self.rounds[-1]["round"] + 1 if self.rounds else 0,
                }
            )
            del series[:-MAX_LOGGED_PER_SITE]
        elif op == "log_config":
            apply_log_setting(str(message.get("setting", "")))

    def write_metrics_summary(self, workflow: str, **extra: Any) -> Path:
        """``metrics_summary.json``: each round's aggregated metrics and every metric the sites
        logged with ``log_metric`` (per site, in order, with step and round), plus ``extra``."""
        while True:  # metrics logged in the last round may still be on their way
            try:
                message = self._channel.receive(0.01)
            except TimeoutError:
                break
            if message is None:
                break
            self._on_side_message(message)
        summary = {
            "workflow": workflow,
            **extra,
            "rounds": self.rounds,
            "logged_metrics": self.logged_metrics,
        }
        return self.write_json("metrics_summary.json", summary)

    def active_sites(self) -> list[str]:
        """The job's sites that have not dropped out (a site that rejoins counts again)."""
        return [s for s in self.sites if s not in self._failed_sites]

    def record_round(self, round_number: int, metrics: dict[str, float], sites: list[str]) -> None:
        """Remember one finished round and tell the server (for meta, stats and monitor)."""
        entry = {"round": round_number, "metrics": metrics, "sites": sites, "time": time.time()}
        self.rounds.append(entry)
        self._channel.send({"op": "round", **entry})
        log.info("round %d done: %s", round_number, " ".join(f"{k}={v:.6g}" for k, v in metrics.items()))

    def report_privacy(self, spent: dict[str, Any]) -> None:
        """Tell the server the privacy spent so far ((epsilon, delta) per site and for the job),
        for ``job meta``; the same goes into metrics_summary.json at the end."""
        self._channel.send({"op": "privacy", "spent": spent})
        log.info("privacy spent: epsilon %s at delta %s", spent.get("epsilon"), spent.get("delta"))

    def save_model(self, model: FLModel, name: str = "FL_global_model.safetensors") -> Path:
        path = self.workspace / name
        save_params(model.params, path)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.workspace / name
        path.write_text(dumps(obj, indent=2, sort_keys=True) + "\n")  # strict JSON: NaN as null
        return path

    def load_app_model(self, relative: str) -> dict[str, Any]:
        """Load an initial model shipped inside the server app folder."""
        path = (self.app_dir / relative).resolve()
        if not path.is_relative_to(self.app_dir.resolve()):
            raise ValueError(f"initial model path escapes the app folder: {relative}")
        return load_params(path)


class Workflow:
    """Base class for server-side workflows. Subclasses implement ``run``.

    Every workflow takes ``min_responses`` (results that close a task, k of n; default the job's
    min_clients) and ``round_timeout`` (seconds per task, 0 for none); ``collect`` applies them.
    A custom workflow is a few lines (see docs/recipes.md)::

        class Median(Workflow):
            def run(self) -> None:
                model = FLModel(params={})
                for rnd in range(3):
                    # dict(): a result's tensors are read from a file that goes once the loop moves on
                    updates = [dict(u.params) for _, u in self.collect("train", model, round_number=rnd)]
                    model = FLModel(params={k: np.median([u[k] for u in updates], 0) for k in updates[0]})
                    self.ctx.record_round(rnd, {}, self.ctx.sites)
                self.ctx.save_model(model)
    """

    def __init__(
        self,
        ctx: WorkflowContext,
        *,
        min_responses: int | None = None,
        round_timeout: float = 0.0,
        **args: Any,
    ) -> None:
        self.ctx = ctx
        self.min_responses = min_responses or ctx.min_clients
        self.round_timeout = float(round_timeout)
        self.args = args

    def collect(
        self,
        task_name: str,
        model: FLModel,
        *,
        sites: list[str] | None = None,
        round_number: int = 0,
        total_rounds: int = 1,
        min_responses: int | None = None,
    ) -> Iterator[tuple[str, FLModel]]:
        """Send a task and yield ``(site, result)`` as results arrive, with this workflow's
        k-of-n and deadline rules. Results stream: a result's tensors load as they are read."""
        task_id = self.ctx.send_task(
            task_name, model, sites=sites, round_number=round_number, total_rounds=total_rounds
        )
        del model  # sent and on disk: a caller that drops its own reference frees it while results arrive
        needed = min_responses or (min(self.min_responses, len(sites)) if sites else self.min_responses)
        yield from self.ctx.results(task_id, min_responses=needed, timeout=self.round_timeout)

    def initial_model(self, relative: str | None) -> FLModel:
        """The model a job starts from: a safetensors file in the server app, or none (sites
        then start from their own initial weights, as round 0 receives empty params)."""
        return FLModel(params=self.ctx.load_app_model(relative) if relative else {})

    def run(self) -> None:
        raise NotImplementedError
