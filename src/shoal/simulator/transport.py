"""The simulator's stand-in for the server: an in-process channel between a workflow and a pool.

In production the workflow's ``WorkflowContext`` talks JSON lines to the server over a socket,
and the server relays each task to the sites and each result back (``scheduler/runner.py``).
``PoolTransport`` takes the socket's place, so the workflow code runs unchanged: a "task"
message becomes one ``SiteTask`` per site, queued for a pool of worker processes, and each
worker's answer comes back from ``receive()`` as the very message the server would relay
("result" naming a safetensors file, or "site_failed").

Backpressure: at most ``max_in_flight`` site runs are handed to the pool at a time, and the next
one only once the workflow has taken an answer. With a streaming workflow (FedAvg folds each
update into a running sum and deletes its file), memory and disk in use stay bounded by the
in-flight runs, not by the number of sites.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from shoal.simulator.secagg_sites import SimulatedSecAgg
from shoal.simulator.worker import SiteTask
from shoal.wire.channel import SyncChannel
from shoal.wire.controller import PrivacySpent, Release, RoundDone, SiteFailed, SiteMetric, Task, TaskClosed
from shoal.wire.messages import CONTROLLER, BadMessage, Dispatch, Message, UnknownMessage, decode, encode
from shoal.wire.script import ScriptTask

log = logging.getLogger("shoal.simulator")

SpecFactory = Callable[[str, dict[str, Any]], SiteTask]
RoundCallback = Callable[[dict[str, Any]], None]
#: Told each time the workflow takes a site's answer: ``{"round", "total_rounds", "done",
#: "sites"}``, the sites of that round answered so far and those it was sent to.
SiteCallback = Callable[[dict[str, Any]], None]


class SitePool(Protocol):
    """What runs site tasks (``sim_pool.WorkerPool``): a future of each one's answer."""

    def submit(self, spec: SiteTask) -> Future[dict[str, Any]]: ...


