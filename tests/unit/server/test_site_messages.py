"""What a site says, parsed at the edge: good messages become typed values, anything else is
BadSiteMessage (the channel refuses it; tests/security/test_hostile_site.py does it for real)."""

from __future__ import annotations

import json
import math

import pytest

from shoal.server.site_messages import (
    BadSiteMessage,
    Failed,
    Hello,
    InlineResult,
    Metric,
    parse_site_message,
)


def test_the_agents_own_messages_parse_into_typed_values() -> None:
    hello = parse_site_message(
        json.dumps(
            {"type": "hello", "version": "1.0", "policy": {"studies": ["a"], "future": 1}, "jobs": ["7"]}
        )
    )
    assert hello == Hello(version="1.0", studies=frozenset({"a"}), jobs=frozenset({"7"}))
    assert parse_site_message(json.dumps({"type": "hello"})) == Hello("", None, frozenset())
    private = {"type": "hello", "policy": {"privacy": {"client_dp": {"clip_norm": 1, "noise_multiplier": 1}}}}
    assert parse_site_message(json.dumps(private)) == Hello("", None, frozenset())
    metric = parse_site_message('{"type": "metric", "job_id": "7", "key": "loss", "value": NaN, "step": 3}')
    assert isinstance(metric, Metric) and math.isnan(metric.value) and metric.step == 3
    failed = parse_site_message(json.dumps({"type": "failed", "job_id": "7", "error": {"message": "m"}}))
    assert failed == Failed("7", "Error", "m")
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
        json.dumps({"type": 5}),
        "{" * 10 + "}" * 10,
        "[" * 50_000,
    ],
)
def test_anything_else_is_a_bad_site_message(text: str) -> None:
    with pytest.raises(BadSiteMessage):
        parse_site_message(text)
