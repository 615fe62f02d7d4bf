"""Which admin startup kit a command uses, and the ``shoal config`` registry operations.

Resolution order: ``--kit-id``, ``--startup-kit``, ``SHOAL_STARTUP_KIT_DIR``, the active kit.
The first selector given decides: a bad one is an error, never a silent fall-through to the
next (a script that names a kit must not run as somebody else). It all happens before any
connection. Identity comes from ``fed_admin.json``, so nothing here parses a certificate;
this module is on every command's start-up path (decisions/0004): standard library only,
no typing or dataclasses at run time, and paths are strings (``os.path``, not ``pathlib``).
"""

from __future__ import annotations

import json
import os

from shoal import settings
from shoal.api.config_file import load_config, save_config
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    InvalidKit = Callable[[str, str | None], ShoalError]

ADMIN_FILES = ("fed_admin.json", "client.crt", "client.key", "rootCA.pem")
ENV_KIT = settings.STARTUP_KIT_DIR

_AdminKitFields = ("path", "name", "org", "role", "project", "host", "port", "cert", "key", "ca", "source")


class AdminKit:
    """A validated admin startup kit, and where it came from (kit-id | startup-kit | env | active).

    Immutable like a frozen dataclass, but hand-written: importing dataclasses costs the CLI
    about 10 ms of start-up (it pulls in inspect and ast).
    """

    __slots__ = _AdminKitFields

    path: str
    name: str
    org: str
    role: str
    project: str
    host: str
    port: int
    cert: str
    key: str
    ca: str
    source: str

    def __init__(
        self,
        *,
        path: str,
        name: str,
        org: str,
        role: str,
        project: str,
        host: str,
        port: int,
        source: str,
        cert: str | None = None,
        key: str | None = None,
        ca: str | None = None,
    ) -> None:
        startup = os.path.join(path, "startup")
        values = {
            "path": path,
            "name": name,
            "org": org,
            "role": role,
            "project": project,
            "host": host,
            "port": port,
            "cert": cert or os.path.join(startup, "client.crt"),
            "key": key or os.path.join(startup, "client.key"),
            "ca": ca or os.path.join(startup, "rootCA.pem"),
            "source": source,
        }
        for field, value in values.items():
            object.__setattr__(self, field, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AdminKit is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AdminKit is immutable; cannot delete {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in _AdminKitFields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdminKit) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in _AdminKitFields)
        return f"AdminKit({inner})"


def normalise_kit_path(raw: str | os.PathLike[str]) -> str:
    """Absolute real path of a kit; its ``startup/`` subfolder stands for the kit itself."""
    path = os.path.realpath(os.path.expanduser(raw))
    return os.path.dirname(path) if os.path.basename(path) == "startup" else path


