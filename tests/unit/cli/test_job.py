"""``shoal job``'s argument types and its local checks of a job before an upload."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import pytest

from shoal.cli.job_args import id_prefix_arg, job_id_arg, non_negative, positive, positive_int
from shoal.cli.main import main
from shoal.wire.jobdef import holds_meta


@pytest.mark.parametrize(
    ("files", "found"),
    [
        (["meta.json", "app/config/config_fed_server.json"], True),
        (["job/meta.json", "job/app/custom/client.py"], True),  # zip -r job.zip job/
        ([".DS_Store", "job/meta.json", "job/app/x.py"], True),  # hidden entries do not count
        (["meta.json/oops"], True),  # the server finds it, then says it is not a file
        (["job/meta.json", "README.md"], False),  # a second top-level entry: no wrapper
        (["a/meta.json", "b/app/x.py"], False),
        (["outer/inner/meta.json"], False),  # only one wrapper level is looked into
        (["app/custom/client.py"], False),
        (["notes.txt"], False),
        ([], False),
    ],
)
def test_meta_json_is_looked_for_where_the_server_looks(files: list[str], found: bool) -> None:
    assert holds_meta(files) is found


@pytest.mark.parametrize("convert", [non_negative, positive, positive_int])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_numbers_must_be_finite(convert: Callable[[str], Any], value: str) -> None:
    """nan passed every check (each comparison is False) and meant "wait forever"."""
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        convert(value)


def test_finite_numbers_still_pass() -> None:
    assert non_negative("0") == 0.0 and positive("0.5") == 0.5 and positive_int("3") == 3


@pytest.mark.parametrize("value", ["١١٧٥", "１２３", "12a", "", " 12", "12\n", "1" * 17, "-1"])
def test_a_job_id_is_ascii_digits(value: str) -> None:
    """str.isdecimal accepts Arabic-Indic or full-width digits; the server's ids are 0-9."""
    with pytest.raises(argparse.ArgumentTypeError):
        job_id_arg(value)


def test_job_ids_and_prefixes_that_can_exist_pass() -> None:
    assert job_id_arg("1857934241544770") == "1857934241544770"
    assert id_prefix_arg("18") == "18" and id_prefix_arg("") == ""
    with pytest.raises(argparse.ArgumentTypeError):
        id_prefix_arg("١")


def _schema(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main([*argv, "--schema"]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


def test_schema_types_a_kit_id_as_a_string(capsys: pytest.CaptureFixture[str]) -> None:
    types = {a["name"]: a["type"] for a in _schema(capsys, "job", "list")["args"]}
    assert types["--kit-id"] == "string" and types["--startup-kit"] == "path", types
    types = {a["name"]: a["type"] for a in _schema(capsys, "config", "use")["args"]}
    assert types["kit_id"] == "string", types


@pytest.mark.parametrize("command", ["list_templates", "create", "show_variables"])
def test_schema_of_a_deprecated_command_has_no_hidden_argument(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its swallowed rest showed as a required argument described "==SUPPRESS=="."""
    args = _schema(capsys, "job", command)["args"]
    assert [a["name"] for a in args] == ["--schema"], args
