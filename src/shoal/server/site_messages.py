"""What a site may say on its control channel, checked at the edge.

A site is a peer that may be buggy or hostile. Everything it sends is typed by
``shoal.wire.site`` (``decode``) and then checked here, once, before any other part of the
server sees it: lengths, the policy keys the server and agents share, log file names. The
scheduler and the job runs only ever get values of the types they expect. A message that does
not parse raises ``BadSiteMessage``, one of a type (or version) the server does not know
``UnknownMessage``; the channel refuses either (before a hello: the channel is closed) and logs a
notice naming the site, and nothing else changes. Fields a message does not need are ignored,
so a newer agent can add some (decisions/0029).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shoal.privacy.protections import SITE_KEYS, PrivacySpecError, check_privacy
from shoal.site.policy import BOOL_KEYS, PRIVACY_KEY, STRING_LIST_KEYS
from shoal.wire.messages import SITE, BadMessage, Message, decode
from shoal.wire.site import Hello, InlineResult, JobFailed, JobReport, LogChunk, LoggedMetric, SiteNotice

VERSION_MAX = 64  # characters of the agent's version string
JOB_ID_MAX = 32  # characters of a job id as a site names it (job ids are decimal numbers)
TASK_ID_MAX = 64
JOBS_MAX = 10_000  # job ids a hello may report
ERROR_TYPE_MAX = 200
#: The files a site's live log chunk may add to: its script's raw output or its records.
LOG_FILES = ("log.txt", "log.json")


class BadSiteMessage(ValueError):
    """A message the server cannot use; ``str()`` says what is wrong with it."""


def parse_site_message(text: str) -> Message:
    """The checked message in ``text``. BadSiteMessage saying what is wrong with it, or
    UnknownMessage (a type or version this server does not know)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting thousands deep
        raise BadSiteMessage(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise BadSiteMessage(f"not a JSON object but {type(data).__name__}")
    try:
        message = decode(SITE, data)
    except BadMessage as exc:
        raise BadSiteMessage(str(exc)) from None
    if isinstance(message, JobReport):
        _limit(message.job_id, "job_id", JOB_ID_MAX)
    check = _CHECKS.get(type(message))
    if check is not None:
        try:
            check(message)
        except BadSiteMessage as exc:
            raise BadSiteMessage(f"{message.TYPE}: {exc}") from None
    return message


def _hello(hello: Hello) -> None:
    _limit(hello.version, "version", VERSION_MAX)
    if len(hello.jobs) > JOBS_MAX or not all(len(j) <= JOB_ID_MAX for j in hello.jobs):
        raise BadSiteMessage("'jobs' must be a list of job ids")
    policy = hello.policy
    # The keys of site_policy.json (shoal.site.policy) must have their types; others a newer
    # agent may send are ignored. The server itself uses only ``studies``.
    for key in BOOL_KEYS:
        if key in policy and not isinstance(policy[key], bool):
            raise BadSiteMessage(f"policy '{key}' must be true or false, not {_show(policy[key])}")
    for key in STRING_LIST_KEYS:
        value = policy.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise BadSiteMessage(f"policy '{key}' must be a list of strings or null, not {_show(value)}")
    if policy.get(PRIVACY_KEY) is not None:
        try:
            check_privacy(policy[PRIVACY_KEY], allowed=SITE_KEYS, where=f"policy '{PRIVACY_KEY}'")
        except PrivacySpecError as exc:
            raise BadSiteMessage(str(exc)) from exc


def _log(chunk: LogChunk) -> None:
    if chunk.file not in LOG_FILES:
        raise BadSiteMessage(f"'file' must be one of {', '.join(LOG_FILES)}")


def _failed(failed: JobFailed) -> None:
    _limit(failed.error.type, "type", ERROR_TYPE_MAX)


def _inline_result(result: InlineResult) -> None:
    _limit(result.task_id, "task_id", TASK_ID_MAX)


_CHECKS: dict[type[Message], Callable[[Any], None]] = {
    Hello: _hello,
    LogChunk: _log,
    LoggedMetric: lambda message: None,  # its types are all it needs
    SiteNotice: lambda message: None,
    JobFailed: _failed,
    InlineResult: _inline_result,
}


def _limit(value: str, key: str, limit: int) -> None:
    if len(value) > limit:
        raise BadSiteMessage(f"'{key}' is longer than {limit} characters")


def _show(value: object) -> str:
    """A short description of a bad value, safe to log whatever it is."""
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)[:40]
