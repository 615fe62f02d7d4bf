"""A proof-of-concept workspace: a CA and startup kits for one server, N sites and an admin.

<ws>/poc.json                 what was prepared (project, server address, sites, admin)
<ws>/ca/rootCA.{pem,key}      the CA key stays here, never in a kit
<ws>/kits/<participant>/      startup kits (see provision/kits.py)
<ws>/logs/                    service logs written by `shoal poc start`

``poc.json`` is also the marker that makes a folder a POC workspace: clean and ``--force``
delete only folders that hold one, so a mistyped path never removes somebody's data.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
from pathlib import Path
from typing import Any

from shoal import settings
from shoal.api.config_file import ShoalConfig, load_config, save_config, shoal_home
from shoal.errors import ShoalError
from shoal.provision.ca import load_ca
from shoal.provision.kits import DEFAULT_HOST, kit_folder, write_admin_kit
from shoal.provision.project import Participant, Project
from shoal.provision.workspace import STATE, Provisioner, provision
from shoal.security.tls import KIT_FILES

DEFAULT_PROJECT = "example_project"
DEFAULT_ORG = "example.org"
DEFAULT_ADMIN = "admin@example.com"
DEFAULT_ADMIN_ROLE = "project_admin"
HOST = DEFAULT_HOST
ENV_WORKSPACE = settings.POC_WORKSPACE


def default_poc_workspace() -> Path:
    """``$SHOAL_POC_WORKSPACE``, else ``[poc] workspace`` from the config file, else ``<shoal home>/poc``."""
    env = settings.text(ENV_WORKSPACE)
    if env:
        return Path(env).expanduser().resolve()
    configured = load_config().poc_workspace
    return Path(configured).expanduser().resolve() if configured else Path(shoal_home(), "poc")


def free_port(host: str = HOST) -> int:
    """A TCP port the OS says is free right now (bind to port 0); never a hard-wired number."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def load_poc(workspace: Path) -> dict[str, Any]:
    """The workspace's poc.json; POC_NOT_PREPARED if it has none (or it is unreadable)."""
    path = Path(workspace) / "poc.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShoalError("POC_NOT_PREPARED", f"no poc.json in {workspace}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShoalError(
            "POC_NOT_PREPARED",
            f"cannot read {path}: {exc}",
            hint="Prepare the workspace again with 'shoal poc prepare --force'.",
        ) from exc
    if not isinstance(data, dict):
        raise ShoalError("POC_NOT_PREPARED", f"{path} is not a POC description")
    return data


def _clear_for_prepare(workspace: Path, force: bool) -> None:
    """Refuse an existing workspace without force; with force, remove it, but only a real POC one."""
    if not workspace.exists():
        return
    if not workspace.is_dir():
        raise ShoalError("POC_WORKSPACE_EXISTS", f"{workspace} exists and is not a folder")
    if not any(workspace.iterdir()):
        return  # an empty folder holds nothing to lose
    if not force:
        raise ShoalError("POC_WORKSPACE_EXISTS", str(workspace))
    if not (workspace / "poc.json").exists():
        raise ShoalError(
            "POC_WORKSPACE_EXISTS",
            f"{workspace} is not a POC workspace (no poc.json); refusing to replace it",
            hint="Choose an empty or new folder with --workspace.",
        )
    shutil.rmtree(workspace)


def prepare_poc(
    workspace: Path,
    n_sites: int = 2,
    force: bool = False,
    project: str = DEFAULT_PROJECT,
    org: str = DEFAULT_ORG,
) -> dict[str, Any]:
    """Create the workspace; register the admin kit and make it active (so `shoal job` just works).

    Everything is checked (arguments, the config file) before anything is written, and a
    failure half way removes what was made, so an error changes nothing.
    """
    if n_sites < 1:
        raise ShoalError("INVALID_ARGS", "a POC needs at least one site")
    workspace = Path(workspace).expanduser().resolve()
    config = load_config()  # an unreadable config fails now, not after the kits exist
    _clear_for_prepare(workspace, force)
    try:
        poc = _build_workspace(workspace, n_sites, project, org)
        prior = _register_admin(config, workspace, Path(poc["kits_dir"]) / DEFAULT_ADMIN)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return {
        "workspace": str(workspace),
        "server": poc["server"],
        "sites": poc["sites"],
        "admin_kit": str(Path(poc["kits_dir"]) / DEFAULT_ADMIN),
        "startup_kit": {"prior_active": prior, "active": DEFAULT_ADMIN, "changed": prior != DEFAULT_ADMIN},
    }


