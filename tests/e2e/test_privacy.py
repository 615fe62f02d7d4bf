"""Privacy on the real POC: a job with differential privacy reports the (epsilon, delta) it spent
and stops at its budget; privacy filters change what actually reaches the server, and a site's
policy adds its own."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from shoal.privacy.accounting import gaussian_epsilon
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello
from tests.federation import CUSTOM_CODE_STUDIES, CUSTOM_CODE_STUDY, own_federation

pytestmark = pytest.mark.e2e

DELTA = 1e-5


def _hello(dest: Path, privacy: dict[str, Any]) -> Path:
    shutil.copytree(EXAMPLES / "hello-numpy", dest, ignore=shutil.ignore_patterns("__pycache__"))
    meta = json.loads((dest / "meta.json").read_text())
    (dest / "meta.json").write_text(json.dumps({**meta, "privacy": privacy}))
    return dest


def test_a_dp_job_reports_its_epsilon_and_stops_at_its_budget(federation: Federation, tmp_path: Path) -> None:
    """hello-numpy (5 rounds) with local noise 1.0 at each site and central noise 0.8 on the
    aggregate, and a budget that three rounds fit in: the fourth is not run, the job ends
    FINISHED_OK saying why, and job meta and metrics_summary.json give the accountant's epsilons."""
    budget = gaussian_epsilon(1.0, 3, DELTA) + 1e-6
    job = _hello(
        tmp_path / "job",
        {
            "client_dp": {"clip_norm": 5.0, "noise_multiplier": 1.0},
            "server_dp": {"clip_norm": 5.0, "noise_multiplier": 0.8},
            "budget": {"epsilon": budget, "delta": DELTA},
        },
    )
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_id = doc["data"]["job_id"]
    _, meta = federation.cli.json("job", "meta", job_id)
    assert "privacy budget" in meta["data"]["status_reason"], meta["data"]["status_reason"]
    assert "after 3 of 5 rounds" in meta["data"]["status_reason"]
    spent = meta["data"]["privacy_spent"]
    site_eps = gaussian_epsilon(1.0, 3, DELTA)
    central = gaussian_epsilon(0.8, 3, DELTA)
    assert spent["delta"] == DELTA
    assert spent["sites"] == {
        s: {"epsilon": pytest.approx(site_eps), "rounds": 3} for s in ("site-1", "site-2")
    }
    assert spent["central_epsilon"] == pytest.approx(central)
    assert spent["epsilon"] == pytest.approx(min(site_eps, central)) and spent["epsilon"] <= budget

    human = federation.cli.run("job", "meta", job_id)
    line = (
        f"epsilon {spent['epsilon']:.3g} at delta 1e-05; sites: site-1 {site_eps:.3g}, site-2 {site_eps:.3g}"
    )
    assert re.search(r"Privacy: +" + re.escape(line), human.stdout), human.stdout

    code, got = federation.cli.json("job", "download", job_id, "-o", tmp_path / "out")
    assert code == 0, got
    summary = json.loads(next((tmp_path / "out").rglob("metrics_summary.json")).read_text())
    assert len(summary["rounds"]) == 3
    assert summary["privacy"] == spent and "privacy budget" in summary["stopped_by"]


def test_a_budget_no_round_fits_in_fails_the_job_saying_so(federation: Federation, tmp_path: Path) -> None:
    job = _hello(
        tmp_path / "job",
        {
            "client_dp": {"clip_norm": 1.0, "noise_multiplier": 0.5},
            "budget": {"epsilon": 0.1, "delta": DELTA},
        },
    )
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    _, meta = federation.cli.json("job", "meta", doc["data"]["job_id"])
    assert "no round can run: privacy budget" in meta["data"]["status_reason"]


def test_a_bad_privacy_block_is_refused_at_submit(federation: Federation, tmp_path: Path) -> None:
    job = _hello(tmp_path / "job", {"client_dp": {"clip_norm": -1, "noise_multiplier": 1}})
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 1 and doc["error_code"] == "JOB_META_INVALID", doc
    assert "client_dp.clip_norm" in doc["message"]


