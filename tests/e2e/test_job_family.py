"""The job command family of seed 000, through the real CLI against a real federation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, takes_ctrl_c
from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello, slow_job, stubborn_job
from tests.federation import server_address, wait_connected

pytestmark = pytest.mark.e2e
HELLO = EXAMPLES / "hello-numpy"


def submit(fed: Federation, folder: Path, *extra: str) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", folder, *extra)
    assert code == 0, doc
    job_id: str = doc["data"]["job_id"]
    return job_id


def wait_for_status(fed: Federation, job_id: str, wanted: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        code, doc = fed.cli.json("job", "meta", job_id)
        assert code == 0, doc
        if doc["data"]["status"] == wanted:
            meta: dict[str, object] = doc["data"]
            return meta
        assert time.monotonic() < deadline, doc["data"]
        time.sleep(0.1)


def wait_for_round(fed: Federation, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code, doc = fed.cli.json("job", "meta", job_id)
        progress = doc["data"].get("progress") or {}
        if progress.get("current_round") is not None and doc["data"]["status"] == "RUNNING":
            return
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)


def test_monitor_jsonl_streams_to_a_terminal_event(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    proc = federation.cli.run("job", "monitor", job_id, "--format", "jsonl", "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["terminal"] is True and events[-1]["event"] == "terminal"
    assert events[-1]["status"] == "COMPLETED" and events[-1]["job_status"] == "FINISHED_OK"
    assert events[-1]["schema_version"] == "1" and events[-1]["job_id"] == job_id
    assert all(e["terminal"] is False for e in events[:-1])
    assert any("loss" in (e.get("metrics") or {}) for e in events), events
    assert events[-1]["metrics"]["round"] == 5


def test_monitor_human_progress_goes_to_stderr(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    proc = federation.cli.run("job", "monitor", job_id, "--timeout", "120")
    assert proc.returncode == 0
    assert f"job {job_id} RUNNING round" in proc.stderr
    assert proc.stdout.startswith(f"Job {job_id} status: COMPLETED (FINISHED_OK)")


def test_monitor_timeout_and_connection_failure(federation: Federation, tmp_path: Path) -> None:
    job_id = submit(federation, slow_job(tmp_path / "slow", rounds=1000, delay=0.02))
    proc = federation.cli.run("job", "monitor", job_id, "--format", "jsonl", "--timeout", "0.5")
    assert proc.returncode == 3
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["status"] == "TIMEOUT" and last["terminal"] is True and last["timeout_seconds"] == 0.5
    assert last["job_status"] == "RUNNING"
    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 0 and doc["data"]["status"] == "ABORTED"
    # a dead server: one terminal error event with the code
    kit = tmp_path / "kit"
    import shutil

    shutil.copytree(federation.kits / "admin@example.com", kit)
    cfg = kit / "startup" / "fed_admin.json"
    data = json.loads(cfg.read_text())
    data["server"]["port"] = 1
    cfg.write_text(json.dumps(data))
    proc = federation.cli.run("job", "monitor", job_id, "--format", "jsonl", "--startup-kit", kit)
    assert proc.returncode == 2
    (event,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (
        event["status"] == "error"
        and event["error_code"] == "CONNECTION_FAILED"
        and event["terminal"] is True
    )


def test_abort_running_job_and_its_errors(federation: Federation, tmp_path: Path) -> None:
    job_id = submit(federation, slow_job(tmp_path / "slow"))
    wait_for_round(federation, job_id)
    no_tty = federation.cli.run("job", "abort", job_id, "--format", "json")
    assert no_tty.returncode == 4 and json.loads(no_tty.stdout)["error_code"] == "CONFIRMATION_REQUIRED"
    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 0 and doc["data"] == {
        "job_id": job_id,
        "status": "ABORTED",
        "reason": "aborted by admin@example.com",
    }
    code, doc = federation.cli.json("job", "wait", job_id)
    assert code == 1 and doc["error_code"] == "JOB_ABORTED" and doc["data"]["status"] == "ABORTED"
    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 1 and doc["error_code"] == "JOB_NOT_RUNNING"
    code, doc = federation.cli.json("job", "delete", job_id)
    assert code == 4 and doc["error_code"] == "CONFIRMATION_REQUIRED"


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_abort_kills_a_script_that_ignores_sigterm_and_its_children(
    federation: Federation, tmp_path: Path
) -> None:
    marker = f"stubborn-{os.getpid()}-{time.time_ns()}"
    job_id = submit(federation, stubborn_job(tmp_path / "stubborn", marker))
    deadline = time.monotonic() + 30
    while len(_processes_with(marker)) < 2:
        assert time.monotonic() < deadline, "the stubborn children never started"
        time.sleep(0.1)
    code, doc = federation.cli.json("job", "abort", job_id, "--force", timeout=60)
    assert code == 0 and doc["data"]["status"] == "ABORTED", doc
    assert _processes_with(marker) == []
    meta = wait_for_status(federation, job_id, "ABORTED")
    assert meta["end_time"]


def test_delete_and_clone(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    code, doc = federation.cli.json("job", "clone", job_id)
    assert code == 0 and doc["data"]["source_job_id"] == job_id
    new_id = doc["data"]["new_job_id"]
    assert new_id != job_id
    for jid in (job_id, new_id):
        code, doc = federation.cli.json("job", "wait", jid, "--timeout", "120")
        assert code == 0, doc
    code, doc = federation.cli.json("job", "meta", new_id)
    assert doc["data"]["cloned_from"] == job_id
    code, doc = federation.cli.json("job", "delete", job_id, "--force")
    assert code == 0 and doc["data"] == {"job_id": job_id, "submit_records_marked_deleted": 0}
    code, doc = federation.cli.json("job", "meta", job_id)
    assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND"
    # the clone shares the stored archive and still downloads
    code, doc = federation.cli.json(
        "job", "download", new_id, "-o", str(Path(os.environ.get("TMPDIR", "/tmp"))), "--force"
    )
    assert code == 0, doc


def test_delete_running_job_is_refused(federation: Federation, tmp_path: Path) -> None:
    job_id = submit(federation, slow_job(tmp_path / "slow"))
    wait_for_round(federation, job_id)
    code, doc = federation.cli.json("job", "delete", job_id, "--force")
    assert code == 4 and doc["error_code"] == "JOB_NOT_DONE"
    federation.cli.json("job", "abort", job_id, "--force")


def test_submit_tokens(federation: Federation, tmp_path: Path) -> None:
    token = f"retry-{time.time_ns()}"
    job = copy_hello(tmp_path / "job")

    def one(_: int) -> tuple[int, Any]:
        return federation.cli.json("job", "submit", "-j", job, "--submit-token", token)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(20)))
    ids = {doc["data"]["job_id"] for code, doc in answers if code == 0}
    assert all(code == 0 for code, _ in answers), answers
    assert len(ids) == 1
    (job_id,) = ids

    # a zip with one wrapper folder is the same content
    archive = tmp_path / "job.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(job.rglob("*")):
            if f.is_file():
                zf.write(f, "job/" + f.relative_to(job).as_posix())
    assert submit(federation, archive, "--submit-token", token) == job_id

    code, doc = federation.cli.json("job", "list", "--submit-token", token)
    assert code == 0 and [r["job_id"] for r in doc["data"]] == [job_id]
    code, doc = federation.cli.json("job", "meta", job_id)
    assert "submit_token" not in json.dumps(doc["data"])

    (job / "meta.json").write_text((job / "meta.json").read_text().replace("hello-numpy", "hello-changed"))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--submit-token", token)
    assert code == 4 and doc["error_code"] == "SUBMIT_TOKEN_CONFLICT"

    federation.cli.json("job", "wait", job_id, "--timeout", "120")
    code, doc = federation.cli.json("job", "delete", job_id, "--force")
    assert code == 0 and doc["data"]["submit_records_marked_deleted"] == 1
    for command in (("job", "submit", "-j", job), ("job", "list")):
        code, doc = federation.cli.json(*command, "--submit-token", token)
        assert code == 4 and doc["error_code"] == "SUBMIT_TOKEN_JOB_DELETED", doc
        assert doc["data"]["job_id"] == job_id and doc["data"]["state"] == "job_deleted"
        assert doc["data"]["deleted_time"]


def test_logs_stats_and_log_config_on_a_running_job(federation: Federation, tmp_path: Path) -> None:
    job_id = submit(federation, slow_job(tmp_path / "slow", meta={"log_streaming": True}))
    wait_for_round(federation, job_id)
    code, doc = federation.cli.json("job", "stats", job_id)
    assert code == 0, doc
    server = doc["data"]["server"]
    assert server["tasks_sent"] >= 2 and server["participating_sites"] == ["site-1", "site-2"]
    assert set(doc["data"]["sites"]) == {"site-1", "site-2"}
    code, doc = federation.cli.json("job", "stats", job_id, "--site", "site-9")
    assert code == 1 and doc["error_code"] == "SITE_NOT_FOUND"

    code, doc = federation.cli.json("job", "log-config", job_id, "DEBUG")
    assert code == 0 and doc["data"]["applied"] == {"server": "sent", "site-1": "sent", "site-2": "sent"}
    code, doc = federation.cli.json("job", "log-config", job_id, "LOUD")
    assert code == 4 and doc["error_code"] == "LOG_CONFIG_INVALID"

    # live streaming: the server has site lines while the job still runs
    deadline = time.monotonic() + 20
    while True:
        code, doc = federation.cli.json("job", "logs", job_id, "--site", "site-1")
        if code == 0 and doc["data"]["logs"].get("site-1"):
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)
    code, doc = federation.cli.json("job", "meta", job_id)
    assert doc["data"]["status"] == "RUNNING"

    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 0
    code, doc = federation.cli.json("job", "log-config", job_id, "INFO")
    assert code == 1 and doc["error_code"] == "JOB_NOT_RUNNING"


def test_logs_of_a_finished_job(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    federation.cli.json("job", "wait", job_id, "--timeout", "120")
    code, doc = federation.cli.json("job", "logs", job_id, "--site", "all")
    assert code == 0, doc
    data = doc["data"]
    assert set(data["logs"]) == {"server", "site-1", "site-2"}
    assert data["filters"] == {
        "tail": 500,
        "since": None,
        "since_applied": False,
        "max_bytes": None,
        "default_tail_applied": True,
    }
    assert data["sites"]["site-1"]["available"] is True and data["sites"]["site-1"]["lines"] > 0
    code, doc = federation.cli.json(
        "job", "logs", job_id, "--site", "server", "--tail", "2", "--max-bytes", "40"
    )
    assert code == 0
    text = doc["data"]["logs"]["server"]
    assert len(text.encode()) <= 40 and doc["data"]["logs_truncated"] is True
    assert doc["data"]["filters"]["default_tail_applied"] is False
    code, doc = federation.cli.json("job", "logs", job_id, "--since", "2999-01-01T00:00:00")
    assert (
        code == 0 and doc["data"]["logs"]["server"] == "" and doc["data"]["filters"]["since_applied"] is True
    )
    code, doc = federation.cli.json("job", "logs", job_id, "--site", "site-7")
    assert code == 1 and doc["error_code"] == "LOG_NOT_FOUND"
    human = federation.cli.run("job", "logs", job_id, "--site", "all", "--tail", "1")
    prefixes = {line.split(" | ", 1)[0].strip() for line in human.stdout.splitlines()}
    assert prefixes == {"server", "site-1", "site-2"}, human.stdout  # every line names its log


def test_submit_wait_meta_reason_and_first_error(federation: Federation, tmp_path: Path) -> None:
    code, doc = federation.cli.json("job", "submit", "-j", HELLO, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK"
    broken = copy_hello(tmp_path / "broken")
    (broken / "app" / "custom" / "client.py").write_text("raise RuntimeError('no data here')\n")
    code, doc = federation.cli.json("job", "submit", "-j", broken, "--wait", "--timeout", "120")
    assert code == 1 and doc["error_code"] == "JOB_FAILED"
    job_id = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "meta", job_id)
    meta = doc["data"]
    error = meta["first_error"]
    assert error["type"] == "ProcessExit" and "no data here" in error["message"], meta
    assert "site-" in meta["status_reason"] and meta["status"] == "FAILED"


def test_schema_of_every_command(federation: Federation) -> None:
    commands = [
        "submit",
        "list",
        "meta",
        "wait",
        "monitor",
        "download",
        "abort",
        "delete",
        "clone",
        "logs",
        "log-config",
        "stats",
    ]
    for name in commands:
        proc = federation.cli.run("job", name, "--schema", "--format", "txt")
        assert proc.returncode == 0, proc.stderr
        schema = json.loads(proc.stdout)
        assert schema["command"] == f"shoal job {name}" and schema["schema_version"] == "1"
        assert {"mutating", "idempotent", "retry_token", "output_modes", "args"} <= set(schema)
    submit_schema = json.loads(federation.cli.run("job", "submit", "--schema").stdout)
    assert submit_schema["mutating"] is True and submit_schema["idempotent"] is False
    assert submit_schema["retry_token"]["supported"] is True
    list_schema = json.loads(federation.cli.run("job", "list", "--schema").stdout)
    assert list_schema["retry_token"] == {"supported": False} and list_schema["mutating"] is False
    monitor_schema = json.loads(federation.cli.run("job", "monitor", "--schema").stdout)
    assert monitor_schema["output_modes"] == ["json", "jsonl"] and monitor_schema["streaming"] is True
    types = {a["name"]: a["type"] for a in list_schema["args"]}
    assert types["--max"] == "integer", types
    logs_schema = json.loads(federation.cli.run("job", "logs", "--schema").stdout)
    types = {a["name"]: a["type"] for a in logs_schema["args"]}
    assert types["--tail"] == types["--max-bytes"] == "integer", types  # were "string"


def test_deprecated_commands_point_to_their_replacements(federation: Federation) -> None:
    for name, word in (
        ("list_templates", "recipe list"),
        ("create", "job.py --export"),
        ("show_variables", "recipe"),
    ):
        proc = federation.cli.run("job", name, "--format", "json")
        assert proc.returncode == 0 and word in proc.stderr, proc.stderr


def test_terminal_event_arrives_fast(federation: Federation, tmp_path: Path) -> None:
    """The server pushes the end of a job to a waiting monitor; no poll tick in between."""
    job_id = submit(federation, slow_job(tmp_path / "quick", rounds=3, delay=0.2))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "job", "monitor", job_id, "--format", "jsonl", "--interval", "30"],
        stdout=subprocess.PIPE,
        text=True,
        env=federation.cli.env(),
    )
    out, _ = proc.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert last["terminal"] is True and last["status"] == "COMPLETED"
    code, doc = federation.cli.json("job", "meta", job_id)
    assert doc["data"]["end_time"]


def test_structured_logs(federation: Federation) -> None:
    code, doc = federation.cli.json("job", "submit", "-j", HELLO, "--wait", "--timeout", "120")
    job_id = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "logs", job_id, "--site", "all")
    assert code == 0, doc
    data = doc["data"]
    assert data["log_files"] == {"server": "log.json", "site-1": "log.json", "site-2": "log.json"}
    site_records = [json.loads(line) for line in data["logs"]["site-1"].splitlines()]
    assert site_records and all({"asctime", "message", "site"} <= set(r) for r in site_records)
    assert any("round 4" in r["message"] for r in site_records)
    server_records = [json.loads(line) for line in data["logs"]["server"].splitlines()]
    assert any(r.get("levelname") == "INFO" and "round 4 done" in r["message"] for r in server_records)
    human = federation.cli.run("job", "logs", job_id, "--site", "site-1")
    assert "round 4" in human.stdout and not human.stdout.startswith("{")


def test_a_submit_whose_reader_went_away_is_still_accepted(federation: Federation, tmp_path: Path) -> None:
    """``shoal job submit ... | head -c0``: exit 141 (as cat or grep would) with no traceback,
    and the job the server acknowledged is there."""
    job = slow_job(tmp_path / "unread", rounds=1, delay=0.0, meta={"name": "submitted-unread"})
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "job", "submit", "-j", str(job), "--format", "json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            env=federation.cli.env(),
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""
    code, doc = federation.cli.json("job", "list", "-n", "submitted-unread")
    assert code == 0 and len(doc["data"]) == 1, doc


def test_an_interrupted_wait_or_monitor_still_ends_with_one_document(
    federation: Federation, tmp_path: Path
) -> None:
    """Ctrl-C, or a CI runner cancelling with SIGINT: exit 130 and, in JSON modes, a last
    document saying INTERRUPTED (an envelope for wait, a terminal event for monitor)."""
    import signal

    job_id = submit(federation, slow_job(tmp_path / "slow", rounds=2000, delay=0.01))
    wait_for_status(federation, job_id, "RUNNING")

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "shoal", "job", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=federation.cli.env(),
            preexec_fn=takes_ctrl_c,
        )

    waiter = start("wait", job_id, "--format", "json")
    monitor = start("monitor", job_id, "--format", "jsonl")
    assert monitor.stdout is not None
    first = json.loads(monitor.stdout.readline())  # it is connected and streaming
    assert first["terminal"] is False
    wait_connected(waiter.pid, server_address(federation)[1])  # past its start-up, in its request
    for proc in (waiter, monitor):
        proc.send_signal(signal.SIGINT)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 130, err
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["error_code"] == "INTERRUPTED" and doc["exit_code"] == 130
    rest, err = monitor.communicate(timeout=30)
    assert monitor.returncode == 130, err
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["terminal"] is True and last["error_code"] == "INTERRUPTED", last
    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 0, doc


DIVERGED_CLIENT = """
import time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    time.sleep(0.02)
    flare.log_metric("grad_norm", float("inf"), step=model.current_round)
    flare.send(FLModel(params={"w": np.zeros(2)}, metrics={"loss": float("nan")}, num_examples=1))
