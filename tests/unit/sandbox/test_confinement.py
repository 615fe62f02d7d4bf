"""The kernel layers, applied in real forked processes: what a confined process can and cannot
open, signal, connect to or inherit."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.sandbox import landlock, privileges
from shoal.sandbox.confinement import PASSED_ENV, Sandbox, apply


def _in_child(spec: dict[str, object], check: Callable[[], dict[str, object]]) -> dict[str, Any]:
    """Fork; the child confines itself to ``spec`` and runs ``check``; its answer comes back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            apply(spec, keep_fds={0, 1, 2, write_end})
            answer = check()
        except BaseException as exc:  # noqa: BLE001 - any failure is the answer
            answer = {"error": repr(exc)}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


def _can(action: Callable[[], object]) -> str:
    try:
        action()
        return "yes"
    except OSError as exc:
        return f"no ({exc.errno})"


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    kit, job, data = tmp_path / "kit", tmp_path / "kit" / "workspace" / "jobs" / "1", tmp_path / "data"
    (job / "work").mkdir(parents=True)
    (job / "job").mkdir()
    (job / "job" / "meta.json").write_text("{}")
    (kit / "startup").mkdir()
    (kit / "startup" / "client.key").write_text("PRIVATE KEY")
    data.mkdir()
    (data / "train.csv").write_text("1,2")
    return {"kit": kit, "job": job, "data": data}


