"""The foundation, end to end: a POC federation runs hello-numpy and the job commands see it."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e

HELLO = EXAMPLES / "hello-numpy"


class Linreg(Protocol):
    """What the tests use of hello-numpy's linreg.py (a module loaded from its file)."""

    def site_data(self, site: str) -> tuple[np.ndarray, np.ndarray]: ...

    def initial_params(self) -> dict[str, np.ndarray]: ...


def load_linreg() -> Linreg:
    spec = importlib.util.spec_from_file_location("linreg", HELLO / "app" / "custom" / "linreg.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Linreg, module)


def local_train(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, epochs: int, mu: float = 0.0
) -> dict[str, np.ndarray]:
    """What each site's script is meant to do, written here from the formulas and not taken from
    the example or from shoal (so a mistake in either shows): full-batch gradient descent on
    the mean squared error of ``x @ w + b``, plus FedProx's proximal term
    ``mu/2 * ||theta - theta_0||^2`` (gradient ``mu * (theta - theta_0)``), theta_0 the model the
    round started from. The step is at most 1/L, L the largest eigenvalue of the loss's Hessian
    (2/n times the Gram matrix of ``x`` with a column of ones) plus ``mu``."""
    w0, b0 = np.asarray(params["weight"], np.float64), float(params["bias"][0])
    w, b, n = w0.copy(), b0, len(y)
    with_ones = np.column_stack([x, np.ones(n)])
    lr = min(lr, 1.0 / (np.linalg.eigvalsh(2.0 / n * with_ones.T @ with_ones)[-1] + mu))
    for _ in range(epochs):
        err = x @ w + b - y
        grad_w = 2.0 / n * (x.T @ err) + mu * (w - w0)
        grad_b = 2.0 / n * err.sum() + mu * (b - b0)
        w, b = w - lr * grad_w, b - lr * grad_b
    return {"weight": w, "bias": np.array([b])}


def mse(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((x @ params["weight"] + params["bias"][0] - y) ** 2))


def expected_fedavg(sites: list[str], rounds: int, lr: float, epochs: int) -> dict[str, np.ndarray]:
    """FedAvg computed here, independently of shoal, from what each site's script does (only
    the sites' data comes from the example)."""
    linreg = load_linreg()
    data = {s: linreg.site_data(s) for s in sites}
    params = linreg.initial_params()
    for _ in range(rounds):
        updates = [(local_train(params, *data[s], lr, epochs), len(data[s][1])) for s in sites]
        total = sum(n for _, n in updates)
        params = {k: np.asarray(sum(u[k] * n for u, n in updates) / total) for k in params}
    return params


def submit(fed: Federation, folder: Path) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", folder)
    assert code == 0, doc
    job_id: str = doc["data"]["job_id"]
    assert job_id.isdigit() and 0 < int(job_id) < 2**53
    return job_id


def test_poc_sites_are_connected(federation: Federation) -> None:
    code, doc = federation.cli.json("system", "status")
    assert code == 0
    assert [s["name"] for s in doc["data"]["sites"]] == ["site-1", "site-2"]


def test_hello_numpy_end_to_end(federation: Federation, tmp_path: Path) -> None:
    cli = federation.cli
    job_id = submit(federation, HELLO)

    code, doc = cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0, doc
    assert doc["data"]["status"] == "FINISHED_OK"
    assert doc["data"]["job_meta"]["job_name"] == "hello-numpy"

    code, doc = cli.json("job", "download", job_id, "-o", tmp_path)
    assert code == 0, doc
    data = doc["data"]
    assert data["download_path"] == str(tmp_path / job_id) == data["path"]
    assert data["artifact_discovery"] == "completed"
    assert data["missing_artifacts"] == []
    assert set(data["artifacts"]["client_logs"]) == {"site-1", "site-2"}

    got = load_file(data["artifacts"]["global_model"])
    want = expected_fedavg(["site-1", "site-2"], rounds=5, lr=0.05, epochs=10)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)

    summary = json.loads(Path(data["artifacts"]["metrics_summary"]).read_text())
    losses = [r["metrics"]["loss"] for r in summary["rounds"]]
    assert len(losses) == 5
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    site_log = Path(data["artifacts"]["client_logs"]["site-1"]).read_text()
    assert "round 4" in site_log

    code, doc = cli.json("job", "list")
    assert code == 0
    row = next(r for r in doc["data"] if r["job_id"] == job_id)
    assert row["job_name"] == "hello-numpy" and row["status"] == "FINISHED_OK" and row["study"] == "default"

    code, doc = cli.json("job", "meta", job_id)
    assert code == 0
    meta = doc["data"]
    assert meta["job_id"] == job_id and meta["status"] == "FINISHED_OK"
    assert meta["submitter_name"] == "admin@example.com" and meta["submitter_role"] == "project_admin"
    assert meta["deploy_map"] == {"app": ["@ALL"]} and meta["min_clients"] == 2
    assert meta["first_error"] is None and meta["status_reason"]

    # download again without --force refuses and keeps the first download
    code, doc = cli.json("job", "download", job_id, "-o", tmp_path)
    assert code == 4 and doc["error_code"] == "DOWNLOAD_EXISTS"
    assert (tmp_path / job_id / "workspace" / "FL_global_model.safetensors").exists()


