"""The message registry's one rule: typed values, unknown fields ignored, null as the default,
a newer version or an unknown type is an unknown message logged once per kind."""

from __future__ import annotations

import logging

import pytest

from shoal.wire.catalog import all_messages
from shoal.wire.controller import (
    Done,
    Result,
    ResultBytes,
    Resumable,
    RoundCheckpoint,
    SiteFailed,
    Task,
    WorkflowError,
)
from shoal.wire.messages import (
    CONTROLLER,
    SITE,
    UNKNOWN_KINDS_LOGGED,
    BadMessage,
    Dispatch,
    Message,
    UnknownMessage,
    decode,
    encode,
)
from shoal.wire.results import ResultInfo, checked_result_info
from shoal.wire.site import ErrorInfo, JobFailed, TaskForSite


def test_every_message_round_trips_through_its_encoding() -> None:
    result = Result(task_id="t1", site="site-1", path="/r", info=ResultInfo(3, {"loss": 0.5}, {"k": "v"}))
    for message in (
        result,
        Task(task_id="t1", model_path="m", sites=["site-1"], round=2, meta={"a": 1}),
        Done(reason="budget"),
        WorkflowError(status="FAILED", type="RoundFailed", message="x", site="site-2"),
        Resumable(value=True, workflow="FedAvg"),
        RoundCheckpoint(
            round=3, model_path="checkpoint-3.safetensors", state={"workflow": {"next_round": 4}}
        ),
    ):
        assert decode(CONTROLLER, encode(message)) == message


def test_a_result_travels_flat_as_the_header_a_script_writes() -> None:
    encoded = encode(Result(task_id="t", site="s", path="/p", info=ResultInfo(7, {"acc": 1.0}, {})))
    assert encoded == {
        "op": "result",
        "task_id": "t",
        "site": "s",
        "path": "/p",
        "num_examples": 7,
        "metrics": {"acc": 1.0},
        "meta": {},
    }


def test_a_result_as_bytes_travels_as_base64_beside_its_flat_header() -> None:
    """A small result the server took inline goes to the workflow inside the message (no file,
    decisions/0044): the bytes come back exactly, and a message without them is refused."""
    import base64
    import json

    body = bytes(range(256)) * 3
    message = ResultBytes(
        task_id="t",
        site="s",
        data=base64.b64encode(body).decode(),
        info=ResultInfo(7, {"acc": 1.0}, {"m": 1}),
    )
    encoded = encode(message)
    assert encoded == {
        "op": "result_bytes",
        "task_id": "t",
        "site": "s",
        "data": base64.b64encode(body).decode(),
        "num_examples": 7,
        "metrics": {"acc": 1.0},
        "meta": {"m": 1},
    }
    decoded = decode(CONTROLLER, json.loads(json.dumps(encoded)))
    assert decoded == message and isinstance(decoded, ResultBytes) and decoded.payload() == body
    for bad in ({**encoded, "data": 12}, {k: v for k, v in encoded.items() if k != "data"}):
        with pytest.raises(BadMessage, match="data"):
            decode(CONTROLLER, bad)


def test_unknown_fields_are_ignored_and_null_is_the_default() -> None:
    message = decode(
        CONTROLLER,
        {"op": "task", "task_id": "a", "model_path": "m", "sites": [], "meta": None, "added_later": [1]},
    )
    assert message == Task(task_id="a", model_path="m", sites=[], meta={})


@pytest.mark.parametrize(
    "raw",
    [
        {"op": "task", "task_id": "a", "sites": []},  # model_path missing
        {"op": "task", "task_id": 5, "model_path": "m", "sites": []},
        {"op": "task", "task_id": "a", "model_path": "m", "sites": "site-1"},
        {"op": "task", "task_id": "a", "model_path": "m", "sites": [], "round": True},
        {"op": "metric", "site": "s", "key": "k", "value": "1"},
        {"op": "task", "v": "2"},
    ],
)
def test_a_known_message_without_its_fields_is_bad(raw: dict[str, object]) -> None:
    with pytest.raises(BadMessage):
        decode(CONTROLLER, raw)


@pytest.mark.parametrize("raw", [{"op": "teleport"}, {"op": "task", "v": 2}, {"op": 7}, {}])
def test_an_unknown_type_or_a_newer_version_is_unknown(raw: dict[str, object]) -> None:
    with pytest.raises(UnknownMessage):
        decode(CONTROLLER, raw)


def test_dispatch_logs_each_unknown_kind_once_and_at_most_a_few_kinds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[Message] = []
    dispatch = Dispatch(CONTROLLER, {Done: handled.append}, logging.getLogger("test.dispatch"), "peer")
    with caplog.at_level(logging.WARNING, logger="test.dispatch"):
        for _ in range(3):
            assert dispatch.handler({"op": "teleport"}) is None
        for n in range(UNKNOWN_KINDS_LOGGED * 2):
            dispatch.handler({"op": f"kind{n}"})
        # a registered message this side has no handler for is unknown to it too
        assert dispatch.handler(encode(SiteFailed(site="s"))) is None
        found = dispatch.handler({"op": "done", "reason": "r"})
    assert found is not None
    message, handle = found
    handle(message)
    assert handled == [Done(reason="r")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == UNKNOWN_KINDS_LOGGED
    assert warnings[0] == "peer sent an unknown message 'teleport'; ignored"


def test_a_dispatch_table_takes_only_its_channels_messages() -> None:
    with pytest.raises(TypeError):
        Dispatch(SITE, {Done: print}, logging.getLogger("test"), "peer")


def test_message_class_names_are_unique_so_grep_finds_every_sender() -> None:
    names = [cls.__name__ for cls in all_messages()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "raw",
    [[], {"num_examples": -1}, {"num_examples": 1.5}, {"metrics": {"a": "x"}}, {"meta": []}],
)
def test_a_result_header_that_cannot_be_used_is_refused(raw: object) -> None:
    with pytest.raises(BadMessage):
        checked_result_info(raw)


def test_a_result_header_keeps_what_the_site_said() -> None:
    info = checked_result_info({"num_examples": 0, "metrics": {"loss": 1}, "meta": {"m": [1]}, "x": 1})
    assert info == ResultInfo(0, {"loss": 1}, {"m": [1]})
    assert checked_result_info({}) == ResultInfo(1, {}, {})


def test_a_none_default_is_left_out_so_older_peers_see_no_key() -> None:
    """An older agent tests ``"model" in message``; a task without an inline model must not
    carry ``"model": null``."""
    task = TaskForSite(job_id="7", task_id="t")
    assert "model" not in encode(task) and "round" not in encode(task)
    assert encode(Done()) == {"op": "done"}
    assert decode(SITE, encode(task)) == task


def test_a_nested_record_travels_as_an_object_and_is_checked() -> None:
    failed = JobFailed(job_id="7", error=ErrorInfo(type="ValueError", message="bad"))
    assert encode(failed) == {
        "type": "failed",
        "job_id": "7",
        "error": {"type": "ValueError", "message": "bad"},
    }
    assert decode(SITE, encode(failed)) == failed
    with pytest.raises(BadMessage, match="error"):
        decode(SITE, {"type": "failed", "job_id": "7", "error": {"type": 5}})
