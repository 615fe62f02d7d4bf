"""The argument types of ``shoal job`` (and of ``shoal run``'s run ids), and the one place a
typed job id becomes the id it stands for.

Each type checks a value by the server's own rules (shoal.wire.rules) while argparse reads it, so
a mistyped id, token or name is refused with the usual bad-argument exit before any request; its
``__name__`` is what argparse's messages and ``--schema`` (cli/schema.py) call it. They live apart
from the parsers (cli/job.py) because other command modules use them too (cli/runs.py, and
cli/main.py's ``connect`` resolves ``last`` and id prefixes), and importing them must not pull in
any command. Stdlib only: this module is on the CLI's start-up path.
"""

from __future__ import annotations

import argparse

from shoal.errors import ShoalError
from shoal.wire.rules import JOB_ID_RE, NAME_MAX_CHARS, SUBMIT_TOKEN_RE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from shoal.api.client import AdminClient

DEFAULT_JOB_FOLDER = "./current_job"  # what -j means when it is not given (FLARE's default)
INFINITY = float("inf")


def submit_token(value: str) -> str:
    if not SUBMIT_TOKEN_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "submit token must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return value


#: The job id that stands for the caller's newest job of the study.
LAST = "last"


def job_id_arg(value: str) -> str:
    """A job id as typed: its digits, the first digits of one (unique in the study), or
    ``last``; shoal.cli.main.connect turns the last two into the id."""
    if value != LAST and not JOB_ID_RE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise argparse.ArgumentTypeError(
            f"a job id is 1-16 digits 0-9 (or its first digits, or 'last'), as 'shoal job list' "
            f"shows it, not {shown!r}"
        )
    return value


def resolve_job_id(client: AdminClient, study: str, typed: str) -> str:
    """The job id ``typed`` stands for. A whole id (16 digits) is taken as it is, with no
    request; ``last`` is the study's newest job; fewer digits are the one job whose id
    starts with them, or that id itself (ids below 10^15 have fewer than 16 digits)."""
    if len(typed) == 16:
        return typed
    if typed == LAST:
        newest = client.list_jobs(study, max_results=1)
        if not newest:
            raise ShoalError("JOB_NOT_FOUND", "the study has no jobs yet", job_id=LAST, study=study)
        return str(newest[0]["job_id"])
    found = [str(row["job_id"]) for row in client.list_jobs(study, id_prefix=typed, max_results=50)]
    if typed in found or not found:
        return typed  # the id itself, or nothing: the command says JOB_NOT_FOUND as usual
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise ShoalError("JOB_ID_AMBIGUOUS", f"it could be {shown}", job_id=typed)
    return found[0]


DOWNLOAD_PARTS = ("model", "metrics", "logs", "job")


def download_parts(value: str) -> list[str]:
    """``--only model,metrics``: the parts of a result to fetch (shoal.server.results.PARTS)."""
    parts = sorted({p.strip() for p in value.split(",") if p.strip()})
    unknown = [p for p in parts if p not in DOWNLOAD_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"takes a comma-separated list of {', '.join(DOWNLOAD_PARTS)}, not {value[:60]!r}"
        )
    return parts


download_parts.__name__ = "parts"


def job_folder_arg(value: str) -> str:
    if not value:  # Path("") is the current directory: an empty -j would upload it whole
        raise argparse.ArgumentTypeError("the job folder must not be empty")
    return value


def id_prefix_arg(value: str) -> str:
    if value and not JOB_ID_RE.fullmatch(value):
        raise argparse.ArgumentTypeError("a job id prefix is up to 16 digits 0-9")
    return value


def _short_name(what: str) -> Callable[[str], str]:
    """An argparse type for a name of at most NAME_MAX_CHARS characters (its ``__name__``
    keeps --schema calling it a string)."""

    def convert(value: str) -> str:
        if len(value) > NAME_MAX_CHARS:
            raise argparse.ArgumentTypeError(
                f"{what} is at most {NAME_MAX_CHARS} characters; this one has {len(value)}"
            )
        return value

    convert.__name__ = "name"
    return convert


job_name_prefix = _short_name("a job name")
site_name = _short_name("a site name")


def _number(name: str, kind: Callable[[str], Any], zero_allowed: bool) -> Callable[[str], Any]:
    """An argparse type for a number that may not be negative (nor zero unless allowed). The
    name shows in argparse's messages and tells --schema the JSON type (cli/schema.py)."""

    def convert(value: str) -> Any:
        number = kind(value)
        if not -INFINITY < number < INFINITY:  # nan fails every comparison: no wait is "forever"
            raise argparse.ArgumentTypeError(f"must be a finite number, not {value!r}")
        if number < 0 or (number == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError("must be >= 0" if zero_allowed else "must be > 0")
        return number

    convert.__name__ = name
    return convert


non_negative = _number("non_negative", float, zero_allowed=True)
positive = _number("positive", float, zero_allowed=False)
non_negative_int = _number("non_negative_int", int, zero_allowed=True)
positive_int = _number("positive_int", int, zero_allowed=False)
