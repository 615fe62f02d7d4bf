from __future__ import annotations

import pytest

from shoal.errors import CATALOGUE, ShoalError


def test_every_code_has_exit_status_and_hint() -> None:
    for code, spec in CATALOGUE.items():
        assert code.isupper()
        assert spec.exit_code in (1, 2, 3, 4, 5, 130), code
        assert 200 <= spec.http_status < 600, code
        assert spec.message and spec.hint, code


def test_message_detail_and_context() -> None:
    err = ShoalError("JOB_NOT_FOUND", "searched study 'default'", job_id="42", study="default")
    assert err.message == "Job '42' does not exist in study 'default'. — searched study 'default'"
    assert err.exit_code == 1 and err.http_status == 404


def test_round_trip_over_the_wire() -> None:
    err = ShoalError("SUBMIT_TOKEN_CONFLICT", data={"existing_job_id": "7"})
    back = ShoalError.from_wire(err.to_wire())
    assert (back.code, back.message, back.hint, back.data) == (err.code, err.message, err.hint, err.data)


def test_unknown_codes() -> None:
    with pytest.raises(KeyError):
        ShoalError("NO_SUCH_CODE")
    assert ShoalError.from_wire({"error_code": "NO_SUCH_CODE"}).code == "INTERNAL_ERROR"