#: The server side of the filter test: one round from a model of known values; what each site's
#: update was when the workflow got it (the server's received file) is saved for download.
CAPTURE_WORKFLOW = """
import json
import numpy as np
from shoal.fl.model import FLModel
from shoal.workflows.base import Workflow

class Capture(Workflow):
    def run(self):
        w, secret = np.zeros(100, dtype=np.float32), np.full(3, 7.0, dtype=np.float32)
        start = FLModel(params={"w": w, "secret": secret})
        metas = {}
        for site, update in self.collect("train", start):
            self.ctx.save_model(FLModel(params=dict(update.params)), f"received-{site}.safetensors")
            metas[site] = update.meta
        self.ctx.write_json("received-meta.json", metas)
        self.ctx.record_round(0, {}, sorted(metas))
"""

#: Each site changes w[i] by i + 1 (so the largest changes are the last entries) and its secret.
CHANGING_CLIENT = """
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    w = model.params["w"] + np.arange(1, 101, dtype=np.float32)
    secret = model.params["secret"] + 42.0
    flare.send(FLModel(params={"w": w, "secret": secret}, meta={"shoal_privacy": "forged"}, num_examples=1))
"""


def test_filters_change_what_reaches_the_server_and_a_site_policy_adds_its_own(tmp_path: Path) -> None:
    """The job excludes ``secret`` and sends the top 25% of each update; site-1's policy also
    requires 2-bit quantization. Read from the files the server received: nobody's secret
    changed, 25 entries of w changed (the 25 largest changes), and site-1's changes take at most
    4 values; the agent (not the script, whose forged record is replaced) says what it applied."""
    job = _hello(tmp_path / "job", {"exclude": ["secret"], "top_fraction": 0.25})
    (job / "app" / "custom" / "capture.py").write_text(CAPTURE_WORKFLOW)
    (job / "app" / "custom" / "client.py").write_text(CHANGING_CLIENT)
    (job / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": {"class": "capture.Capture"}})
    )
    policy = {"site-1": {"site_policy.json": {"privacy": {"quantize_bits": 2}}}}
    with own_federation(tmp_path / "fed", studies=CUSTOM_CODE_STUDIES, site_local=policy) as fed:
        code, doc = fed.cli.json(
            "job", "submit", "-j", job, "--wait", "--timeout", "120", "--study", CUSTOM_CODE_STUDY
        )
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        code, got = fed.cli.json(
            "job", "download", doc["data"]["job_id"], "-o", tmp_path / "out", "--study", CUSTOM_CODE_STUDY
        )
        assert code == 0, got
    out = tmp_path / "out"
    received = {s: load_file(str(next(out.rglob(f"received-{s}.safetensors")))) for s in ("site-1", "site-2")}
    metas = json.loads(next(out.rglob("received-meta.json")).read_text())
    for params in received.values():
        np.testing.assert_array_equal(params["secret"], 7.0)  # excluded: the global value came back
        changed = np.flatnonzero(params["w"])
        np.testing.assert_array_equal(changed, np.arange(75, 100))  # the 25 largest changes only
    np.testing.assert_array_equal(received["site-2"]["w"][75:], np.arange(76, 101))
    assert len(np.unique(received["site-1"]["w"])) <= 4  # 2 bits, zero among them
    assert metas["site-1"]["shoal_privacy"] == {
        "exclude": ["secret"],
        "top_fraction": 0.25,
        "quantize_bits": 2,
    }
    assert metas["site-2"]["shoal_privacy"] == {"exclude": ["secret"], "top_fraction": 0.25}


#: The server side of the inbound filter test: one task from a model of known values, sent as a
#: workflow sends any (the workflow filters nothing itself); what each site's script says it
#: received is saved for download.
SENDING_WORKFLOW = """
import numpy as np
from shoal.fl.model import FLModel
from shoal.workflows.base import Workflow

class Sending(Workflow):
    def run(self):
        start = FLModel(params={
            "w": np.linspace(-1.0, 1.0, 100, dtype=np.float32),
            "bias": np.linspace(0.0, 3.0, 10, dtype=np.float32),
            "secret": np.full(3, 7.0, dtype=np.float32),
        })
        sites = []
        for site, update in self.collect("train", start):
            self.ctx.save_model(FLModel(params=dict(update.params)), f"got-{site}.safetensors")
            sites.append(site)
        self.ctx.record_round(0, {}, sorted(sites))
"""

#: Sends back exactly the model it was given: what the script received.
ECHO_CLIENT = """
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.send(FLModel(params=model.params, num_examples=1))
"""


