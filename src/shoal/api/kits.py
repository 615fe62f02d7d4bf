"""Which admin startup kit a command uses, and the ``shoal config`` registry operations.

Resolution order: ``--kit-id``, ``--startup-kit``, ``SHOAL_STARTUP_KIT_DIR``, the active kit.
It fails before any connection is made. Identity comes from ``fed_admin.json``, so nothing
here parses a certificate (the CLI must start fast).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shoal.api.config_file import load_config, save_config
from shoal.errors import ShoalError

TYPE_CHECKING = False  # no typing/dataclasses at run time: CLI start-up (decisions/0004)
if TYPE_CHECKING:
    from typing import Any

ADMIN_FILES = ("fed_admin.json", "client.crt", "client.key", "rootCA.pem")
ENV_KIT = "SHOAL_STARTUP_KIT_DIR"


class AdminKit:
    """An admin startup kit, and where it came from (kit-id | startup-kit | env | active)."""

    __slots__ = ("path", "name", "org", "role", "project", "host", "port", "source")

    def __init__(
        self, *, path: Path, name: str, org: str, role: str, project: str, host: str, port: int, source: str
    ) -> None:
        self.path = path
        self.name = name
        self.org = org
        self.role = role
        self.project = project
        self.host = host
        self.port = port
        self.source = source

    @property
    def cert(self) -> Path:
        return self.path / "startup" / "client.crt"

    @property
    def key(self) -> Path:
        return self.path / "startup" / "client.key"

    @property
    def ca(self) -> Path:
        return self.path / "startup" / "rootCA.pem"


def _normalise(path: Path) -> Path:
    path = path.expanduser().resolve()
    return path.parent if path.name == "startup" else path


def kit_problem(path: Path) -> str | None:
    """Why ``path`` is not an admin kit ("missing", "not-a-kit", "not-admin"), or None if it is."""
    if not path.exists():
        return "missing"
    startup = path / "startup"
    if all((startup / f).exists() for f in ADMIN_FILES):
        return None
    if (startup / "fed_site.json").exists() or (startup / "fed_server.json").exists():
        return "not-admin"
    return "not-a-kit"


def load_admin_kit(path: Path, source: str) -> AdminKit:
    data: dict[str, Any] = json.loads((path / "startup" / "fed_admin.json").read_text())
    server = data.get("server", {})
    return AdminKit(
        path=path,
        name=str(data.get("name", "")),
        org=str(data.get("org", "")),
        role=str(data.get("role", "")),
        project=str(data.get("project", "")),
        host=str(server.get("host", "127.0.0.1")),
        port=int(server.get("port", 0)),
        source=source,
    )


_PATH_HINT = "Use the admin startup kit folder that provisioning made (it holds startup/fed_admin.json)."


def _from_path(raw: str, source: str, what: str, hint: str) -> AdminKit:
    path = _normalise(Path(raw))
    problem = kit_problem(path)
    if problem == "missing":
        raise ShoalError("STARTUP_KIT_MISSING", f"{what} does not exist: {path}", hint=hint)
    if problem == "not-admin":
        raise ShoalError(
            "STARTUP_KIT_MISSING",
            f"{what} is not an admin startup kit (it is a site or server kit): {path}",
            hint="Commands that talk to the server need an admin kit.",
        )
    if problem == "not-a-kit":
        raise ShoalError("STARTUP_KIT_MISSING", f"{what} is not a startup kit: {path}", hint=hint)
    return load_admin_kit(path, source)


def resolve_admin_kit(kit_id: str | None, startup_kit: str | None) -> AdminKit:
    if kit_id:
        config = load_config()
        if kit_id not in config.kits:
            raise ShoalError(
                "STARTUP_KIT_MISSING",
                f"startup kit id '{kit_id}' is not registered",
                hint="Run 'shoal config list'.",
            )
        return _from_path(
            config.kits[kit_id],
            "kit-id",
            f"the path registered for '{kit_id}'",
            f"Restore the kit, or re-register it: 'shoal config add {kit_id} <kit-dir> --force'.",
        )
    if startup_kit:
        return _from_path(startup_kit, "startup-kit", "--startup-kit path", _PATH_HINT)
    env = os.environ.get(ENV_KIT, "").strip()
    if env:
        return _from_path(
            env, "env", f"{ENV_KIT}", f"Unset {ENV_KIT}, or point it at an admin startup kit folder."
        )
    config = load_config()
    if not config.active:
        raise ShoalError("STARTUP_KIT_MISSING", "no active startup kit is configured")
    if config.active not in config.kits:
        raise ShoalError(
            "STARTUP_KIT_MISSING",
            f"the active startup kit '{config.active}' is not registered",
            hint="Run 'shoal config list', then 'shoal config use <id>'.",
        )
    return _from_path(
        config.kits[config.active],
        "active",
        f"the active startup kit '{config.active}'",
        f"Run 'shoal config use <id>' or 'shoal config remove {config.active}'.",
    )


# --- shoal config add/use/list/remove ---


def config_add(kit_id: str, path: str, force: bool = False) -> dict[str, Any]:
    if not kit_id.strip():
        raise ShoalError("INVALID_ARGS", "the kit id must not be empty")
    kit = _from_path(path, "kit-id", "path", _PATH_HINT)
    config = load_config()
    if kit_id in config.kits and not force:
        raise ShoalError("KIT_EXISTS", kit_id=kit_id)
    config.kits[kit_id] = str(kit.path)
    save_config(config)
    return {
        "registered_startup_kit": kit_id,
        "path": str(kit.path),
        "next_step": f"shoal config use {kit_id}",
    }


def config_use(kit_id: str) -> dict[str, Any]:
    config = load_config()
    if kit_id not in config.kits:
        raise ShoalError("KIT_NOT_REGISTERED", kit_id=kit_id)
    kit = _from_path(config.kits[kit_id], "active", f"the path registered for '{kit_id}'", _PATH_HINT)
    config.active = kit_id
    save_config(config)
    return {
        "startup_kit": {"source": "active", "id": kit_id, "path": str(kit.path)},
        "identity": {"name": kit.name, "org": kit.org, "role": kit.role},
        "project": kit.project,
    }


def config_list() -> list[dict[str, Any]]:
    config = load_config()
    rows = []
    for kit_id, raw in sorted(config.kits.items()):
        path = Path(raw)
        problem = kit_problem(path)
        row: dict[str, Any] = {
            "active": "*" if kit_id == config.active else "",
            "id": kit_id,
            "status": "ok" if problem is None else ("missing" if problem == "missing" else "invalid"),
            "path": raw,
            "identity": None,
            "role": None,
        }
        if problem is None:
            kit = load_admin_kit(path, "kit-id")
            row.update(identity=kit.name, role=kit.role, org=kit.org, project=kit.project)
        rows.append(row)
    return rows


def config_remove(kit_id: str) -> dict[str, Any]:
    config = load_config()
    if kit_id not in config.kits:
        raise ShoalError("KIT_NOT_REGISTERED", kit_id=kit_id)
    del config.kits[kit_id]
    out: dict[str, Any] = {"removed_startup_kit": kit_id}
    if config.active == kit_id:
        config.active = None
        out["warning"] = "it was the active kit; no kit is active now"
        out["next_step"] = "shoal config use <id>"
    save_config(config)
    return out
