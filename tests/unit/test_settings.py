"""shoal.settings is the one reader of the environment: every setting declared once, typed,
checked at start with the catalogue's errors, secrets never echoed, the README's table current."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal import settings
from shoal.errors import ShoalError
from tests.conftest import REPO

SRC = REPO / "src"

#: The functions that may touch ``os.environ`` themselves, and why: none of them reads a setting.
#: Each builds (or restores) the environment of a process shoal starts or becomes.
BUILDS_AN_ENVIRONMENT = {
    ("shoal/settings.py", "*"): "the one reader",
    ("shoal/sandbox/confinement.py", "_rebuild_environment"): (
        "a job's process keeps only the passed variables of its host's environment: it filters and clears it"
    ),
    ("shoal/provision/services.py", "_spawn"): "the POC's server and sites get the caller's environment",
    (
        "shoal/runtime/launcher.py",
        "ForkServer._spawn",
    ): "the fork server gets its host's environment and its socket",
    (
        "shoal/runtime/launcher.py",
        "_start",
    ): "a cold job process gets its host's environment, channel and spec",
    ("shoal/runtime/launcher.py", "_become"): "a job's process gets its channel and the job's own variables",
    ("shoal/simulator/worker.py", "_site_process_view.__enter__"): (
        "a simulated site's run sets what a real site's sets (and saves what was there)"
    ),
    ("shoal/simulator/worker.py", "_site_process_view.__exit__"): "and puts back what was there before",
    ("shoal/scheduler/tracking.py", "WandbTracker.open"): (
        "W&B's helper process (wandb-core) gets its crash reports turned off: it reads nothing"
    ),
}
ENV_NAMES = {"environ", "environb", "getenv", "getenvb"}
OS_MODULES = {"os", "posix", "nt"}


class EnvironmentReads(ast.NodeVisitor):
    """Every use of ``os.environ``/``os.getenv`` in one file, with the function it is in
    (``Class.method``; ``*`` at module level), through ``import os as o`` and
    ``from os import environ`` too."""

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.names: set[str] = set()
        self.scope: list[str] = []
        self.found: list[tuple[str, int]] = []

    def _where(self) -> str:
        return ".".join(self.scope) or "*"

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in OS_MODULES:
                self.modules.add(alias.asname or alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module in OS_MODULES:
            for alias in node.names:
                if alias.name in ENV_NAMES:
                    self.found.append((self._where(), node.lineno))
                    self.names.add(alias.asname or alias.name)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in ENV_NAMES and isinstance(node.value, ast.Name) and node.value.id in self.modules:
            self.found.append((self._where(), node.lineno))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.names:
            self.found.append((self._where(), node.lineno))


def environment_uses(path: Path) -> list[tuple[str, int]]:
    scan = EnvironmentReads()
    scan.visit(ast.parse(path.read_text(), filename=str(path)))
    return scan.found


def test_nothing_but_the_settings_module_reads_the_environment() -> None:
    problems, used = [], set()
    for path in sorted((SRC / "shoal").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for where, line in environment_uses(path):
            key = (rel, "*") if (rel, "*") in BUILDS_AN_ENVIRONMENT else (rel, where)
            if key in BUILDS_AN_ENVIRONMENT:
                used.add(key)
            else:
                problems.append(f"{rel}:{line} ({where}) reads the environment: use shoal.settings")
    assert problems == []
    assert used == set(BUILDS_AN_ENVIRONMENT), "an exception no longer needed: remove it"


def test_the_scan_finds_every_spelling(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os as o\nfrom os import getenv as g\nimport os\n"
        "a = o.environ['X']\n"
        "def f():\n    return g('Y')\n"
        "class C:\n    def m(self):\n        return os.environ.get('Z')\n"
        "x = environ = 1\n"  # a name of its own, not os's
    )
    assert environment_uses(sample) == [("*", 2), ("*", 4), ("f", 6), ("C.m", 9)]


def test_every_setting_is_declared_once_with_a_meaning() -> None:
    keys = [(s.source, s.name) for s in settings.SETTINGS]
    assert len(keys) == len(set(keys))
    for setting in settings.SETTINGS:
        assert setting.meaning and setting.kind and setting.readers, setting.name
        assert not (setting.secret and setting.default), f"{setting.name}: a secret has no default to show"
        if setting.choices:
            assert setting.default in setting.choices, setting.name


def test_an_undeclared_name_cannot_be_read() -> None:
    with pytest.raises(KeyError):
        settings.text("SHOAL_NO_SUCH_SETTING")


def test_values_are_typed_and_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (settings.SANDBOX, settings.JOB_NICE, settings.JOB_ENV, settings.TRANSFER_IDLE_TIMEOUT):
        monkeypatch.delenv(name, raising=False)
    assert settings.choice(settings.SANDBOX) == "auto"
    assert settings.whole_number(settings.JOB_NICE) == 10
    assert settings.whole_number(settings.LANDLOCK_MAX_ABI) is None
    assert settings.names(settings.JOB_ENV) == []
    assert settings.seconds(settings.TRANSFER_IDLE_TIMEOUT) == 60.0
    monkeypatch.setenv(settings.SANDBOX, " off ")
    monkeypatch.setenv(settings.JOB_NICE, "19")
    monkeypatch.setenv(settings.JOB_ENV, "A, B,,")
    monkeypatch.setenv(settings.TRANSFER_IDLE_TIMEOUT, "2.5")
    assert settings.choice(settings.SANDBOX) == "off"
    assert settings.whole_number(settings.JOB_NICE) == 19
    assert settings.names(settings.JOB_ENV) == ["A", "B"]
    assert settings.seconds(settings.TRANSFER_IDLE_TIMEOUT) == 2.5


@pytest.mark.parametrize(
    ("name", "value", "reader"),
    [
        (settings.SANDBOX, "sometimes", settings.choice),
        (settings.JOB_NICE, "20", settings.whole_number),
        (settings.JOB_NICE, "-1", settings.whole_number),
        (settings.JOB_NICE, "١", settings.whole_number),  # a digit, but not an ASCII one
        (settings.LANDLOCK_MAX_ABI, "two", settings.whole_number),
    ],
)
def test_a_bad_value_is_invalid_args_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, reader: object
) -> None:
    monkeypatch.setenv(name, value)
    assert callable(reader)
    with pytest.raises(ShoalError) as caught:
        reader(name)
    assert caught.value.code == "INVALID_ARGS" and name in caught.value.message
    assert f"unset {name}" in caught.value.hint


def test_flags_are_off_only_for_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.WARM_SPARES, raising=False)
    monkeypatch.delenv(settings.DEBUG, raising=False)
    assert settings.flag(settings.WARM_SPARES) and not settings.flag(settings.DEBUG)
    monkeypatch.setenv(settings.WARM_SPARES, "0")
    monkeypatch.setenv(settings.DEBUG, "yes")
    assert not settings.flag(settings.WARM_SPARES) and settings.flag(settings.DEBUG)


def test_a_secret_value_is_never_in_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting declared secret is named, never shown, even where its type is checked."""
    secret = settings.Setting("SHOAL_TEST_SECRET", "whole number", "test", "a test", secret=True)
    monkeypatch.setattr(settings, "_BY_NAME", {**settings._BY_NAME, (settings.ENV, secret.name): secret})
    monkeypatch.setenv(secret.name, "hunter2-password")
    with pytest.raises(ShoalError) as caught:
        settings.whole_number(secret.name)
    shown = f"{caught.value.message} {caught.value.hint}"
    assert secret.name in shown and "hunter2" not in shown


