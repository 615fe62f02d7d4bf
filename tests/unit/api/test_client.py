"""The admin client: its own percent-encoding agrees with urllib's (it avoids importing it),
and every answer or refusal becomes the error code that says whose fault it is."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from shoal.api.client import MAX_TARGET_BYTES, SERVER_BUG_HINT, AdminClient, _error_from_response
from shoal.api.kits import AdminKit
from shoal.errors import ShoalError
from shoal.wire.routes import quote as _quote


@pytest.mark.parametrize(
    "value",
    ["12345", "default", "my study", "a/b?c=d&e#f", "100%", "ü-é_ß.~", "名前", "+plus", "", "\x00\x7f"],
)
def test_quote_matches_urllib(value: str) -> None:
    assert _quote(value) == urllib.parse.quote(value, safe="")
    assert urllib.parse.unquote(_quote(value)) == value


# --- answers without a catalogue code, and requests the server would refuse unread ---


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (400, "INVALID_ARGS", 4),  # aiohttp: "Got more than 8190 bytes when reading"
        (414, "INVALID_ARGS", 4),
        (431, "INVALID_ARGS", 4),
        (413, "UPLOAD_TOO_LARGE", 1),  # a proxy's body limit on an upload
        (502, "CONNECTION_FAILED", 2),  # a proxy that cannot reach the server
        (500, "INTERNAL_ERROR", 5),
    ],
)
def test_an_answer_without_a_code_is_classified_by_its_status(status: int, code: str, exit_code: int) -> None:
    err, from_shoal = _error_from_response(status, b"Got more than 8190 bytes when reading")
    assert (err.code, err.exit_code, from_shoal) == (code, exit_code, False)
    assert f"HTTP {status}" in err.message and "SHOAL_DEBUG" not in err.hint


def test_the_servers_internal_error_points_at_the_servers_log() -> None:
    """SHOAL_DEBUG=1 shows a local traceback; the server's bug is in the server's log."""
    wire = ShoalError("INTERNAL_ERROR", "KeyError").to_wire()
    err, from_shoal = _error_from_response(500, json.dumps(wire).encode())
    assert from_shoal and err.code == "INTERNAL_ERROR" and err.hint == SERVER_BUG_HINT
    assert "server" in err.hint and "SHOAL_DEBUG" not in err.hint


def test_a_code_this_cli_does_not_know_says_so() -> None:
    body = {"error_code": "FROM_THE_FUTURE", "message": "m", "hint": "h"}
    err, from_shoal = _error_from_response(409, json.dumps(body).encode())
    assert from_shoal and err.code == "INTERNAL_ERROR" and "FROM_THE_FUTURE" in err.message
    assert "version" in err.hint


def test_other_codes_come_back_as_the_server_sent_them() -> None:
    wire = ShoalError("JOB_NOT_FOUND", "searched study 'x'", job_id="1", study="x").to_wire()
    err, from_shoal = _error_from_response(404, json.dumps(wire).encode())
    assert from_shoal and err.code == "JOB_NOT_FOUND" and err.message == wire["message"]


def _kit_of_a_server_that_is_not_there(tmp_path: Path) -> AdminKit:
    return AdminKit(
        path=str(tmp_path),
        name="a@b.c",
        org="b.c",
        role="lead",
        project="p",
        host="127.0.0.1",
        port=1,  # nothing listens: a request that got as far as the network would fail to connect
        source="startup-kit",
    )


@pytest.mark.parametrize("study", ["a" * 20000, "名" * 1000])  # 9 bytes each, percent-encoded
def test_a_request_too_long_for_the_server_is_refused_before_connecting(tmp_path: Path, study: str) -> None:
    client = AdminClient(_kit_of_a_server_that_is_not_there(tmp_path))
    with pytest.raises(ShoalError) as caught:
        client.list_jobs(study)
    assert caught.value.code == "INVALID_ARGS" and "the study value is too long" in caught.value.message
    assert client._conn is None


def test_a_long_job_id_is_named_as_the_culprit(tmp_path: Path) -> None:
    client = AdminClient(_kit_of_a_server_that_is_not_there(tmp_path))
    with pytest.raises(ShoalError) as caught:
        client.get_job("1" * (MAX_TARGET_BYTES + 1), "default")
    assert caught.value.code == "INVALID_ARGS" and "the job id is too long" in caught.value.message