def _build_workspace(workspace: Path, n_sites: int, project: str, org: str) -> dict[str, Any]:
    """The CA and kits through the same provisioning as a real project (provision/workspace.py):
    a server dialled at 127.0.0.1 on a free port, N sites and the admin, all of one org."""
    kits = workspace / "kits"
    port = free_port()
    sites = [f"site-{i}" for i in range(1, n_sites + 1)]
    server = Participant("server", "server", org, hosts=(HOST,), port=port, listen=HOST)
    admin = Participant(DEFAULT_ADMIN, "admin", org, role=DEFAULT_ADMIN_ROLE)
    members = tuple(Participant(s, "site", org) for s in sites)
    provision(Project(project, server, members, (admin,)), workspace)
    (workspace / "logs").mkdir(parents=True, exist_ok=True)
    poc: dict[str, Any] = {
        "project": project,
        "server": {"host": HOST, "port": port},
        "sites": sites,
        "admin": DEFAULT_ADMIN,
        "kits_dir": str(kits),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # written last: its presence means the workspace is complete
    (workspace / "poc.json").write_text(json.dumps(poc, indent=2) + "\n")
    return poc


def _register_admin(config: ShoalConfig, workspace: Path, admin_kit: Path) -> str | None:
    """Register and activate the POC admin kit; record the workspace. Returns the prior active id."""
    prior = config.active
    _forget_workspace(config, workspace)  # kits of a replaced workspace died with its CA
    config.kits[DEFAULT_ADMIN] = str(admin_kit)
    config.active = DEFAULT_ADMIN
    config.poc_workspace = str(workspace)
    save_config(config)
    return prior


def add_poc_admin(
    workspace: Path, email: str, role: str, org: str = DEFAULT_ORG, force: bool = False
) -> Path:
    """Issue one more admin kit from the POC's CA (for role and authorization tests); not registered.

    An existing kit folder is never replaced without ``force``: that could silently change
    the role of the kit the user is working with, or overwrite a site's kit.
    """
    poc = load_poc(workspace)
    kits = Path(poc["kits_dir"])
    folder = kit_folder(kits, email)
    if _is_participant(poc, folder):
        # not even with force: the admin's certificate and fed_admin.json would land in that
        # participant's startup folder, and an admin identity would carry its name
        raise ShoalError(
            "INVALID_ARGS",
            f"'{email}' is a participant of this POC (its server or a site), not an admin",
            hint="Choose another name for the admin, such as an email address.",
        )
    if folder.exists() and not force:
        raise ShoalError(
            "INVALID_ARGS",
            f"a startup kit named '{email}' already exists in {kits}",
            hint="Choose another email, or pass --force to re-issue it.",
        )
    who = Participant(email, "admin", org, role=role)
    if (Path(workspace) / STATE).exists():
        prov = Provisioner.open(Path(workspace))
        if prov.issued(email) is None:
            prov.add(who)
        else:  # --force: a new certificate, and the one it replaces is revoked on the server
            prov.reissue([email], changed={email: who})
        return folder
    ca = load_ca(Path(workspace) / "ca")  # a POC prepared before provision.json existed
    server = poc["server"]
    return write_admin_kit(
        kits,
        ca,
        name=email,
        role=role,
        project=poc["project"],
        org=org,
        host=server["host"],
        port=int(server["port"]),
    )


def _is_participant(poc: dict[str, Any], folder: Path) -> bool:
    """Whether ``folder`` is the server's or a site's kit: named so in poc.json, or holding one."""
    if folder.name in ("server", *poc.get("sites", [])):
        return True
    startup = folder / "startup"
    return (startup / KIT_FILES["server"]).exists() or (startup / KIT_FILES["site"]).exists()


def clean_poc(workspace: Path) -> dict[str, Any]:
    """Remove a POC workspace (never a folder without poc.json) and its config-file entries.

    Registrations whose path lies inside the workspace would only be stale rows afterwards,
    so they go too, and so does ``[poc] workspace`` when it names this folder. The caller
    stops running services first.
    """
    workspace = Path(workspace).expanduser().resolve()
    config = load_config()  # an unreadable config fails before anything is deleted
    load_poc(workspace)
    shutil.rmtree(workspace)
    _forget_workspace(config, workspace)
    if config.poc_workspace and Path(config.poc_workspace).expanduser().resolve() == workspace:
        config.poc_workspace = None
    save_config(config)
    return {"workspace": str(workspace), "status": "removed"}


def _forget_workspace(config: ShoalConfig, workspace: Path) -> None:
    """Drop registrations of kits inside ``workspace`` (and the active id if it was one of them)."""
    for kit_id, path in list(config.kits.items()):
        if Path(path).expanduser().resolve().is_relative_to(workspace):
            del config.kits[kit_id]
            if config.active == kit_id:
                config.active = None
