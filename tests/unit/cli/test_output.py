"""The one renderer: server numbers in human text, and JSON that never builds it."""

from __future__ import annotations

import json

import pytest

from shoal.cli.output import (
    Result,
    labelled,
    number_text,
    progress,
    render_error,
    render_result,
    terminal_safe,
)
from shoal.errors import ShoalError


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


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;title\x07rest", "\\x1b]0;title\\x07rest"),  # OSC: a window title
        ("\x1b[2J\x1b[8mhidden", "\\x1b[2J\\x1b[8mhidden"),  # clear the screen, conceal
        ("shown\roverwritten", "shown\\x0doverwritten"),
        ("a line\r\nthe next\ttabbed", "a line\r\nthe next\ttabbed"),  # line ends and tabs stay
        ("\x9b31m \x85 \x7f \x00", "\\x9b31m \\x85 \\x7f \\x00"),  # C1 (CSI, NEL), DEL, NUL
        ("abc\u202edef\u2066x\u2069", "abc\\u202edef\\u2066x\\u2069"),  # bidi override, isolate
        ("zero\u200bwidth\ufeff\u2028\u3164", "zero\\u200bwidth\\ufeff\\u2028\\u3164"),
        ("tag\U000e0041 private\ue000 \udcff", "tag\\U000e0041 private\\ue000 \\udcff"),
        ("中文 é 🎊 ✋ a\xa0b", "中文 é 🎊 ✋ a\xa0b"),  # letters, emoji, non-ASCII spaces pass
    ],
)
def test_terminal_safe_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert terminal_safe(raw) == shown


def test_every_human_write_is_escaped_and_json_stays_exact(capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "site says \x1b]0;pwned\x07 \u202eevil"
    render_result(Result({"text": hostile}, human=hostile), "txt")
    render_error(ShoalError("JOB_FAILED", hostile, hint=hostile), "txt")
    progress(hostile)
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text and "\\x1b]0;pwned\\x07" in text
    render_result(Result({"text": hostile}, human=hostile), "json")
    assert json.loads(capsys.readouterr().out)["data"]["text"] == hostile


def test_a_labelled_values_own_lines_never_start_where_a_label_does() -> None:
    text = labelled("Reason:", "failed\nStatus:      FINISHED_OK")
    assert text.splitlines() == ["Reason:      failed", "             Status:      FINISHED_OK"]


def test_logs_of_several_sites_name_their_site_on_every_line() -> None:
    from shoal.cli.job_observe import logs_by_site

    text = logs_by_site(
        {"server": "", "site-1": "one\n===== site-2 =====\nsite-2 | forged\n", "site-2": "two"}
    )
    assert text.splitlines() == [
        "server | (no log content)",
        "site-1 | one",
        "site-1 | ===== site-2 =====",
        "site-1 | site-2 | forged",
        "site-2 | two",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00:00"), (59.9, "00:00:59"), (3661, "01:01:01"), (86399, "23:59:59"), (90000, "1d 01:00:00")],
)
def test_clock_shows_days_as_flower_does(seconds: float, text: str) -> None:
    from shoal.cli.output import clock

    assert clock(seconds) == text


def test_a_narrow_table_cuts_only_the_columns_that_may_be_cut() -> None:
    from shoal.cli.output import table

    rows = [{"id": "1234567890123456", "name": "a-rather-long-job-name", "status": "finished:completed"}]
    columns = [("id", "ID"), ("name", "NAME"), ("status", "STATUS")]
    wide = table(rows, columns, fit=("name",), width=200).splitlines()
    assert wide[2].split() == ["1234567890123456", "a-rather-long-job-name", "finished:completed"]
    narrow = table(rows, columns, fit=("name",), width=44).splitlines()
    assert narrow[2].split() == ["1234567890123456", "a-rat…", "finished:completed"]
    assert max(len(line) for line in narrow) <= 44
    tiny = table(rows, columns, fit=("name",), width=10).splitlines()  # ids and statuses stay whole
    assert tiny[2].split() == ["1234567890123456", "a-r…", "finished:completed"]
