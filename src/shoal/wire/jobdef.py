"""Job folders: ``meta.json`` plus one folder per app, checked before a job is accepted.

The CLI runs these checks before uploading (fast feedback) and the server runs them again on
the extracted archive (it trusts nobody): a bad job is refused at submit time with a code that
says what is wrong, rather than failing later on a site. Layout::

    meta.json                       {"name", "min_clients", "deploy_map", "resource_spec"?, ...}
    <app>/config/config_fed_server.json   for the app deployed to "server": {"workflow", ...}
    <app>/config/config_fed_client.json   for apps deployed to sites: {"script", ...}
    <app>/custom/                   the app's own code

A deploy_map value is a list of site names, may include ``"server"``, or is ``["@ALL"]``:
the server and every site. Standard library only (the CLI imports this).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shoal.errors import ShoalError
from shoal.wire.resources import ResourceError, check_spec
from shoal.wire.rules import NAME_MAX_CHARS

ALL_SITES = "@ALL"
SERVER = "server"
MAX_META_BYTES = 1 << 20
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of objects and lists in meta.json or a config; far beyond any real job, and
#: well inside what every reader (json, SQLite's JSON text, the CLI's renderers) can recurse into.
MAX_JSON_DEPTH = 64
SERVER_CONFIG = ("config", "config_fed_server.json")
CLIENT_CONFIG = ("config", "config_fed_client.json")

#: Anchored with \A...\Z, not ^...$: "$" also matches before a final newline, so a name ending
#: in "\n" would pass a ``match``; these stay whole-string checks however they are called.
JOB_NAME_RE = re.compile(rf"\A[A-Za-z0-9][A-Za-z0-9._ -]{{0,{NAME_MAX_CHARS - 1}}}\Z")
#: App folders and site names: one plain path component, nothing a shell or a path would read.
PLAIN_NAME_RE = re.compile(rf"\A[A-Za-z0-9_][A-Za-z0-9._-]{{0,{NAME_MAX_CHARS - 1}}}\Z")

SiteTargets = list[str] | Literal["@ALL"]

#: Fields the server adds to a job's metadata when it shows it (``shoal.server.views``):
#: meta.json may not set them, or its value would pass for the server's (a string where the
#: server's "progress" object is expected broke ``job meta``, ``wait`` and ``monitor``).
SERVER_META_KEYS = frozenset(
    {
        "job_id",
        "job_name",
        "privacy_spent",
        "status",
        "status_reason",
        "study",
        "submitter_name",
        "submitter_org",
        "submitter_role",
        "submit_time",
        "submit_time_iso",
        "start_time",
        "end_time",
        "duration",
        "duration_s",
        "first_error",
        "cloned_from",
        "progress",
        "notices",
        "content_sha256",
    }
)
#: String fields of the optional "fab" object (an app bundle's identity, written by ``shoal run``).
FAB_FIELDS = ("id", "name", "version", "hash", "filename")


def meta_folder(files: list[str]) -> str | None:
    """Where a job archive whose regular files are ``files`` (folders exist only as their
    parents) keeps meta.json: "" at its root, the name of the root's single non-hidden entry
    when that is a folder holding it, None when neither. The server takes the job from there;
    the CLI checks the same before it uploads anything."""

    def exists(rel: str) -> bool:
        return any(f == rel or f.startswith(rel + "/") for f in files)

    if exists("meta.json"):
        return ""
    top = {f.split("/", 1)[0] for f in files if not f.startswith(".")}
    if len(top) != 1:
        return None
    (child,) = top
    is_folder = any(f.startswith(child + "/") for f in files)
    return child if is_folder and exists(child + "/meta.json") else None


def holds_meta(files: list[str]) -> bool:
    """Would the server find meta.json in a job archive of these files (``meta_folder``)?"""
    return meta_folder(files) is not None


@dataclass(frozen=True)
class JobDefinition:
    """A validated job folder.

    ``server_app`` is the app the server runs; ``site_apps`` maps each app deployed to sites
    to its site names, or to ``"@ALL"`` for every site. ``meta`` is meta.json as read, minus
    any ``submit_token`` key (tokens belong to a submission, not to the job's content).
    """

    name: str
    min_clients: int
    deploy_map: dict[str, list[str]]
    resource_spec: dict[str, Any]
    meta: dict[str, Any]
    server_app: str
    site_apps: dict[str, SiteTargets] = field(default_factory=dict)


def _meta_invalid(detail: str) -> ShoalError:
    return ShoalError("JOB_META_INVALID", detail)


#: The experiment trackers the server can write a job's metrics to (shoal.scheduler.tracking).
TRACKERS = ("tensorboard", "mlflow", "wandb")


def tracker_names(meta: dict[str, Any]) -> tuple[str, ...]:
    """The trackers meta.json names (none without ``trackers``); ValueError saying why for
    anything but a list of distinct known names. Names only: where a tracker writes is the
    server operator's choice, never the job's."""
    raw = meta.get("trackers", [])
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ValueError(f"'trackers' must be a list of names: {', '.join(TRACKERS)}")
    unknown = [n for n in raw if n not in TRACKERS]
    if unknown:
        raise ValueError(f"'trackers' names {unknown[0][:40]!r}; known trackers: {', '.join(TRACKERS)}")
    if len(set(raw)) != len(raw):
        raise ValueError("'trackers' names a tracker twice")
    return tuple(raw)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether objects and lists nest deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _read_json_object(path: Path, limit: int, code: str, label: str) -> dict[str, Any]:
    """Read a small, strict JSON object; size is checked before reading so a huge file costs nothing.

    Strict: NaN, Infinity and numbers beyond float range (1e999) are refused, because the
    store, the API and other tools speak strict JSON and cannot carry them; so is nesting past
    MAX_JSON_DEPTH, which would otherwise surface as a RecursionError far from here.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ShoalError(code, f"{label} cannot be read: {exc.strerror}") from None
    if size > limit:
        raise ShoalError(code, f"{label} is {size} bytes; the limit is {limit}")
    too_deep = ShoalError(code, f"{label} nests objects or lists more than {MAX_JSON_DEPTH} levels deep")
    try:
        text = path.read_bytes().decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise too_deep from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ShoalError(code, f"{label} is not valid JSON: {exc}") from None
    if _nests_deeper(value, MAX_JSON_DEPTH):
        raise too_deep
    if not isinstance(value, dict):
        raise ShoalError(code, f"{label} must hold a JSON object, not {type(value).__name__}")
    return value


def _parse_deploy_map(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict) or not raw:
        raise _meta_invalid("'deploy_map' must be a non-empty object of app folder -> list of targets")
    result: dict[str, list[str]] = {}
    for app, targets in raw.items():
        if not PLAIN_NAME_RE.fullmatch(app) or app in (".", ".."):
            raise _meta_invalid(f"deploy_map key {app!r} is not a plain folder name")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise _meta_invalid(f"deploy_map[{app!r}] must be a non-empty list of strings")
        if ALL_SITES in targets and len(targets) != 1:
            raise _meta_invalid(f"deploy_map[{app!r}]: '@ALL' must stand alone")
        for target in targets:
            if target != ALL_SITES and not PLAIN_NAME_RE.fullmatch(target):
                raise _meta_invalid(f"deploy_map[{app!r}] names an invalid site {target!r}")
        if len(set(targets)) != len(targets):
            raise _meta_invalid(f"deploy_map[{app!r}] lists a target twice")
        result[app] = list(targets)
    return result


def _check_owned_keys(meta: dict[str, Any]) -> None:
    """Refuse fields the server owns, and a "fab" that is not what ``shoal run`` writes."""
    taken = sorted(SERVER_META_KEYS.intersection(meta))
    if taken:
        raise _meta_invalid(
            f"meta.json sets {', '.join(repr(k) for k in taken)}, which the server sets itself; "
            "remove or rename it"
        )
    fab = meta.get("fab")
    if fab is None:
        return
    if not isinstance(fab, dict) or not all(isinstance(fab.get(k, ""), str) for k in FAB_FIELDS):
        raise _meta_invalid(
            "'fab' must be an object whose "
            + ", ".join(repr(k) for k in FAB_FIELDS)
            + " (each optional) are strings"
        )


def _split_targets(deploy_map: dict[str, list[str]]) -> tuple[str, dict[str, SiteTargets]]:
    """Which app the server runs and which apps run where; each target gets exactly one app."""
    server_apps: list[str] = []
    site_apps: dict[str, SiteTargets] = {}
    claimed: dict[str, str] = {}
    for app, targets in deploy_map.items():
        if targets == [ALL_SITES]:
            server_apps.append(app)
            site_apps[app] = "@ALL"
            claimed[ALL_SITES] = app
            continue
        if SERVER in targets:
            server_apps.append(app)
        sites = [t for t in targets if t != SERVER]
        if sites:
            site_apps[app] = sites
        for site in sites:
            if site in claimed:
                raise _meta_invalid(f"site {site!r} is given two apps: {claimed[site]!r} and {app!r}")
            claimed[site] = app
    if ALL_SITES in claimed and len(site_apps) > 1:
        raise _meta_invalid("an app deployed to '@ALL' cannot share the sites with other apps")
    if len(server_apps) != 1:
        found = ", ".join(repr(a) for a in server_apps) or "none"
        raise _meta_invalid(f"exactly one app must be deployed to 'server' (found {found})")
    if not site_apps:
        raise _meta_invalid("no app is deployed to any site")
    return server_apps[0], site_apps


def _check_config(app_dir: Path, parts: tuple[str, str], *keys: str) -> None:
    """The config must set one of ``keys`` (a client runs a custom "script" or a built-in "module")."""
    path = app_dir.joinpath(*parts)
    label = f"{app_dir.name}/{'/'.join(parts)}"
    if not path.is_file():
        raise ShoalError("JOB_CONFIG_INVALID", f"{label} is missing")
    config = _read_json_object(path, MAX_CONFIG_BYTES, "JOB_CONFIG_INVALID", label)
    if not any(config.get(k) and isinstance(config.get(k), str | dict) for k in keys):
        raise ShoalError("JOB_CONFIG_INVALID", f"{label} must set {' or '.join(repr(k) for k in keys)}")


def load_job_definition(root: Path) -> JobDefinition:
    """Validate the job folder at ``root`` and return what it defines.

    Raises, in this order of discovery: JOB_FOLDER_NOT_FOUND, JOB_META_MISSING,
    JOB_META_INVALID (bad or non-strict JSON, over 1 MiB or 64 levels deep, missing or
    ill-typed fields, bad names, a field the server sets itself: ``SERVER_META_KEYS``),
    JOB_APP_MISSING (deploy_map names a folder that is not there), JOB_CONFIG_INVALID.
    """
    root = Path(root)
    if not root.is_dir():
        raise ShoalError("JOB_FOLDER_NOT_FOUND", path=str(root))
    meta_path = root / "meta.json"
    if not meta_path.exists() and not meta_path.is_symlink():
        raise ShoalError("JOB_META_MISSING", f"no meta.json in {root}")
    if meta_path.is_symlink() or not meta_path.is_file():
        raise _meta_invalid("meta.json must be a regular file")
    meta = _read_json_object(meta_path, MAX_META_BYTES, "JOB_META_INVALID", "meta.json")
    meta.pop("submit_token", None)
    _check_owned_keys(meta)

    name = meta.get("name")
    if not isinstance(name, str) or not JOB_NAME_RE.fullmatch(name):
        raise _meta_invalid(
            "'name' must be 1-128 characters: letters, digits, '.', '_', '-' or space, "
            "starting with a letter or digit"
        )
    min_clients = meta.get("min_clients")
    if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 1:
        raise _meta_invalid("'min_clients' must be an integer >= 1")
    deploy_map = _parse_deploy_map(meta.get("deploy_map"))
    resource_spec = meta.get("resource_spec", {})
    try:
        check_spec(resource_spec)
    except ResourceError as exc:
        raise _meta_invalid(str(exc)) from exc
    try:
        tracker_names(meta)
    except ValueError as exc:
        raise _meta_invalid(str(exc)) from exc
    server_app, site_apps = _split_targets(deploy_map)
    if meta.get("privacy") is not None:
        from shoal.privacy.protections import PrivacySpecError, check_privacy

        try:
            check_privacy(meta["privacy"])
        except PrivacySpecError as exc:
            raise _meta_invalid(str(exc)) from exc

    for app in deploy_map:
        app_dir = root / app
        if app_dir.is_symlink() or not app_dir.is_dir():
            raise ShoalError("JOB_APP_MISSING", f"deploy_map names {app!r}, but {app}/ is not a folder here")
    _check_config(root / server_app, SERVER_CONFIG, "workflow")
    for app in site_apps:
        _check_config(root / app, CLIENT_CONFIG, "script", "module")
        try:
            client_command(root / app)
        except ValueError as exc:
            raise ShoalError("JOB_CONFIG_INVALID", f"{app}/{'/'.join(CLIENT_CONFIG)}: {exc}") from exc

    return JobDefinition(
        name=name,
        min_clients=min_clients,
        deploy_map=deploy_map,
        resource_spec=resource_spec,
        meta=meta,
        server_app=server_app,
        site_apps=site_apps,
    )


#: The workflows shoal ships, by the name a server config gives and the class that runs it: the
#: only server code a study that does not allow custom code runs.
BUILTIN_WORKFLOWS = {
    "fedavg": "shoal.workflows.fedavg.FedAvg",
    "fedstats": "shoal.workflows.fedstats.FedStats",
    "cyclic": "shoal.workflows.cyclic.Cyclic",
    "cross_site_eval": "shoal.workflows.crosseval.CrossSiteEval",
}
#: Every class path that names a built-in workflow: today's, and the one FedAvg had before the
#: workflows left ``shoal.fl`` (jobs written then still name it, and it still is shoal's code).
BUILTIN_WORKFLOW_CLASSES = frozenset({*BUILTIN_WORKFLOWS.values(), "shoal.fl.fedavg.FedAvg"})
#: The training clients shoal ships: the only ``module`` a site that forbids custom code runs
#: (a module under ``shoal.`` may itself load code from the job, as the controller's entry point
#: loads a workflow class, so a prefix is not enough).
BUILTIN_CLIENT_MODULES = frozenset({"shoal.fl.clients.echo", "shoal.fl.clients.stats"})


def server_custom_code(app_dir: Path) -> str | None:
    """What custom code the server app at ``app_dir`` would run, or None: a workflow class that
    is not one of shoal's. (Its ``custom/`` folder, which an app deployed to the server and the
    sites shares with them, is importable by the workflow only where custom code is allowed.)"""
    config = json.loads(app_dir.joinpath(*SERVER_CONFIG).read_text())
    spec = config.get("workflow", "fedavg")
    if isinstance(spec, dict) and spec.get("class") not in BUILTIN_WORKFLOW_CLASSES:
        return f"its workflow class {str(spec.get('class'))[:200]!r} is custom code"
    return None


def eligible_sites(jobdef: JobDefinition, known_sites: list[str]) -> list[str]:
    """The known sites this job could run on, sorted."""
    known = set(known_sites)
    wanted: set[str] = set()
    for targets in jobdef.site_apps.values():
        if targets == ALL_SITES:
            return sorted(known)
        wanted.update(targets)
    return sorted(wanted & known)


def check_min_clients(jobdef: JobDefinition, known_sites: list[str]) -> None:
    """Refuse a job that can never start: min_clients above the sites it could run on."""
    sites = eligible_sites(jobdef, known_sites)
    if jobdef.min_clients > len(sites):
        raise ShoalError(
            "MIN_CLIENTS_UNSATISFIABLE",
            f"min_clients is {jobdef.min_clients} but the job can run on {len(sites)} known site(s): "
            + (", ".join(sites) or "none"),
        )


def client_command(app_dir: Path, *, refuse_scripts: str | None = None) -> list[str]:
    """The ``python -u`` arguments a site runs for an app: ``["-m", module, *args]`` for a
    built-in ``"module": "shoal...."`` client, else ``[custom/<script>, *args]``.

    ``refuse_scripts`` (a site whose policy forbids custom code says why) refuses, with
    PermissionError, a script and any module but the built-in clients
    (``BUILTIN_CLIENT_MODULES``); a script outside the app's ``custom/`` folder, or missing, is
    a ValueError. Sites and the simulator both start clients by this rule.
    """
    config = json.loads(app_dir.joinpath(*CLIENT_CONFIG).read_text())
    raw = config.get("args", "")
    if not isinstance(raw, str | list):
        raise ValueError(f"'args' must be a string or a list, not {raw!r}")
    args = shlex.split(raw) if isinstance(raw, str) else [str(a) for a in raw]
    module = config.get("module")
    if module is not None:
        if not (isinstance(module, str) and module.startswith("shoal.")):
            raise ValueError(
                f"'module' names a built-in client (shoal.fl.clients.*), not {module!r}; "
                "for the job's own code, name a 'script' in custom/"
            )
        if refuse_scripts is not None and module not in BUILTIN_CLIENT_MODULES:
            raise PermissionError(f"{refuse_scripts}: {module!r} is not one of shoal's built-in clients")
        return ["-m", module, *args]
    if refuse_scripts is not None:
        raise PermissionError(refuse_scripts)
    root = app_dir.resolve()
    script = (root / "custom" / str(config.get("script", ""))).resolve()
    if not script.is_relative_to(root) or not script.is_file():
        raise ValueError(f"no training script {config.get('script')!r} in {app_dir.name}/custom")
    return [str(script), *args]
