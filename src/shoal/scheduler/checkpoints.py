"""The server's side of job checkpoints: models into the blob store, rows into the job store.

A checkpoint's model is a blob (content-addressed, in the folder or the bucket), so whatever
server resumes the job reads it where it is, not from the disk of the server that died. Blobs
are shared by content: two jobs whose rounds end on the same model share one, so a blob goes
only when no checkpoint row and no job archive names it. Those checks and the writes they
guard run one at a time (an asyncio lock), so a blob is never deleted between another job's
upload of it and its row being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal.store.base import JobStore
from shoal.store.blobs import Blobs
from shoal.store.checkpoints import Checkpoint
from shoal.store.leases import Lease

#: How much lower than the server's other threads the thread that hashes checkpoint models runs
#: (a thread's own nice value, within the server's scheduling group): it yields the CPU to the
#: event loop, which moves the next round's model to the sites while a checkpoint is hashed.
HASHING_NICE = 10


def _lower_priority() -> None:
    """Run this thread (a Linux task of its own) HASHING_NICE above the server's nice value (at
    most 19); left as it is where the platform has no per-thread nice value."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + HASHING_NICE))


class CheckpointKeeper:
    def __init__(self, store: JobStore, blobs: Blobs) -> None:
        self.store = store
        self.blobs = blobs
        self._lock = asyncio.Lock()
        # Storing a model hashes it whole (SHA-256: ~0.15 s of CPU for 100 MB here), beside the
        # next round's downloads on a machine whose cores they already fill: a thread of its own
        # at a lower priority takes what CPU they leave (docs/performance.md, decisions/0050).
        self._hasher = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="shoal-checkpoint", initializer=_lower_priority
        )

    def close(self) -> None:
        """Let the hashing thread go (after the model it may be storing)."""
        self._hasher.shutdown(wait=True)

    async def put(self, checkpoint: Checkpoint, *, fence: Lease | None = None) -> None:
        """Write a row that names no new blob (the job started, its workflow said it can resume),
        off the event loop (its commit waits for the disk). ``fence`` here and below: only while
        that lease holds the job (``shoal.store.leases.LeaseLost`` otherwise)."""
        async with self._lock:
            await asyncio.to_thread(self.store.put_checkpoint, checkpoint, fence=fence)

    async def store_model(
        self,
        checkpoint: Checkpoint,
        model: Path,
        *,
        round_number: int,
        state: dict[str, Any],
        fence: Lease | None = None,
    ) -> Checkpoint:
        """Round ``round_number`` finished with ``model`` (a server-held file, which the blob
        store takes: moved in, not copied, where it can) and ``state``: the new row, committed,
        with the previous round's model blob released."""
        async with self._lock:
            sha = await asyncio.get_running_loop().run_in_executor(self._hasher, self.blobs.take_file, model)
            new = replace(checkpoint, last_round=round_number, state=state, model_sha256=sha)
            await asyncio.to_thread(self.store.put_checkpoint, new, fence=fence)
            if checkpoint.model_sha256 and checkpoint.model_sha256 != sha:
                await asyncio.to_thread(self.release, checkpoint.model_sha256)
            return new

    async def drop(self, checkpoint: Checkpoint, *, fence: Lease | None = None) -> None:
        """The job ended: its row and (unless shared) its model blob go."""
        async with self._lock:
            await asyncio.to_thread(self.drop_now, checkpoint, fence)

    def drop_now(self, checkpoint: Checkpoint, fence: Lease | None = None) -> None:
        """``drop`` for the server's start, before anything else runs."""
        self.store.drop_checkpoint(checkpoint.job_id, fence=fence)
        if checkpoint.model_sha256:
            self.release(checkpoint.model_sha256)

    def release(self, sha: str) -> None:
        """Delete a checkpoint's model blob if nothing names it any more."""
        if any(c.model_sha256 == sha for c in self.store.checkpoints()) or self.store.jobs_using_content(sha):
            return
        try:
            self.blobs.delete(sha)
        except FileNotFoundError:
            pass

    async def write_resume_dir(self, checkpoint: Checkpoint, folder: Path) -> None:
        """What a resumed workflow reads (``shoal.runtime.controller.resume``): the round and
        state as JSON, the model copied out of the blob store (streamed: it may be large)."""
        assert checkpoint.last_round is not None and checkpoint.model_sha256 is not None

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            with (
                self.blobs.open(str(checkpoint.model_sha256)) as src,
                open(folder / "model.safetensors", "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            saved = {"last_round": checkpoint.last_round, "state": checkpoint.state or {}}
            (folder / "checkpoint.json").write_text(json.dumps(saved))

        await asyncio.to_thread(write)
