"""``shoal simulate --ray``: the virtual sites as actors on a real Ray cluster (a head started
by the test, its whole process group gone at the end), the same results layout and the same
model as the local pool, and a cluster that is not there refused at once, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import EXAMPLES, Cli
from tests.e2e.test_federation import expected_fedavg
from tests.rayhead import group_alive, ray_head

pytestmark = pytest.mark.e2e
HELLO = EXAMPLES / "hello-numpy"


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_sites_on_a_ray_cluster_give_the_local_pools_model_and_layout(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    with ray_head(cpus=2) as head:
        code, doc = cli.json(
            "simulate", "-j", HELLO, "-n", "3", "--ray", head.address, "-o", tmp_path / "ray", timeout=300
        )
    assert not group_alive(head.pid)  # the head and every Ray process it started are gone
    assert code == 0, doc
    report = doc["data"]
    assert report["status"] == "FINISHED_OK" and report["workers"] == 2, report
    code, local = cli.json("simulate", "-j", HELLO, "-n", "3", "--workers", "2", "-o", tmp_path / "local")
    assert code == 0, local

    on_ray = load_file(str(tmp_path / "ray" / "workspace" / "FL_global_model.safetensors"))
    on_pool = load_file(str(tmp_path / "local" / "workspace" / "FL_global_model.safetensors"))
    want = expected_fedavg(["site-1", "site-2", "site-3"], rounds=5, lr=0.05, epochs=10)
    for name in want:
        np.testing.assert_allclose(on_ray[name], on_pool[name], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(on_ray[name], want[name], rtol=1e-10, atol=1e-12)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    for site in ("site-1", "site-2", "site-3"):  # each site's output came back from its actor
        log = (tmp_path / "ray" / "workspace" / site / "log.txt").read_text()
        assert log.count(f"{site}: round") == 5, log
    rounds = json.loads((tmp_path / "ray" / "workspace" / "metrics_summary.json").read_text())["rounds"]
    assert len(rounds) == 5


def test_a_cluster_that_is_not_there_is_refused_at_once(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    code, doc = cli.json(
        "simulate", "-j", HELLO, "-n", "2", "--ray", "127.0.0.1:9", "-o", tmp_path / "out", timeout=60
    )
    assert code == 2 and doc["error_code"] == "RAY_UNAVAILABLE", doc
    assert not (tmp_path / "out").exists()  # nothing written
