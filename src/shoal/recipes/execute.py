"""Where a recipe's ``job.py`` runs: the simulator (default), the POC, or a named startup kit.

FLARE runs a recipe with ``recipe.execute(SimEnv())`` or ``recipe.execute(PocEnv())``; a
shoal ``job.py`` does the same from its command line (``--poc``, ``--startup-kit``,
``--kit-id``). Each way ends by printing the metrics the job reached, so a user sees whether it
learned without opening a file, and leaves no temporary folder behind.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.api.answers import JobMeta


def metrics_text(metrics: dict[str, Any]) -> str:
    """``loss=0.13 mse=0.2`` (numbers as the CLI shows them; a NaN the server sent as null is n/a)."""
    from shoal.cli.output import number_text

    return " ".join(f"{k}={number_text(v)}" for k, v in sorted(metrics.items())) or "(no metrics)"


def final_metrics(workspace: Path) -> dict[str, Any]:
    """The last round's aggregated metrics from a result's metrics_summary.json ({} if none)."""
    try:
        rounds = json.loads((workspace / "metrics_summary.json").read_text()).get("rounds") or []
    except (OSError, ValueError):
        return {}
    return dict(rounds[-1].get("metrics") or {}) if rounds else {}


def poc_admin_kit() -> str:
    """The POC's admin startup kit (the POC of ``$SHOAL_POC_WORKSPACE`` or the default one)."""
    from shoal.provision.poc import default_poc_workspace, load_poc

    workspace = default_poc_workspace()
    poc = load_poc(workspace)  # POC_NOT_PREPARED names the workspace and says what to run
    return str(Path(poc["kits_dir"]) / poc["admin"])


def run_on_server(
    job: Path, *, startup_kit: str | None, kit_id: str | None, study: str = "default"
) -> JobMeta:
    """Submit the exported job folder ``job`` with the given admin kit, wait for its end, and
    return its meta. Raises the job family's errors: JOB_FAILED and the like when it did not
    finish well (with the meta as ``data``), CONNECTION_FAILED, STARTUP_KIT_MISSING, ..."""
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.wire.archive import zip_folder

    client = AdminClient(resolve_admin_kit(kit_id, startup_kit))
    with tempfile.TemporaryDirectory(prefix="shoal-recipe-submit-") as tmp:
        archive = Path(tmp) / f"{job.name}.zip"
        zip_folder(job, archive)
        job_id = str(client.submit_job(archive, study)["job_id"])
    print(f"Submitted job {job_id}; waiting for it to end (shoal job monitor {job_id} follows it)")
    _, meta = client.wait_job(job_id, study)
    if meta["status"] != "FINISHED_OK":
        data: dict[str, Any] = {**meta}
        raise ShoalError(
            "JOB_FAILED", meta.get("status_reason") or None, data=data, job_id=job_id, status=meta["status"]
        )
    return meta
