from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli.main import EXIT_READER_GONE, hoist_format, main


@pytest.mark.parametrize(
    ("argv", "fmt", "rest"),
    [
        (["job", "list", "--format", "json"], "json", ["job", "list"]),
        (["--format=json", "job", "list"], "json", ["job", "list"]),
        (["job", "--format", "jsonl", "meta", "1"], "jsonl", ["job", "meta", "1"]),
        (["job", "list"], "txt", ["job", "list"]),
    ],
)
def test_format_may_stand_anywhere(argv: list[str], fmt: str, rest: list[str]) -> None:
    assert hoist_format(argv) == (fmt, rest)


def test_argument_error_in_json_mode_is_one_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["job", "meta", "--format", "json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 4 and doc["exit_code"] == 4 and doc["error_code"] == "INVALID_ARGS"
    assert doc["status"] == "error" and doc["schema_version"] == "1" and "usage" in doc["data"]
    assert err == ""


def test_argument_error_in_text_mode_prints_help_then_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["job", "wait", "1", "--interval", "0"])
    out, err = capsys.readouterr()
    assert code == 4 and out == ""
    assert err.startswith("usage: shoal job wait")
    assert "Code: INVALID_ARGS (exit 4)" in err and "Hint:" in err


def test_jsonl_only_for_streaming_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["job", "list", "--format", "jsonl"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["job", "list", "--format", "xml"], "Use --format txt, json or jsonl ('default' is txt)."),
        (["--format=YAML", "job", "list"], "Use --format txt, json or jsonl ('default' is txt)."),
        (["job", "wait", "1", "--format", ""], "Use --format txt, json or jsonl ('default' is txt)."),
    ],
)
def test_an_unknown_format_is_invalid_args_told_to_people(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It exited 2 (the code of connection and kit failures) with argparse's bare message; a
    format nobody can trust gets the human error lines on stderr, and stdout stays empty."""
    assert main(argv) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert "is not one of txt, json, jsonl" in err and f"Hint: {hint}" in err
    assert err.rstrip().endswith("Code: INVALID_ARGS (exit 4)")


def _with_stdout_closed(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI into a pipe whose reader is already gone (``shoal ... | head -c0``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "shoal", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv", [("job", "submit", "--schema"), ("--format", "json", "job", "list", "--schema")]
)
def test_a_reader_that_went_away_ends_the_command_quietly(argv: tuple[str, ...]) -> None:
    proc = _with_stdout_closed(*argv)
    assert proc.returncode == EXIT_READER_GONE == 141
    assert proc.stderr == ""  # no traceback, no "Exception ignored" at exit


def test_an_unknown_option_points_at_the_command_it_was_given_to(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse reports unrecognised arguments from the top parser; the hint and usage name
    the command the user ran, not bare 'shoal'."""
    code = main(["job", "list", "--no-such-option", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"
    assert doc["hint"] == "Run 'shoal job list --help' for usage." and doc["data"]["usage"].startswith(
        "usage: shoal job list"
    )


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc")
@pytest.mark.parametrize(
    "argv",
    [
        ("poc", "prepare", "--workspace", "/proc/shoal-cannot-be-here"),
        ("simulate", "-j", "examples/hello-numpy", "-n", "2", "-o", "/proc/shoal-cannot-be-here"),
    ],
)
def test_a_path_the_cli_cannot_use_is_a_local_file_error_not_a_bug(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """/proc refuses new entries even to root: an OSError from the local disk was reported as
    INTERNAL_ERROR ("this is a bug"); it is LOCAL_FILE_ERROR naming the path."""
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    code = main([*argv, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR", doc
    assert "/proc/shoal-cannot-be-here" in doc["message"], doc
