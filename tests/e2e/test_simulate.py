"""``shoal simulate`` through the real CLI: same global model as a federation, errors by code."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES, Cli
from tests.e2e.test_federation import expected_fedavg

pytestmark = pytest.mark.e2e

HELLO = EXAMPLES / "hello-numpy"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(home=tmp_path / "home")


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
    assert "round 4 done" in proc.stderr


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
