"""pyproject.toml is checked whole: every malformed shape is APP_PROJECT_INVALID naming its key,
through the library and through the real CLI (run, build, ls), never an internal error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES, Cli

from shoal.app.federation import is_app_project
from shoal.app.project import load_project, parse_run_config
from shoal.errors import ShoalError


def project(tmp_path: Path, edit: tuple[str, str] | None = None, text: str | None = None) -> Path:
    """A copy of examples/quickstart-app, its pyproject.toml edited (old -> new) or replaced."""
    root = tmp_path / "app"
    shutil.copytree(EXAMPLES / "quickstart-app", root)
    path = root / "pyproject.toml"
    if text is not None:
        path.write_text(text)
    if edit is not None:
        old, new = edit
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
    return root


# the example's whole [tool.shoal.federations...] part, to replace with something else
FEDERATIONS = (
    "[tool.shoal.federations]"
    + ((EXAMPLES / "quickstart-app" / "pyproject.toml").read_text().partition("[tool.shoal.federations]")[2])
)

MALFORMED = {
    "federations not a table": (
        (FEDERATIONS, '[tool.shoal]\nfederations = "x"\n'),
        "[tool.shoal.federations] must be a table",
    ),
    "a federation not a table": (
        ('default = "local"', 'default = "local"\nbad = 3'),
        "[tool.shoal.federations.bad] must be a table",
    ),
    "kit-id not a string": (
        ('kit-id = "admin@example.com"', "kit-id = 5"),
        "kit-id must be a non-empty string",
    ),
    "study not a string": (
        ('kit-id = "admin@example.com"', "study = [1]"),
        "study must be a non-empty string",
    ),
    "default not a string": (('default = "local"', "default = 1"), "default must be a string"),
    "startup-kit with NUL": (
        ('kit-id = "admin@example.com"', 'startup-kit = "a\\u0000b"'),
        "startup-kit must not hold a NUL",
    ),
    "min-clients a word": (("min-clients = 2", 'min-clients = "two"'), "min-clients must be an integer >= 1"),
    "min-clients an array": (("min-clients = 2", "min-clients = [1]"), "min-clients must be an integer >= 1"),
    "min-clients a float": (("min-clients = 2", "min-clients = 1.5"), "min-clients must be an integer >= 1"),
    "min-clients a boolean": (
        ("min-clients = 2", "min-clients = true"),
        "min-clients must be an integer >= 1",
    ),
    "min-clients zero": (("min-clients = 2", "min-clients = 0"), "min-clients must be an integer >= 1"),
    "a setting that is a date": (
        ("num-rounds = 3", "num-rounds = 1979-05-27"),
        "num-rounds must be a string",
    ),
    "config not a table": (
        ("[tool.shoal.app.config]\n", "config = 3\n[tool.shoal.x]\n"),
        "[tool.shoal.app.config] must be a table",
    ),
    "version escaping": (('version = "1.0.0"', 'version = "../../1"'), "[project] version must be a version"),
    "version a number": (('version = "1.0.0"', "version = 1"), "[project] version must be a version"),
    "name a path": (('name = "quickstart-app"', 'name = "../x"'), "[project] name must be a plain name"),
    "name dots": (('name = "quickstart-app"', 'name = ".."'), "[project] name must be a plain name"),
    "name too long": (('name = "quickstart-app"', f'name = "{"a" * 65}"'), "at most 64 characters"),
    "publisher a path": (('publisher = "local"', 'publisher = "a/b"'), "publisher must be a plain name"),
    "serverapp not a string": (('serverapp = "fedavg"', "serverapp = 3"), "serverapp must be a non-empty"),
    "client-args not a string": (
        ('clientapp = "client.py"', 'clientapp = "client.py"\nclient-args = ["-x"]'),
        "client-args must be a string",
    ),
    "clientapp with NUL": (('clientapp = "client.py"', 'clientapp = "a\\u0000b"'), "must not hold a NUL"),
    "clientapp outside": (('clientapp = "client.py"', 'clientapp = "/etc/hostname"'), "inside the project"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_key_is_named(tmp_path: Path, case: str) -> None:
    edit, words = MALFORMED[case]
    root = project(tmp_path, edit)
    with pytest.raises(ShoalError) as err:
        load_project(root)
    assert err.value.code == "APP_PROJECT_INVALID" and words in err.value.message, err.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('tool = 5\n[project]\nname = "a"\nversion = "1"\n', "[tool] must be a table"),
        ('[project]\nname = "a"\nversion = "1"\n[tool]\nshoal = 5\n', "[tool.shoal] must be a table"),
        ('project = 1\n[tool.shoal.app]\nclientapp = "client.py"\n', "[project] must be a table"),
        (
            '[project]\nname = "a"\nversion = "1"\n[tool.shoal]\napp = "x"\n',
            "[tool.shoal.app] must be a table",
        ),
    ],
)
def test_tables_of_the_wrong_type_are_named(tmp_path: Path, text: str, words: str) -> None:
    root = project(tmp_path, text=text)
    assert is_app_project(root)  # so ls and stop report it too, instead of ignoring it
    with pytest.raises(ShoalError) as err:
        load_project(root)
    assert err.value.code == "APP_PROJECT_INVALID" and words in err.value.message, err.value.message


def test_a_library_pyproject_is_still_not_an_app(tmp_path: Path) -> None:
    root = project(tmp_path, text='[project]\nname = "lib"\nversion = "1"\n[tool.ruff]\nline-length = 9\n')
    assert not is_app_project(root)


def test_good_projects_still_load(tmp_path: Path) -> None:
    loaded = load_project(project(tmp_path, ('version = "1.0.0"', 'version = "2.0rc1+local.7"')))
    assert loaded.version == "2.0rc1+local.7" and loaded.config["min-clients"] == 2


@pytest.mark.parametrize("value", ["x", "1.5", "true", "0", "-1", '"3"', "[2]"])
def test_run_config_min_clients_is_an_integer_of_at_least_one(value: str) -> None:
    with pytest.raises(ShoalError) as err:
        parse_run_config([f"min-clients={value}"])
    assert err.value.code == "INVALID_ARGS"
    assert "--run-config min-clients must be an integer >= 1" in err.value.message
    assert parse_run_config(["min-clients=3"]) == {"min-clients": 3}


def test_run_config_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ShoalError) as err:
        parse_run_config(["start=1979-05-27"])
    assert err.value.code == "INVALID_ARGS" and "start" in err.value.message


# --- through the real CLI: no server is needed, each is refused before anything is sent ---


def shoal(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, run in tmp_path (build writes there) with a home of its own and no kit."""
    return subprocess.run(
        [sys.executable, "-m", "shoal", *map(str, args)],
        cwd=tmp_path,
        env=Cli(home=tmp_path / "home").env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_invalid_project(tmp_path: Path, root: Path, command: str, words: str) -> None:
    """Exit 1 in both modes; JSON mode prints the run surface's one failure document."""
    proc = shoal(tmp_path, command, root, "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and doc["success"] is False, (doc, proc.stderr)
    assert "pyproject.toml is not valid" in doc["error-message"] and words in doc["error-message"], doc
    proc = shoal(tmp_path, command, root)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "APP_PROJECT_INVALID" in proc.stderr and words in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.fab"))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ((FEDERATIONS, '[tool.shoal]\nfederations = "x"\n'), "[tool.shoal.federations] must be a table"),
        (("min-clients = 2", 'min-clients = "two"'), "min-clients must be an integer >= 1"),
        (("min-clients = 2", "min-clients = [1]"), "min-clients must be an integer >= 1"),
        (("min-clients = 2", "min-clients = 1.5"), "min-clients must be an integer >= 1"),
        (("min-clients = 2", "min-clients = true"), "min-clients must be an integer >= 1"),
        (('version = "1.0.0"', 'version = "../../1"'), "[project] version must be a version"),
    ],
)
@pytest.mark.parametrize("command", ["run", "build", "ls"])
def test_cli_reports_a_malformed_project_as_invalid(
    tmp_path: Path, edit: tuple[str, str], words: str, command: str
) -> None:
    assert_invalid_project(tmp_path, project(tmp_path, edit), command, words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('tool = 5\n[project]\nname = "a"\n', "[tool] must be a table"),
        ("[tool]\nshoal = 5\n", "[tool.shoal] must be a table"),
    ],
)
@pytest.mark.parametrize("command", ["run", "build", "ls"])
def test_cli_reports_a_broken_tool_table(tmp_path: Path, text: str, words: str, command: str) -> None:
    assert_invalid_project(tmp_path, project(tmp_path, text=text), command, words)


@pytest.mark.parametrize("value", ["x", "1.5", "true", "0"])
def test_cli_run_refuses_a_bad_min_clients_override(tmp_path: Path, value: str) -> None:
    """Refused before any kit is looked for (this home has none): no run can start."""
    proc = shoal(
        tmp_path, "run", project(tmp_path), "--run-config", f"min-clients={value}", "--format", "json"
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 4 and doc["success"] is False, (doc, proc.stderr)
    assert "--run-config min-clients must be an integer >= 1" in doc["error-message"], doc