def test_second_job_while_first_runs(federation: Federation) -> None:
    first = submit(federation, HELLO)
    second = submit(federation, HELLO)
    assert first != second
    for job_id in (first, second):
        code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc


def test_list_filters(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    code, doc = federation.cli.json("job", "list", "-i", job_id[:6], "-n", "HELLO")
    assert code == 0 and job_id in [r["job_id"] for r in doc["data"]]
    code, doc = federation.cli.json("job", "list", "-m", "1", "-r")
    assert code == 0 and [r["job_id"] for r in doc["data"]] == [job_id]
    code, doc = federation.cli.json("job", "list", "-n", "no-such-name")
    assert code == 0 and doc["data"] == []
    federation.cli.json("job", "wait", job_id, "--timeout", "120")


def test_wait_timeout_exits_3(federation: Federation, tmp_path: Path) -> None:
    slow = tmp_path / "slow"
    _copy_job(HELLO, slow)
    cfg = slow / "app" / "config" / "config_fed_server.json"
    cfg.write_text(json.dumps({"workflow": "fedavg", "args": {"num_rounds": 200}}))
    job_id = submit(federation, slow)
    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "0.2")
    assert code == 3 and doc["error_code"] == "TIMEOUT"
    assert doc["data"]["job_id"] == job_id
    code, doc = federation.cli.json("job", "download", job_id)
    assert code == 4 and doc["error_code"] == "JOB_NOT_DONE"
    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0


def test_failing_site_script_fails_the_job(federation: Federation, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    _copy_job(HELLO, broken)
    (broken / "app" / "custom" / "client.py").write_text("raise SystemExit('this site cannot train')\n")
    job_id = submit(federation, broken)
    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "60")
    assert code == 1, doc
    assert doc["error_code"] == "JOB_FAILED"
    assert doc["data"]["status"] == "FAILED"
    code, doc = federation.cli.json("job", "meta", job_id)
    error = doc["data"]["first_error"]
    assert error["site"] in ("site-1", "site-2") and "cannot train" in error["message"]


def _copy_job(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))


QUITTER = """
from shoal.fl import client as flare
flare.init()
flare.receive()  # takes its task, then leaves without a word
"""

WRONG_TASK = """
import os, tempfile
from shoal.wire.channel import SyncChannel
channel = SyncChannel.from_env()
task = channel.receive(30)
fd, path = tempfile.mkstemp(dir=task["result_dir"])
os.close(fd)
channel.send({"op": "result", "task_id": "no-such-task", "path": path, "num_examples": 1})
channel.receive(60)
"""


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (QUITTER, "exited (code 0) without answering its task"),
        (WRONG_TASK, "no such task for this site"),
    ],
    ids=["exits-0-holding-a-task", "answers-a-task-it-was-not-given"],
)
def test_a_site_script_that_breaks_the_protocol_fails_the_job_at_once(
    federation: Federation, tmp_path: Path, script: str, says: str
) -> None:
    """Both used to leave the job waiting: the first forever (a clean exit with a task in hand
    went unnoticed), the second ~1 s retrying an upload the server refuses as if it were an
    offset mix-up, then reporting only "gave up after 12 attempts"."""
    job = tmp_path / "job"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(script)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert says in error["message"] and error["site"].startswith("site-"), error


CHATTY = """
import sys
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
for i in range(20000):  # a progress bar: 300 KB redrawn with \\r, never a newline
    sys.stdout.write(f"\\rprogress {i:06d}")
sys.stdout.flush()
print()
print("é" + "x" * 100_000 + "é")
print("after the long line", flush=True)
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.send(FLModel(params=model.params or {"w": np.zeros(2)}, num_examples=1))
"""


