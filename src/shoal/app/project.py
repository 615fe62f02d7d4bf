"""Loading an app project: ``pyproject.toml`` with ``[project]`` and ``[tool.shoal.app]``.

[project]
name = "myapp"
version = "1.0.0"

[tool.shoal.app]
publisher = "myorg"
serverapp = "fedavg"            # a built-in workflow, or "module.Class" in the app's code
clientapp = "client.py"         # the training script, relative to the project
client-args = "--lr 0.1"

[tool.shoal.app.config]         # workflow settings; `shoal run --run-config K=V` overrides
num-rounds = 3
min-clients = 2

[tool.shoal.federations]
default = "local"

[tool.shoal.federations.local]  # a startup kit by registered id or by path, and a study
kit-id = "admin@example.com"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.app.federation import Federation
from shoal.errors import ShoalError

#: No "." although packaging allows it: name and publisher are joined with dots into the
#: bundle's file name (publisher.name.1-0-0.hash8.fab), which one more dot makes ambiguous.
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
#: name, publisher and version make the bundle's file name: each one path component, and
#: short enough that together they stay well under a file system's 255 bytes
MAX_NAME_LENGTH = 64
#: a PEP 440 version in the characters it may use (1.0.0, 2.0rc1, 1!2.0, 1.0+local.7)
VERSION_RE = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z.+!_-]{0,62}[0-9A-Za-z])?")
MIN_CLIENTS = "min-clients"  # the one app setting that is a job setting (meta.json min_clients)


def is_project_name(name: str) -> bool:
    """A name Python packaging accepts for a project (PEP 508) without its dots (NAME_CHARS):
    starting and ending with a letter or digit, so not "-x" either; at most 64 long."""
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and set(name) <= NAME_CHARS
        and name[0].isalnum()
        and name[-1].isalnum()
    )


@dataclass
class AppProject:
    root: Path
    name: str
    version: str
    publisher: str
    serverapp: str
    clientapp: str
    client_args: str
    config: dict[str, Any] = field(default_factory=dict)
    federations: dict[str, Federation] = field(default_factory=dict)
    default_federation: str | None = None

    @property
    def fab_id(self) -> str:
        return f"{self.publisher}/{self.name}"

    def federation(self, name: str | None) -> Federation:
        """The named federation, or the default; an unknown name lists the ones that exist."""
        chosen = name or self.default_federation
        if chosen is None:
            return Federation("(active startup kit)")
        if chosen not in self.federations:
            found = "\n".join(sorted(self.federations)) or "(none)"
            raise ShoalError(
                "FEDERATION_NOT_FOUND",
                f"There is no `[{chosen}]` federation declared in the `pyproject.toml`.\n"
                f"The following federations were found:\n\n{found}\n",
                federation=chosen,
            )
        return self.federations[chosen]


def load_project(app_dir: Path) -> AppProject:
    """Read and check the whole project; anything malformed is APP_PROJECT_INVALID naming the key."""
    root = app_dir.expanduser().resolve()
    path = root / "pyproject.toml"
    if not path.is_file():
        raise ShoalError("APP_PROJECT_MISSING", f"no pyproject.toml in {root}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ShoalError("APP_PROJECT_INVALID", f"{path}: not valid TOML ({exc})") from exc
    return _ProjectReader(root, path).project(data)


class _ProjectReader:
    """Checks each part of pyproject.toml as it reads it, so every refusal names its key."""

    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.path = path

    def invalid(self, why: str) -> ShoalError:
        return ShoalError("APP_PROJECT_INVALID", f"{self.path}: {why}")

    def project(self, data: dict[str, Any]) -> AppProject:
        tool = self.table(data.get("tool", {}), "[tool]")
        shoal = self.table(tool.get("shoal", {}), "[tool.shoal]")
        if "project" not in data or "app" not in shoal:
            raise self.invalid("needs a [project] table and a [tool.shoal.app] table")
        project = self.table(data["project"], "[project]")
        app = self.table(shoal["app"], "[tool.shoal.app]")
        config = self.table(app.get("config", {}), "[tool.shoal.app.config]")
        for key, value in config.items():
            if problem := config_problem(key, value):
                raise self.invalid(f"[tool.shoal.app.config] {problem}")
        federations, default = self.federations(shoal.get("federations", {}))
        return AppProject(
            root=self.root,
            name=self.name(project.get("name"), "[project] name"),
            version=self.version(project.get("version")),
            publisher=self.name(app.get("publisher", "local"), "[tool.shoal.app] publisher"),
            serverapp=self.text(app.get("serverapp", "fedavg"), "[tool.shoal.app] serverapp", empty=False),
            clientapp=self.clientapp(app.get("clientapp")),
            client_args=self.text(app.get("client-args", ""), "[tool.shoal.app] client-args"),
            config=dict(config),
            federations=federations,
            default_federation=default,
        )

    def federations(self, raw: Any) -> tuple[dict[str, Federation], str | None]:
        """``[tool.shoal.federations]``: a ``default`` name and one table per federation."""
        table = self.table(raw, "[tool.shoal.federations]")
        out: dict[str, Federation] = {}
        for name, spec in table.items():
            if name == "default":
                continue
            key = f"[tool.shoal.federations.{name}]"
            spec = self.table(spec, key)
            kit_id = spec.get("kit-id")
            kit_path = spec.get("startup-kit")
            out[name] = Federation(
                name=name,
                kit_id=None if kit_id is None else self.text(kit_id, f"{key} kit-id", empty=False),
                startup_kit=None if kit_path is None else self.startup_kit(kit_path, f"{key} startup-kit"),
                study=self.text(spec.get("study", "default"), f"{key} study", empty=False),
            )
        default = table.get("default")
        if default is not None:
            default = self.text(default, "[tool.shoal.federations] default")
        return out, default or None

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.invalid(f"{key} must be a table, got {_shown(value)}")
        return value

    def text(self, value: Any, key: str, empty: bool = True) -> str:
        if not isinstance(value, str) or not (empty or value):
            raise self.invalid(f"{key} must be a{'' if empty else ' non-empty'} string, got {_shown(value)}")
        if "\0" in value:  # no path, argument or name holds one
            raise self.invalid(f"{key} must not hold a NUL character, got {_shown(value)}")
        return value

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not is_project_name(value):
            raise self.invalid(
                f"{key} must be a plain name (letters, digits, '-' and '_', starting and ending "
                f"with a letter or digit, at most {MAX_NAME_LENGTH} characters; no '.', which "
                f"would make the bundle's file name ambiguous), got {_shown(value)}"
            )
        return value

    def version(self, value: Any) -> str:
        if value is None:
            raise self.invalid("[project] needs a version")
        if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
            raise self.invalid(
                "[project] version must be a version such as 1.0.0 (letters, digits, '.', '+', '!', "
                "'-', '_', starting and ending with a letter or digit, at most 64 characters), "
                f"got {_shown(value)}"
            )
        return value

    def clientapp(self, value: Any) -> str:
        key = "[tool.shoal.app] clientapp"
        rel = self.text(value, key, empty=False)
        script = (self.root / rel).resolve()
        if not script.is_relative_to(self.root):
            raise self.invalid(f"{key} must name a script inside the project, got {rel!r}")
        if not script.is_file():
            raise self.invalid(f"{key} {rel!r} does not exist")
        return rel

    def startup_kit(self, value: Any, key: str) -> str:
        """Relative paths are the project's; kept a string (see shoal.app.federation)."""
        return str((self.root / self.text(value, key, empty=False)).resolve())


