"""The simulator in-process: same results as a federation, bad input refused, failures reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tests.conftest import EXAMPLES
from tests.e2e.test_federation import expected_fedavg

from shoal.errors import ShoalError
from shoal.fl import FLModel
from shoal.fl import client as flare
from shoal.simulator.engine import _scaled_deadline, run_simulation, simulate
from shoal.simulator.worker import TaskChannel
from shoal.wire.models import save_params
from shoal.workflows.update_checks import UpdateChecks

HELLO = EXAMPLES / "hello-numpy"


def make_job(
    root: Path,
    client: str,
    *,
    meta: dict[str, object] | None = None,
    rounds: int = 1,
    server_args: dict[str, object] | None = None,
) -> Path:
    """A one-app job whose site script is ``client`` (extra modules can be added afterwards)."""
    (root / "app" / "config").mkdir(parents=True)
    (root / "app" / "custom").mkdir()
    (root / "meta.json").write_text(
        json.dumps(meta or {"name": "t", "min_clients": 1, "deploy_map": {"app": ["@ALL"]}})
    )
    (root / "app" / "config" / "config_fed_client.json").write_text(json.dumps({"script": "client.py"}))
    server = {"workflow": "fedavg", "args": {"num_rounds": rounds, **(server_args or {})}}
    (root / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (root / "app" / "custom" / "client.py").write_text(client)
    return root


ECHO_SITE = """
from shoal.fl import FLModel, client as flare
import numpy as np
import sitevalue
flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.log_metric("seen", sitevalue.NUMBER, step=model.current_round)
    flare.send(FLModel(params={"v": np.array([float(sitevalue.NUMBER)])}, metrics={"n": sitevalue.NUMBER}))
