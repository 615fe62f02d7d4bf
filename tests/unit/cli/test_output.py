"""The one renderer: server numbers in human text, and JSON that never builds it."""

from __future__ import annotations

import json

import pytest

from shoal.cli.output import Result, number_text, render_result


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (0.123456789, ".6g", "0.123457"),
        (3, ".6g", "3"),
        (12.34, ".1f", "12.3"),
        (None, ".6g", "n/a"),  # a NaN or infinite metric: the server sends null
        ("fast", ".6g", "fast"),
        (True, ".6g", "True"),
    ],
)
def test_number_text_never_applies_a_number_format_to_a_non_number(
    value: object, spec: str, text: str
) -> None:
    assert number_text(value, spec) == text


def test_json_output_does_not_build_the_human_text(capsys: pytest.CaptureFixture[str]) -> None:
    def human() -> str:
        raise AssertionError("built in JSON mode")

    assert render_result(Result({"loss": None}, human=human), "json") == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"loss": None}
