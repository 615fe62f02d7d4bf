"""What a site may say on its control channel, parsed at the edge into typed values.

A site is a peer that may be buggy or hostile. Everything it sends is checked here, once, before
any other part of the server sees it: the scheduler and the job runs only ever get values of
the types they expect. A message that does not parse raises ``BadSiteMessage``; the channel
refuses it (a hello: the channel is closed) and logs a notice naming the site, and nothing else
changes. Fields a message does not need are ignored, so a newer agent can add some.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.privacy.protections import SITE_KEYS, PrivacySpecError, check_privacy
from shoal.site.policy import BOOL_KEYS, PRIVACY_KEY, STRING_LIST_KEYS

VERSION_MAX = 64  # characters of the agent's version string
JOB_ID_MAX = 32  # characters of a job id as a site names it (job ids are decimal numbers)
TASK_ID_MAX = 64
JOBS_MAX = 10_000  # job ids a hello may report


class BadSiteMessage(ValueError):
    """A message the server cannot use; ``str()`` says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message of every channel: who the agent is and what it runs."""

    version: str
    studies: frozenset[str] | None  # the studies the site serves (its site_policy.json); None: all
    jobs: frozenset[str]  # jobs the site still runs (after a reconnect)
    resources: Any = None  # what it declares in local/resources.json (checked by shoal.wire.resources)


@dataclass(frozen=True, slots=True)
class JobReport:
    """A report about one job the site takes part in; the base of every message but hello."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Ready(JobReport):
    pass


@dataclass(frozen=True, slots=True)
class Ended(JobReport):
    pass


#: The files a site's live log chunk may add to: its script's raw output or its records.
LOG_FILES = ("log.txt", "log.json")


@dataclass(frozen=True, slots=True)
class LogChunk(JobReport):
    data: str
    file: str = "log.txt"  # one of LOG_FILES (an agent that streams records says log.json)


@dataclass(frozen=True, slots=True)
class Metric(JobReport):
    key: str
    value: float  # NaN and infinities pass: a diverged loss is news, not a malformed message
    step: int | None


@dataclass(frozen=True, slots=True)
class Notice(JobReport):
    message: str


@dataclass(frozen=True, slots=True)
class Failed(JobReport):
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class InlineResult(JobReport):
    """A small result inside the channel. ``header`` is checked by ``result_header`` on the way
    in, as a PUT's header is: a bad one is answered "not taken" and the PUT reports it."""

    task_id: str
    data: str  # base64
    header: dict[str, Any]


SiteMessage = Hello | Ready | Ended | LogChunk | Metric | Notice | Failed | InlineResult


def parse_site_message(text: str) -> SiteMessage:
    """The typed message in ``text``, or BadSiteMessage saying what is wrong with it."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting thousands deep
        raise BadSiteMessage(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise BadSiteMessage(f"not a JSON object but {type(data).__name__}")
    kind = data.get("type")
    if kind == "hello":
        return _hello(data)
    parse = _JOB_REPORTS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise BadSiteMessage(f"unknown message type {_show(kind)}")
    job_id = _text(data, "job_id", JOB_ID_MAX)
    try:
        return parse(job_id, data)
    except BadSiteMessage as exc:
        raise BadSiteMessage(f"{kind}: {exc}") from None


def _hello(data: dict[str, Any]) -> Hello:
    version = data.get("version", "")
    if not isinstance(version, str) or len(version) > VERSION_MAX:
        raise BadSiteMessage(f"hello: 'version' must be a string of at most {VERSION_MAX} characters")
    jobs = data.get("jobs", [])
    if (
        not isinstance(jobs, list)
        or len(jobs) > JOBS_MAX
        or not all(isinstance(j, str) and len(j) <= JOB_ID_MAX for j in jobs)
    ):
        raise BadSiteMessage(f"hello: 'jobs' must be a list of job ids, not {_show(jobs)}")
    policy = data.get("policy")
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise BadSiteMessage(f"hello: 'policy' must be an object, not {_show(policy)}")
    # The keys of site_policy.json (shoal.site.policy) must have their types; others a newer
    # agent may send are ignored. The server itself uses only ``studies``.
    for key in BOOL_KEYS:
        if key in policy and not isinstance(policy[key], bool):
            raise BadSiteMessage(f"hello: policy '{key}' must be true or false, not {_show(policy[key])}")
    for key in STRING_LIST_KEYS:
        value = policy.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise BadSiteMessage(
                f"hello: policy '{key}' must be a list of strings or null, not {_show(value)}"
            )
    if policy.get(PRIVACY_KEY) is not None:
        try:
            check_privacy(policy[PRIVACY_KEY], allowed=SITE_KEYS, where=f"policy '{PRIVACY_KEY}'")
        except PrivacySpecError as exc:
            raise BadSiteMessage(f"hello: {exc}") from exc
    studies = policy.get("studies")
    return Hello(
        version=version,
        studies=None if studies is None else frozenset(studies),
        jobs=frozenset(jobs),
        resources=data.get("resources"),
    )


def _metric(job_id: str, data: dict[str, Any]) -> Metric:
    value = data.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadSiteMessage(f"'value' must be a number, not {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # a whole number of hundreds of digits
        raise BadSiteMessage("'value' is out of range") from None
    step = data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise BadSiteMessage(f"'step' must be a whole number or null, not {_show(step)}")
    return Metric(job_id, _text(data, "key"), number, step)


def _failed(job_id: str, data: dict[str, Any]) -> Failed:
    error = data.get("error")
    if not isinstance(error, dict):
        raise BadSiteMessage(f"'error' must be an object, not {_show(error)}")
    return Failed(job_id, _text(error, "type", 200, "Error"), _text(error, "message", None, "failed"))


def _inline_result(job_id: str, data: dict[str, Any]) -> InlineResult:
    header = data.get("header")
    if header is None:
        header = {}
    if not isinstance(header, dict):
        raise BadSiteMessage(f"'header' must be an object, not {_show(header)}")
    return InlineResult(job_id, _text(data, "task_id", TASK_ID_MAX), _text(data, "data"), header)


_JOB_REPORTS: dict[str, Callable[[str, dict[str, Any]], SiteMessage]] = {
    "ready": lambda job_id, data: Ready(job_id),
    "ended": lambda job_id, data: Ended(job_id),
    "log": lambda job_id, data: LogChunk(job_id, _text(data, "data"), _log_file(data)),
    "notice": lambda job_id, data: Notice(job_id, _text(data, "message")),
    "metric": _metric,
    "failed": _failed,
    "result": _inline_result,
}


def _log_file(data: dict[str, Any]) -> str:
    name = _text(data, "file", 16, "log.txt")
    if name not in LOG_FILES:
        raise BadSiteMessage(f"'file' must be one of {', '.join(LOG_FILES)}")
    return name


def _text(data: dict[str, Any], key: str, limit: int | None = None, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadSiteMessage(f"'{key}' must be a string, not {_show(value)}")
    if limit is not None and len(value) > limit:
        raise BadSiteMessage(f"'{key}' is longer than {limit} characters")
    return value


def _show(value: object) -> str:
    """A short description of a bad value, safe to log whatever it is."""
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)[:40]
