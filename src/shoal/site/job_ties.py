"""What a part of a site job is told of the job it belongs to (``JobTies``).

The job's parts (``job_inputs``, ``job_results``) keep their own state and workings, but what
a refused input or result means, and the job's log, are the job's (decisions/0049): a part is
given the job's id and two callables, never the job itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class JobTies:
    job_id: str
    failed: Callable[[str, str], Awaitable[None]]  # the job fails, saying why (its kind, its message)
    note: Callable[[str], None]  # a line of the site's own in the job's log
