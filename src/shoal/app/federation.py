"""Which federation a run command talks to, and whether a folder is an app project at all.

Kept apart from ``project`` (tomllib, dataclasses): ``shoal ls`` and ``stop`` outside an app
project need only these, and every millisecond of their import is cold start (so paths are
strings here: ``pathlib`` brings ``urllib.parse``).
"""

from __future__ import annotations

import os


class Federation:
    """A ``[tool.shoal.federations.NAME]`` entry: which admin kit, which study."""

    __slots__ = ("name", "kit_id", "startup_kit", "study")

    def __init__(
        self,
        name: str,
        kit_id: str | None = None,
        startup_kit: str | None = None,  # absolute (resolved against the project folder)
        study: str = "default",
    ) -> None:
        self.name = name
        self.kit_id = kit_id
        self.startup_kit = startup_kit
        self.study = study

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Federation):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    def __repr__(self) -> str:
        return f"Federation({self.name!r}, kit_id={self.kit_id!r}, startup_kit={self.startup_kit!r})"


def is_app_project(app_dir: str | os.PathLike[str]) -> bool:
    """Whether ``app_dir`` holds a pyproject.toml that declares a shoal app (any validity)."""
    path = os.path.join(os.path.expanduser(app_dir), "pyproject.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return os.path.isfile(path)  # unreadable: let load_project say what is wrong
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True  # broken: let load_project say what is wrong
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        return True  # `tool = 5`: broken, as above
    shoal = tool.get("shoal", {})
    return not isinstance(shoal, dict) or "app" in shoal  # a broken app table included
