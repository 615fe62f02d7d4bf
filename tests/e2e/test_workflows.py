"""How a job ends when its workflow or a site's update misbehaves, on the real POC federation."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.federation import CUSTOM_CODE_STUDY, own_federation

pytestmark = pytest.mark.e2e

FORKY_WORKFLOW = """
import os, time
from shoal.workflows.base import Workflow

class Forky(Workflow):
    def run(self):
        pid = os.fork()
        if pid == 0:  # the child holds the workflow's channel open while it sleeps
            time.sleep(120)
            os._exit(0)
        print("forky child", pid, flush=True)  # into the server's log of the job (its only way out)
        if {fail}:
            raise RuntimeError("the workflow gave up")
"""


def _hello(dest: Path) -> Path:
    shutil.copytree(EXAMPLES / "hello-numpy", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.mark.parametrize(
    ("fail", "status", "code"),
    [(False, "FINISHED_OK", 0), (True, "FINISHED_EXCEPTION", 1)],
    ids=["workflow-finishes", "workflow-raises"],
)
def test_a_workflow_that_forks_ends_its_job_when_it_exits_and_its_child_dies(
    federation: Federation, tmp_path: Path, fail: bool, status: str, code: int
) -> None:
    """The job used to stay RUNNING until the forked child let go of the controller's channel
    (read to EOF), abort then blocked on it, and the child outlived the job: now the job settles
    when the controller exits and its whole process group is killed."""
    job = _hello(tmp_path / "job")
    (job / "app" / "custom" / "mywf.py").write_text(FORKY_WORKFLOW.format(fail=fail))
    (job / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": {"class": "mywf.Forky"}})
    )
    started = time.monotonic()
    got, doc = federation.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "40", "--study", CUSTOM_CODE_STUDY
    )
    assert got == code and doc["data"]["status"] == status, doc
    assert time.monotonic() - started < 35
    log = federation.kits / "server" / "workspace" / "jobs" / doc["data"]["job_id"] / "workspace" / "server"
    child = int((log / "log.txt").read_text().split("forky child ", 1)[1].split()[0])
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), f"the workflow's child {child} outlived its job"
    if fail:
        _, meta = federation.cli.json("job", "meta", doc["data"]["job_id"], "--study", CUSTOM_CODE_STUDY)
        assert "the workflow gave up" in meta["data"]["first_error"]["message"], meta


#: Each site sends back the tensors given for it in SENDS (name -> [dtype, values]), weighed by
#: its ``num_examples`` (default 1), after ``delay`` seconds, so that site-1's update is the
#: round's first one.
SENDING_CLIENT = """
import json, time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

SENDS = json.loads({sends!r})
flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    mine = SENDS[flare.site_name()]
    time.sleep(mine["delay"])
    params = {{name: np.array(values, dtype=dtype) for name, (dtype, values) in mine["params"].items()}}
    flare.send(FLModel(params=params, num_examples=mine.get("num_examples", 1)))
