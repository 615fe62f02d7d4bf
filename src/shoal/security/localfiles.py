"""Reading the operator's files in ``<server kit>/local/``: JSON an operator edits by hand.

authorization.json, studies.json, limits.json and revoked.json decide who may do what, so a
damaged or wrongly typed one must stop the server with an error naming the file and the key
(LOCAL_FILE_ERROR), never be half-read: a string where a list belongs iterates as characters,
and ``"x" in "lead@x.org"`` is a substring test, so both would silently change who is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def operator_file_error(path: Path, problem: str) -> ShoalError:
    return ShoalError(
        "LOCAL_FILE_ERROR",
        f"{path}: {problem}",
        path=str(path),
        hint=f"Fix {path} (it is JSON the server reads at start) and start the server again.",
    )


def read_operator_json(path: Path) -> Any:
    """The file's JSON, or None if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise operator_file_error(path, f"cannot be read: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise operator_file_error(path, f"is not valid JSON: {exc}") from exc


def json_object(value: Any, path: Path, key: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        where = f"'{key}'" if key else "the file"
        raise operator_file_error(path, f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def string_list(value: Any, path: Path, key: str) -> list[str]:
    """A list of strings, or LOCAL_FILE_ERROR naming ``key`` (a lone string is refused)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise operator_file_error(path, f"'{key}' must be a list of strings, not {value!r:.80}")
    return value


def byte_count(value: Any, path: Path, key: str) -> int:
    """A whole number of bytes >= 0 (true/false and "lots" are refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise operator_file_error(path, f"'{key}' must be a whole number of bytes >= 0, not {value!r:.80}")
    return value


def seconds(value: Any, path: Path, key: str) -> float:
    """A positive, finite number of seconds (0, NaN, ``"10"`` and true are refused)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise operator_file_error(path, f"'{key}' must be a number of seconds > 0, not {value!r:.80}")
    return float(value)


def positive_count(value: Any, path: Path, key: str) -> int:
    """A whole number >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise operator_file_error(path, f"'{key}' must be a whole number >= 1, not {value!r:.80}")
    return value
