"""A proof-of-concept workspace: a CA and startup kits for one server, N sites and an admin.

<ws>/poc.json                 what was prepared (project, server address, sites, admin)
<ws>/ca/rootCA.{pem,key}      the CA key stays here, never in a kit
<ws>/kits/<participant>/      startup kits (see provision/kits.py)
<ws>/logs/                    service logs written by `shoal poc start`
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from shoal.api.config_file import load_config, save_config, shoal_home
from shoal.errors import ShoalError
from shoal.provision.ca import create_ca, load_ca, save_ca
from shoal.provision.kits import write_admin_kit, write_server_kit, write_site_kit

DEFAULT_PROJECT = "example_project"
DEFAULT_ORG = "example.org"
DEFAULT_ADMIN = "admin@example.com"
HOST = "127.0.0.1"


def default_poc_workspace() -> Path:
    env = os.environ.get("SHOAL_POC_WORKSPACE", "").strip()
    if env:
        return Path(env).expanduser().resolve()
    configured = load_config().poc_workspace
    return Path(configured) if configured else shoal_home() / "poc"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def load_poc(workspace: Path) -> dict[str, Any]:
    path = workspace / "poc.json"
    if not path.exists():
        raise ShoalError("POC_NOT_PREPARED", f"no poc.json in {workspace}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def prepare_poc(
    workspace: Path,
    n_sites: int = 2,
    force: bool = False,
    project: str = DEFAULT_PROJECT,
    org: str = DEFAULT_ORG,
) -> dict[str, Any]:
    """Create the workspace; register the admin kit and make it active (so `shoal job` just works)."""
    workspace = workspace.expanduser().resolve()
    if workspace.exists() and any(workspace.iterdir()):
        if not force:
            raise ShoalError("POC_WORKSPACE_EXISTS", str(workspace))
        if not (workspace / "poc.json").exists():
            raise ShoalError(
                "POC_WORKSPACE_EXISTS",
                f"{workspace} is not a POC workspace; refusing to replace it",
                hint="Choose an empty folder with --workspace.",
            )
        shutil.rmtree(workspace)
    kits = workspace / "kits"
    port = free_port()
    sites = [f"site-{i}" for i in range(1, n_sites + 1)]
    ca = create_ca(project)
    save_ca(ca, workspace / "ca")
    write_server_kit(kits, ca, project=project, org=org, host=HOST, port=port, sites=sites)
    for site in sites:
        write_site_kit(kits, ca, name=site, project=project, org=org, host=HOST, port=port)
    admin_kit = write_admin_kit(
        kits, ca, name=DEFAULT_ADMIN, role="project_admin", project=project, org=org, host=HOST, port=port
    )
    (workspace / "logs").mkdir(parents=True, exist_ok=True)
    poc = {
        "project": project,
        "server": {"host": HOST, "port": port},
        "sites": sites,
        "admin": DEFAULT_ADMIN,
        "kits_dir": str(kits),
        "created": dt.datetime.now(dt.UTC).isoformat(),
    }
    (workspace / "poc.json").write_text(json.dumps(poc, indent=2) + "\n")
    config = load_config()
    prior = config.active
    config.kits[DEFAULT_ADMIN] = str(admin_kit)
    config.active = DEFAULT_ADMIN
    config.poc_workspace = str(workspace)
    save_config(config)
    return {
        "workspace": str(workspace),
        "server": poc["server"],
        "sites": sites,
        "admin_kit": str(admin_kit),
        "startup_kit": {"prior_active": prior, "active": DEFAULT_ADMIN, "changed": prior != DEFAULT_ADMIN},
    }


def add_poc_admin(workspace: Path, email: str, role: str, org: str = DEFAULT_ORG) -> Path:
    """Issue one more admin kit from the POC's CA (for role and authorization tests)."""
    poc = load_poc(workspace)
    ca = load_ca(workspace / "ca")
    server = poc["server"]
    return write_admin_kit(
        Path(poc["kits_dir"]),
        ca,
        name=email,
        role=role,
        project=poc["project"],
        org=org,
        host=server["host"],
        port=int(server["port"]),
    )


def clean_poc(workspace: Path) -> dict[str, Any]:
    """Remove a POC workspace (never a folder without poc.json) and its config entries."""
    workspace = workspace.expanduser().resolve()
    load_poc(workspace)
    shutil.rmtree(workspace)
    config = load_config()
    for kit_id, path in list(config.kits.items()):
        if Path(path).resolve().is_relative_to(workspace):
            del config.kits[kit_id]
            if config.active == kit_id:
                config.active = None
    if config.poc_workspace and Path(config.poc_workspace).resolve() == workspace:
        config.poc_workspace = None
    save_config(config)
    return {"workspace": str(workspace), "status": "removed"}
