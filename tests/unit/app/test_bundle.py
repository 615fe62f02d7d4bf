"""App bundles are deterministic, named by their hash, and ship only what should ship."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from tests.conftest import EXAMPLES

from shoal.app.bundle import build_bundle, strip_federations
from shoal.app.project import load_project, parse_run_config
from shoal.errors import ShoalError


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    shutil.copytree(EXAMPLES / "quickstart-app", root)
    return root


def test_same_project_same_bytes_and_hash(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    first = build_bundle(load_project(root), tmp_path / "a")
    second = build_bundle(load_project(root), tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256 and len(first.hash8) == 8
    assert first.filename == f"local.quickstart-app.1-0-0.{first.hash8}.fab"
    assert first.fab_id == "local/quickstart-app"


def test_any_change_to_a_shipped_file_changes_the_hash(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    before = build_bundle(load_project(root), tmp_path / "a")
    with (root / "client.py").open("a") as f:
        f.write("# changed\n")
    after = build_bundle(load_project(root), tmp_path / "b")
    assert before.sha256 != after.sha256


def test_what_must_not_ship_stays_out(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("x")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "client.cpython-311.pyc").write_bytes(b"x")
    (root / "data.csv").write_text("secret")
    (root / ".gitignore").write_text("*.csv\n")
    (root / "helper.py").write_text("X = 1\n")
    bundle = build_bundle(load_project(root), tmp_path / "out")
    names = zipfile.ZipFile(bundle.path).namelist()
    assert "helper.py" in names and "client.py" in names and "MANIFEST.json" in names
    assert not any(n.startswith((".git/", "__pycache__")) or n == "data.csv" for n in names)
    pyproject = zipfile.ZipFile(bundle.path).read("pyproject.toml").decode()
    assert "[tool.shoal.app]" in pyproject and "federations" not in pyproject


def test_strip_federations_keeps_the_rest() -> None:
    text = (
        '[project]\nname = "a"\n[tool.shoal.federations]\ndefault = "x"\n'
        '[tool.shoal.federations.x]\nkit-id = "k"\n[tool.other]\nv = 1\n'
    )
    assert strip_federations(text) == '[project]\nname = "a"\n[tool.other]\nv = 1\n'


def test_bad_projects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        load_project(tmp_path)
    assert err.value.code == "APP_PROJECT_MISSING"
    (tmp_path / "pyproject.toml").write_text("[project\nname=")
    with pytest.raises(ShoalError) as err:
        load_project(tmp_path)
    assert err.value.code == "APP_PROJECT_INVALID"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(ShoalError) as err:
        load_project(tmp_path)
    assert err.value.code == "APP_PROJECT_INVALID"


def test_run_config_values_are_typed() -> None:
    assert parse_run_config(["num-rounds=5", "lr=0.1", "on=true", "name=abc"]) == {
        "num-rounds": 5,
        "lr": 0.1,
        "on": True,
        "name": "abc",
    }
    with pytest.raises(ShoalError):
        parse_run_config(["novalue"])


def test_run_config_takes_flowers_forms(tmp_path: Path) -> None:
    """One argument may hold several space-separated pairs (it became one key holding the
    rest as a string), values may be quoted TOML strings, and a .toml file is read whole."""
    assert parse_run_config(["num-rounds=2 min-clients=2", "msg='a b' x=\"c d\""]) == {
        "num-rounds": 2,
        "min-clients": 2,
        "msg": "a b",
        "x": "c d",
    }
    settings = tmp_path / "settings.toml"
    settings.write_text('num-rounds = 4\n[optimizer]\nlr = 0.5\nname = "sgd"\n')
    assert parse_run_config([str(settings), "num-rounds=1"]) == {
        "num-rounds": 1,
        "optimizer.lr": 0.5,
        "optimizer.name": "sgd",
    }
    for bad in ("num-rounds=2 oops", "a=1 =2", "", "   ", str(tmp_path / "none.toml")):
        with pytest.raises(ShoalError) as err:
            parse_run_config([bad])
        assert err.value.code == "INVALID_ARGS"


def test_the_content_listing_comes_last_and_is_not_app_code(tmp_path: Path) -> None:
    from shoal.app.jobfolder import write_job_folder

    project = load_project(project_copy(tmp_path))
    bundle = build_bundle(project, tmp_path / "out")
    with zipfile.ZipFile(bundle.path) as fab:
        assert fab.namelist()[-1] == ".info/CONTENT"
        assert "\nclient.py," in fab.read(".info/CONTENT").decode()
    job = write_job_folder(project, bundle, {}, tmp_path / "job")
    assert not (job / "app" / "custom" / ".info").exists()
    assert not (job / "app" / "custom" / "MANIFEST.json").exists()
