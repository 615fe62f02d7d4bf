"""The only writer of stdout. Commands return a Result; this renders it in the chosen mode.

JSON mode prints exactly one envelope on stdout; human text, progress and prompts go to
stderr, so ``shoal ... --format json | jq`` always sees one document.
"""

from __future__ import annotations

import sys

from shoal.errors import ShoalError
from shoal.wire.jsonout import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SCHEMA_VERSION = "1"


class Result:
    """What a command produced: data for JSON, text for people, and the exit code.

    ``human`` may be a function that builds the text: then JSON mode never pays for it (a
    rich table costs ~40 ms of imports)."""

    __slots__ = ("data", "human", "exit_code")

    def __init__(self, data: Any, human: str | Callable[[], str] | None = None, exit_code: int = 0) -> None:
        self.data = data
        self.human = human
        self.exit_code = exit_code


def envelope(data: Any, exit_code: int = 0) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "status": "ok", "exit_code": exit_code, "data": data}


def error_envelope(err: ShoalError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": "error",
        "exit_code": err.exit_code,
        "error_code": err.code,
        "message": err.message,
        "hint": err.hint,
    }
    if err.data is not None:
        out["data"] = err.data
    return out


def write_json(doc: Any) -> None:
    sys.stdout.write(dumps(doc) + "\n")  # strict JSON: a NaN metric prints as null
    sys.stdout.flush()


def render_result(result: Result, fmt: str, surface: str = "job") -> int:
    """``surface`` "run" prints ``{"success": true, **data}`` instead of the job envelope."""
    if fmt == "json" and surface == "run":
        write_json({"success": result.exit_code == 0, **result.data})
    elif fmt == "json":
        write_json(envelope(result.data, result.exit_code))
    elif result.human:
        text = result.human() if callable(result.human) else result.human
        sys.stdout.write(text.rstrip("\n") + "\n")
    return result.exit_code


def render_error(err: ShoalError, fmt: str, usage: str | None = None, surface: str = "job") -> int:
    """Errors exit non-zero on both surfaces; the run surface keeps its own JSON shape."""
    if fmt == "json" and surface == "run":
        message = err.message + (f"\n{err.hint}" if err.hint else "")
        write_json({"success": False, "error-message": message})
    elif fmt in ("json", "jsonl"):
        write_json(error_envelope(err))
    else:
        if usage:
            sys.stderr.write(usage.rstrip("\n") + "\n\n")
        lines = [err.message]
        if err.hint:
            lines.append(f"Hint: {err.hint}")
        lines.append(f"Code: {err.code} (exit {err.exit_code})")
        sys.stderr.write("\n".join(lines) + "\n")
    return err.exit_code


def number_text(value: Any, spec: str = ".6g") -> str:
    """A server-sent number for people: ``spec``-formatted when it is one, "n/a" for null (the
    server sends a NaN or infinite metric as null), any other value as it is. Human text built
    from server data goes through here: a format spec applied to None is a crash."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return "n/a" if value is None else str(value)


def progress(message: str) -> None:
    """Human progress: always stderr, in every mode."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain aligned table (header, dashes, rows); empty string for no rows."""
    if not rows:
        return ""
    cells = [[str(r.get(key, "")) for key, _ in columns] for r in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]

    def fmt_row(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    lines = [fmt_row([t for _, t in columns]), fmt_row(["-" * w for w in widths])]
    lines += [fmt_row(c) for c in cells]
    return "\n".join(lines)


def emit_event(doc: dict[str, Any]) -> None:
    """One JSONL event on stdout, flushed at once (monitor streams these)."""
    write_json({"schema_version": SCHEMA_VERSION, **doc})


def error_event(err: ShoalError) -> dict[str, Any]:
    """A terminal JSONL event for a failure that ended the stream (connection, auth, not found)."""
    return {**error_envelope(err), "event": "terminal", "terminal": True}


def confirm(question: str, force: bool) -> bool:
    """Ask on the terminal; without one, refuse unless --force (scripts must say what they mean)."""
    if force:
        return True
    if not sys.stdin.isatty():
        raise ShoalError("CONFIRMATION_REQUIRED", "stdin is not a terminal")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")
