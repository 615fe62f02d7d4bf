"""hello-pt end to end: a PyTorch job on a real federation and in the simulator, same global model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

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


#: hello-pt's client-side DP: each site's update clipped to norm 1 with Gaussian noise of 0.1 times
#: that added by its agent. With two sites, site-level privacy that leaves the model useful costs a
#: large epsilon (docs/privacy.md gives the figures); the test shows the protection runs end to end
#: and what it costs in accuracy.
CLIENT_DP = {"clip_norm": 1.0, "noise_multiplier": 0.1}


def private_job(dest: Path, privacy: dict[str, Any]) -> Path:
    """hello-pt with a privacy block, starting from the network's seeded weights as a file (DP
    clips the change to the global model: from no model at all it would clip the weights)."""
    from safetensors.torch import save_file

    job = export_job(dest)
    state = {k: v.contiguous() for k, v in load_net().make_net().state_dict().items()}
    save_file(state, str(job / "app" / "custom" / "initial.safetensors"))
    config = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["args"]["initial_model"] = "custom/initial.safetensors"
    config.write_text(json.dumps(server))
    meta = json.loads((job / "meta.json").read_text())
    (job / "meta.json").write_text(json.dumps({**meta, "privacy": privacy}))
    return job


def run_and_download(federation: Federation, job: Path, out: Path) -> tuple[str, dict[str, str]]:
    """Submit, wait for FINISHED_OK, download: the job id and the download's artifacts."""
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "150", timeout=180)
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_id: str = doc["data"]["job_id"]
    code, doc = federation.cli.json("job", "download", job_id, "-o", out)
    assert code == 0, doc
    artifacts: dict[str, str] = doc["data"]["artifacts"]
    return job_id, artifacts


def held_out_accuracy(global_model: str) -> float:
    net = load_net()
    model = net.make_net()
    model.load_state_dict(load_file(global_model))
    accuracy: float = net.evaluate(model, *net.held_out_data())[0]
    return accuracy


def test_hello_pt_with_client_dp_still_learns(
    federated: dict[str, str], federation: Federation, tmp_path: Path
) -> None:
    """The same 5 rounds with every update clipped and noised at its site: the global model
    learns (well above chance, 0.1 for ten digits), below the non-private run; both reported."""
    job_id, artifacts = run_and_download(
        federation, private_job(tmp_path / "job", {"client_dp": CLIENT_DP}), tmp_path / "out"
    )
    private = held_out_accuracy(artifacts["global_model"])
    plain = held_out_accuracy(federated["global_model"])
    summary = json.loads(Path(artifacts["metrics_summary"]).read_text())
    spent = summary["privacy"]
    assert set(spent["sites"]) == {"site-1", "site-2"}
    assert all(s["rounds"] == 5 and s["epsilon"] > 0 for s in spent["sites"].values()), spent
    print(
        f"hello-pt, 2 sites, 5 rounds: held-out accuracy {plain:.3f} without DP, {private:.3f} with "
        f"client_dp {CLIENT_DP} (epsilon {spent['epsilon']:.4g} at delta {spent['delta']:g})"
    )
    # The noise is not seeded (it must not be predictable): runs gave 0.39 to 0.76. Three times
    # chance still shows learning without failing on an unlucky draw.
    assert private >= 0.3, (private, plain)
    assert plain >= 0.9


#: Per-example DP with Opacus: noise 1.0 times a per-example gradient norm of 1.0, batches of 32
#: drawn by Poisson sampling, 2 epochs a round (hello-pt's train_args).
EXAMPLE_DP = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}


def test_hello_pt_with_opacus_dp_sgd_reports_opacus_epsilon(
    federated: dict[str, str], federation: Federation, tmp_path: Path
) -> None:
    """The job asks for ``example_dp``: each site's script trains with Opacus' PrivacyEngine and
    reports what it ran; job meta and metrics_summary.json give, per site, the per-example epsilon
    over the 5 rounds, equal to Opacus' own accountant's for those parameters and to what the
    script's accountant (alive for all 5 rounds in a site's process) said; the update-level
    epsilon stays "none" (no update noise). The model still learns; both accuracies reported."""
    accountants = pytest.importorskip("opacus.accountants")
    job_id, artifacts = run_and_download(
        federation, private_job(tmp_path / "job", {"example_dp": EXAMPLE_DP}), tmp_path / "out"
    )
    _, meta = federation.cli.json("job", "meta", job_id)
    spent = meta["data"]["privacy_spent"]
    summary = json.loads(Path(artifacts["metrics_summary"]).read_text())
    assert summary["privacy"] == spent
    net = load_net()
    for site in ("site-1", "site-2"):
        batches = -(-len(net.site_data(site, 2)[1]) // 32)  # Opacus: sample rate 1 / batches
        opacus = accountants.RDPAccountant()
        for _ in range(5 * 2 * batches):
            opacus.step(noise_multiplier=1.0, sample_rate=1 / batches)
        want = opacus.get_epsilon(1e-5)
        got = spent["sites"][site]
        assert got["epsilon"] is None and got["rounds"] == 5, got
        assert got["example_epsilon"] == pytest.approx(want, rel=1e-3), (got, want)
        assert got["reported_example_epsilon"] == pytest.approx(want, rel=1e-3), got
    assert spent["epsilon"] is None
    assert spent["example_epsilon"] == max(s["example_epsilon"] for s in spent["sites"].values())
    human = federation.cli.run("job", "meta", job_id)
    assert f"per example (DP-SGD): {spent['example_epsilon']:.3g}" in human.stdout, human.stdout
    private = held_out_accuracy(artifacts["global_model"])
    plain = held_out_accuracy(federated["global_model"])
    print(
        f"hello-pt, 2 sites, 5 rounds: held-out accuracy {plain:.3f} without DP, {private:.3f} with "
        f"Opacus DP-SGD {EXAMPLE_DP} (per-example epsilon {spent['example_epsilon']:.3g} at delta 1e-05)"
    )
    assert private >= 0.6, (private, plain)
