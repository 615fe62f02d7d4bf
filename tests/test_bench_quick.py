"""The benchmark suite keeps working: ``python -m bench --quick`` runs every workload and
prints a figure for each. No timing is judged here (figures go to docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.workloads import QUICK_MODEL_MB

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_bench_quick_runs_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    workloads = {r["workload"].split(" ")[0] for r in rows}
    for expected in (
        "cold",
        "trivial",
        "per-round",
        "wait",
        "monitor",
        str(QUICK_MODEL_MB),  # large_model and large_model_bucket: "4 MB model, ..."
        "5",
        "300",
        "load",
        "burst",
        "storm",
        "replica",
    ):
        assert expected in workloads, (expected, workloads)
    assert any(r["workload"].endswith("(PostgreSQL)") for r in rows), "the store on PostgreSQL too"
    assert all(r["runs"] >= 1 and r["median"] >= 0 for r in rows)
    assert "suite took" in proc.stdout
