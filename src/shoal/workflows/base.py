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
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from shoal.wire.channel import SyncChannel
from shoal.wire.controller import (
    Finishing,
    PrivacySpent,
    Release,
    Result,
    ResultBytes,
    RoundCheckpoint,
    RoundDone,
    SiteFailed,
    SiteJoined,
    SiteMetric,
    SitesEnded,
    Task,
    TaskClosed,
    WorkflowLogConfig,
)
from shoal.wire.flmodel import FLModel
from shoal.wire.jsonout import dumps
from shoal.wire.logconfig import apply as apply_log_setting
from shoal.wire.messages import CONTROLLER, BadMessage, Dispatch, Message, encode
from shoal.wire.models import SPARE_MODEL, Inspect, LazyParams, load_params, save_params
from shoal.workflows.update_checks import UpdateChecks, non_finite_problem, non_finite_values

log = logging.getLogger("shoal.workflow")

#: Metrics a site logs with ``flare.log_metric`` kept per site for metrics_summary.json; beyond
#: this a site's oldest entries are dropped (the live view in stats/monitor still updates).
MAX_LOGGED_PER_SITE = 10_000
#: How long the workflow waits, once its training is over, for the server to say every site
#: ended (``end_sites``): longer than the server's own bound (``run_end.SITE_END_GRACE``).
SITES_END_WAIT = 15.0


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


