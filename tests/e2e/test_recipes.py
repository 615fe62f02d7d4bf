"""Each numpy recipe's example: exported by its job.py, run on the POC and in the simulator;
both give the model computed here independently, and cross-site eval gives the full matrix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES, Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import export_recipe
from tests.e2e.test_federation import load_linreg, local_train, mse
from tests.federation import CUSTOM_CODE_STUDY

pytestmark = pytest.mark.e2e

SITES = ["site-1", "site-2"]
LR, EPOCHS = 0.05, 10


def export(recipe: str, dest: Path) -> Path:
    export_recipe(EXAMPLES / "recipes" / recipe / "job.py", dest)
    assert (dest / "app" / "custom" / "linreg.py").is_file()
    return dest


def run_on_poc(fed: Federation, job: Path, out: Path, study: str = "default") -> dict[str, Any]:
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--study", study)
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    code, doc = fed.cli.json("job", "download", doc["data"]["job_id"], "-o", out, "--study", study)
    assert code == 0, doc
    return dict(doc["data"])


def simulate(job: Path, out: Path) -> Path:
    code, doc = Cli(home=out / "home").json("simulate", "-j", job, "-n", "2", "-o", out)
    assert code == 0, doc
    return Path(doc["data"]["workspace"])


def assert_model(path: Path | str, want: dict[str, np.ndarray]) -> None:
    got = load_file(str(path))
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12)


def fedavg_reference(rounds: int, mu: float = 0.0) -> dict[str, np.ndarray]:
    linreg = load_linreg()
    data = {s: linreg.site_data(s) for s in SITES}
    params = linreg.initial_params()
    for _ in range(rounds):
        updates = [(local_train(params, *data[s], LR, EPOCHS, mu=mu), len(data[s][1])) for s in SITES]
        total = sum(n for _, n in updates)
        params = {k: np.asarray(sum(u[k] * n for u, n in updates) / total) for k in params}
    return dict(params)


@pytest.mark.parametrize(("recipe", "mu"), [("fedavg", 0.0), ("fedprox", 0.5)])
def test_fedavg_and_fedprox(federation: Federation, tmp_path: Path, recipe: str, mu: float) -> None:
    job = export(recipe, tmp_path / "job")
    want = fedavg_reference(5, mu)
    poc = run_on_poc(federation, job, tmp_path / "poc")
    assert_model(poc["artifacts"]["global_model"], want)
    assert_model(simulate(job, tmp_path / "sim") / "FL_global_model.safetensors", want)
    if mu:  # the proximal term really changed the training
        plain = fedavg_reference(5)
        assert not np.allclose(plain["weight"], want["weight"], rtol=1e-6)


def test_cyclic(federation: Federation, tmp_path: Path) -> None:
    job = export("cyclic", tmp_path / "job")
    linreg = load_linreg()
    params = linreg.initial_params()
    for _ in range(3):
        for site in SITES:  # fixed order: sites by name, each trains on what the last one sent
            params = local_train(params, *linreg.site_data(site), LR, EPOCHS)
    poc = run_on_poc(federation, job, tmp_path / "poc")
    assert_model(poc["artifacts"]["global_model"], params)
    workspace = simulate(job, tmp_path / "sim")
    assert_model(workspace / "FL_global_model.safetensors", params)
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    assert [r["sites"] for r in summary["rounds"]] == [SITES] * 3


def test_cross_site_eval_matrix(federation: Federation, tmp_path: Path) -> None:
    job = export("cross-site-eval", tmp_path / "job")
    linreg = load_linreg()
    data = {s: linreg.site_data(s) for s in SITES}
    global_model = fedavg_reference(3)
    params = fedavg_reference(2)  # each site's own model: its update in the last (third) round
    local = {s: local_train(params, *data[s], LR, EPOCHS) for s in SITES}
    models = {"global": global_model, **local}
    want = {owner: {s: mse(m, *data[s]) for s in SITES} for owner, m in models.items()}

    poc = run_on_poc(federation, job, tmp_path / "poc")
    sim = simulate(job, tmp_path / "sim")
    poc_file = next(Path(poc["path"]).rglob("cross_site_eval.json"))
    for found in (json.loads(poc_file.read_text()), json.loads((sim / "cross_site_eval.json").read_text())):
        assert found["models"] == ["global", *SITES] and found["validators"] == SITES
        for owner, row in want.items():
            for site, loss in row.items():
                assert found["matrix"][owner][site]["mse"] == pytest.approx(loss, rel=1e-9)
    assert_model(poc["artifacts"]["global_model"], global_model)


def test_job_py_without_export_simulates(tmp_path: Path) -> None:
    job = EXAMPLES / "recipes" / "fedavg" / "job.py"
    proc = subprocess.run(
        [sys.executable, job, "-n", "3", "-o", tmp_path / "out"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "workspace" / "FL_global_model.safetensors").is_file()
    assert {p.name for p in (tmp_path / "out" / "workspace").iterdir()} >= {"site-1", "site-2", "site-3"}


MEDIAN = """
import numpy as np
from shoal.fl import FLModel
from shoal.workflows.base import Workflow


