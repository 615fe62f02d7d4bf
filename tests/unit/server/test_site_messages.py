"""What a site says, parsed at the edge: good messages become typed values, anything else is
BadSiteMessage (the channel refuses it; tests/security/test_hostile_site.py does it for real)."""

from __future__ import annotations

import json
import math

import pytest

from shoal.server.site_messages import BadSiteMessage, parse_site_message
from shoal.wire.messages import UnknownMessage
from shoal.wire.site import ErrorInfo, Hello, InlineResult, JobFailed, LoggedMetric


def test_the_agents_own_messages_parse_into_typed_values() -> None:
    hello = parse_site_message(
        json.dumps(
            {"type": "hello", "version": "1.0", "policy": {"studies": ["a"], "future": 1}, "jobs": ["7"]}
        )
    )
    assert isinstance(hello, Hello)
    assert (hello.version, hello.studies, hello.jobs) == ("1.0", frozenset({"a"}), ["7"])
    bare = parse_site_message(json.dumps({"type": "hello"}))
    assert isinstance(bare, Hello) and (bare.version, bare.studies, bare.jobs) == ("", None, [])
    private = {"type": "hello", "policy": {"privacy": {"client_dp": {"clip_norm": 1, "noise_multiplier": 1}}}}
    checked = parse_site_message(json.dumps(private))
    assert isinstance(checked, Hello) and checked.studies is None
    metric = parse_site_message('{"type": "metric", "job_id": "7", "key": "loss", "value": NaN, "step": 3}')
    assert isinstance(metric, LoggedMetric) and math.isnan(metric.value) and metric.step == 3
    failed = parse_site_message(json.dumps({"type": "failed", "job_id": "7", "error": {"message": "m"}}))
    assert failed == JobFailed("7", ErrorInfo("Error", "m"))
    result = parse_site_message(
        json.dumps({"type": "result", "job_id": "7", "task_id": "t1", "data": "AA=="})
    )
    assert result == InlineResult("7", "t1", "AA==", {})


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"type": "hello", "policy": {"studies": 5}}),
        json.dumps({"type": "hello", "policy": {"allow_log_streaming": 1}}),
        json.dumps({"type": "hello", "policy": {"privacy": {"quantize_bits": "8"}}}),
        json.dumps({"type": "hello", "policy": {"privacy": {"budget": {"epsilon": 1, "delta": 0.1}}}}),
        json.dumps({"type": "hello", "jobs": ["1" * 33]}),
        json.dumps({"type": "metric", "job_id": "7", "key": "k", "value": True}),
        json.dumps({"type": "metric", "job_id": "7", "key": "k", "value": 1, "step": 1.5}),
        json.dumps({"type": "failed", "job_id": "7", "error": {"message": 5}}),
        json.dumps({"type": "result", "job_id": "7", "task_id": "t", "data": "", "header": []}),
        json.dumps({"type": "ready"}),
        "{" * 10 + "}" * 10,
        "[" * 50_000,
    ],
)
def test_anything_else_is_a_bad_site_message(text: str) -> None:
    with pytest.raises(BadSiteMessage):
        parse_site_message(text)


@pytest.mark.parametrize(
    "text", [json.dumps({"type": 5}), json.dumps({"type": "teleport"}), '{"type": "ready", "v": 2}']
)
def test_a_type_or_version_the_server_does_not_know_is_unknown(text: str) -> None:
    with pytest.raises(UnknownMessage):
        parse_site_message(text)