def test_output_of_any_shape_is_logged_and_the_job_ends(federation: Federation, tmp_path: Path) -> None:
    """Output was read line by line with asyncio's 64 KiB limit: a longer line (a progress bar
    that only redraws) killed the reader, the script then blocked on a full pipe and the job
    stayed RUNNING; a long line printed once lost the site's log and its end confirmation."""
    job = tmp_path / "chatty"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(CHATTY)
    start = time.monotonic()
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    assert time.monotonic() - start < 9, "the sites' end confirmations were waited for"
    job_id = doc["data"]["job_id"]
    proc = federation.cli.run("job", "logs", job_id, "--site", "site-1", "--max-bytes", "10000000")
    assert proc.returncode == 0, proc.stderr
    assert "progress 019999" in proc.stdout and "é" + "x" * 100_000 + "é" in proc.stdout
    assert "after the long line" in proc.stdout
    # The JSON records (log.json) cut the long lines into pieces of at most 64 KiB.
    code, doc = federation.cli.json("job", "logs", job_id, "--site", "site-1", "--max-bytes", "10000000")
    records = [json.loads(line) for line in doc["data"]["logs"]["site-1"].splitlines()]
    assert any("progress 019999" in r["message"] for r in records), records[:3]
    assert max(len(r["message"].encode()) for r in records) <= 64 * 1024


WORDY_RESULT = """
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    weights = {"w": np.zeros(100_000)}  # 800 KB: past INLINE_BYTES, so it goes by PUT
    flare.send(FLModel(params=weights, num_examples=1, meta={"notes": "n" * NOTES}))
"""


@pytest.mark.parametrize(
    ("notes", "says"),
    [(60_000, None), (5_000_000, "travel with it (put large data in the model's tensors or in files)")],
    ids=["60-KB-meta-travels", "5-MB-meta-is-refused-in-the-script"],
)
def test_a_results_meta_travels_up_to_its_limit(
    federation: Federation, tmp_path: Path, notes: int, says: str | None
) -> None:
    """Metrics and meta ride the upload's X-Shoal-Result header: past 8 KB the server refused
    it as a bad request, the site's report of that was lost with its reconnecting channel and
    the round waited for its deadline. Up to RESULT_HEADER_MAX (64 KiB) they travel; past it
    the client API refuses them in the script, saying what to do."""
    job = tmp_path / "wordy"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(WORDY_RESULT.replace("NOTES", str(notes)))
    start = time.monotonic()
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    if says is None:
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        return
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    assert time.monotonic() - start < 20, "the failure waited for the round's deadline"
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    assert says in doc["data"]["first_error"]["message"], doc


RAW_CHANNEL = """
from shoal.wire.channel import SyncChannel

channel = SyncChannel.from_env()
task = channel.receive(30)
channel.send(MESSAGE)
channel.receive(60)
"""


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (
            '{"op": "metric", "key": "k" * 17 * 2**20, "value": 1.0}',
            "unreadable message on the shoal channel",
        ),
        (
            '{"op": "result", "task_id": task["task_id"], "path": task["model_path"],'
            ' "meta": {"n": "n" * 70_000}}',
            "at most 65536 travel with it",
        ),
    ],
    ids=["a-line-past-16-MiB", "a-result-header-past-64-KiB"],
)
def test_a_script_that_writes_the_channel_itself_is_held_to_its_limits(
    federation: Federation, tmp_path: Path, message: str, says: str
) -> None:
    """Past MAX_MESSAGE_BYTES (16 MiB) a line from the script is not read: the job fails at once
    naming the channel, and the script, which nobody reads any more, is killed. A result whose
    header passes RESULT_HEADER_MAX fails the job at the site, as the client API would."""
    job = tmp_path / "raw"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(RAW_CHANNEL.replace("MESSAGE", message))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert says in error["message"], error


FORKS_THEN_CRASHES = """
import os, sys, time
from shoal.fl import client as flare
flare.init()
flare.receive()
if os.fork() == 0:  # as multiprocessing's fork does: the child keeps every descriptor
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)  # MARKER"])
time.sleep(0.2)
raise SystemExit(3)
"""


def test_a_script_that_started_a_process_and_crashed_is_reported_at_once(
    federation: Federation, tmp_path: Path
) -> None:
    """The site waited for the end of the script's channel before reporting its exit, and a
    process the script started held it open: the failure came when that process ended (or
    the round's deadline did). Now the exit is the end: its group is killed and it is reported."""
    marker = f"child-of-{tmp_path.name}"
    job = tmp_path / "forks"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(FORKS_THEN_CRASHES.replace("MARKER", marker))
    start = time.monotonic()
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    assert time.monotonic() - start < 20, "the failure waited for the script's child"
    error = federation.cli.json("job", "meta", doc["data"]["job_id"])[1]["data"]["first_error"]
    assert "exited with code 3" in error["message"], error
    import subprocess

    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert not left, f"the script's child outlived it: {left}"


