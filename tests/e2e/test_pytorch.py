"""hello-pt end to end: a PyTorch job on a real federation and in the simulator, same global model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import numpy as np  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tests.conftest import EXAMPLES, Cli  # noqa: E402
from tests.e2e.conftest import Federation  # noqa: E402
from tests.e2e.jobs import export_recipe  # noqa: E402

pytestmark = pytest.mark.e2e

HELLO_PT = EXAMPLES / "hello-pt"


def load_net() -> ModuleType:
    """The example's net.py, imported under its own name (independently of the job's run)."""
    spec = importlib.util.spec_from_file_location("hello_pt_net", HELLO_PT / "net.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_job(dest: Path) -> Path:
    """The job folder, written by the example's own recipe (``job.py --export``)."""
    export_recipe(HELLO_PT / "job.py", dest)
    assert sorted(p.name for p in (dest / "app" / "custom").iterdir()) == ["client.py", "net.py"]
    return dest


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_job(tmp_path_factory.mktemp("hello-pt") / "job")


@pytest.fixture(scope="module")
def federated(federation: Federation, job: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run hello-pt on the session federation once; the download's artifacts."""
    cli = federation.cli
    code, doc = cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id: str = doc["data"]["job_id"]
    code, doc = cli.json("job", "wait", job_id, "--timeout", "150", timeout=180)
    assert code == 0, doc
    assert doc["data"]["status"] == "FINISHED_OK"
    code, doc = cli.json("job", "download", job_id, "-o", tmp_path_factory.mktemp("download"))
    assert code == 0, doc
    artifacts: dict[str, str] = doc["data"]["artifacts"]
    return artifacts


def test_hello_pt_learns_on_a_federation(federated: dict[str, str]) -> None:
    summary = json.loads(Path(federated["metrics_summary"]).read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3, 4]
    accuracy = [r["metrics"]["accuracy"] for r in rounds]
    global_accuracy = [r["metrics"]["global_accuracy"] for r in rounds]
    print(f"accuracy of the updates per round: {accuracy}; of the received global model: {global_accuracy}")
    assert accuracy[-1] >= 0.90, accuracy
    assert global_accuracy[-1] > global_accuracy[0], global_accuracy

    # The downloaded global model, read with safetensors' own torch loader (no shoal code, no
    # pickle), loaded into a fresh network and evaluated on the held-out split here.
    net = load_net()
    model = net.make_net()
    model.load_state_dict(load_file(federated["global_model"]))
    acc, _ = net.evaluate(model, *net.held_out_data())
    assert acc >= 0.90, acc


def test_simulate_gives_the_federations_global_model(
    federated: dict[str, str], job: Path, tmp_path: Path
) -> None:
    from shoal.simulator.worker import forget_job_modules

    # torch.ops and torch.classes answer any attribute, __path__ included: tidying up after a
    # run that imported torch must not take that for a list of folders.
    forget_job_modules(str(tmp_path / "no-app"), set())
    cli = Cli(home=tmp_path / "home")
    code, doc = cli.json("simulate", "-j", job, "-n", "2", "-o", tmp_path / "out", timeout=150)
    assert code == 0, doc
    assert doc["data"]["status"] == "FINISHED_OK"
    simulated = load_file(doc["data"]["global_model"])
    real = load_file(federated["global_model"])
    assert set(simulated) == set(real)
    diff = max(float((simulated[k] - real[k]).abs().max()) for k in real)
    print(f"simulate vs federation, max abs difference of the global model: {diff}")
    for name in real:
        np.testing.assert_allclose(simulated[name].numpy(), real[name].numpy(), rtol=1e-5, atol=1e-7)
    summary = json.loads(Path(doc["data"]["metrics_summary"]).read_text())
    assert summary["rounds"][-1]["metrics"]["accuracy"] >= 0.90
