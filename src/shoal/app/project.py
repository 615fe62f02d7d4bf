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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.app.federation import Federation
from shoal.errors import ShoalError

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def is_project_name(name: str) -> bool:
    """A name Python packaging accepts for a project (PEP 508): those characters, starting and
    ending with a letter or digit, so not ".", "..", ".hidden" or "-x" either."""
    return bool(name) and set(name) <= NAME_CHARS and name[0].isalnum() and name[-1].isalnum()


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


def _invalid(path: Path, why: str) -> ShoalError:
    return ShoalError("APP_PROJECT_INVALID", f"{path}: {why}")


def _plain(value: Any, what: str, path: Path) -> str:
    if not isinstance(value, str) or not value or not set(value) <= NAME_CHARS:
        raise _invalid(path, f"{what} must be a plain name (letters, digits, '-', '_', '.'), got {value!r}")
    return value


def load_project(app_dir: Path) -> AppProject:
    root = app_dir.expanduser().resolve()
    path = root / "pyproject.toml"
    if not path.is_file():
        raise ShoalError("APP_PROJECT_MISSING", f"no pyproject.toml in {root}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(path, f"not valid TOML ({exc})") from exc
    project = data.get("project")
    app = data.get("tool", {}).get("shoal", {}).get("app")
    if not isinstance(project, dict) or not isinstance(app, dict):
        raise _invalid(path, "needs a [project] table and a [tool.shoal.app] table")
    version = project.get("version")
    if not isinstance(version, str) or not version:
        raise _invalid(path, "[project] needs a version")
    clientapp = app.get("clientapp")
    if not isinstance(clientapp, str) or not (root / clientapp).resolve().is_relative_to(root):
        raise _invalid(path, "[tool.shoal.app] clientapp must name a script inside the project")
    if not (root / clientapp).is_file():
        raise _invalid(path, f"clientapp {clientapp!r} does not exist")
    config = app.get("config", {})
    if not isinstance(config, dict):
        raise _invalid(path, "[tool.shoal.app.config] must be a table")
    feds_raw = data.get("tool", {}).get("shoal", {}).get("federations", {})
    federations: dict[str, Federation] = {}
    for name, spec in feds_raw.items():
        if name == "default":
            continue
        if not isinstance(spec, dict):
            raise _invalid(path, f"federation {name!r} must be a table")
        kit_path = spec.get("startup-kit")
        federations[name] = Federation(
            name=name,
            kit_id=spec.get("kit-id"),
            startup_kit=str((root / kit_path).resolve()) if isinstance(kit_path, str) else None,
            study=str(spec.get("study", "default")),
        )
    default = feds_raw.get("default")
    return AppProject(
        root=root,
        name=_plain(project.get("name"), "[project] name", path),
        version=version,
        publisher=_plain(app.get("publisher", "local"), "publisher", path),
        serverapp=str(app.get("serverapp", "fedavg")),
        clientapp=clientapp,
        client_args=str(app.get("client-args", "")),
        config=dict(config),
        federations=federations,
        default_federation=str(default) if default else None,
    )


def parse_run_config(pairs: list[str]) -> dict[str, Any]:
    """``K=V`` overrides; V is read as a TOML value when it is one (numbers, booleans, quoted)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ShoalError("INVALID_ARGS", f"--run-config takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out
