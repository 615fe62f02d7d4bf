"""Recipes: what export writes, what they refuse, and what ``recipe list/show`` read from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES, Cli

from shoal.errors import ShoalError
from shoal.recipes import (
    RECIPES,
    CrossSiteEvalRecipe,
    CyclicRecipe,
    FedAvgRecipe,
    FedProxRecipe,
    FedStatsRecipe,
)
from shoal.wire.jobdef import load_job_definition


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "client.py").write_text("print('train')\n")
    (src / "helpers.py").write_text("X = 1\n")
    (src / "data" / "site-1.csv").write_text("a\n1\n")
    return src


def read(job: Path, *parts: str) -> dict[str, object]:
    return dict(json.loads(job.joinpath(*parts).read_text()))


def test_fedavg_export_is_a_job_folder(source: Path, tmp_path: Path) -> None:
    recipe = FedAvgRecipe(
        name="demo",
        min_clients=3,
        num_rounds=4,
        train_args="--lr 0.1",
        custom_files=["helpers.py", "data"],
        sites=["site-1", "site-2", "site-3"],
        round_timeout=30,
        min_responses=2,
        log_streaming=False,
        source_dir=source,
    )
    job = recipe.export(tmp_path / "job")
    assert read(job, "meta.json") == {
        "name": "demo",
        "min_clients": 3,
        "deploy_map": {"app": ["server", "site-1", "site-2", "site-3"]},
        "resource_spec": {},
        "log_streaming": False,
    }
    assert read(job, "app", "config", "config_fed_server.json") == {
        "workflow": "fedavg",
        "args": {"round_timeout": 30, "min_responses": 2, "num_rounds": 4},
    }
    assert read(job, "app", "config", "config_fed_client.json") == {"script": "client.py", "args": "--lr 0.1"}
    assert {p.name for p in (job / "app" / "custom").iterdir()} == {"client.py", "helpers.py", "data"}
    definition = load_job_definition(job)  # the same validation job submit applies
    assert definition.name == "demo" and definition.min_clients == 3


def test_each_recipe_names_its_workflow_and_args(source: Path, tmp_path: Path) -> None:
    prox = FedProxRecipe(name="p", mu=0.2, num_rounds=2, source_dir=source).export(tmp_path / "p")
    assert read(prox, "app", "config", "config_fed_server.json")["args"] == {
        "num_rounds": 2,
        "task_meta": {"mu": 0.2},
    }
    cyc = CyclicRecipe(name="c", order="random", seed=7, source_dir=source).export(tmp_path / "c")
    assert read(cyc, "app", "config", "config_fed_server.json") == {
        "workflow": "cyclic",
        "args": {"num_rounds": 1, "order": "random", "seed": 7},
    }
    cse = CrossSiteEvalRecipe(name="x", num_rounds=2, source_dir=source).export(tmp_path / "x")
    assert read(cse, "app", "config", "config_fed_server.json")["workflow"] == "cross_site_eval"
    stats = FedStatsRecipe(name="s", custom_files=["data"], source_dir=source).export(tmp_path / "s")
    assert read(stats, "app", "config", "config_fed_client.json") == {
        "module": "shoal.fl.clients.stats",
        "args": "--data data/{site}.csv --min-count 10",
    }


def test_initial_model_ships_in_the_app(source: Path, tmp_path: Path) -> None:
    (source / "start.safetensors").write_bytes(b"x")
    job = FedAvgRecipe(name="i", initial_model="start.safetensors", source_dir=source).export(tmp_path / "j")
    assert read(job, "app", "config", "config_fed_server.json")["args"] == {
        "num_rounds": 1,
        "initial_model": "custom/start.safetensors",
    }
    assert (job / "app" / "custom" / "start.safetensors").is_file()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "a", "min_clients": 0},
        {"name": "a", "num_rounds": 0},
        {"name": "a", "round_timeout": -1},
        {"name": "a", "min_responses": 0},
        {"name": "a", "train_script": None},
        {"name": "a", "client_module": "os"},
        {"name": "a", "privacy": {"client_dp": {"clip_norm": 1.0}}},
        {
            "name": "a",
            "secure_aggregation": True,
            "privacy": {
                "server_dp": {
                    "clip_norm": 1.0,
                    "noise_multiplier": 1.0,
                    "adaptive": {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise": 5.0},
                }
            },
        },
        {"name": "a", "secure_aggregation": True, "secagg_threshold": 1},
    ],
)
def test_bad_knobs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ShoalError) as err:
        FedAvgRecipe(**kwargs)  # type: ignore[arg-type]
    assert err.value.code == "INVALID_ARGS"


def test_privacy_goes_into_meta_json_as_submit_checks_it(source: Path, tmp_path: Path) -> None:
    privacy = {
        "server_dp": {"clip_norm": 1, "noise_multiplier": 1.1},
        "budget": {"epsilon": 8, "delta": 1e-5},
    }
    job = FedAvgRecipe(name="dp", privacy=privacy, source_dir=source).export(tmp_path / "dp")
    meta = load_job_definition(job).meta
    assert meta["privacy"]["server_dp"] == {"clip_norm": 1.0, "noise_multiplier": 1.1}
    assert meta["privacy"]["budget"] == {"epsilon": 8.0, "delta": 1e-5}


def test_secure_aggregation_is_a_fedavg_argument(source: Path, tmp_path: Path) -> None:
    from shoal.runtime.controller import resolve_workflow

    job = FedAvgRecipe(name="s", secure_aggregation=True, secagg_threshold=3, source_dir=source).export(
        tmp_path / "s"
    )
    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    assert server["args"]["secure_aggregation"] is True and server["args"]["secagg_threshold"] == 3
    resolve_workflow(server)  # the workflow takes them, with their types


def test_other_refusals(source: Path, tmp_path: Path) -> None:
    for make in (
        lambda: FedProxRecipe(name="p", mu=-1),
        lambda: CyclicRecipe(name="c", order="sideways"),
        lambda: CrossSiteEvalRecipe(name="x", num_rounds=0),
        lambda: FedStatsRecipe(name="s", statistics=["median"]),
    ):
        with pytest.raises(ShoalError):
            make()
    escaping = FedAvgRecipe(name="e", custom_files=["../outside"], source_dir=source)
    with pytest.raises(ShoalError, match="outside"):
        escaping.export(tmp_path / "e")
    missing = FedAvgRecipe(name="m", custom_files=["nope.py"], source_dir=source)
    with pytest.raises(ShoalError, match="does not exist"):
        missing.export(tmp_path / "m")
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()  # nothing half-written
    job = FedAvgRecipe(name="twice", source_dir=source).export(tmp_path / "twice")
    with pytest.raises(ShoalError, match="already holds a job"):
        FedAvgRecipe(name="twice", source_dir=source).export(job)


def test_main_exports_and_reports_errors(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = FedAvgRecipe(name="m", source_dir=source)
    assert recipe.main(["--export", "--export-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "meta.json").is_file()
    assert recipe.main(["--export", "--export-dir", str(tmp_path / "out")]) == 4  # as the CLI: exit 4
    assert "INVALID_ARGS" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/x", "a/b", ".hidden", " x", "x" * 129])
def test_a_name_the_server_would_refuse_is_refused(source: Path, name: str) -> None:
    """The name is the default export folder too: it must not lead out of the working directory."""
    with pytest.raises(ShoalError) as err:
        FedAvgRecipe(name=name, source_dir=source)
    assert err.value.code == "INVALID_ARGS" and "is not a job name" in err.value.message


def test_main_refuses_fewer_than_one_site(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = FedAvgRecipe(name="n", source_dir=source)
    assert recipe.main(["-n", "0"]) == 4  # not min_clients (2) sites
    err = capsys.readouterr().err
    assert err.startswith("INVALID_ARGS") and "at least 1, got 0" in err, err
    assert recipe.main(["-n", "-3"]) == 4
    assert recipe.main(["-n", "two"]) == 4  # argparse's usage error, with the CLI's exit code


@pytest.mark.parametrize("where", ["a-file", "/proc/shoal-cannot-be-here/job"])
def test_main_reports_an_unusable_export_folder(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / where
    assert FedAvgRecipe(name="f", source_dir=source).main(["--export", "--export-dir", str(target)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("LOCAL_FILE_ERROR") and str(target).split("/job")[0] in err, err
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("job_py", sorted(EXAMPLES.rglob("job.py")), ids=lambda p: p.parent.name)
def test_every_example_job_py_exits_with_its_outcome(job_py: Path, tmp_path: Path) -> None:
    """A job.py passes main()'s code to SystemExit, so a failure is a non-zero exit."""

    def export() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, job_py, "--export", "--export-dir", tmp_path / "job"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    first = export()
    assert first.returncode == 0 and (tmp_path / "job" / "meta.json").is_file(), first.stderr
    again = export()  # the folder now holds a job
    assert again.returncode == 4 and "already holds a job" in again.stderr, again.stderr