def test_filters_on_what_reaches_a_site_from_the_job_and_a_site_policy(tmp_path: Path) -> None:
    """The job excludes ``secret`` from what sites receive; its workflow sends it anyway. site-2
    has no policy, so its agent filters nothing: its script got no ``secret``, which the server
    took out before it crossed the wire, and every other value as sent. site-1's policy also
    excludes ``bias`` and quantizes what it receives to 2 bits: its agent did that before its
    script could read the model."""
    job = _hello(tmp_path / "job", {"to_sites": {"exclude": ["secret"]}})
    (job / "app" / "custom" / "sending.py").write_text(SENDING_WORKFLOW)
    (job / "app" / "custom" / "client.py").write_text(ECHO_CLIENT)
    (job / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": {"class": "sending.Sending"}})
    )
    policy = {
        "site-1": {"site_policy.json": {"privacy": {"to_sites": {"exclude": ["bias"], "quantize_bits": 2}}}}
    }
    with own_federation(tmp_path / "fed", studies=CUSTOM_CODE_STUDIES, site_local=policy) as fed:
        code, doc = fed.cli.json(
            "job", "submit", "-j", job, "--wait", "--timeout", "120", "--study", CUSTOM_CODE_STUDY
        )
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", json.dumps(doc)
        code, got = fed.cli.json(
            "job", "download", doc["data"]["job_id"], "-o", tmp_path / "out", "--study", CUSTOM_CODE_STUDY
        )
        assert code == 0, got
    out = tmp_path / "out"
    site1 = load_file(str(next(out.rglob("got-site-1.safetensors"))))
    site2 = load_file(str(next(out.rglob("got-site-2.safetensors"))))
    w = np.linspace(-1.0, 1.0, 100, dtype=np.float32)
    assert sorted(site2) == ["bias", "w"]  # the job's exclusion, by the server
    np.testing.assert_array_equal(site2["w"], w)
    np.testing.assert_array_equal(site2["bias"], np.linspace(0.0, 3.0, 10, dtype=np.float32))
    assert sorted(site1) == ["w"]  # site-1's policy took bias out too
    assert len(np.unique(site1["w"])) == 4 and site1["w"].min() == -1.0 and site1["w"].max() == 1.0
    np.testing.assert_allclose(site1["w"], w, atol=1 / 3 + 1e-6)  # within half a step of 2/3


def test_the_simulator_filters_what_reaches_a_site_as_the_server_does(tmp_path: Path) -> None:
    from shoal.simulator.engine import simulate

    job = _hello(tmp_path / "job", {"to_sites": {"exclude": ["secret"], "quantize_bits": 1}})
    (job / "app" / "custom" / "sending.py").write_text(SENDING_WORKFLOW)
    (job / "app" / "custom" / "client.py").write_text(ECHO_CLIENT)
    (job / "app" / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": {"class": "sending.Sending"}})
    )
    workspace = simulate(job, 2, workers=1, out_dir=tmp_path / "out")
    for site in ("site-1", "site-2"):
        got = load_file(str(next(workspace.rglob(f"got-{site}.safetensors"))))
        assert sorted(got) == ["bias", "w"]
        np.testing.assert_array_equal(np.unique(got["w"]), [-1.0, 1.0])
        np.testing.assert_array_equal(np.unique(got["bias"]), [0.0, 3.0])
    assert not list((tmp_path / "out").rglob("received-*.safetensors"))  # the sites' copies went


def _secure(job: Path, threshold: int, rounds: int) -> None:
    config = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["args"].update({"secure_aggregation": True, "secagg_threshold": threshold, "num_rounds": rounds})
    config.write_text(json.dumps(server))


def test_secure_aggregation_gives_fedavgs_model(federation: Federation, tmp_path: Path) -> None:
    """hello-numpy under secure aggregation: the server sums masked uint64 updates it cannot read
    one by one, and the model is the plain FedAvg one within the fixed-point tolerance."""
    from tests.e2e.test_federation import expected_fedavg

    job = tmp_path / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    _secure(job, threshold=2, rounds=3)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    code, got = federation.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "out")
    assert code == 0, got
    model = load_file(got["data"]["artifacts"]["global_model"])
    want = expected_fedavg(["site-1", "site-2"], 3, 0.05, 10)
    assert set(model) == set(want)
    for name in want:
        np.testing.assert_allclose(model[name], want[name], atol=1e-6)
    # no key, sealed or revealed share reached the download (logs, meta, metrics)
    secret_like = re.compile(r"0x[0-9a-f]{60,}|[A-Za-z0-9+/]{40,}={0,2}")
    texts = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert any(p.name == "log.txt" for p in texts)
    for path in texts:
        found = secret_like.search(path.read_text(errors="replace"))
        assert found is None, (path, found)


