"""Shared test helpers: run the real CLI as a subprocess, parse what it prints."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.federation import Federation
    from tests.s3server import S3Server

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def takes_ctrl_c() -> None:
    """``preexec_fn`` for a child a test will send SIGINT: it takes it as a terminal's Ctrl-C.
    A suite started as a background job of a non-interactive shell (``make test &``) runs with
    SIGINT ignored, which every child inherits and Python then leaves ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Cli:
    """The ``shoal`` command with an isolated SHOAL_HOME."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update({"SHOAL_HOME": str(self.home), **self.extra_env})
        return env

    def run(
        self, *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shoal", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env(),
            stdin=subprocess.DEVNULL,
        )

    def json(
        self, *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Run with --format json; stdout must be exactly one JSON document."""
        proc = self.run(*args, "--format", "json", timeout=timeout, env=env)
        try:
            doc = json.loads(proc.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"stdout is not one JSON document: {proc.stdout!r}\nstderr: {proc.stderr}"
            ) from exc
        assert doc["exit_code"] == proc.returncode, (doc, proc.stderr)
        return proc.returncode, doc


@pytest.fixture(scope="module", autouse=True)
def _collect_what_the_module_left() -> Iterator[None]:
    """A full collection after each module, over what the tests froze too: a cycle that was
    alive at a test's end (a module fixture's server, a cache) and garbage later is found here,
    reported in the module's last test."""
    yield
    gc.unfreeze()
    gc.collect()


@pytest.fixture(autouse=True)
def _collect_what_the_test_left() -> Iterator[None]:
    """Run the garbage collector after each test, so that a socket, file or process a test (or
    the code it drives) leaves open is reported as that test's error (warnings are errors:
    pyproject.toml), not as a ResourceWarning in whichever test the collector happens to run in.

    A full collection walks every object the session holds (torch, numpy, aiohttp: ~0.3 s on a
    loaded CI machine, minutes over the suite), so what survives it is frozen (``gc.freeze``):
    the next test's collection walks only the objects made since. The module fixture above
    unfreezes and collects everything once per module.
    """
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """One real federation (server + 2 sites) shared by every test that only adds jobs to it."""
    from tests.federation import CUSTOM_CODE_STUDIES, own_federation

    with own_federation(tmp_path_factory.mktemp("fed"), studies=CUSTOM_CODE_STUDIES) as fed:
        yield fed


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server (moto, a process of its own) for the session; each test makes
    its own bucket (``s3.new_bucket()``)."""
    from tests.s3server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session (tests/pgserver.py); ``new_database()``
    gives each test its own database."""
    from tests.pgserver import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
