"""What this replica passed to the sites it holds for jobs other replicas run (decisions/0048).

A site's replica serves the site's downloads and takes its uploads for a job run elsewhere only
as far as the job's replica said: a job the site was sent a message about (its archive), a task
it was sent (that task's model, and one result for it, bounded by the model's size). The book
is memory only: a replica that restarts has none, and the sites that reconnect to it are sent
their unanswered task again by the job's replica, which writes the entry anew.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: At most this many (site, job) entries; the oldest go first (a job that ended long ago).
MAX_ENTRIES = 20_000
#: At most this many tasks per entry: the site's latest ones (a newer task ends an older one).
MAX_TASKS = 8


@dataclass
class RelayedTask:
    """A task passed to a site: its model's relay blob (None when it rode along), its size."""

    model_blob: str | None
    model_bytes: int
    answered: bool = False


@dataclass
class Relayed:
    """A job another replica (``holder``) runs, as far as one site of this replica is concerned."""

    holder: str
    tasks: OrderedDict[str, RelayedTask] = field(default_factory=OrderedDict)
    #: Bytes of live log passed on: past what the job's replica keeps of a log, no more rows.
    log_bytes: int = 0


class RelayBook:
    """The (site, job id) pairs this replica passed messages for, and their tasks."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str], Relayed] = OrderedDict()

    def passed(self, site: str, job_id: str, holder: str) -> Relayed:
        """A message of ``holder``'s about ``job_id`` went to ``site``: its entry, fresh or kept."""
        key = (site, job_id)
        entry = self._entries.get(key)
        if entry is None or entry.holder != holder:  # a takeover: the new holder's word counts
            entry = Relayed(holder)
            self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        return entry

    def task_passed(self, entry: Relayed, task_id: str, model_blob: str | None, model_bytes: int) -> None:
        entry.tasks[task_id] = RelayedTask(model_blob, model_bytes)
        entry.tasks.move_to_end(task_id)
        while len(entry.tasks) > MAX_TASKS:
            entry.tasks.popitem(last=False)

    def get(self, site: str, job_id: str) -> Relayed | None:
        return self._entries.get((site, job_id))

    def open_task(self, site: str, job_id: str, task_id: str) -> tuple[Relayed, RelayedTask] | None:
        """The entry and task a site's upload names, if it was passed to that site and is not
        answered yet (the job's replica judges whether it is still open when the result comes)."""
        entry = self._entries.get((site, job_id))
        task = entry.tasks.get(task_id) if entry is not None else None
        if entry is None or task is None or task.answered:
            return None
        return entry, task

    def forget(self, site: str, job_id: str) -> None:
        """The site's part in the job ended (it said so): nothing more goes through for it."""
        self._entries.pop((site, job_id), None)