#: Sends the model it got unchanged (20,000 zeros in round 0, which has none): all that reaches the
#: aggregate is the noise.
UNCHANGED_CLIENT = """
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    w = model.params.get("w", np.zeros(20000, dtype=np.float32))
    flare.send(FLModel(params={"w": w}, num_examples=1))
"""


def test_secure_aggregation_with_client_and_central_noise(federation: Federation, tmp_path: Path) -> None:
    """SecAgg and DP in one job: each site clips and noises its update (client_dp) before it is
    masked, the server adds central noise (server_dp) to the unmasked mean of updates the sites
    clipped to its norm. With unchanged updates the model is the noise alone: its standard
    deviation is what the two calibrations give together, sqrt((z1·C1)²/2 + (z2·C2/2)²); both are
    accounted; no key or share reaches the download. (The server's clip norm is above the noisy
    updates' norm, as the sum of the two calibrations assumes.)"""
    client_dp = {"clip_norm": 1.0, "noise_multiplier": 0.3}
    # the server clips the noisy update, as it would in the clear: 100 is above its norm (~42)
    server_dp = {"clip_norm": 100.0, "noise_multiplier": 0.004}
    job = _hello(tmp_path / "job", {"client_dp": client_dp, "server_dp": server_dp})
    (job / "app" / "custom" / "client.py").write_text(UNCHANGED_CLIENT)
    _secure(job, threshold=2, rounds=1)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", json.dumps(doc)
    job_id = doc["data"]["job_id"]
    code, got = federation.cli.json("job", "download", job_id, "-o", tmp_path / "out")
    assert code == 0, got
    w = load_file(got["data"]["artifacts"]["global_model"])["w"].astype(np.float64)
    want = float(np.sqrt((0.3 * 1.0) ** 2 / 2 + (0.004 * 100.0 / 2) ** 2))
    print(f"secagg + DP: noise std {w.std():.5f}, calibrated {want:.5f}")
    assert abs(w.mean()) < 5 * want / np.sqrt(w.size)
    assert w.std() == pytest.approx(want, rel=0.03)
    _, meta = federation.cli.json("job", "meta", job_id)
    spent = meta["data"]["privacy_spent"]
    site_eps = gaussian_epsilon(0.3, 1, DELTA)
    assert spent["sites"] == {
        s: {"epsilon": pytest.approx(site_eps), "rounds": 1} for s in ("site-1", "site-2")
    }
    assert spent["central_epsilon"] == pytest.approx(gaussian_epsilon(0.004, 1, DELTA))
    secret_like = re.compile(r"0x[0-9a-f]{60,}|[A-Za-z0-9+/]{40,}={0,2}")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix != ".safetensors":
            assert secret_like.search(path.read_text(errors="replace")) is None, path


def test_secure_aggregation_with_noiseless_protections_gives_the_plain_runs_model(
    federation: Federation, tmp_path: Path
) -> None:
    """hello-numpy with the site-side protections that add no noise (top 50% of each update,
    4-bit changes), once in the clear and once under secure aggregation, where the sites apply
    them before masking: the same model within the fixed-point tolerance."""
    models = {}
    for secure in (False, True):
        job = _hello(tmp_path / f"job-{secure}", {"top_fraction": 0.5, "quantize_bits": 4})
        if secure:
            _secure(job, threshold=2, rounds=3)
        else:
            config = job / "app" / "config" / "config_fed_server.json"
            server = json.loads(config.read_text())
            server["args"]["num_rounds"] = 3
            config.write_text(json.dumps(server))
        code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", json.dumps(doc)
        code, got = federation.cli.json(
            "job", "download", doc["data"]["job_id"], "-o", tmp_path / f"out-{secure}"
        )
        assert code == 0, got
        models[secure] = load_file(got["data"]["artifacts"]["global_model"])
    assert set(models[True]) == set(models[False])
    for name in models[False]:
        np.testing.assert_allclose(models[True][name], models[False][name], atol=1e-6)


