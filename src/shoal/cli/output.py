r"""The only writer of stdout. Commands return a Result; this renders it in the chosen mode.

JSON mode prints exactly one envelope on stdout; human text, progress and prompts go to
stderr, so ``shoal ... --format json | jq`` always sees one document.

Human text carries what sites, scripts and other users wrote (logs, failure reasons, metric
names, job names), and a terminal obeys control characters wherever they come from: ESC
sequences retitle the window, clear the screen or hide text, ``\r`` overwrites a line, a bidi
override reverses what follows. So every human write goes through ``terminal_safe``, here and
nowhere else: controls and invisible format characters are shown as escapes (``\x1b``,
``\u202e``), never sent raw. JSON needs nothing of the kind: ``json.dumps`` escapes every
control character and everything outside ASCII, and the text arrives exact.
"""

from __future__ import annotations

import re
import sys

from shoal.errors import ShoalError
from shoal.wire.jsonout import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
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


# Printable by Python's reckoning, yet invisible: fillers and joiners that can hide text.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0")
# A lone \r (not a line end's \r\n), an ASCII control but \t and \n, or a run of non-ASCII.
_SUSPECT = re.compile(r"\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|[^\x00-\x7f]+")


def terminal_safe(text: str) -> str:
    r"""``text`` with every character a terminal would act on, or that shows nothing, written
    as an escape (``\x1b``, ``\u202e``, ``\U000e0041``): C0 controls but \t, \n and the \r of
    \r\n, DEL, C1 controls, format characters (bidi overrides and isolates, zero-width
    characters, tags), line and paragraph separators, surrogates and private use. Letters of
    every script, emoji and non-ASCII spaces pass as they are."""
    return _SUSPECT.sub(_escape_match, text)


def _escape_match(match: re.Match[str]) -> str:
    run = match.group()
    if run.isascii():
        return _escape(run)
    if run.isprintable() and _INVISIBLE.isdisjoint(run):
        return run
    import unicodedata

    return "".join(
        ch if (ch.isprintable() and ch not in _INVISIBLE) or unicodedata.category(ch) == "Zs" else _escape(ch)
        for ch in run
    )


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def write_human(text: str, stream: Any = None) -> None:
    r"""The one way human text reaches a terminal (stdout unless ``stream``): escaped, and
    ended with one newline."""
    out = stream or sys.stdout
    out.write(terminal_safe(text.rstrip("\n")) + "\n")


def labelled(label: str, value: object, width: int = 13) -> str:
    r"""``label`` then ``value`` in a column; the value's own further lines are indented under
    it, so text from a site ("\nStatus: FINISHED_OK") never starts a line a label could."""
    first, *rest = str(value).split("\n")
    return "\n".join([f"{label:<{width}}{first}", *(" " * width + line for line in rest)])


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
        write_human(result.human() if callable(result.human) else result.human)
    return result.exit_code


def render_error(err: ShoalError, fmt: str, usage: str | None = None, surface: str = "job") -> int:
    """Errors exit non-zero on both surfaces; the run surface keeps its own JSON shape."""
    if fmt == "json" and surface == "run":
        message = err.message + (f"\n{err.hint}" if err.hint else "")
        doc: dict[str, Any] = {"success": False, "error-message": message}
        if isinstance(err.data, dict) and "run-id" in err.data:
            doc.update(err.data)  # the run started: its id and status, whatever failed after
        write_json(doc)
    elif fmt in ("json", "jsonl"):
        write_json(error_envelope(err))
    else:
        if usage:
            write_human(usage + "\n", sys.stderr)
        lines = [err.message]
        if err.hint:
            lines.append(f"Hint: {err.hint}")
        lines.append(f"Code: {err.code} (exit {err.exit_code})")
        write_human("\n".join(lines), sys.stderr)
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
    write_human(message, sys.stderr)
    sys.stderr.flush()


def terminal_columns() -> int:
    """$COLUMNS, else the terminal's width, else 80 (shutil.get_terminal_size's rules, without
    importing shutil: ~6 ms of every call)."""
    import os

    from shoal import settings

    try:
        return int(settings.text(settings.COLUMNS))
    except ValueError:  # unset or not a number
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _sized_output() -> bool:
    """Is there a width to keep to: stdout is a terminal, or $COLUMNS says one."""
    from shoal import settings

    return settings.is_set(settings.COLUMNS) or sys.stdout.isatty()


def table(
    rows: Sequence[Mapping[str, object]],
    columns: list[tuple[str, str]],
    fit: tuple[str, ...] = (),
    width: int | None = None,
) -> str:
    """A plain aligned table (header, dashes, rows); empty string for no rows. Every table of
    the CLI is this one, so they look alike. Cells are never wrapped: when the table is wider
    than the terminal, the columns named in ``fit`` (free text such as names) are cut, with
    "…", down to their title's width; ids, statuses and times are never cut. Into a pipe or a
    file (no terminal, no $COLUMNS) nothing is cut."""
    if not rows:
        return ""
    cells = [[str(r.get(key, "")).replace("\n", "\\n") for key, _ in columns] for r in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]
    if width is None and _sized_output():
        width = terminal_columns()
    room = (width or 1 << 30) - 2 * (len(columns) - 1)  # into a pipe or a file: nothing is cut
    for i, (key, title) in enumerate(columns):
        excess = sum(widths) - room
        if excess > 0 and key in fit:
            widths[i] = max(len(title), 1, widths[i] - excess)

    def cut(value: str, w: int) -> str:
        return value if len(value) <= w else value[: w - 1] + "…"

    def fmt_row(vals: list[str]) -> str:
        return "  ".join(cut(v, w).ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    lines = [fmt_row([t for _, t in columns]), fmt_row(["-" * w for w in widths])]
    lines += [fmt_row(c) for c in cells]
    return "\n".join(lines)


def utc_stamp(iso: str | None) -> str:
    """A server time (ISO 8601 with offset) for people and for the run surface:
    ``YYYY-MM-DD HH:MM:SSZ`` in UTC (seconds truncated, as Flower shows them), "N/A" if unset.
    The server sends UTC (``+00:00``): that is cut to shape without importing datetime."""
    if not iso:
        return "N/A"
    if iso.endswith("+00:00") and len(iso) >= 19 and iso[10] == "T":
        return f"{iso[:10]} {iso[11:19]}Z"
    from datetime import UTC, datetime  # another offset: converted

    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def clock(seconds: float | None) -> str:
    """A duration as ``HH:MM:SS``, past a day ``Nd HH:MM:SS`` (as Flower shows elapsed
    times); ``00:00:00`` for none (not started)."""
    whole = max(0, int(seconds or 0))
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


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
    sys.stderr.write(terminal_safe(f"{question} [y/N] "))
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")