"""

GOOD = {"w": ["float32", [0.5, 0.5, 0.5]]}


def _sending_job(
    dest: Path,
    workflow: dict[str, Any],
    site_2: dict[str, Any],
    site_1: dict[str, Any] = GOOD,
    site_2_examples: int = 1,
) -> Path:
    job = _hello(dest)
    sends = {
        "site-1": {"delay": 0, "params": site_1},
        "site-2": {"delay": 1.5, "params": site_2, "num_examples": site_2_examples},
    }
    (job / "app" / "custom" / "client.py").write_text(SENDING_CLIENT.format(sends=json.dumps(sends)))
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(workflow))
    return job


FEDAVG = {"workflow": "fedavg", "args": {"num_rounds": 1}}
CROSS_EVAL = {"workflow": "cross_site_eval", "args": {"num_rounds": 1}}
CYCLIC = {"workflow": "cyclic", "args": {"num_rounds": 1}}


@pytest.mark.parametrize(
    ("workflow", "site_2", "says"),
    [
        (FEDAVG, {"w": ["int64", [2, 2, 2]]}, "tensor 'w' is int64, expected float32"),
        (FEDAVG, {"w": ["float32", [1, 1, 1, 1]]}, "tensor 'w' has shape (4,), expected (3,)"),
        (FEDAVG, {"v": ["float32", [1, 1, 1]]}, "missing ['w'], unexpected ['v']"),
        (CROSS_EVAL, {"w": ["float64", [1, 1, 1]]}, "tensor 'w' is float64, expected float32"),
        (CYCLIC, {"w": ["float32", [1, 1, 1, 1]]}, "tensor 'w' has shape (4,), expected (3,)"),
    ],
    ids=["fedavg-dtype", "fedavg-shape", "fedavg-names", "cross-site-eval-dtype", "cyclic-shape"],
)
def test_an_update_that_does_not_fit_fails_the_job_naming_its_site(
    federation: Federation, tmp_path: Path, workflow: dict[str, Any], site_2: dict[str, Any], says: str
) -> None:
    """A float32 and an int64 update used to average to a truncated int64 model, FINISHED_OK;
    mismatched names or shapes ended FINISHED_EXCEPTION blaming "server". Now the job is FAILED
    and the reason and first_error name the site whose update disagreed."""
    job = _sending_job(tmp_path / "job", workflow, site_2)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, meta = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = meta["data"]["first_error"]
    assert error["site"] == "site-2", error
    assert says in error["message"] and "site-2 sent an update that cannot be used" in error["message"]
    assert "site-2 sent an update" in meta["data"]["status_reason"], meta


def test_bool_tensors_are_not_averaged(federation: Federation, tmp_path: Path) -> None:
    """They used to be "averaged" without a word: the round's first update is refused."""
    flags = {"mask": ["bool", [True, False, True]]}
    job = _sending_job(tmp_path / "job", FEDAVG, flags, site_1=flags)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, meta = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = meta["data"]["first_error"]
    assert error["site"] == "site-1" and "'mask' is bool, which cannot be averaged" in error["message"], error


NON_FINITE = "holds NaN or infinite values"


@pytest.mark.parametrize(
    ("workflow", "site_2", "examples", "says"),
    [
        (FEDAVG, {"w": ["float32", [0.5, float("nan"), 0.5]]}, 1, f"tensor 'w' {NON_FINITE}"),
        (FEDAVG, {"w": ["float32", [float("inf"), 0.5, 0.5]]}, 1, f"tensor 'w' {NON_FINITE}"),
        (CYCLIC, {"w": ["float32", [0.5, 0.5, float("-inf")]]}, 1, f"tensor 'w' {NON_FINITE}"),
        (CROSS_EVAL, {"w": ["float32", [float("nan")] * 3]}, 1, f"tensor 'w' {NON_FINITE}"),
        (FEDAVG, GOOD, 10**15, "num_examples 1000000000000000 is more than the server allows"),
        # past INLINE_BYTES, so uploaded and read from a file; weighing nothing, so not summed
        (FEDAVG, {"w": ["float32", [0.5] * 70_000 + [float("nan")]]}, 0, f"tensor 'w' {NON_FINITE}"),
    ],
    ids=[
        "fedavg-nan",
        "fedavg-inf",
        "cyclic-minus-inf",
        "cross-site-eval-nan",
        "fedavg-num-examples",
        "fedavg-nan-uploaded-weighing-nothing",
    ],
)
def test_a_hostile_update_fails_the_job_naming_its_site(
    federation: Federation,
    tmp_path: Path,
    workflow: dict[str, Any],
    site_2: dict[str, Any],
    examples: int,
    says: str,
) -> None:
    """NaN, infinities and a weight of 10**15 used to be folded into the global model without
    a word; with the server's defaults the job is FAILED and both the reason and first_error
    name the site (a training script that sends them through the real client API)."""
    job = _sending_job(tmp_path / "job", workflow, site_2, site_2_examples=examples)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, meta = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = meta["data"]["first_error"]
    assert error["site"] == "site-2" and says in error["message"], error
    assert "site-2 sent an update that cannot be used" in meta["data"]["status_reason"], meta
    assert says in meta["data"]["status_reason"]