@pytest.mark.parametrize("privacy", [None, {"top_fraction": 0.5}], ids=["plain", "with-filters"])
def test_the_simulator_runs_secure_aggregation(tmp_path: Path, privacy: dict[str, Any] | None) -> None:
    """hello-numpy on 5 virtual sites, 3 rounds, in the clear and under secure aggregation (the
    simulator plays every site's side of the protocol; the workflow sees only masked updates and
    revealed shares): the same model within the fixed-point tolerance, also with site-side
    protections applied before masking."""
    from shoal.simulator.engine import simulate

    models = {}
    for secure in (False, True):
        job = (
            _hello(tmp_path / f"job-{secure}", privacy) if privacy else copy_hello(tmp_path / f"job-{secure}")
        )
        config = job / "app" / "config" / "config_fed_server.json"
        server = json.loads(config.read_text())
        server["args"].update(
            {"num_rounds": 3, **({"secure_aggregation": True, "secagg_threshold": 3} if secure else {})}
        )
        config.write_text(json.dumps(server))
        workspace = simulate(job, 5, workers=2, out_dir=tmp_path / f"out-{secure}")
        models[secure] = load_file(str(workspace / "FL_global_model.safetensors"))
    # no key, signature, sealed or revealed share in anything the simulation left (logs, meta)
    secret_like = re.compile(r"0x[0-9a-f]{60,}|[A-Za-z0-9+/]{40,}={0,2}")
    left = [p for p in (tmp_path / "out-True").rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert any(p.name == "log.txt" for p in left)
    for path in left:
        assert secret_like.search(path.read_text(errors="replace")) is None, path
    assert set(models[True]) == set(models[False])
    for name in models[False]:
        np.testing.assert_allclose(models[True][name], models[False][name], atol=1e-6)


def test_the_simulator_runs_secagg_plus_on_many_sites(tmp_path: Path) -> None:
    """SecAgg+'s sparse graph on 40 virtual sites (8 partners each, threshold 5): the model is
    the clear simulation's within the fixed-point tolerance."""
    from shoal.simulator.engine import simulate

    models = {}
    for secure in (False, True):
        job = copy_hello(tmp_path / f"job-{secure}")
        config = job / "app" / "config" / "config_fed_server.json"
        server = json.loads(config.read_text())
        server["args"]["num_rounds"] = 2
        if secure:
            server["args"].update({"secure_aggregation": True, "secagg_threshold": 5, "secagg_neighbors": 8})
        config.write_text(json.dumps(server))
        workspace = simulate(job, 40, workers=2, out_dir=tmp_path / f"out-{secure}")
        models[secure] = load_file(str(workspace / "FL_global_model.safetensors"))
    for name in models[False]:
        np.testing.assert_allclose(models[True][name], models[False][name], atol=1e-6)


def test_the_simulator_runs_secure_aggregation_with_client_and_central_noise(tmp_path: Path) -> None:
    """As on the POC: 4 virtual sites send unchanged updates; the model is the noise alone, of
    standard deviation sqrt((z1·C1)²/4 + (z2·C2/4)²) within 3% over 20,000 entries."""
    from shoal.simulator.engine import simulate

    privacy = {
        "client_dp": {"clip_norm": 1.0, "noise_multiplier": 0.4},
        "server_dp": {"clip_norm": 200.0, "noise_multiplier": 0.004},
    }
    job = _hello(tmp_path / "job", privacy)
    (job / "app" / "custom" / "client.py").write_text(UNCHANGED_CLIENT)
    _secure(job, threshold=3, rounds=1)
    workspace = simulate(job, 4, workers=2, out_dir=tmp_path / "out")
    w = load_file(str(workspace / "FL_global_model.safetensors"))["w"].astype(np.float64)
    want = float(np.sqrt((0.4 * 1.0) ** 2 / 4 + (0.004 * 200.0 / 4) ** 2))
    assert w.std() == pytest.approx(want, rel=0.03)
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    assert summary["privacy"]["central_epsilon"] == pytest.approx(gaussian_epsilon(0.004, 1, DELTA))
    assert summary["privacy"]["sites"]["site-4"]["epsilon"] == pytest.approx(gaussian_epsilon(0.4, 1, DELTA))


#: Each site sends w = its number (1, 2, 3) weighed by that number; site-3 exits right after its
#: upload, before the round is unmasked.
DROPPING_CLIENT = """
import sys
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
n = int(flare.site_name().rsplit("-", 1)[1])
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.send(FLModel(params={"w": np.full(4, float(n))}, num_examples=n))
    if n == 3:
        sys.exit(0)
"""


@pytest.mark.parametrize(("threshold", "ok"), [(2, True), (3, False)], ids=["tolerated", "too-many"])
def test_a_site_dropping_after_its_masked_upload(tmp_path: Path, threshold: int, ok: bool) -> None:
    """Three sites, site-3 gone after uploading: with threshold 2 the two others reveal its
    self-mask and the model is the mean over all three (14/6); with threshold 3 the round fails
    with a reason and no model is written."""
    job = tmp_path / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "client.py").write_text(DROPPING_CLIENT)
    meta = json.loads((job / "meta.json").read_text())
    (job / "meta.json").write_text(json.dumps({**meta, "min_clients": 3}))
    _secure(job, threshold=threshold, rounds=1)
    with own_federation(tmp_path / "fed", sites=3) as fed:
        code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
        if not ok:
            assert code == 1 and doc["data"]["status"] == "FAILED", doc
            _, meta_doc = fed.cli.json("job", "meta", doc["data"]["job_id"])
            assert "site-3" in meta_doc["data"]["status_reason"], meta_doc
            return
        assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
        code, got = fed.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "out")
        assert code == 0, got
    model = load_file(got["data"]["artifacts"]["global_model"])
    np.testing.assert_allclose(model["w"], np.full(4, 14 / 6), atol=1e-6)