class PoolTransport(SyncChannel):
    """A ``SyncChannel`` (the type ``WorkflowContext`` drives) with a worker pool behind it."""

    def __init__(
        self,
        pool: SitePool,
        make_spec: SpecFactory,
        *,
        max_in_flight: int,
        on_round: RoundCallback | None = None,
        on_site: SiteCallback | None = None,
    ) -> None:  # no socket: do not call super().__init__
        self._pool = pool
        self._make_spec = make_spec
        self._max_in_flight = max(1, max_in_flight)
        self._round_callback = on_round
        self._on_site = on_site
        self._waiting: deque[SiteTask] = deque()
        self._answers: queue.Queue[tuple[SiteTask, dict[str, Any]]] = queue.Queue()
        self._sent: dict[Any, int] = {}  # round -> site runs asked for
        self._answered_in: dict[Any, int] = {}  # round -> site answers taken
        self._relayed: deque[dict[str, Any]] = deque()  # log_metric messages, then the answer
        self._in_flight = 0
        self._unfinished: set[Future[dict[str, Any]]] = set()  # handed to the pool, not done
        self._round_started: dict[Any, float] = {}
        self.rounds: list[dict[str, Any]] = []
        self.first_error: dict[str, Any] | None = None
        self.site_metrics: dict[str, dict[str, Any]] = {}
        self.worker_rss_kib: dict[int, int] = {}
        # secure aggregation: every site's side of the protocol, the train task to mask
        self._secagg = SimulatedSecAgg()
        self._masking: dict[str, dict[str, Any]] = {}
        self._protocol_tasks: set[str] = set()
        # What the workflow may send, and what the simulator does with each (as the server's
        # runner does; an unknown kind: one notice).
        self._from_workflow = Dispatch(
            CONTROLLER,
            {
                Task: self._on_task,
                Release: self._on_release,
                RoundDone: self._on_round,
                TaskClosed: self._nothing_to_do,
                PrivacySpent: self._nothing_to_do,
            },
            log,
            "the workflow",
        )

    # --- what the workflow sends: tasks and finished rounds -------------------------------
    def send(self, message: dict[str, Any]) -> None:
        found = self._from_workflow.handler(message)
        if found is not None:
            typed, handle = found
            handle(typed)

    def _on_task(self, message: Task) -> None:
        meta = dict(message.meta)
        secagg = meta.pop("secagg", None)
        if secagg is not None:  # the script trains in the clear; masked when its run is back
            self._masking = {message.task_id: secagg}  # this round's; earlier ones are over
        # What each site's script receives (the script channel's task, as an agent hands it).
        task = encode(
            ScriptTask(
                task_id=message.task_id,
                task_name=message.task_name,
                round=message.round,
                total_rounds=message.total_rounds,
                meta=meta,
                model_path=message.model_path,
            )
        )
        if message.task_name.startswith("secagg_"):
            self._answer_protocol(task, list(message.sites))
            return
        self._round_started.setdefault(message.round, time.monotonic())
        self._sent[message.round] = self._sent.get(message.round, 0) + len(message.sites)
        self._waiting.extend(self._make_spec(site, task) for site in message.sites)
        self._fill()

    def _on_release(self, message: Release) -> None:
        """A result folded in: the simulator's own file, removed here."""
        Path(message.path).unlink(missing_ok=True)

    def _on_round(self, message: RoundDone) -> None:
        started = self._round_started.pop(message.round, None)
        entry = {
            "round": message.round,
            "metrics": dict(message.metrics),
            "sites": len(message.sites),
            "seconds": None if started is None else time.monotonic() - started,
        }
        self.rounds.append(entry)
        if self._round_callback is not None:
            self._round_callback(entry)

    def _nothing_to_do(self, message: TaskClosed | PrivacySpent) -> None:
        """A closed task has no site uploads to drop here, and the privacy spent is in the
        workflow's metrics_summary.json: the simulator's report reads it there."""

    # --- what the workflow receives: the sites' answers ------------------------------------
    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self._relayed:
            return self._relayed.popleft()
        if self._in_flight == 0 and not self._waiting and self._answers.empty():
            return None  # nothing can ever answer: the workflow must not wait forever
        try:
            spec, answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        self._in_flight -= 1
        self._fill()
        task_id = str(spec.task["task_id"])
        if task_id in self._masking:
            answer = self._secagg.mask(spec.site, self._masking[task_id], answer, spec.task["model_path"])
        if self._on_site is not None and task_id not in self._protocol_tasks:
            self._site_done(spec)
        self._relayed.append(self._note(answer))  # after the metrics it logged, as a server relays
        return self._relayed.popleft()

    def _answer_protocol(self, task: dict[str, Any], sites: list[str]) -> None:
        """Secure aggregation's own tasks: answered at once by the sites' side of the protocol,
        which lives in this process (``shoal.simulator.secagg_sites``); no script runs."""
        self._protocol_tasks.add(str(task["task_id"]))
        for site in sites:
            self._in_flight += 1
            self._answers.put((self._make_spec(site, task), self._secagg.answer(site, task)))

    def close(self) -> None:
        self._waiting.clear()

    def _site_done(self, spec: SiteTask) -> None:
        rnd = spec.task.get("round")
        self._answered_in[rnd] = done = self._answered_in.get(rnd, 0) + 1
        assert self._on_site is not None
        self._on_site(
            {
                "round": rnd,
                "total_rounds": spec.task.get("total_rounds"),
                "done": done,
                "sites": self._sent.get(rnd, done),
            }
        )

    @property
    def unfinished_runs(self) -> int:
        """Site runs handed to the pool that have not ended (a script still running, say)."""
        return len(self._unfinished)

    def _fill(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            spec = self._waiting.popleft()
            self._in_flight += 1
            # A worker that died (os._exit, a segfault) breaks the pool: this site's future
            # then holds WorkerDied, and the site fails like the one that was running.
            future = self._pool.submit(spec)
            self._unfinished.add(future)
            future.add_done_callback(functools.partial(self._answered, spec))

    def _answered(self, spec: SiteTask, future: Future[dict[str, Any]]) -> None:
        """Runs in the pool's thread: hand the answer over; the workflow takes it in receive()."""
        self._unfinished.discard(future)
        self._answers.put((spec, _answer_of(future, spec)))

    def _note(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Keep what reports need (worker memory, metrics, first error); pass the rest on."""
        worker = answer.pop("worker", None)
        if worker:
            pid = int(worker["pid"])
            self.worker_rss_kib[pid] = max(self.worker_rss_kib.get(pid, 0), int(worker["max_rss_kib"]))
        site = str(answer.get("site"))
        for metric in answer.pop("logged", []):
            said = {k: metric.get(k) for k in ("key", "value", "step")}  # the client API's checks passed
            self._relayed.append(encode(SiteMetric(site=site, **said)))
            values = self.site_metrics.setdefault(site, {})
            values[str(metric.get("key"))] = metric.get("value")
            if metric.get("step") is not None:
                values[f"{metric.get('key')}_step"] = metric["step"]
        try:  # a worker runs job code: its answer is read like any peer's
            failed: Message | None = decode(CONTROLLER, answer)
        except (BadMessage, UnknownMessage):
            failed = None  # the workflow's context drops it with a notice
        if isinstance(failed, SiteFailed) and self.first_error is None:
            self.first_error = {"site": site, "type": failed.type, "message": failed.reason}
        return answer


def _answer_of(future: Future[dict[str, Any]], spec: SiteTask) -> dict[str, Any]:
    """A worker's answer, or a site failure when the worker itself broke (it died, say)."""
    try:
        return future.result()
    except BaseException as exc:  # WorkerDied, CancelledError, a bug in the worker
        return _worker_failed(spec, exc)


def _worker_failed(spec: SiteTask, exc: BaseException) -> dict[str, Any]:
    reason = f"the simulator's worker failed: {type(exc).__name__}: {exc}"
    return encode(SiteFailed(site=spec.site, type=type(exc).__name__, reason=reason))