LOUD_CRASH = """
import sys
from shoal.fl import client as flare
flare.init()
flare.receive()
sys.stdout.write("y" * 5_000_000)  # one 5 MB line, then a crash
sys.stdout.flush()
raise SystemExit(3)
"""


def test_a_crash_after_a_huge_line_is_reported_briefly_and_at_once(
    federation: Federation, tmp_path: Path
) -> None:
    """The failure report quotes the script's last output: it read the whole log for it, and a
    5 MB line went into the report, the site's message to the server and the job's record.
    The reason is cut to a few thousand characters; the whole output stays in the log."""
    job = tmp_path / "loud-crash"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(LOUD_CRASH)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert "exited with code 3" in error["message"] and "characters cut" in error["message"], error
    assert len(error["message"]) < 5000 and len(doc["data"]["status_reason"]) < 5000, doc


# Standard-library modules the CLI's hot path keeps away from: each costs milliseconds of
# every call (docs/performance.md) and the CLI has a smaller way to do what it would do.
SLOW_STDLIB = ("ssl", "socket", "pathlib", "urllib.parse", "tomllib", "locale", "typing", "dataclasses")


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [(["job", "list"], 0), (["job", "meta", "999999"], 1), (["ls"], 0)],
    ids=["job-list", "job-meta", "ls"],
)
def test_cli_hot_path_imports_nothing_heavy(
    federation: Federation, tmp_path: Path, argv: list[str], exit_code: int
) -> None:
    probe = (
        "import sys\n"
        "from shoal.cli.main import main\n"
        f"code = main({argv!r} + ['--format', 'json'])\n"
        "heavy = sorted(m for m in ('aiohttp', 'numpy', 'cryptography', 'rich', 'safetensors',\n"
        "                           'boto3', 'botocore', 'psycopg')\n"
        f"               + {SLOW_STDLIB!r}\n"
        "               if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
        "raise SystemExit(code)\n"
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=federation.cli.env(),
        cwd=tmp_path,  # not an app project: ls uses the active kit
        timeout=60,
    )
    assert proc.returncode == exit_code, proc.stderr
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_without_warm_processes_jobs_start_cold_and_agree(tmp_path: Path) -> None:
    """SHOAL_WARM_SPARES=0: every job process is a new interpreter (decisions/0013); same result."""
    import subprocess

    from tests.federation import start_federation, stop_federation

    fed = start_federation(tmp_path / "home", env={"SHOAL_WARM_SPARES": "0"})
    try:
        code, doc = fed.cli.json("job", "submit", "-j", HELLO, "--wait", "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        code, doc = fed.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "dl")
        assert code == 0, doc
        got = load_file(doc["data"]["artifacts"]["global_model"])
        want = expected_fedavg(["site-1", "site-2"], rounds=5, lr=0.05, epochs=10)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
        daemons = set(json.loads((fed.workspace / "run" / "pids.json").read_text()).values())
        table = subprocess.run(["ps", "-eo", "ppid=,args="], capture_output=True, text=True).stdout
        children = [line for line in table.splitlines() if int(line.split()[0]) in daemons]
        assert not [c for c in children if "shoal.runtime.launcher" in c], children
    finally:
        stop_federation(fed)


WEIGHTED_CLIENT = """
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    idle = flare.site_name() == "site-1" or ALL_IDLE
    value = 1.0 if flare.site_name() == "site-1" else 3.0
    flare.send(FLModel(params={"w": np.full(2, value)}, num_examples=0 if idle else 2))
"""


@pytest.mark.parametrize("all_idle", [False, True], ids=["one-site-without-data", "no-site-with-data"])
def test_an_update_trained_on_no_examples_weighs_nothing(
    federation: Federation, tmp_path: Path, all_idle: bool
) -> None:
    """num_examples=0 used to count as 1; now FedAvg leaves such an update out, and a round in
    which no site trained on anything fails with that reason instead of dividing by zero."""
    job = tmp_path / "job"
    _copy_job(HELLO, job)
    (job / "app" / "custom" / "client.py").write_text(WEIGHTED_CLIENT.replace("ALL_IDLE", str(all_idle)))
    (job / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": "fedavg", "args": {"num_rounds": 1}})
    )
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    if all_idle:
        assert code == 1 and doc["data"]["status"] == "FAILED", doc
        code, meta = federation.cli.json("job", "meta", doc["data"]["job_id"])
        assert "no site reported any training examples" in meta["data"]["first_error"]["message"], meta
        return
    assert code == 0, doc
    code, doc = federation.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "dl")
    got = load_file(doc["data"]["artifacts"]["global_model"])
    np.testing.assert_array_equal(got["w"], np.full(2, 3.0))  # site-2's update alone
