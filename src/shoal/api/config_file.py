"""``<shoal home>/config.toml``: registered startup kits, the active one, and the POC workspace.

Read with tomllib; written by hand (the shape is small and fixed), atomically, mode 0600, so
a crash mid-write never leaves a half file and other users cannot read which kits exist.
Every parse leaves ``.config.parsed.json`` beside it (the text it came from and the result):
importing tomllib costs ~15 ms, a tenth of a CLI call, so later calls read the JSON while the
TOML text is unchanged. The TOML file stays the one source of truth; hand edits are seen.
``SHOAL_HOME`` moves the whole folder (tests and the demo use it to stay out of ~/.shoal).
Standard library only, and paths are plain strings (``os.path``): every server-connected
command reads this file, and ``pathlib`` (with ``urllib.parse``) is ~8 ms of a CLI call.
"""

from __future__ import annotations

import json
import os

from shoal import settings
from shoal.errors import ShoalError

CONFIG_VERSION = 1
_PARSE_HINT = "Fix the config file, or move it aside and run 'shoal poc prepare'."


def shoal_home() -> str:
    """``$SHOAL_HOME`` if set and non-blank, else ``~/.shoal``; always absolute."""
    return os.path.abspath(os.path.expanduser(settings.text(settings.HOME)))


def config_path() -> str:
    return os.path.join(shoal_home(), "config.toml")


def _parsed_cache_path() -> str:
    return os.path.join(shoal_home(), ".config.parsed.json")


class ShoalConfig:
    """The parsed config file: kit id -> path, the active id, the POC workspace."""

    __slots__ = ("kits", "active", "poc_workspace")

    def __init__(
        self, kits: dict[str, str] | None = None, active: str | None = None, poc_workspace: str | None = None
    ) -> None:
        self.kits = dict(kits or {})
        self.active = active
        self.poc_workspace = poc_workspace


def _bad(path: str, why: str) -> ShoalError:
    return ShoalError("STARTUP_KIT_MISSING", f"cannot parse {path}: {why}", hint=_PARSE_HINT)


def _table(raw: dict[str, object], key: str, path: str) -> dict[str, object]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _bad(path, f"'{key}' must be a table")
    return value


def _optional_str(raw: dict[str, object], key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(path, f"'{key}' must be a string")
    return value or None


def load_config() -> ShoalConfig:
    """The config file, or an empty config if there is none yet.

    A file that does not parse or has the wrong shape is an error, never silently treated as
    empty: the next save would otherwise wipe the user's registrations.
    """
    path = config_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return ShoalConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, str(exc)) from exc
    cached = _read_parsed(text)
    if cached is not None:
        return cached
    config = _parse(path, text)
    _write_parsed(text, config)
    return config


def _parse(path: str, text: str) -> ShoalConfig:
    import tomllib

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, str(exc)) from exc
    version = raw.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise _bad(path, f"version {version!r} is not one this shoal understands (expected {CONFIG_VERSION})")
    kits_section = _table(raw, "startup_kits", path)
    entries = _table(kits_section, "entries", path)
    if not all(isinstance(v, str) for v in entries.values()):
        raise _bad(path, "every [startup_kits.entries] value must be a path string")
    return ShoalConfig(
        kits={str(k): str(v) for k, v in entries.items()},
        active=_optional_str(kits_section, "active", path),
        poc_workspace=_optional_str(_table(raw, "poc", path), "workspace", path),
    )


def _read_parsed(text: str) -> ShoalConfig | None:
    """The parse of ``text`` saved by an earlier call, if it was of exactly this text."""
    try:
        with open(_parsed_cache_path(), encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("source") != text:
            return None
        return ShoalConfig(
            kits={str(k): str(v) for k, v in saved["kits"].items()},
            active=saved["active"],
            poc_workspace=saved["poc_workspace"],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, stale or damaged: parse the TOML


def _write_parsed(text: str, config: ShoalConfig) -> None:
    """Best effort (a read-only home only costs the next call a parse); atomic, mode 0600."""
    cache = _parsed_cache_path()
    tmp = os.path.join(os.path.dirname(cache), f".config.parsed.{os.getpid()}.tmp")
    doc = {
        "source": text,
        "kits": config.kits,
        "active": config.active,
        "poc_workspace": config.poc_workspace,
    }
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, cache)
    except OSError:
        _remove_quietly(tmp)


def _quote(value: str) -> str:
    """A TOML basic string: escape the quote, the backslash and every control character."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render(config: ShoalConfig) -> str:
    """The file's text. Keys are always quoted, so any kit id (emails, dots, spaces) round-trips."""
    lines = [f"version = {CONFIG_VERSION}", "", "[startup_kits]"]
    if config.active:
        lines.append(f"active = {_quote(config.active)}")
    lines += ["", "[startup_kits.entries]"]
    lines += [f"{_quote(k)} = {_quote(v)}" for k, v in sorted(config.kits.items())]
    if config.poc_workspace:
        lines += ["", "[poc]", f"workspace = {_quote(config.poc_workspace)}"]
    return "\n".join(lines) + "\n"


def save_config(config: ShoalConfig) -> str:
    """Write the file atomically: temp file in the same folder, fsync, os.replace, mode 0600.

    Its parse is saved beside it too, so the next command after ``poc prepare`` or ``config
    use`` does not pay for tomllib either.
    """
    import tempfile  # only writers pay for it

    text = render(config)
    path = config_path()
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(folder)
    _write_parsed(text, ShoalConfig(config.kits, config.active or None, config.poc_workspace or None))
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable; some filesystems cannot fsync a folder, which is fine."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
