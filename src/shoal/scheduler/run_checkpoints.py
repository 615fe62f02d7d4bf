"""A job run's checkpoints (decisions/0040): the row it keeps in the store, the models of the
rounds the workflow checkpointed, stored one at a time beside the next round, and the last one's
model held for the task that sends it next.

Owned by ``shoal.scheduler.runner.JobRun`` (its ``round_checkpoints``), which hands it the workflow's
``RoundCheckpoint`` and ``Task`` messages and says, as the run ends, that nothing more is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.sandbox.files import claim
from shoal.scheduler.controller_messages import BadControllerMessage, checked_checkpoint
from shoal.scheduler.jobpaths import JobPaths
from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease
from shoal.wire.controller import RoundCheckpoint, Task
from shoal.wire.jsonout import dumps, finite

if TYPE_CHECKING:
    from shoal.scheduler.checkpoints import CheckpointKeeper

log = logging.getLogger("shoal.scheduler")


class KeeperHost(Protocol):
    """What the checkpoints need of the server: where a job's checkpoints go (``RunHost`` has it)."""

    checkpoints: CheckpointKeeper


class RunCheckpoints:
    """The checkpoint side of one run. ``fence``: the run's lease at the time of each write
    (decisions/0041); ``notice``: tells the job's users something went wrong."""

    def __init__(
        self,
        host: KeeperHost,
        job_id: int,
        paths: JobPaths,
        row: Checkpoint,
        fence: Callable[[], Lease | None],
        notice: Callable[[str], None],
    ) -> None:
        self._host = host
        self._job_id = job_id
        self._paths = paths
        #: The job's checkpoint row as stored.
        self.row = row
        self._fence = fence
        self._notice = notice
        self._next: tuple[int, Path, dict[str, Any]] | None = None  # waiting to be stored
        self._storing: asyncio.Task[None] | None = None  # storing them, one at a time
        #: The last checkpoint's model (round, file), kept for the task that sends it next.
        self._held_model: tuple[int, Path] | None = None

    async def put(self) -> None:
        """Write the row as it is now (the run started, its workflow said if it can resume)."""
        await self._host.checkpoints.put(self.row, fence=self._fence())

    async def drop(self) -> None:
        """The job ended: nothing to resume, its row goes (``LeaseLost`` if another replica took it)."""
        await self._host.checkpoints.drop(self.row, fence=self._fence())

    async def take(self, message: RoundCheckpoint) -> None:
        """A finished round's checkpoint: the model file is taken out of the workflow's folder
        (never followed there) at once, in order with the other messages; storing it (the model
        into the blob store, the state, JSON the workflow wrote, stored as data, into the job's
        checkpoint row) runs beside the next round instead of in its way. Checkpoints are stored
        in order; one that a newer one overtakes before its turn is skipped: a restart then
        resumes from the newest stored, which is as consistent (an earlier round's model and
        state) and only a round or so older."""
        checked = checked_checkpoint(message)
        held = self._paths.models / f"checkpoint-{checked.round}.safetensors"
        model = await asyncio.to_thread(claim, self._paths.run, checked.model_path, held)
        # The next task may send this very model (Task.checkpoint_round): it keeps a name of its
        # own, since storing the checkpoint moves this one into the blob store.
        spare = self._paths.models / f"next-{checked.round}.safetensors"
        previous, self._held_model = self._held_model, (checked.round, spare)
        # (a workflow that said it cannot resume has nothing to resume from: nothing is stored)
        await asyncio.to_thread(_hold_model, model, spare, previous, self.row.resumable)
        if not self.row.resumable:
            return
        state = finite(checked.state)  # stored as strict JSON: a NaN metric becomes null
        try:
            dumps(state)  # anything JSON cannot hold is refused here, not in the store
        except (TypeError, ValueError):
            model.unlink(missing_ok=True)
            raise
        if self._next is not None:
            self._next[1].unlink(missing_ok=True)  # overtaken before its turn
        self._next = (checked.round, model, state)
        if self._storing is None or self._storing.done():
            self._storing = asyncio.get_running_loop().create_task(self._store())

    async def _store(self) -> None:
        """Store the newest checkpoint waiting, until none waits."""
        while self._next is not None:
            round_number, model, state = self._next
            self._next = None
            try:
                self.row = await self._host.checkpoints.store_model(
                    self.row, model, round_number=round_number, state=state, fence=self._fence()
                )
            except Exception as exc:  # the blob store or the store is away: the job goes on
                log.warning(
                    "job %s: the checkpoint of round %d was not stored: %s", self._job_id, round_number, exc
                )
                last = self.row.last_round
                since = "from its start" if last is None else f"after round {last}"
                self._notice(
                    f"server: the checkpoint of round {round_number} could not be stored "
                    f"({type(exc).__name__}); after a server restart the job would resume {since}"
                )
            finally:
                model.unlink(missing_ok=True)

    def checkpointed_model(self, task: Task) -> Path:
        """The held file of the checkpoint a task names (``Task.checkpoint_round``), handed to
        that task; a round the server holds no model of is a message it refuses."""
        held, self._held_model = self._held_model, None
        if held is None or held[0] != task.checkpoint_round:
            raise BadControllerMessage(
                f"task {task.task_id} sends the checkpoint of round {task.checkpoint_round}, "
                "which is not the last checkpoint the workflow sent"
            )
        return held[1]

    async def stop(self) -> None:
        """The run is ending: the checkpoint waiting is not stored (nothing to resume), and the
        one being stored is waited for."""
        if self._next is not None:
            self._next[1].unlink(missing_ok=True)
            self._next = None
        if self._storing is not None:
            await asyncio.gather(self._storing, return_exceptions=True)


def _hold_model(model: Path, spare: Path, previous: tuple[int, Path] | None, stored: bool) -> None:
    """Keep a checkpoint's model under ``spare`` for the next task (a second link to the same
    file when the checkpoint is also ``stored``; the one name otherwise). The model an earlier
    checkpoint held and no task took goes."""
    if previous is not None:
        previous[1].unlink(missing_ok=True)
    if stored:
        os.link(model, spare)
    else:
        os.replace(model, spare)
