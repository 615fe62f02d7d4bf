"""A bundle becomes a job folder, so ``shoal run`` and ``shoal job submit`` share one path."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from shoal.app.bundle import BUNDLE_INFO, Bundle
from shoal.app.project import MIN_CLIENTS, AppProject

# app config keys (Flower-style, with dashes) that are job settings, not workflow arguments
JOB_KEYS = {MIN_CLIENTS}


def workflow_args(config: dict[str, Any]) -> dict[str, Any]:
    return {key.replace("-", "_"): value for key, value in config.items() if key not in JOB_KEYS}


def write_job_folder(project: AppProject, bundle: Bundle, config: dict[str, Any], dest: Path) -> Path:
    """meta.json (with the bundle's identity under "fab") + one app holding the bundle's files.

    ``config`` is checked already (load_project, parse_run_config): min-clients is an int >= 1."""
    app = dest / "app"
    custom = app / "custom"
    custom.mkdir(parents=True)
    with zipfile.ZipFile(bundle.path) as zf:
        for info in zf.infolist():
            if info.filename not in BUNDLE_INFO:
                target = custom / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
    (app / "config").mkdir()
    serverapp: Any = project.serverapp if "." not in project.serverapp else {"class": project.serverapp}
    (app / "config" / "config_fed_server.json").write_text(
        json.dumps({"workflow": serverapp, "args": workflow_args(config)}, indent=2)
    )
    (app / "config" / "config_fed_client.json").write_text(
        json.dumps({"script": project.clientapp, "args": project.client_args}, indent=2)
    )
    meta = {
        "name": project.name,
        "min_clients": config.get(MIN_CLIENTS, 2),
        "deploy_map": {"app": ["@ALL"]},
        "fab": {
            "id": bundle.fab_id,
            "name": bundle.fab_name,
            "version": bundle.fab_version,
            "hash": bundle.hash8,
            "filename": bundle.filename,
        },
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    return dest