@dataclass(frozen=True)
class ResumePoint:
    """Where a job resumes after a server restart: the last round it finished, the workflow's
    state then (its own ``checkpoint_state``) and the global model after that round. The host
    wrote both into the job's ``resume/`` folder from the store and the blob store."""

    last_round: int
    state: dict[str, Any]
    model_path: Path

    def model(self) -> FLModel:
        return FLModel(params=load_params(self.model_path))


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
        # where the server hands back a folded result, for the next model to be written over
        # (decisions/0054): every model this context writes may take it
        self._spare = run_dir / SPARE_MODEL
        self.workspace = workspace
        self.app_dir = app_dir
        self.min_clients = min_clients
        self.rounds: list[dict[str, Any]] = []
        self.logged_metrics: dict[str, list[dict[str, Any]]] = {}
        self._failed_sites: dict[str, str] = {}
        self._pending: dict[str, set[str]] = {}
        # What the server may send between tasks (collected results are _Collection's).
        self._side = Dispatch(
            CONTROLLER,
            {
                SiteMetric: self._on_metric,
                WorkflowLogConfig: self._on_log_config,
                Result: self._late_result,
                ResultBytes: self._late_result,
                SiteFailed: self._note_failed,
                SiteJoined: self._on_joined,
                SitesEnded: self._on_sites_ended,
            },
            log,
            "the server",
        )
        self._metrics_seen = 0  # metrics taken (``end_sites`` rewrites a summary if more came)
        self._summary: tuple[str, dict[str, Any]] | None = None  # the last summary's arguments
        self._sites_ended = False
        #: Whether ``checkpoint`` hands anything on: the server's controller says yes; the
        #: simulator, which has no server to outlive, leaves it off (no file written per round).
        self.keeps_checkpoints = False
        #: Set when the job resumes after a server restart (the controller's ``--resume-dir``).
        self.resume_point: ResumePoint | None = None
        #: The server restarts this job was resumed after: ``{"after_round", "time"}`` each.
        self.restarts: list[dict[str, Any]] = []
        #: The last checkpoint (round, file name, params) until the next task: a task of the
        #: same params sends the checkpoint's file (``send_task``).
        self._checkpointed: tuple[int, str, Any] | None = None
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
        checkpointed, self._checkpointed = self._checkpointed, None
        if checkpointed is not None and checkpointed[2] is model.params:
            # The model just checkpointed (FedAvg sends each round's model as the next task):
            # the server already holds its file, so it is not written a second time.
            from_checkpoint: int | None = checkpointed[0]
            model_path = self.run_dir / checkpointed[1]
        else:
            from_checkpoint = None
            model_path = self.run_dir / "models" / f"{task_id}.safetensors"
            save_params(model.params, model_path, reuse=self._spare)
        targets = [s for s in (sites if sites is not None else self.sites) if s not in self._failed_sites]
        self._send(
            Task(
                task_id=task_id,
                task_name=task_name,
                round=round_number,
                total_rounds=total_rounds,
                model_path=str(model_path),
                sites=targets,
                meta=model.meta,
                checkpoint_round=from_checkpoint,
            )
        )
        self._pending[task_id] = set(targets)
        return task_id

    def results(
        self, task_id: str, *, min_responses: int, timeout: float | None, checks_on_read: bool = False
    ) -> Generator[tuple[str, FLModel], None, None]:
        """Yield (site, update) as results arrive until every site answered, failed, or time ran out.

        Raises RoundFailed when fewer than ``min_responses`` can still answer. However it ends,
        the server is told the task is closed: it takes no more results for it and removes what
        sites left of theirs (docs/reliability.md, "late results").

        Each update passed the server's checks (``_checked``) before it is yielded, or, with
        ``checks_on_read``, its values pass them as they are read: each tensor or chunk is
        checked before the caller gets it, in the caller's own pass over the file instead of a
        pass of the check's own (decisions/0050). A caller that asks for this reads every value
        of every update it is handed (``update_checks.read_through`` for one it has no use for)
        and lets ``BadUpdate`` from a read end the job.
        """
        try:
            yield from self._results(
                task_id, min_responses=min_responses, timeout=timeout, checks_on_read=checks_on_read
            )
        finally:
            try:
                self._send(TaskClosed(task_id=task_id))
            except OSError:  # the server is gone; nothing is left to tell
                pass

    def _results(
        self, task_id: str, *, min_responses: int, timeout: float | None, checks_on_read: bool
    ) -> Iterator[tuple[str, FLModel]]:
        waiting = self._pending.pop(task_id, set())
        if len(waiting) < min_responses:
            raise RoundFailed(f"only {len(waiting)} sites can take the task, {min_responses} needed")
        collection = _Collection(self, task_id, waiting, min_responses)
        deadline = None if not timeout else time.monotonic() + timeout
        while waiting:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if collection.received >= min_responses:
                    log.warning("round deadline passed; going on without %s", sorted(waiting))
                    return
                raise RoundFailed(
                    f"round deadline passed with {collection.received} of {min_responses} needed "
                    f"results; no answer from {', '.join(sorted(waiting))}",
                    site=sorted(waiting)[0],
                )
            try:
                raw = self._channel.receive(remaining)
            except TimeoutError:
                continue
            if raw is None:
                raise RoundFailed("the server closed the channel")
            found = self._handler(collection.dispatch, raw)
            if found is None:
                continue
            message, handle = found
            answer: Result | ResultBytes | None = handle(message)
            if answer is None:
                continue
            try:
                # Tensors load one at a time as the consumer reads them, so aggregating a
                # large model holds one tensor of the update at a time, not the whole copy.
                yield answer.site, self._checked(answer, on_read=checks_on_read)
            finally:
                self._release(answer)

    def _send(self, message: Message) -> None:
        self._channel.send(encode(message))

    @staticmethod
    def _handler(dispatch: Dispatch, raw: dict[str, Any]) -> tuple[Message, Any] | None:
        """The decoded message and its handler; a malformed one is logged and dropped (the
        server is not the workflow's to judge)."""
        try:
            return dispatch.handler(raw)
        except BadMessage as exc:
            log.warning("the server sent a malformed message; ignored: %s", exc)
            return None

    def _release(self, result: Result | ResultBytes) -> None:
        """Folded in (or never to be read): a result's file may go. The server (or the simulator)
        removes it: the workflow may read the results handed to it, not change them. A result
        that came as its bytes left no file: nothing to say."""
        if isinstance(result, Result):
            self._send(Release(task_id=result.task_id, site=result.site, path=result.path))

    def _checked(self, result: Result | ResultBytes, on_read: bool = False) -> FLModel:
        """A site's result as the workflow gets it, once it passed the server's update checks
        (``self.checks``): a refused one is BadUpdate naming the site, before any workflow code
        has seen a value of it. ``on_read``: its weight is checked here, its values as they are
        read (``results``)."""
        info = result.info
        source = Path(result.path) if isinstance(result, Result) else result.payload()
        problem = self.checks.num_examples_problem(info.num_examples)
        if problem is not None:
            raise BadUpdate(result.site, problem)
        if on_read and self.checks.reject_non_finite:
            params = LazyParams(source, inspect=_refuse_non_finite(result.site))
        else:
            params = LazyParams(source)
            problem = self.checks.values_problem(params)
            if problem is not None:
                raise BadUpdate(result.site, problem)
        return FLModel(
            params=params, metrics=dict(info.metrics), meta=dict(info.meta), num_examples=info.num_examples
        )

    def _on_metric(self, message: SiteMetric) -> None:
        """A metric a site logged, kept for metrics_summary.json."""
        self._metrics_seen += 1
        series = self.logged_metrics.setdefault(message.site, [])
        series.append(
            {
                "key": message.key,
                "value": message.value,
                "step": message.step,
                "round": self.rounds[-1]["round"] + 1 if self.rounds else 0,
            }
        )
        del series[:-MAX_LOGGED_PER_SITE]

    def _on_log_config(self, message: WorkflowLogConfig) -> None:
        apply_log_setting(message.setting)

    def _late_result(self, message: Result | ResultBytes) -> None:
        """A result for a task already closed (accepted just before it closed): never read."""
        self._release(message)

    def _note_failed(self, message: SiteFailed) -> bool:
        """A site dropped out: it gets no more tasks until it rejoins. True if it was new."""
        known = message.site in self._failed_sites
        self._failed_sites[message.site] = message.reason
        return not known

    def _on_joined(self, message: SiteJoined) -> None:
        """A site that dropped out is back: it takes part from the next task on."""
        self._failed_sites.pop(message.site, None)

    def write_metrics_summary(self, workflow: str, **extra: Any) -> Path:
        """``metrics_summary.json``: each round's aggregated metrics and every metric the sites
        logged with ``log_metric`` (per site, in order, with step and round), plus ``extra``."""
        self._summary = (workflow, extra)
        self._take_side_messages(0)  # what has arrived, without waiting (end_sites waits)
        summary = {
            "workflow": workflow,
            **extra,
            "rounds": self.rounds,
            "logged_metrics": self.logged_metrics,
        }
        if self.restarts:  # the job's history shows each server restart it resumed after
            summary["restarts"] = self.restarts
        return self.write_json("metrics_summary.json", summary)

    def end_sites(self, wait: float = SITES_END_WAIT) -> None:
        """The training is over: the server ends the sites' part of the job (``Finishing``) and
        says when they all ended (``SitesEnded``, awaited at most ``wait`` seconds). Every metric
        their scripts logged, also after their last result (a final evaluation, say), has come
        by then: a summary written before is written again with those that came since
        (decisions/0053). The job's controller calls it once the workflow's ``run`` returned."""
        self._send(Finishing())
        seen = self._metrics_seen
        self._take_side_messages(wait, until_sites_ended=True)
        if self._summary is not None and self._metrics_seen != seen:
            workflow, extra = self._summary
            self.write_metrics_summary(workflow, **extra)

    def _take_side_messages(self, wait: float, until_sites_ended: bool = False) -> None:
        """Handle what the server sends between tasks until nothing came within ``wait``
        seconds (0: what has arrived), the channel ended, or (``until_sites_ended``) the
        server said the sites ended."""
        deadline = time.monotonic() + wait
        while not (until_sites_ended and self._sites_ended):
            try:
                raw = self._channel.receive(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return
            if raw is None:
                return
            found = self._handler(self._side, raw)
            if found is not None:
                message, handle = found
                handle(message)

    def _on_sites_ended(self, message: SitesEnded) -> None:
        self._sites_ended = True
        if message.stragglers:
            log.warning("sites that did not confirm their end: %s", ", ".join(message.stragglers[:20]))

    def active_sites(self) -> list[str]:
        """The job's sites that have not dropped out (a site that rejoins counts again)."""
        return [s for s in self.sites if s not in self._failed_sites]

    def record_round(self, round_number: int, metrics: dict[str, float], sites: list[str]) -> None:
        """Remember one finished round and tell the server (for meta, stats and monitor)."""
        now = time.time()
        self.rounds.append({"round": round_number, "metrics": metrics, "sites": sites, "time": now})
        self._send(RoundDone(round=round_number, metrics=metrics, sites=sites, time=now))
        log.info("round %d done: %s", round_number, " ".join(f"{k}={v:.6g}" for k, v in metrics.items()))

    def checkpoint(self, round_number: int, model: FLModel, state: dict[str, Any]) -> None:
        """Round ``round_number`` is finished: hand the server what resuming after it takes,
        the global model (safetensors, written here and taken by the server into its blob store)
        and ``state``, plain JSON the workflow can restore from (with the context's round history
        and logged metrics beside it). Data only, never code: the server stores it as written and
        a resumed job reads it back with ``json`` and safetensors. The server handles messages in
        order, so the checkpoint is taken before the next round's task goes out.

        A task sent next with the same ``model.params`` (the same mapping, as FedAvg sends each
        round's model) reuses the checkpoint's file instead of writing the model again
        (decisions/0045): its arrays must not change in between."""
        if not self.keeps_checkpoints:
            return
        name = f"checkpoint-{round_number}.safetensors"
        save_params(model.params, self.run_dir / name, reuse=self._spare)
        context = {"rounds": self.rounds, "logged_metrics": self.logged_metrics, "restarts": self.restarts}
        saved = {"workflow": state, "context": context}
        self._send(RoundCheckpoint(round=round_number, model_path=name, state=saved))
        self._checkpointed = (round_number, name, model.params)

    def resume_from(self, point: ResumePoint) -> dict[str, Any]:
        """Take back the context's part of a checkpoint (round history, logged metrics, earlier
        restarts), note this restart, and return the workflow's part."""
        context = point.state.get("context") or {}
        self.rounds = list(context.get("rounds") or [])
        self.logged_metrics = {str(k): list(v) for k, v in (context.get("logged_metrics") or {}).items()}
        self.restarts = [
            *(context.get("restarts") or []),
            {"after_round": point.last_round, "time": time.time()},
        ]
        self.resume_point = point
        workflow_state = point.state.get("workflow")
        return dict(workflow_state) if isinstance(workflow_state, dict) else {}

    def report_privacy(self, spent: dict[str, Any]) -> None:
        """Tell the server the privacy spent so far ((epsilon, delta) per site and for the job),
        for ``job meta``; the same goes into metrics_summary.json at the end."""
        self._send(PrivacySpent(spent=spent))
        log.info("privacy spent: epsilon %s at delta %s", spent.get("epsilon"), spent.get("delta"))

    def save_model(self, model: FLModel, name: str = "FL_global_model.safetensors") -> Path:
        path = self.workspace / name
        save_params(model.params, path, reuse=self._spare)
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


def _refuse_non_finite(site: str) -> Inspect:
    """The check of ``site``'s update values as they are read (``LazyParams.inspect``)."""

    def inspect(name: str, values: Any) -> None:
        if non_finite_values(values):
            raise BadUpdate(site, non_finite_problem(name))

    return inspect


class _Collection:
    """One task's collection: what the server's answers change while ``results`` waits for
    them, one handler per message."""

    def __init__(self, ctx: WorkflowContext, task_id: str, waiting: set[str], min_responses: int) -> None:
        self.ctx = ctx
        self.task_id = task_id
        self.waiting = waiting
        self.min_responses = min_responses
        self.received = 0
        self.dispatch = Dispatch(
            CONTROLLER,
            {
                Result: self.on_result,
                ResultBytes: self.on_result,
                SiteFailed: self.on_site_failed,
                SiteJoined: ctx._on_joined,
                SiteMetric: ctx._on_metric,
                WorkflowLogConfig: ctx._on_log_config,
            },
            log,
            "the server",
        )

    def on_result(self, message: Result | ResultBytes) -> Result | ResultBytes | None:
        """The result to hand to the workflow, if it answers this task from a site awaited."""
        if message.task_id == self.task_id and message.site in self.waiting:
            self.waiting.discard(message.site)
            self.received += 1
            return message
        if message.task_id not in self.ctx._pending:
            self.ctx._late_result(message)
        return None

    def on_site_failed(self, message: SiteFailed) -> None:
        self.ctx._note_failed(message)
        site = message.site
        if site in self.waiting:
            self.waiting.discard(site)
            log.warning("site %s dropped out: %s", site, message.reason)
            if self.received + len(self.waiting) < self.min_responses:
                raise RoundFailed(f"site {site} failed: {message.reason}", site=site)


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

    #: Whether a job of this workflow resumes after the server restarts (decisions/0040). A
    #: workflow that says so calls ``self.ctx.checkpoint`` at each round boundary and takes its
    #: state back in ``restore``, called before ``run`` when the job resumes. One that does not
    #: (the default) ends ABANDONED with a reason when the server that ran it dies. A subclass
    #: of a resumable workflow that keeps state of its own must checkpoint it too, or say False.
    resumable: ClassVar[bool] = False

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
        checks_on_read: bool = False,
    ) -> Generator[tuple[str, FLModel], None, None]:
        """Send a task and yield ``(site, result)`` as results arrive, with this workflow's
        k-of-n and deadline rules. Results stream: a result's tensors load as they are read.
        ``checks_on_read``: see ``WorkflowContext.results``."""
        task_id = self.ctx.send_task(
            task_name, model, sites=sites, round_number=round_number, total_rounds=total_rounds
        )
        del model  # sent and on disk: a caller that drops its own reference frees it while results arrive
        needed = min_responses or (min(self.min_responses, len(sites)) if sites else self.min_responses)
        yield from self.ctx.results(
            task_id, min_responses=needed, timeout=self.round_timeout, checks_on_read=checks_on_read
        )

    def initial_model(self, relative: str | None) -> FLModel:
        """The model a job starts from: a safetensors file in the server app, or none (sites
        then start from their own initial weights, as round 0 receives empty params)."""
        return FLModel(params=self.ctx.load_app_model(relative) if relative else {})

    def checkpoint_state(self) -> dict[str, Any]:
        """The workflow's own state at a round boundary, as plain JSON (see ``resumable``)."""
        return {}

    def restore(self, state: dict[str, Any], model: FLModel) -> None:
        """Take back ``state`` (what ``checkpoint_state`` returned) and the global model of the
        last finished round, before ``run`` goes on from the round after it."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume")

    def run(self) -> None:
        raise NotImplementedError