def inspect_kit(path: str) -> tuple[str | None, str, dict[str, Any] | None]:
    """(problem, reason, fed_admin.json) for ``path``; problem is None for a valid admin kit.

    problem is "missing" (no such path), "not-admin" (a site or server kit), "not-a-kit" (none
    of an admin kit's startup/ files: some other folder, often the kit's parent), or "invalid"
    (a kit with files missing or a damaged fed_admin.json); reason says what exactly.
    """
    if not os.path.exists(path):
        return "missing", "no such path", None
    startup = os.path.join(path, "startup")
    admin_file = os.path.join(startup, "fed_admin.json")
    for kind, marker in (("site", "fed_site.json"), ("server", "fed_server.json")):
        if os.path.isfile(os.path.join(startup, marker)) and not os.path.isfile(admin_file):
            return "not-admin", f"it is a {kind} kit", None
    absent = [f for f in ADMIN_FILES if not os.path.isfile(os.path.join(startup, f))]
    if absent:
        problem = "not-a-kit" if len(absent) == len(ADMIN_FILES) else "invalid"
        return problem, "it lacks " + ", ".join(f"startup/{f}" for f in absent), None
    try:
        with open(admin_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return "invalid", "startup/fed_admin.json is not valid JSON", None
    if not isinstance(data, dict) or data.get("kind") != "admin":
        return "invalid", 'startup/fed_admin.json does not say "kind": "admin"', None
    server = data.get("server")
    port = server.get("port") if isinstance(server, dict) else None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return "invalid", "startup/fed_admin.json has no valid server port", None
    if not all(isinstance(data.get(k), str) and data.get(k) for k in ("name", "role")):
        return "invalid", "startup/fed_admin.json lacks the admin's name or role", None
    return None, "", data


def _build(path: str, data: dict[str, Any], source: str) -> AdminKit:
    server: dict[str, Any] = data["server"]
    return AdminKit(
        path=path,
        name=str(data["name"]),
        org=str(data.get("org", "")),
        role=str(data["role"]),
        project=str(data.get("project", "")),
        host=str(server.get("host") or "127.0.0.1"),
        port=int(server["port"]),
        source=source,
    )


def _fail(detail: str, hint: str | None = None) -> ShoalError:
    return ShoalError("STARTUP_KIT_MISSING", detail, hint=hint)


def _load(path: str, source: str, on_missing: ShoalError, on_invalid: InvalidKit) -> AdminKit:
    """The kit at ``path``, or the caller's error; ``on_invalid(reason, problem)`` builds the other one."""
    problem, reason, data = inspect_kit(path)
    if problem == "missing":
        raise on_missing
    if problem is not None or data is None:
        raise on_invalid(reason, problem)
    return _build(path, data, source)


def _registered(kit_id: str, raw: str, source: str, active: bool) -> AdminKit:
    """A kit from the config file, as ``--kit-id`` (active=False) or the active kit."""
    path = normalise_kit_path(raw)
    if active:
        who = f"the active startup kit '{kit_id}'"
        gone = f"{who} points to a path that does not exist: {path}"
        hint = f"Run 'shoal config use <id>' to pick another kit, or 'shoal config remove {kit_id}'."
    else:
        who = f"the path registered for '{kit_id}'"
        gone = f"{who} does not exist: {path}"
        hint = (
            f"Restore the kit folder, or register another one: 'shoal config add {kit_id} <kit-dir> --force'."
        )
    return _load(
        path,
        source,
        _fail(gone, hint),
        lambda reason, _: _fail(f"{who} is not a valid admin startup kit ({reason}): {path}", hint),
    )


def _explicit(raw: str, source: str) -> AdminKit:
    """A kit named by a path: ``--startup-kit`` or ``$SHOAL_STARTUP_KIT_DIR``."""
    path = normalise_kit_path(raw)
    if source == "env":
        hint = f"Unset {ENV_KIT}, or point it at an admin startup kit folder."
        return _load(
            path,
            source,
            _fail(f"{ENV_KIT} points to a path that does not exist: {path}", hint),
            lambda reason, _: _fail(
                f"{ENV_KIT} does not point to an admin startup kit ({reason}): {path}", hint
            ),
        )

    def invalid(reason: str, problem: str | None) -> ShoalError:
        if problem == "not-admin":
            return _fail(
                f"path is not an admin startup kit ({reason}): {path}",
                "Commands that talk to the server need an admin kit (its startup/ holds fed_admin.json).",
            )
        if problem == "not-a-kit":
            hint = "Pass the kit folder that provisioning made (the one holding startup/), not its parent."
        else:
            hint = "The kit is incomplete or damaged: copy it again from where it came, or ask for a new one."
        return _fail(f"path is not a valid startup kit ({reason}): {path}", hint)

    return _load(
        path,
        source,
        _fail(f"startup kit path does not exist: {path}", "Pass an existing admin startup kit folder."),
        invalid,
    )


def resolve_admin_kit(kit_id: str | None, startup_kit: str | None) -> AdminKit:
    """The admin kit this command uses; ``None`` means the selector was not given.

    Selectors never change the config file: ``--kit-id`` and ``--startup-kit`` apply to one
    command, so concurrent scripts can use different kits safely.
    """
    if kit_id is not None:
        config = load_config()
        if kit_id not in config.kits:
            raise _fail(
                f"startup kit id '{kit_id}' is not registered", "Run 'shoal config list' to see the ids."
            )
        return _registered(kit_id, config.kits[kit_id], "kit-id", active=False)
    if startup_kit is not None:
        return _explicit(startup_kit, "startup-kit")
    env = settings.text(ENV_KIT)
    if env:
        return _explicit(env, "env")
    config = load_config()
    if not config.active:
        raise _fail("no active startup kit is configured")
    if config.active not in config.kits:
        raise _fail(
            f"the active startup kit '{config.active}' is not registered",
            "Run 'shoal config list', then 'shoal config use <id>'.",
        )
    return _registered(config.active, config.kits[config.active], "active", active=True)


# --- shoal config add/use/list/remove ---


def config_add(kit_id: str, path: str, force: bool = False) -> dict[str, Any]:
    """Register an admin kit under ``kit_id``; never changes which kit is active."""
    kit_id = kit_id.strip()
    if not kit_id:
        raise ShoalError("INVALID_ARGS", "the startup kit id must not be empty")
    config = load_config()
    if kit_id in config.kits and not force:
        raise ShoalError("KIT_EXISTS", kit_id=kit_id)
    kit = _explicit(path, "startup-kit")
    config.kits[kit_id] = kit.path
    save_config(config)
    return {
        "registered_startup_kit": kit_id,
        "path": kit.path,
        "next_step": f"shoal config use {kit_id}",
    }


def config_use(kit_id: str) -> dict[str, Any]:
    """Make a registered, still valid kit the active one (no server contact)."""
    config = load_config()
    if kit_id not in config.kits:
        raise ShoalError("KIT_NOT_REGISTERED", kit_id=kit_id)
    kit = _registered(kit_id, config.kits[kit_id], "active", active=False)
    config.active = kit_id
    save_config(config)
    return {
        "startup_kit": {"source": "active", "id": kit_id, "path": kit.path},
        "identity": {"name": kit.name, "org": kit.org, "role": kit.role},
        "project": kit.project,
    }


def config_list() -> list[dict[str, Any]]:
    """Every registration with its health; a stale row is reported, never an error."""
    config = load_config()
    rows: list[dict[str, Any]] = []
    for kit_id, raw in sorted(config.kits.items()):
        problem, reason, data = inspect_kit(normalise_kit_path(raw))
        row: dict[str, Any] = {
            "active": "*" if kit_id == config.active else "",
            "id": kit_id,
            "status": "ok" if problem is None else ("missing" if problem == "missing" else "invalid"),
            "identity": None,
            "role": None,
            "path": raw,
        }
        if data is not None:
            row.update(
                identity=data["name"], role=data["role"], org=data.get("org"), project=data.get("project")
            )
        else:
            row["reason"] = reason
        rows.append(row)
    return rows


def config_remove(kit_id: str) -> dict[str, Any]:
    """Forget a registration (the kit's files stay); clears the active kit if it was this one."""
    config = load_config()
    if kit_id not in config.kits:
        raise ShoalError("KIT_NOT_REGISTERED", kit_id=kit_id)
    del config.kits[kit_id]
    out: dict[str, Any] = {"removed_startup_kit": kit_id}
    if config.active == kit_id:
        config.active = None
        out["warning"] = f"'{kit_id}' was the active startup kit; no kit is active now"
        out["next_step"] = "shoal config use <id>"
    save_config(config)
    return out