"""


def test_stats_and_monitor_of_a_running_job_with_a_nan_metric(federation: Federation, tmp_path: Path) -> None:
    """The server sends NaN as null; 'job stats' formatted it with {:.6g} even for JSON output
    and crashed (INTERNAL_ERROR, exit 5). Human text shows it as n/a; JSON keeps the null."""
    job = slow_job(tmp_path / "diverged", rounds=2000, delay=0.0)
    (job / "app" / "custom" / "client.py").write_text(DIVERGED_CLIENT)
    job_id = submit(federation, job)
    deadline = time.monotonic() + 30
    while True:
        code, doc = federation.cli.json("job", "stats", job_id)
        assert code == 0, doc
        if (doc["data"].get("server") or {}).get("last_metrics"):
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
    assert doc["data"]["server"]["last_metrics"] == {"loss": None}, doc
    human = federation.cli.run("job", "stats", job_id)
    assert human.returncode == 0, human.stderr
    assert re.search(r"metrics of round \d+: loss=n/a", human.stdout), human.stdout
    meta = federation.cli.run("job", "meta", job_id)
    assert meta.returncode == 0 and "Round:" in meta.stdout, meta.stderr
    watched = federation.cli.run(
        "job", "monitor", job_id, "--stats-target", "all", "--metric", "grad_norm", "--timeout", "1"
    )
    assert watched.returncode == 3, watched.stderr  # TIMEOUT: the job runs on
    assert "loss=n/a" in watched.stderr and "site-1.grad_norm=n/a" in watched.stderr, watched.stderr
    assert "None" not in watched.stderr
    code, doc = federation.cli.json("job", "abort", job_id, "--force")
    assert code == 0, doc