#: A hostile server-side workflow: FedAvg under secure aggregation, except that in the
#: consistency and unmask steps it tells site-4 that site-3 dropped (to get a share of site-3's
#: mask key) while the others are told that site-3 uploaded (and give shares of its seed).
LYING_WORKFLOW = """
from shoal.fl.model import FLModel
from shoal.workflows.fedavg import FedAvg

class Liar(FedAvg):
    def collect(self, task_name, model, *, sites=None, **kw):
        if task_name not in ("secagg_consistency", "secagg_unmask"):
            yield from super().collect(task_name, model, sites=sites, **kw)
            return
        honest = dict(model.meta)
        lie = {**honest, "uploaded": [s for s in honest["uploaded"] if s != "site-3"],
               "dropped": sorted([*honest["dropped"], "site-3"])}
        for site in sites:
            meta = lie if site == "site-4" else honest
            yield from super().collect(task_name, FLModel(params={}, meta=meta), sites=[site],
                                       round_number=kw.get("round_number", 0), min_responses=1)
"""


def test_a_lying_server_workflow_gets_no_shares_from_a_site_it_lied_to(tmp_path: Path) -> None:
    """Four sites, threshold 3, a workflow that tells site-4 a different survivor set than the
    others: site-4 finds only its own signature on the set it was told and refuses to reveal;
    the job fails saying so, and no model is written."""
    job = tmp_path / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    meta = json.loads((job / "meta.json").read_text())
    (job / "meta.json").write_text(json.dumps({**meta, "min_clients": 4}))
    (job / "app" / "custom" / "liar.py").write_text(LYING_WORKFLOW)
    config = job / "app" / "config" / "config_fed_server.json"
    args = {"num_rounds": 1, "secure_aggregation": True, "secagg_threshold": 3}
    config.write_text(json.dumps({"workflow": {"class": "liar.Liar"}, "args": args}))
    four = {CUSTOM_CODE_STUDY: {"sites": [f"site-{i}" for i in range(1, 5)], "allow_custom_code": True}}
    with own_federation(tmp_path / "fed", sites=4, studies=four) as fed:
        code, doc = fed.cli.json(
            "job", "submit", "-j", job, "--wait", "--timeout", "120", "--study", CUSTOM_CODE_STUDY
        )
        assert code == 1 and doc.get("data", {}).get("status") == "FAILED", json.dumps(doc)
        code, got = fed.cli.json(
            "job", "download", doc["data"]["job_id"], "-o", tmp_path / "out", "--study", CUSTOM_CODE_STUDY
        )
    reason = json.dumps(doc["data"]["job_meta"])
    assert "site-4" in reason and "signed the survivor set" in reason, reason
    assert not list((tmp_path / "out").rglob("FL_global_model.safetensors"))