class Median(Workflow):
    def __init__(self, ctx, *, num_rounds=3, **extra):
        super().__init__(ctx, **extra)
        self.num_rounds = num_rounds

    def run(self):
        model = self.initial_model(None)
        for rnd in range(self.num_rounds):
            updates = {site: dict(u.params)
                       for site, u in self.collect("train", model, round_number=rnd,
                                                   total_rounds=self.num_rounds)}
            names = next(iter(updates.values()))
            model = FLModel(params={k: np.median([u[k] for u in updates.values()], axis=0)
                                    for k in names})
            self.ctx.record_round(rnd, {}, sorted(updates))
        self.ctx.save_model(model)
        self.ctx.write_metrics_summary("median", num_rounds=self.num_rounds)
"""


def test_custom_workflow_from_the_docs(federation: Federation, tmp_path: Path) -> None:
    """docs/recipes.md's Median workflow, shipped in the job's custom code, on a POC and simulated."""
    job = export("fedavg", tmp_path / "job")
    (job / "app" / "custom" / "median.py").write_text(MEDIAN)
    server = {"workflow": {"class": "median.Median"}, "args": {"num_rounds": 2, "round_timeout": 60}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    linreg = load_linreg()
    params = linreg.initial_params()
    for _ in range(2):
        updates = [local_train(params, *linreg.site_data(s), LR, EPOCHS) for s in SITES]
        params = {k: np.median([u[k] for u in updates], axis=0) for k in params}
    poc = run_on_poc(federation, job, tmp_path / "poc", study=CUSTOM_CODE_STUDY)  # custom code: opted in
    assert_model(poc["artifacts"]["global_model"], params)
    workspace = simulate(job, tmp_path / "sim")
    assert_model(workspace / "FL_global_model.safetensors", params)
    assert json.loads((workspace / "metrics_summary.json").read_text())["workflow"] == "median"


def _job_py(
    recipe: str, *args: str | Path, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, EXAMPLES / "recipes" / recipe / "job.py", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_job_py_prints_what_it_reached_and_leaves_no_temporary_folder(
    federation: Federation, tmp_path: Path
) -> None:
    """It printed a result folder under /tmp and left it there (with the export it ran)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**federation.cli.env(), "TMPDIR": str(scratch)}
    proc = _job_py("fedavg", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Simulated job 'recipe-fedavg': loss=0\.\d+", proc.stdout), proc.stdout
    assert "results not kept" in proc.stdout and list(scratch.iterdir()) == []


@pytest.mark.parametrize("where", ["--poc", "--startup-kit"])
def test_job_py_runs_on_the_poc_or_a_named_kit(federation: Federation, tmp_path: Path, where: str) -> None:
    """FLARE's recipe.execute(PocEnv()): the same job.py, on a real server."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**federation.cli.env(), "TMPDIR": str(scratch)}  # the session's POC is the default one
    args = [where] if where == "--poc" else [where, federation.kits / "admin@example.com"]
    proc = _job_py("fedavg", *args, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    found = re.search(r"Job (\d+) \('recipe-fedavg'\) finished: loss=0\.\d+", proc.stdout)
    assert found, proc.stdout
    code, doc = federation.cli.json("job", "meta", found[1])
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK" and doc["data"]["name"] == "recipe-fedavg"
    assert list(scratch.iterdir()) == []


def test_job_py_export_replaces_a_job_only_with_force(federation: Federation, tmp_path: Path) -> None:
    env = federation.cli.env()
    dest = tmp_path / "job"
    assert _job_py("fedavg", "--export", "--export-dir", dest, env=env, cwd=tmp_path).returncode == 0
    (dest / "app" / "custom" / "stale.py").write_text("x = 1\n")
    again = _job_py("fedavg", "--export", "--export-dir", dest, env=env, cwd=tmp_path)
    assert again.returncode == 4 and "--force" in again.stderr
    assert (dest / "app" / "custom" / "stale.py").exists()  # refused: nothing changed
    forced = _job_py("fedavg", "--export", "--export-dir", dest, "--force", env=env, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (dest / "meta.json").is_file() and not (dest / "app" / "custom" / "stale.py").exists()
