"""``shoal simulate`` through the real CLI: same global model as a federation, errors by code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES, Cli, takes_ctrl_c
from tests.e2e.test_federation import expected_fedavg

pytestmark = pytest.mark.e2e

HELLO = EXAMPLES / "hello-numpy"
MARK_VARIABLE = "SHOAL_TEST_SIMULATE_MARK"

#: A site script that hangs after taking its task, with a child process of its own (the
#: simulator must kill the worker's whole process group); "started" tells the test it is there.
HANGING_SITE = """
import subprocess, time
from pathlib import Path
from shoal.fl import client as flare
flare.init()
flare.receive()
subprocess.Popen(["sleep", "1000"])
Path("started").touch()
time.sleep(100000)
"""


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The CLI, its processes (and all they start) marked in their environment: the test can
    see what outlives the command, and whatever does is killed afterwards."""
    mark = uuid.uuid4().hex
    yield Cli(home=tmp_path / "home", extra_env={MARK_VARIABLE: mark})
    for pid in marked_processes(mark):
        os.kill(pid, signal.SIGKILL)


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries ``mark`` (zombies have none)."""
    wanted = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def assert_nothing_left(cli: Cli) -> None:
    """The fork server and resource tracker end once the command has: allow them a moment."""
    deadline = time.monotonic() + 5
    while (left := marked_processes(cli.extra_env[MARK_VARIABLE])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left]


def job_with_site(tmp_path: Path, script: str, server_args: dict[str, object]) -> Path:
    job = tmp_path / "job"
    shutil.copytree(HELLO, job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "client.py").write_text(script)
    config = {"workflow": "fedavg", "args": {"num_rounds": 1, **server_args}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(config))
    return job


def start_hanging_simulation(cli: Cli, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``shoal simulate`` of a job whose two sites hang (deadline far away), once both hang."""
    job = job_with_site(tmp_path, HANGING_SITE, {"round_timeout": 600})
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "simulate", "-j", str(job), "-n", "2", "--workers", "2"]
        + ["-o", str(out), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=cli.env(),
        preexec_fn=takes_ctrl_c,
    )
    deadline = time.monotonic() + 30
    while len(list(out.glob("sites/site-*/started"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)
        time.sleep(0.05)
    return proc, out


def test_hello_numpy_two_sites_json(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, doc = cli.json("simulate", "-j", HELLO, "-n", "2", "-o", out)
    assert code == 0, doc
    data = doc["data"]
    assert data["status"] == "FINISHED_OK" and data["sites"] == 2 and data["job_name"] == "hello-numpy"
    assert data["workspace"] == str((out / "workspace").resolve())
    assert [r["round"] for r in data["rounds"]] == [0, 1, 2, 3, 4]
    got = load_file(data["global_model"])
    want = expected_fedavg(["site-1", "site-2"], rounds=5, lr=0.05, epochs=10)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    summary = json.loads(Path(data["metrics_summary"]).read_text())
    assert [r["metrics"] for r in summary["rounds"]] == [r["metrics"] for r in data["rounds"]]
    for part in ("server", "site-1", "site-2"):
        assert (out / "workspace" / part / "log.txt").stat().st_size > 0


def test_human_output_and_progress_on_stderr(cli: Cli, tmp_path: Path) -> None:
    proc = cli.run("simulate", "-j", HELLO, "-o", tmp_path / "out")  # -n defaults to min_clients
    assert proc.returncode == 0, proc.stderr
    assert "with 2 sites" in proc.stdout and "results:" in proc.stdout
    assert "round 5 done" in proc.stderr  # rounds count from 1 for people, as monitor's do


def test_bad_input_gets_catalogue_codes(cli: Cli, tmp_path: Path) -> None:
    code, doc = cli.json("simulate", "-j", tmp_path / "nope", "-n", "2")
    assert code == 1 and doc["error_code"] == "JOB_FOLDER_NOT_FOUND"
    code, doc = cli.json("simulate", "-j", HELLO, "-n", "0")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"
    code, doc = cli.json("simulate", "-j", HELLO, "-n", "2", "--workers", "0")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"
    bad = tmp_path / "bad"
    shutil.copytree(HELLO, bad, ignore=shutil.ignore_patterns("__pycache__"))
    (bad / "meta.json").write_text(json.dumps({"name": "x", "deploy_map": {"app": ["@ALL"]}}))
    code, doc = cli.json("simulate", "-j", bad, "-n", "2")
    assert code == 1 and doc["error_code"] == "JOB_META_INVALID"


def test_failing_script_exits_1_with_the_report(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(HELLO, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "app" / "custom" / "client.py").write_text("raise SystemExit('this site cannot train')\n")
    code, doc = cli.json("simulate", "-j", broken, "-n", "2", "-o", tmp_path / "out")
    assert code == 1 and doc["error_code"] == "SIMULATION_FAILED"
    assert doc["data"]["status"] == "FAILED"
    assert "this site cannot train" in doc["data"]["first_error"]["message"]


def test_a_site_script_cannot_import_the_server_apps_custom_code(cli: Cli, tmp_path: Path) -> None:
    """Workers started while the controller ran inherited its sys.path, the server app's
    custom/ included: a site script imported server-only code that no real site has."""
    job = tmp_path / "split"
    shutil.copytree(HELLO, job / "client_app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.move(job / "client_app" / "meta.json", job / "meta.json")
    server_app = job / "server_app"
    (server_app / "config").mkdir(parents=True)
    (server_app / "custom").mkdir()
    shutil.move(job / "client_app" / "app" / "config" / "config_fed_server.json", server_app / "config")
    (server_app / "custom" / "server_only.py").write_text("VALUE = 1\n")
    shutil.move(job / "client_app" / "app", job / "site_app")
    shutil.rmtree(job / "client_app")
    meta = json.loads((job / "meta.json").read_text())
    meta["deploy_map"] = {"server_app": ["server"], "site_app": ["site-1", "site-2"]}
    (job / "meta.json").write_text(json.dumps(meta))
    client = job / "site_app" / "custom" / "client.py"
    client.write_text(
        client.read_text().replace("import argparse\n", "import argparse\n\nimport server_only\n", 1)
    )
    code, doc = cli.json("simulate", "-j", job, "-n", "2", "-o", tmp_path / "out")
    assert code == 1 and doc["error_code"] == "SIMULATION_FAILED", doc
    assert "No module named 'server_only'" in doc["data"]["first_error"]["message"], doc


def test_thousand_sites_of_a_tiny_job(cli: Cli, tmp_path: Path) -> None:
    """N = 1000 on this machine's 2 workers: every site answers and FedAvg is exact."""
    job = tmp_path / "tiny"
    shutil.copytree(HELLO, job, ignore=shutil.ignore_patterns("__pycache__"))
    config = {"workflow": "fedavg", "args": {"num_rounds": 2, "round_timeout": 60}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(config))
    started = time.monotonic()
    code, doc = cli.json("simulate", "-j", job, "-n", "1000", "-o", tmp_path / "out", timeout=170)
    took = time.monotonic() - started
    assert code == 0, doc
    assert [r["sites"] for r in doc["data"]["rounds"]] == [1000, 1000]
    sites = [f"site-{i}" for i in range(1, 1001)]
    want = expected_fedavg(sites, rounds=2, lr=0.05, epochs=10)
    got = load_file(doc["data"]["global_model"])
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9)
    assert len(list((tmp_path / "out" / "workspace").glob("site-*/log.txt"))) == 1000
    print(f"1000 sites, 2 rounds: {took:.1f}s")


def test_a_hung_script_fails_at_the_deadline_and_is_killed(cli: Cli, tmp_path: Path) -> None:
    """The job fails at its round deadline and the command ends: the workers still running the
    hung script are killed, with the child process it started, and nothing outlives the CLI."""
    job = job_with_site(tmp_path, HANGING_SITE, {"round_timeout": 2})
    started = time.monotonic()
    code, doc = cli.json(
        "simulate", "-j", job, "-n", "2", "--workers", "2", "-o", tmp_path / "out", timeout=30
    )
    assert code == 1 and doc["error_code"] == "SIMULATION_FAILED", doc
    assert doc["data"]["status"] == "FAILED" and "deadline" in doc["data"]["reason"]
    assert time.monotonic() - started < 15
    assert_nothing_left(cli)


def test_ctrl_c_gives_interrupted_and_leaves_no_process(cli: Cli, tmp_path: Path) -> None:
    proc, _ = start_hanging_simulation(cli, tmp_path)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["error_code"] == "INTERRUPTED" and doc["exit_code"] == 130
    assert "Traceback" not in stderr
    assert_nothing_left(cli)


def test_sigterm_leaves_no_process(cli: Cli, tmp_path: Path) -> None:
    proc, _ = start_hanging_simulation(cli, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # what a shell shows for SIGTERM
    assert "Traceback" not in stderr and "leaked" not in stderr
    assert_nothing_left(cli)


def test_a_crashing_worker_fails_the_job_with_more_sites_queued(cli: Cli, tmp_path: Path) -> None:
    """10 sites over 2 workers: sites still queued when the pool breaks fail too; the job ends
    FAILED (a site failure), not FINISHED_EXCEPTION from the broken pool."""
    script = "import os\nfrom shoal.fl import client as flare\nflare.init()\nflare.receive()\nos._exit(3)\n"
    job = job_with_site(tmp_path, script, {})
    out = tmp_path / "out"
    code, doc = cli.json("simulate", "-j", job, "-n", "10", "--workers", "2", "-o", out)
    assert code == 1 and doc["error_code"] == "SIMULATION_FAILED", doc
    assert doc["data"]["status"] == "FAILED" and doc["data"]["reason"].startswith("RoundFailed")
    assert doc["data"]["first_error"]["type"] == "WorkerDied"
    assert "Traceback" not in (out / "workspace" / "server" / "log.txt").read_text()
    assert_nothing_left(cli)


def test_the_servers_update_checks_apply_and_can_be_set(cli: Cli, tmp_path: Path) -> None:
    """A NaN update fails the simulated job naming the site, as on a server with its defaults;
    ``--accept-non-finite`` and ``--max-num-examples`` set what a server's limits.json sets."""
    from shoal.workflows.update_checks import DEFAULT_MAX_NUM_EXAMPLES
    from tests.unit.simulator.test_engine import _hostile_job

    nan = _hostile_job(tmp_path / "nan", "float('nan')", "3")
    code, doc = cli.json("simulate", "-j", nan, "-n", "3", "-o", tmp_path / "out-1")
    assert code == 1 and doc["error_code"] == "SIMULATION_FAILED", doc
    assert doc["data"]["first_error"]["site"] == "site-2", doc
    assert "holds NaN or infinite values" in doc["data"]["first_error"]["message"]
    code, doc = cli.json("simulate", "-j", nan, "-n", "3", "-o", tmp_path / "out-2", "--accept-non-finite")
    assert code == 0 and np.isnan(load_file(doc["data"]["global_model"])["w"][0]), doc
    heavy = _hostile_job(tmp_path / "heavy", "1.0", "5")
    code, doc = cli.json(
        "simulate", "-j", heavy, "-n", "3", "-o", tmp_path / "out-3", "--max-num-examples", "4"
    )
    assert code == 1 and doc["data"]["first_error"]["site"] == "site-2", doc
    assert "num_examples 5" in doc["data"]["first_error"]["message"]
    proc = cli.run("simulate", "--help")
    assert str(DEFAULT_MAX_NUM_EXAMPLES) in proc.stdout  # the help states the default it applies


@pytest.mark.parametrize("n_sites", [50, 1000])
def test_the_readmes_example_converges_for_many_sites(cli: Cli, tmp_path: Path, n_sites: int) -> None:
    # The README runs hello-numpy on 50 and 1000 sites: some sites' data is steep enough that
    # a fixed step overshot and the global loss grew to 1e21 (exit 0, nothing said).
    code, doc = cli.json("simulate", "-j", HELLO, "-n", str(n_sites), "-o", tmp_path / "out", timeout=300)
    assert code == 0, doc
    losses = [r["metrics"]["loss"] for r in doc["data"]["rounds"]]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)) and losses[-1] < 1, losses
    assert doc["data"]["notices"] == []


def test_a_diverging_run_says_so_in_the_summary(cli: Cli, tmp_path: Path) -> None:
    from tests.e2e.jobs import round_loss_job

    job = round_loss_job(tmp_path / "boom", "float('nan') if r == 3 else 1.0")
    code, doc = cli.json("simulate", "-j", job, "-n", "2", "-o", tmp_path / "out")
    assert code == 0, doc
    assert doc["data"]["notices"] == [
        "diverged: the global loss is not a finite number after round 4; "
        "lower the learning rate or check the data"
    ]
    human = cli.run("simulate", "-j", job, "-n", "2", "-o", tmp_path / "again")
    assert human.returncode == 0 and f"notice: {doc['data']['notices'][0]}" in human.stdout


def test_a_simulated_jobs_trackers_hold_its_summary(cli: Cli, tmp_path: Path) -> None:
    """A job naming all three trackers, simulated: TensorBoard's event files and W&B's offline
    run in the run's workspace, MLflow's SQLite store in OUT/mlflow, each read back with its
    own reader, hold the summary's values, as a server's trackers would."""
    from tests.e2e.jobs import slow_job
    from tests.e2e.test_tracking import expected, mlflow_series, tensorboard_series, wandb_series

    job = slow_job(
        tmp_path / "job", rounds=3, delay=0.0, meta={"trackers": ["tensorboard", "mlflow", "wandb"]}
    )
    out = tmp_path / "out"
    code, doc = cli.json("simulate", "-j", job, "-n", "2", "--workers", "2", "-o", out, timeout=300)
    assert code == 0, doc
    assert doc["data"]["notices"] == [], doc["data"]["notices"]
    workspace = out / "workspace"
    want = expected(json.loads((workspace / "metrics_summary.json").read_text()))
    assert sorted(want) == ["global/loss", "site-1/step_loss", "site-2/step_loss"]
    assert tensorboard_series(workspace / "tensorboard") == want
    series, tags = mlflow_series(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}", doc["data"]["job_id"])
    assert series == want and tags["shoal.study"] == "simulation"
    series, run = wandb_series(workspace, doc["data"]["job_id"])
    assert series == want and run.display_name == f"job {doc['data']['job_id']}"


def test_a_failing_tracker_is_a_notice_of_the_simulation(cli: Cli, tmp_path: Path) -> None:
    """A ``wandb`` that breaks on import: the run still succeeds, its summary says why W&B has
    nothing, and TensorBoard has every value."""
    from tests.e2e.jobs import slow_job
    from tests.e2e.test_tracking import expected, tensorboard_series

    broken = tmp_path / "broken"
    (broken / "wandb").mkdir(parents=True)
    (broken / "wandb" / "__init__.py").write_text("raise ImportError('this wandb is broken')\n")
    job = slow_job(tmp_path / "job", rounds=2, delay=0.0, meta={"trackers": ["wandb", "tensorboard"]})
    out = tmp_path / "out"
    env = {**cli.env(), "PYTHONPATH": str(broken)}
    code, doc = cli.json("simulate", "-j", job, "-n", "2", "-o", out, env=env, timeout=300)
    assert code == 0, doc
    notices = doc["data"]["notices"]
    assert len(notices) == 1 and notices[0].startswith(
        "tracker wandb failed to start (ImportError: this wandb"
    )
    want = expected(json.loads((out / "workspace" / "metrics_summary.json").read_text()))
    assert tensorboard_series(out / "workspace" / "tensorboard") == want
