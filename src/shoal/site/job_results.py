"""A site job's results: from the training script's folder to the server, protected.

The script says a result is ready (``ScriptResult``); the result is checked by the server's own
rules, taken out of the script's folder into the agent's (never read where the script could
point it), given the job's and the site's privacy protections (unless the client API already
applied them before masking it for secure aggregation), and delivered: inline on the control
channel when small, else by a resumable PUT.

A part the job (``shoal.site.job.SiteJob``) owns, as decisions/0049 describes: it keeps the
protections and the tasks whose results come masked; whether the script may answer a task at
all, and what a refused result means for the job, stay the job's (``JobTies.failed``). It
sees the agent through ``ResultHost`` only.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.errors import ShoalError
from shoal.privacy.protections import APPLIED_META_KEY
from shoal.sandbox.files import UnsafeJobFile, claim, give
from shoal.site.job_ties import JobTies
from shoal.wire import routes
from shoal.wire.messages import BadMessage
from shoal.wire.models import INLINE_BYTES, SPARE_MODEL, result_header_json
from shoal.wire.results import ResultInfo, checked_result_info
from shoal.wire.script import ScriptResult

if TYPE_CHECKING:
    from shoal.site.metrics import SiteCounters


class ResultHost(Protocol):
    """What a job's results need of the site agent: the two ways to the server and its counters."""

    counters: SiteCounters  # what the site's own /metrics shows

    async def send_result_inline(self, job_id: str, task_id: str, data: bytes, info: ResultInfo) -> bool:
        """A small result through the control channel; True once the server took it."""
        ...

    async def upload(self, path: str, src: Path, headers: dict[str, str]) -> None:
        """PUT a file to the site API."""
        ...


class JobResults:
    """The results of one job at a site. ``work``: the script's folder, where it writes them;
    ``kept``: the agent's own, where they wait to be delivered; ``models``: the tasks' models
    (differential privacy measures a result against its task's model)."""

    def __init__(
        self,
        agent: ResultHost,
        job: JobTies,
        *,
        work: Path,
        kept: Path,
        models: Path,
    ) -> None:
        self.agent = agent
        self.job_id = job.job_id
        self.work = work
        self.kept = kept
        self.models = models
        self._failed = job.failed
        self._note = job.note
        self.privacy: dict[str, Any] = {}  # the protections applied to every result
        self.busy = False  # a result from the script is being handed to the server
        self._masked_tasks: set[str] = set()  # secure aggregation: the client API protects these

    def masked(self, task_id: str) -> dict[str, Any]:
        """The task's result comes masked (secure aggregation): a masked update cannot be
        protected after the script, so the client API applies the protections before masking
        (docs/privacy.md says what that trusts); the protections it must apply."""
        if not self.privacy:
            return {}
        self._masked_tasks.add(task_id)
        return dict(self.privacy)

    async def take(self, message: ScriptResult) -> None:
        """The script's result for a task it was given, on its way to the server."""
        self.busy = True
        try:
            await self._upload_result(message)
        finally:
            self.busy = False

    async def _upload_result(self, message: ScriptResult) -> None:
        """The script's result: taken out of its folder into the agent's own (never read where
        the script could point it: a link to the site's key would be uploaded), then sent."""
        task_id = message.task_id
        try:
            info = checked_result_info(message.info.header())  # the server's own rule for it
        except BadMessage as exc:
            await self._failed("ResultRefused", f"INVALID_ARGS: task {task_id[:64]}'s result: {exc}")
            return
        try:
            result_header_json(info.header())  # a script that bypasses the client API is held to it too
        except ValueError as exc:
            await self._failed("ResultTooLarge", str(exc))
            return
        try:
            path = await asyncio.to_thread(
                claim,
                self.work,
                message.path,
                self.kept / f"{uuid.uuid4().hex}.safetensors",
            )
        except (UnsafeJobFile, OSError) as exc:
            await self._failed(
                "ResultRefused", f"the training script's result for task {task_id[:64]} was not taken: {exc}"
            )
            return
        if self.privacy and task_id in self._masked_tasks:
            self._masked_tasks.discard(task_id)
            # masked by the client API, which applied these before masking (what it was told)
            applied = {**self.privacy, "before_masking": True}
            info = replace(info, meta={**info.meta, APPLIED_META_KEY: applied})
        elif self.privacy:
            try:
                applied = await asyncio.to_thread(self._privatize, path, task_id)
            except Exception as exc:  # never let an unprotected result go: the job fails instead
                path.unlink(missing_ok=True)
                await self._failed("PrivacyFilterFailed", f"task {task_id[:64]}: {exc}")
                return
            info = replace(info, meta={**info.meta, APPLIED_META_KEY: applied})
        else:  # only the agent says what it applied
            info = replace(info, meta={k: v for k, v in info.meta.items() if k != APPLIED_META_KEY})
        try:
            await self.deliver(task_id, path, info)
        except ShoalError as exc:
            if exc.code != "TASK_NOT_OPEN":
                raise
            self._note(f"shoal site: the server no longer takes task {task_id[:64]}'s result: {exc}")
        finally:
            # back to the script's folder, for its next result to be written over (its pages,
            # in memory, take it instead of fresh ones: decisions/0054); its own bytes, as sent
            give(path, self.work, SPARE_MODEL)

    def _privatize(self, path: Path, task_id: str) -> dict[str, Any]:
        """Apply the job's and the site's privacy protections to the result file in place (the
        agent's own copy, taken out of the script's folder); what was applied, for the header."""
        from shoal.privacy.protections import apply_site_privacy
        from shoal.wire.models import load_params, save_params

        model = self.models / f"{task_id}.safetensors"
        global_params = load_params(model) if model.exists() else {}
        params, applied = apply_site_privacy(load_params(path), global_params, self.privacy)
        tmp = path.with_name(path.name + ".private")
        save_params(params, tmp)
        tmp.replace(path)
        return applied

    async def deliver(self, task_id: str, path: Path, info: ResultInfo) -> None:
        """A small result goes inside the control channel (INLINE_BYTES) when the server takes
        it there; anything else, or if that fails, by a resumable PUT."""
        size = path.stat().st_size
        inline = size <= INLINE_BYTES
        if not (
            inline and await self.agent.send_result_inline(self.job_id, task_id, path.read_bytes(), info)
        ):
            await self.agent.upload(
                routes.fill(routes.SITE_TASK_RESULT, job_id=self.job_id, task_id=task_id),
                path,
                {"X-Shoal-Result": result_header_json(info.header())},
            )
        self.agent.counters.results_sent += 1
        self.agent.counters.bytes_to_server += size