def test_parameters_come_from_the_classes() -> None:
    assert set(RECIPES) == {"fedavg", "fedprox", "cyclic", "cross_site_eval", "fedstats"}
    params = {p["name"]: p for p in FedProxRecipe.parameters()}
    assert params["mu"]["default"] == 0.01 and params["mu"]["type"] == "float" and params["mu"]["help"]
    assert params["num_rounds"]["default"] == 1 and params["name"]["required"]
    assert "source_dir" not in params


def test_recipe_cli(tmp_path: Path) -> None:
    cli = Cli(home=tmp_path / "home")
    code, doc = cli.json("recipe", "list")
    assert code == 0
    assert [r["name"] for r in doc["data"]] == sorted(RECIPES)
    assert all(r["description"] and r["class"].startswith("shoal.recipes.") for r in doc["data"])
    code, doc = cli.json("recipe", "show", "cyclic")
    assert code == 0 and doc["data"]["workflow"] == "cyclic"
    assert {"order", "seed", "num_rounds", "round_timeout", "min_responses", "sites"} <= {
        p["name"] for p in doc["data"]["parameters"]
    }
    code, doc = cli.json("recipe", "show", "nope")
    assert code == 1 and doc["error_code"] == "RECIPE_NOT_FOUND" and doc["hint"]
    proc = cli.run("recipe", "show", "fedavg")
    assert proc.returncode == 0 and "num_rounds" in proc.stdout and "training rounds" in proc.stdout
