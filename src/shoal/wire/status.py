"""Job statuses and the one table of allowed transitions.

The store applies every status change as a compare-and-set against this table, so a terminal
status is never overwritten and no code path invents its own rule.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    FINISHED_OK = "FINISHED_OK"
    FINISHED_EXCEPTION = "FINISHED_EXCEPTION"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    ABANDONED = "ABANDONED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobStatus] = frozenset(
    {
        JobStatus.FINISHED_OK,
        JobStatus.FINISHED_EXCEPTION,
        JobStatus.FAILED,
        JobStatus.ABORTED,
        JobStatus.ABANDONED,
    }
)

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SUBMITTED: frozenset(
        {JobStatus.DISPATCHED, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.ABANDONED}
    ),
    JobStatus.DISPATCHED: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.ABANDONED}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.FINISHED_OK,
            JobStatus.FINISHED_EXCEPTION,
            JobStatus.FAILED,
            JobStatus.ABORTED,
            JobStatus.ABANDONED,
        }
    ),
}


def can_transition(current: JobStatus | str, new: JobStatus | str) -> bool:
    """True when the table allows ``current -> new``; terminal statuses allow nothing."""
    return JobStatus(new) in TRANSITIONS.get(JobStatus(current), frozenset())


# The run surface (shoal run / ls / stop) shows the same statuses in its own words.
RUN_STATUS: dict[JobStatus, str] = {
    JobStatus.SUBMITTED: "pending",
    JobStatus.DISPATCHED: "starting",
    JobStatus.RUNNING: "running",
    JobStatus.FINISHED_OK: "finished:completed",
    JobStatus.FINISHED_EXCEPTION: "finished:failed",
    JobStatus.FAILED: "finished:failed",
    JobStatus.ABORTED: "finished:stopped",
    JobStatus.ABANDONED: "finished:failed",
}


#: The most of a job's reason (or first error's message) that is kept and sent. Reasons carry
#: what a script or workflow said (an exception's text, a training script's last lines), which
#: can be megabytes; the whole of it stays in the job's logs.
REASON_MAX = 4000


def brief(text: str, limit: int = REASON_MAX) -> str:
    """``text``, or its start and end with how much was cut between them."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]} [... {len(text) - 2 * keep} characters cut ...] {text[-keep:]}"
