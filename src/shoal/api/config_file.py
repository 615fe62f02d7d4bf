"""``~/.shoal/config.toml``: registered startup kits, the active one, and the POC workspace.

Read with tomllib; written by hand (the shape is small and fixed), atomically, mode 0600.
``SHOAL_HOME`` moves the whole folder (tests and the demo use it to stay out of ~/.shoal).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from shoal.errors import ShoalError


def shoal_home() -> Path:
    raw = os.environ.get("SHOAL_HOME", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".shoal"


def config_path() -> Path:
    return shoal_home() / "config.toml"


class ShoalConfig:
    """The parsed config file: kit id -> path, the active id, the POC workspace."""

    __slots__ = ("kits", "active", "poc_workspace")

    def __init__(
        self, kits: dict[str, str] | None = None, active: str | None = None, poc_workspace: str | None = None
    ) -> None:
        self.kits = dict(kits or {})
        self.active = active
        self.poc_workspace = poc_workspace


def load_config() -> ShoalConfig:
    path = config_path()
    if not path.exists():
        return ShoalConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ShoalError(
            "STARTUP_KIT_MISSING",
            f"cannot parse {path}: {exc}",
            hint="Fix the config file, or move it aside and run 'shoal poc prepare'.",
        ) from exc
    kits_section = raw.get("startup_kits", {})
    entries = kits_section.get("entries", {})
    poc = raw.get("poc", {})
    return ShoalConfig(
        kits={str(k): str(v) for k, v in entries.items()},
        active=kits_section.get("active") or None,
        poc_workspace=poc.get("workspace") or None,
    )


def _quote(value: str) -> str:
    """TOML basic strings share JSON's escapes for everything a path or id can hold."""
    return json.dumps(value, ensure_ascii=False)


def render(config: ShoalConfig) -> str:
    lines = ["version = 1", "", "[startup_kits]"]
    if config.active:
        lines.append(f"active = {_quote(config.active)}")
    lines += ["", "[startup_kits.entries]"]
    lines += [f"{_quote(k)} = {_quote(v)}" for k, v in sorted(config.kits.items())]
    if config.poc_workspace:
        lines += ["", "[poc]", f"workspace = {_quote(config.poc_workspace)}"]
    return "\n".join(lines) + "\n"


def save_config(config: ShoalConfig) -> None:
    import tempfile

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render(config))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