def test_a_confined_process_reaches_its_job_and_nothing_of_its_host(host: dict[str, Path]) -> None:
    assert landlock.abi_version() >= 4, "this kernel's Landlock cannot confine files and TCP"
    sandbox = Sandbox([host["kit"]])
    job = host["job"]
    spec = sandbox.spec(
        read=[job / "job", host["data"]], write=[job / "work"], home=job / "work", network=False
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def check() -> dict[str, object]:
        return {
            "own job": _can(lambda: (job / "job" / "meta.json").read_text()),
            "data": _can(lambda: (host["data"] / "train.csv").read_text()),
            "write work": _can(lambda: (job / "work" / "out.bin").write_bytes(b"x")),
            "write job": _can(lambda: (job / "job" / "meta.json").write_text("evil")),
            "key": _can(lambda: (host["kit"] / "startup" / "client.key").read_text()),
            "parent": _can(lambda: os.kill(os.getppid(), 0)),
            "tcp": _can(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close()),
            "numpy": _can(lambda: __import__("numpy.linalg")),
            "home": os.environ.get("HOME"),
            "tmp": _can(lambda: __import__("tempfile").mkstemp()),
        }

    try:
        seen = _in_child(spec, check)
    finally:
        listener.close()
    assert seen["own job"] == "yes" and seen["data"] == "yes" and seen["write work"] == "yes", seen
    assert seen["numpy"] == "yes" and seen["tmp"] == "yes" and seen["home"] == str(job / "work"), seen
    assert seen["write job"].startswith("no") and seen["key"].startswith("no"), seen
    assert seen["parent"].startswith("no") and seen["tcp"].startswith("no"), seen


#: What a server keeps in its environment that no job may inherit: its bucket's credentials.
SERVER_SECRETS = {
    "SHOAL_TEST_CREDENTIAL": "hunter2",
    "AWS_ACCESS_KEY_ID": "AKIASHOALTESTKEY4242",
    "AWS_SECRET_ACCESS_KEY": "shoal-test-secret",
    "AWS_SESSION_TOKEN": "shoal-test-token",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


def test_no_cloud_credential_is_on_the_allow_list() -> None:
    assert not [name for name in PASSED_ENV if name.startswith("AWS_")]


def test_the_environment_is_rebuilt_and_descriptors_closed(host: dict[str, Path]) -> None:
    os.environ.update(SERVER_SECRETS)
    inherited = os.open(host["kit"] / "startup" / "client.key", os.O_RDONLY)
    try:
        spec = Sandbox([host["kit"]]).spec(
            read=[], write=[host["job"] / "work"], home=host["job"] / "work", network=True
        )

        def check() -> dict[str, object]:
            return {"env": sorted(os.environ), "fd": _can(lambda: os.fstat(inherited))}

        seen = _in_child(spec, check)
    finally:
        os.close(inherited)
        for name in SERVER_SECRETS:
            del os.environ[name]
    assert not set(SERVER_SECRETS) & set(seen["env"]) and "PATH" in seen["env"], seen
    assert str(seen["fd"]).startswith("no"), seen


@pytest.mark.skipif(os.geteuid() != 0, reason="what a root host's jobs give up")
def test_a_root_hosts_job_has_no_capability(host: dict[str, Path]) -> None:
    spec = Sandbox([host["kit"]]).spec(
        read=[], write=[host["job"] / "work"], home=host["job"] / "work", network=True
    )
    seen = _in_child(spec, lambda: {"caps": privileges.effective_capabilities(), "uid": os.getuid()})
    assert seen == {"caps": 0, "uid": 0}


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_job_user_layer_puts_root_only_files_out_of_reach(tmp_path: Path) -> None:
    """SHOAL_JOB_USER: a job as an unprivileged user meets ordinary permissions too."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)

    def check() -> dict[str, object]:
        privileges.become_user(65534, 65534)
        return {
            "uid": os.getuid(),
            "secret": _can(secret.read_text),
            "caps": privileges.effective_capabilities(),
        }

    seen = _in_child({"mode": "off", "passed_env": ["PATH"]}, check)
    assert seen["uid"] == 65534 and seen["secret"].startswith("no") and seen["caps"] == 0, seen


def test_data_paths_that_hold_the_kit_are_refused(host: dict[str, Path]) -> None:
    with pytest.raises(ShoalError) as err:
        Sandbox([host["kit"]]).check_readable([str(host["kit"].parent)], "site policy data_paths")
    assert err.value.code == "LOCAL_FILE_ERROR"


def test_required_refuses_a_kernel_without_landlock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_SANDBOX", "required")
    monkeypatch.setenv("SHOAL_LANDLOCK_MAX_ABI", "0")
    with pytest.raises(ShoalError) as err:
        Sandbox([tmp_path])
    assert err.value.code == "SANDBOX_UNAVAILABLE"
    monkeypatch.setenv("SHOAL_SANDBOX", "auto")
    assert "WEAK" in Sandbox([tmp_path]).notice()


def test_signals_to_the_host_are_refused_under_landlock(host: dict[str, Path]) -> None:
    """Landlock ABI 6 scopes signals; a kernel without it fails here, loudly (not skipped)."""
    assert landlock.abi_version() >= 6, "this kernel's Landlock cannot scope signals"
    spec = Sandbox([host["kit"]]).spec(
        read=[], write=[host["job"] / "work"], home=host["job"] / "work", network=True
    )
    seen = _in_child(spec, lambda: {"term": _can(lambda: os.kill(os.getppid(), signal.SIGCONT))})
    assert str(seen["term"]).startswith("no"), seen


@pytest.mark.skipif(os.geteuid() != 0, reason="SHOAL_JOB_USER is for root hosts")
def test_a_job_user_who_cannot_run_the_jobs_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A job user that cannot even read the interpreter would fail every job: refused at start,
    naming what it cannot read (here: Python under /root, which only root may enter)."""
    import sys

    monkeypatch.setenv("SHOAL_JOB_USER", "nobody")
    if privileges.reachable_by(sys.executable, 65534, 65534):
        assert Sandbox([tmp_path]).job_user is not None
        return
    with pytest.raises(ShoalError) as err:
        Sandbox([tmp_path])
    assert err.value.code == "SANDBOX_UNAVAILABLE" and "cannot read" in str(err.value), err.value
    monkeypatch.setenv("SHOAL_JOB_USER", "root")
    with pytest.raises(ShoalError):
        Sandbox([tmp_path])


def test_a_job_runs_at_a_lower_cpu_priority_than_its_host(host: dict[str, Path]) -> None:
    """Issue 19: a server's answers must not queue behind its jobs' work on the same cores."""
    spec = Sandbox([host["kit"]]).spec(
        read=[], write=[host["job"] / "work"], home=host["job"] / "work", network=True
    )
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    seen = _in_child(spec, lambda: {"nice": os.getpriority(os.PRIO_PROCESS, 0)})
    assert seen["nice"] == min(19, mine + 10), seen