def test_take_removes_what_a_launcher_handed_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.JOB_SPEC, "{}")
    assert settings.take(settings.JOB_SPEC) == "{}"
    assert settings.take(settings.JOB_SPEC) is None


def test_the_settings_module_is_cheap_to_import() -> None:
    """The CLI reads SHOAL_HOME on every call: no dataclasses, typing or enum at import."""
    heavy = "('dataclasses', 'typing', 'enum')"
    code = f"import sys, shoal.settings; print(','.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, check=True
    )
    assert out.stdout.strip() == ""


#: A training script that reports what it reads of its settings, through shoal.settings.
REPORTER = """
from shoal import settings
from shoal.wire.channel import SyncChannel
channel = SyncChannel.from_env()
channel.send({
    "job": {s.name: settings.text(s.name) for s in settings.SETTINGS if s.readers == settings.JOB},
    "store_url": settings.text(settings.STORE_URL),
})
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server and the sandbox: Linux")
@pytest.mark.parametrize("warm_spares", ["1", "0"], ids=["forked", "cold"])
def test_a_confined_job_process_still_gets_its_own_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_spares: str
) -> None:
    """The sandbox rebuilds a job's environment from a short list: the settings a job process
    reads (its site, job, app folder, channel) must still reach it, and the host's must not."""
    import asyncio

    from shoal.runtime.launcher import ForkServer
    from shoal.sandbox.confinement import Sandbox

    monkeypatch.setenv(settings.WARM_SPARES, warm_spares)
    monkeypatch.setenv(settings.STORE_URL, "postgresql://shoal:hunter2@127.0.0.1:9/shoal")
    (tmp_path / "kit").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "client.py").write_text(REPORTER)
    given = {settings.SITE_NAME: "site-3", settings.JOB_ID: "job-9", settings.APP_DIR: str(work)}
    confinement = Sandbox([tmp_path / "kit"]).spec(read=[work], write=[work], home=work, network=False)

    async def scenario() -> dict[str, Any]:
        launcher = ForkServer((), pipe_stdout=False)
        proc, sock = await launcher.launch(
            [str(work / "client.py")], cwd=str(work), env=given, sys_path=[str(SRC)], confinement=confinement
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        seen: dict[str, Any] = json.loads(await reader.readline())
        await asyncio.wait_for(proc.wait(), 30)
        writer.close()
        await launcher.close()
        return seen

    seen = asyncio.run(scenario())
    job = seen["job"]
    assert {name: job[name] for name in given} == given
    assert job[settings.CHANNEL_FD].isdigit()
    assert job[settings.JOB_SPEC] == "" and seen["store_url"] == ""


def test_the_declared_limits_are_the_servers_own(tmp_path: Path) -> None:
    """local/limits.json is parsed by the server's own code: every key it reads is declared,
    with the default that code applies (the README's table is made from the declarations)."""
    import dataclasses

    from shoal.server import app
    from shoal.server.context import ServerContext
    from shoal.server.gate import ConnectionSettings
    from shoal.workflows import update_checks

    declared = {s.name: s.default for s in settings.SETTINGS if s.source == settings.LIMITS_JSON}
    checks = update_checks.update_checks_from_limits({}, tmp_path / "limits.json")
    connections = ConnectionSettings()
    applied: dict[str, object] = {key: getattr(ServerContext, key) for key in app.BYTE_LIMIT_KEYS}
    applied |= {f.name: getattr(connections, f.name) for f in dataclasses.fields(ConnectionSettings)}
    applied[update_checks.REJECT_NON_FINITE_KEY] = checks.reject_non_finite
    applied[update_checks.MAX_NUM_EXAMPLES_KEY] = checks.max_num_examples

    def shown(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        return f"{value:g}" if isinstance(value, float) else str(value)

    assert declared == {key: shown(value) for key, value in applied.items()}