"""


def test_hello_numpy_matches_fedavg_and_the_result_layout(tmp_path: Path) -> None:
    workspace = simulate(HELLO, n_sites=2, workers=2, out_dir=tmp_path / "out")
    assert workspace == (tmp_path / "out" / "workspace").resolve()
    got = load_file(workspace / "FL_global_model.safetensors")
    want = expected_fedavg(["site-1", "site-2"], rounds=5, lr=0.05, epochs=10)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    assert summary["workflow"] == "fedavg" and len(summary["rounds"]) == 5
    assert "round 4 done" in (workspace / "server" / "log.txt").read_text()
    for site in ("site-1", "site-2"):
        assert f"{site}: round 4:" in (workspace / site / "log.txt").read_text()
    assert not (tmp_path / "out" / "run").exists()  # models in flight are cleaned up


def test_one_worker_many_sites_no_state_leaks_between_sites(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", ECHO_SITE, rounds=2)
    # Module-level state computed at import time must be each site's own, as in a real process.
    (job / "app" / "custom" / "sitevalue.py").write_text(
        "import os\nNUMBER = int(os.environ['SHOAL_SITE_NAME'].split('-')[1])\n"
    )
    report = run_simulation(job, 5, workers=1, out_dir=tmp_path / "out")
    assert report.ok and report.workers == 1 and report.sites == 5
    model = load_file(Path(report.workspace) / "FL_global_model.safetensors")
    np.testing.assert_allclose(model["v"], [3.0])  # mean of 1..5
    assert [r["metrics"]["n"] for r in report.rounds] == [3.0, 3.0]
    assert report.site_metrics["site-4"] == {"seen": 4.0, "seen_step": 1}
    assert report.peak_rss_mib["total"] > 0


def test_deploy_map_naming_sites_runs_only_those(tmp_path: Path) -> None:
    meta = {"name": "t", "min_clients": 2, "deploy_map": {"app": ["server", "site-1", "site-3"]}}
    job = make_job(tmp_path / "job", ECHO_SITE, meta=meta)
    (job / "app" / "custom" / "sitevalue.py").write_text(
        "import os\nNUMBER = int(os.environ['SHOAL_SITE_NAME'].split('-')[1])\n"
    )
    report = run_simulation(job, 5, out_dir=tmp_path / "out")
    assert report.ok and report.sites == 2
    assert sorted(p.name for p in Path(report.workspace).iterdir() if p.name.startswith("site-")) == [
        "site-1",
        "site-3",
    ]
    np.testing.assert_allclose(load_file(Path(report.workspace) / "FL_global_model.safetensors")["v"], [2.0])


@pytest.mark.parametrize(
    ("script", "kind", "text"),
    [
        ("raise SystemExit('this site cannot train')\n", "ProcessExit", "this site cannot train"),
        ("raise ValueError('bad data')\n", "ValueError", "bad data"),
        (
            "from shoal.fl import client as flare\nflare.init()\nflare.receive()\n",
            "NoResult",
            "without sending",
        ),
    ],
)
def test_failing_site_script_fails_the_job(tmp_path: Path, script: str, kind: str, text: str) -> None:
    job = make_job(tmp_path / "job", script)
    with pytest.raises(ShoalError) as info:
        simulate(job, 2, out_dir=tmp_path / "out")
    err = info.value
    assert err.code == "SIMULATION_FAILED" and err.exit_code == 1
    assert err.data is not None and err.data["status"] == "FAILED"
    assert err.data["first_error"]["type"] == kind and text in err.data["first_error"]["message"]
    log = (tmp_path / "out" / "workspace" / err.data["first_error"]["site"] / "log.txt").read_text()
    if kind != "NoResult":
        assert text in log


def test_workflow_exception_is_finished_exception(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", ECHO_SITE)
    server = {"workflow": {"class": "myflow.Broken"}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (job / "app" / "custom" / "myflow.py").write_text(
        "from shoal.workflows.base import Workflow\n"
        "class Broken(Workflow):\n"
        "    def run(self):\n"
        "        print('about to fail')\n"
        "        raise RuntimeError('workflow bug')\n"
    )
    report = run_simulation(job, 1, out_dir=tmp_path / "out")
    assert report.status == "FINISHED_EXCEPTION" and "workflow bug" in report.reason
    server_log = (tmp_path / "out" / "workspace" / "server" / "log.txt").read_text()
    assert "about to fail" in server_log and "RuntimeError: workflow bug" in server_log
    assert "myflow" not in sys.modules  # the server app's custom code does not stay behind


@pytest.mark.parametrize("n", [0, -1])
def test_n_below_one_is_invalid_args(tmp_path: Path, n: int) -> None:
    with pytest.raises(ShoalError) as info:
        simulate(HELLO, n, out_dir=tmp_path / "out")
    assert info.value.code == "INVALID_ARGS" and info.value.exit_code == 4
    assert not (tmp_path / "out").exists()


def test_bad_job_folders_get_their_codes_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ShoalError) as info:
        simulate(tmp_path / "missing", 2, out_dir=out)
    assert info.value.code == "JOB_FOLDER_NOT_FOUND"
    bad = make_job(tmp_path / "bad", "")
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(ShoalError) as info:
        simulate(bad, 2, out_dir=out)
    assert info.value.code == "JOB_META_INVALID"
    with pytest.raises(ShoalError) as info:
        simulate(HELLO, 1, out_dir=out)  # hello-numpy needs min_clients=2
    assert info.value.code == "MIN_CLIENTS_UNSATISFIABLE"
    noscript = make_job(tmp_path / "noscript", "")
    (noscript / "app" / "custom" / "client.py").unlink()
    with pytest.raises(ShoalError) as info:
        simulate(noscript, 2, out_dir=out)
    assert info.value.code == "JOB_CONFIG_INVALID"
    assert not out.exists()


def test_an_used_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out" / "workspace").mkdir(parents=True)
    with pytest.raises(ShoalError) as info:
        simulate(HELLO, 2, out_dir=tmp_path / "out")
    assert info.value.code == "INVALID_ARGS" and "workspace" in info.value.message


def test_client_api_over_a_task_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam: the real client functions run over an attached in-process channel."""
    for name in ("_channel", "_current_task", "_running"):  # restored after the test
        monkeypatch.setattr(flare, name, getattr(flare, name))
    model = tmp_path / "models" / "t1.safetensors"
    save_params({"w": np.ones(2)}, model)
    channel = TaskChannel(
        {"op": "task", "task_id": "t1", "round": 3, "total_rounds": 4, "model_path": str(model)}
    )
    flare.attach(channel)
    flare.init()  # finds the channel attached: no socket needed
    got = flare.receive()
    assert got is not None and got.current_round == 3
    np.testing.assert_array_equal(got.params["w"], [1.0, 1.0])
    flare.send(FLModel(params={"w": np.zeros(2)}, num_examples=7))
    assert flare.receive() is None and not flare.is_running()
    [result] = channel.sent
    assert result["op"] == "result" and result["num_examples"] == 7
    np.testing.assert_array_equal(load_file(result["path"])["w"], [0.0, 0.0])