def test_a_server_set_to_accept_non_finite_updates_folds_them_in(tmp_path: Path) -> None:
    """The operator's choice, in the server kit's local/limits.json: with
    ``reject_non_finite_updates`` false a NaN update is averaged in and the job finishes with a
    NaN in its model; the ``max_num_examples`` set there is the bound applied."""
    from safetensors.numpy import load_file

    limits = {"reject_non_finite_updates": False, "max_num_examples": 100}
    with own_federation(tmp_path / "fed", server_local={"limits.json": limits}) as fed:
        nan = {"w": ["float32", [float("nan"), 0.5, 0.5]]}
        job = _sending_job(tmp_path / "nan-job", FEDAVG, nan)
        code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        job_id = doc["data"]["job_id"]
        code, doc = fed.cli.json("job", "download", job_id, "-o", tmp_path / "out")
        assert code == 0, doc
        model = load_file(next((tmp_path / "out").rglob("FL_global_model.safetensors")))
        assert np.isnan(model["w"][0]) and model["w"][1] == 0.5
        job = _sending_job(tmp_path / "heavy-job", FEDAVG, GOOD, site_2_examples=101)
        code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
        assert code == 1 and doc["data"]["status"] == "FAILED", doc
        code, meta = fed.cli.json("job", "meta", doc["data"]["job_id"])
        error = meta["data"]["first_error"]
        assert error["site"] == "site-2" and "num_examples 101" in error["message"], error
        assert "max_num_examples 100" in error["message"]


LATE_IN_ROUND_0 = """
import os, time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    if os.environ["SHOAL_SITE_NAME"] == "site-1" and model.current_round == 0:
        time.sleep(4.5)  # past the round's deadline: the round closes without this answer
    params = model.params or {"w": np.zeros(2)}
    flare.send(FLModel(params=params, metrics={"loss": 1.0}, num_examples=1))
"""


def test_a_round_that_closes_without_a_slow_site_goes_on_and_refuses_its_late_answer(
    federation: Federation, tmp_path: Path
) -> None:
    """k-of-n with a deadline: round 0 closes with site-2 alone. Its workflow goes on (it lost
    its channel to the timed-out read and failed the job: "the server closed the channel"),
    site-1's late answer is refused by the server and dropped by site-1 without failing, and
    site-1 answers the next rounds."""
    job = _hello(tmp_path / "late")
    (job / "app" / "custom" / "client.py").write_text(LATE_IN_ROUND_0)
    server = {"workflow": "fedavg", "args": {"num_rounds": 4, "min_responses": 1, "round_timeout": 3}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_id = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "download", job_id, "-o", tmp_path / "dl")
    assert code == 0, doc
    summary = json.loads(Path(doc["data"]["artifacts"]["metrics_summary"]).read_text())
    assert summary["rounds"][0]["sites"] == ["site-2"], summary["rounds"]
    assert any("site-1" in r["sites"] for r in summary["rounds"][1:]), summary["rounds"]
    site_log = next((tmp_path / "dl").rglob("site-1/log.txt")).read_text()
    assert "no longer takes task" in site_log, site_log[-2000:]


def _nice(pid: int, tid: str) -> int:
    """A thread's nice value (/proc/PID/task/TID/stat, field 19)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_the_server_hashes_checkpoints_in_a_thread_that_yields_the_cpu(
    federation: Federation, tmp_path: Path
) -> None:
    """Storing a round's checkpoint hashes its model whole, beside the next round's transfers:
    it runs in a thread of its own, niced below the server's event loop (decisions/0050)."""
    from shoal.scheduler.checkpoints import HASHING_NICE

    code, doc = federation.cli.json(
        "job", "submit", "-j", _hello(tmp_path / "job"), "--wait", "--timeout", "60"
    )
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    server = int(json.loads((federation.workspace / "run" / "pids.json").read_text())["server"])
    nices = {tid: _nice(server, tid) for tid in os.listdir(f"/proc/{server}/task")}
    loop = nices.pop(str(server))
    assert min(19, loop + HASHING_NICE) in nices.values(), (loop, nices)
    assert max(nices.values()) <= min(19, loop + HASHING_NICE)  # no other thread of it yields so