def _shown(value: Any) -> str:
    """A value as the refusal quotes it: its TOML kind and, when short, the value itself."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "an array"}
    kind = "a table" if isinstance(value, dict) else kinds.get(type(value), "a date or time")
    shown = repr(value)
    return f"{kind} ({shown})" if len(shown) <= 60 else kind


def config_problem(key: str, value: Any) -> str | None:
    """What is wrong with one app setting (pyproject.toml or ``--run-config``), or None.

    Settings become JSON (the job's meta.json and the workflow's arguments), so TOML dates and
    times are refused; ``min-clients`` is the job's min_clients, exactly as meta.json wants it
    (an integer, not 1.5 or true rounded down)."""
    if key == MIN_CLIENTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{MIN_CLIENTS} must be an integer >= 1, got {_shown(value)}"
        return None
    if not _is_json(value):
        return f"{key} must be a string, number, boolean, array or table, got {_shown(value)}"
    return None


def _is_json(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(_is_json(v) for v in value.values())
    return False


#: One ``KEY=VALUE`` of a ``--run-config`` argument: the value a quoted TOML string (which may
#: hold spaces) or a run of non-space characters, as Flower splits its ``-c`` arguments.
_PAIR = re.compile(r"""([^\s=]+)=('[^']*'|"[^"]*"|\S+)""")


def parse_run_config(args: list[str]) -> dict[str, Any]:
    """The overrides of ``--run-config``/``-c``, in Flower's forms: each argument is a ``.toml``
    file (its keys, nested tables joined with dots) or one or more space-separated ``K=V``.
    V is read as a TOML value when it is one (numbers, booleans, quoted strings), else as the
    plain string. A word that is not ``K=V`` is refused, as is every bad value: INVALID_ARGS
    naming it, before anything is built or sent."""
    out: dict[str, Any] = {}
    for arg in args:
        pairs = _config_file(arg) if arg.endswith(".toml") else _config_pairs(arg)
        for key, value in pairs.items():
            if problem := config_problem(key, value):
                raise ShoalError("INVALID_ARGS", f"--run-config {problem}")
            out[key] = value
    return out


def _config_pairs(arg: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    at = 0
    for match in _PAIR.finditer(arg):
        if arg[at : match.start()].strip():
            break
        key, raw = match.group(1), match.group(2)
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
        at = match.end()
    stray = arg[at:].split()
    if stray or not out:
        word = stray[0] if stray else arg
        raise ShoalError(
            "INVALID_ARGS",
            f"--run-config takes KEY=VALUE pairs (space-separated) or a .toml file; {word!r} is neither",
        )
    return out


def _config_file(arg: str) -> dict[str, Any]:
    """A ``.toml`` file of settings; nested tables become dotted keys, as Flower flattens them."""
    path = Path(arg).expanduser()
    if not path.is_file():
        raise ShoalError("INVALID_ARGS", f"--run-config {arg!r}: no such .toml file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ShoalError("INVALID_ARGS", f"--run-config {arg!r} is not valid TOML: {exc}") from exc

    def flat(table: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flat(doc, "")