def test_round_deadline_stretches_with_sites_per_worker() -> None:
    assert _scaled_deadline({"round_timeout": 60}, 500) == {"round_timeout": 30000.0}
    assert _scaled_deadline({"round_timeout": 0}, 500) == {"round_timeout": 0}
    assert _scaled_deadline({"num_rounds": 2}, 500) == {"num_rounds": 2}


def test_copy_of_job_keeps_the_source_untouched(tmp_path: Path) -> None:
    source = tmp_path / "src-job"
    shutil.copytree(HELLO, source, ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(str(p.relative_to(source)) for p in source.rglob("*"))
    simulate(source, 2, out_dir=tmp_path / "out")
    assert sorted(str(p.relative_to(source)) for p in source.rglob("*")) == before


def test_a_crashing_worker_fails_the_sites_still_queued(tmp_path: Path) -> None:
    """os._exit in a script breaks the pool; with 10 sites over 2 workers most sites are still
    queued then, and the pool refuses them: each fails as a site, so the job ends FAILED."""
    job = make_job(
        tmp_path / "job",
        "import os\nfrom shoal.fl import client as flare\nflare.init()\nflare.receive()\nos._exit(3)\n",
    )
    report = run_simulation(job, 10, workers=2, out_dir=tmp_path / "out")
    assert report.status == "FAILED" and report.reason.startswith("RoundFailed"), report.reason
    assert report.first_error is not None and report.first_error["type"] == "WorkerDied"
    assert "exit status 3 while it ran site-" in report.first_error["message"]


HUNG_SITE = """
import os, subprocess, time
from pathlib import Path
from shoal.fl import client as flare
flare.init()
flare.receive()
child = subprocess.Popen(["sleep", "1000"])
Path("pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(100000)
"""


def test_a_hung_script_is_killed_when_the_job_fails_at_the_deadline(tmp_path: Path) -> None:
    """The round deadline fails the job; the workers still running the script, and the process
    the script started, are killed instead of being waited for (which was forever)."""
    job = make_job(tmp_path / "job", HUNG_SITE, server_args={"round_timeout": 1})
    started = time.monotonic()
    report = run_simulation(job, 2, workers=2, out_dir=tmp_path / "out")
    assert report.status == "FAILED" and "deadline" in report.reason
    assert time.monotonic() - started < 10
    pids = [
        int(p)
        for site in ("site-1", "site-2")
        for p in (tmp_path / "out" / "sites" / site / "pids").read_text().split()
    ]
    deadline = time.monotonic() + 5
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert alive == []


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


#: site-2 sends what HOSTILE_VALUE and HOSTILE_EXAMPLES say; the other sites send good updates.
HOSTILE_SITE = """
import numpy as np
from shoal.fl import FLModel, client as flare
flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    hostile = flare.site_name() == "site-2"
    value = HOSTILE_VALUE if hostile else 1.0
    flare.send(FLModel(params={"w": np.array([value, 1.0])}, num_examples=HOSTILE_EXAMPLES if hostile else 3))
"""


def _hostile_job(root: Path, value: str, examples: str, workflow: str = "fedavg") -> Path:
    job = make_job(root, HOSTILE_SITE.replace("HOSTILE_VALUE", value).replace("HOSTILE_EXAMPLES", examples))
    server = {"workflow": workflow, "args": {"num_rounds": 1}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    return job


@pytest.mark.parametrize(
    ("value", "examples", "workflow", "says"),
    [
        ("float('nan')", "3", "fedavg", "tensor 'w' holds NaN or infinite values"),
        ("float('inf')", "3", "fedavg", "tensor 'w' holds NaN or infinite values"),
        ("-float('inf')", "3", "cyclic", "tensor 'w' holds NaN or infinite values"),
        ("float('nan')", "3", "cross_site_eval", "tensor 'w' holds NaN or infinite values"),
        ("1.0", "10**15", "fedavg", "num_examples 1000000000000000 is more than the server allows"),
    ],
    ids=["fedavg-nan", "fedavg-inf", "cyclic-minus-inf", "cross-site-eval-nan", "fedavg-num-examples"],
)
def test_a_hostile_update_fails_the_simulated_job_naming_its_site(
    tmp_path: Path, value: str, examples: str, workflow: str, says: str
) -> None:
    """The simulator runs the same checks as a server with its defaults."""
    report = run_simulation(
        _hostile_job(tmp_path / "job", value, examples, workflow), 3, out_dir=tmp_path / "out"
    )
    assert report.status == "FAILED" and "site-2 sent an update that cannot be used" in report.reason
    assert says in report.reason, report.reason
    assert report.first_error is not None and report.first_error["site"] == "site-2", report.first_error
    assert says in report.first_error["message"]
    assert report.global_model is None


def test_with_the_check_off_a_nan_update_is_folded_in(tmp_path: Path) -> None:
    """What a server with ``reject_non_finite_updates: false`` does: the job finishes and its
    model holds NaN (documented in docs/reliability.md)."""
    job = _hostile_job(tmp_path / "job", "float('nan')", "3")
    checks = UpdateChecks(reject_non_finite=False)
    workspace = simulate(job, 3, out_dir=tmp_path / "out", checks=checks)
    model = load_file(workspace / "FL_global_model.safetensors")
    assert np.isnan(model["w"][0]) and model["w"][1] == 1.0


def test_a_lower_num_examples_bound_is_applied(tmp_path: Path) -> None:
    job = _hostile_job(tmp_path / "job", "1.0", "11")
    report = run_simulation(job, 3, out_dir=tmp_path / "out", checks=UpdateChecks(max_num_examples=10))
    assert report.status == "FAILED" and report.first_error is not None
    assert report.first_error["site"] == "site-2" and "num_examples 11" in report.first_error["message"]


#: A federated-statistics site whose pass-1 sum is NaN on site-2 (a column with a missing value).
HOSTILE_STATS_SITE = """
import numpy as np
from shoal.fl import FLModel, client as flare
flare.init()
model = flare.receive()
total = float("nan") if flare.site_name() == "site-2" else 30.0
part = {"count": np.array([10.0]), "sum": np.array([total]), "min": np.array([1.0]), "max": np.array([5.0])}
flare.send(FLModel(params=part, meta={"pass": 1, "features": ["x"]}, num_examples=10))
"""


def test_a_non_finite_statistic_fails_federated_statistics_naming_its_site(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", HOSTILE_STATS_SITE)
    server = {"workflow": "fedstats", "args": {"statistics": ["count", "sum", "mean"]}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    report = run_simulation(job, 3, out_dir=tmp_path / "out")
    assert report.status == "FAILED" and report.first_error is not None, report
    assert report.first_error["site"] == "site-2"
    assert "tensor 'sum' holds NaN or infinite values" in report.first_error["message"]
