"""Generate docs/errors.md from the error catalogue and docs/cli-reference.md from the parser.

Run `python scripts/gen_docs.py` after changing either; tests/test_docs.py fails while they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shoal.cli.main import build_parser
from shoal.cli.schema import EXAMPLES
from shoal.errors import CATALOGUE
from shoal.settings import ENV, SETTINGS, STORAGE_JSON, Setting

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: The README's settings tables stand between these two lines (the rest of it is written by hand).
SETTINGS_BEGIN = "<!-- settings: generated from src/shoal/settings.py by scripts/gen_docs.py -->"
SETTINGS_END = "<!-- end of the generated settings -->"


def errors_md() -> str:
    lines = [
        "# Error codes",
        "",
        "Generated from `src/shoal/errors.py` by `scripts/gen_docs.py`. The code, exit code and HTTP",
        "status are the contract; messages and hints may be reworded.",
        "",
        "| code | exit | HTTP | message | hint |",
        "|---|---|---|---|---|",
    ]
    for code, spec in sorted(CATALOGUE.items()):
        lines.append(f"| `{code}` | {spec.exit_code} | {spec.http_status} | {spec.message} | {spec.hint} |")
    return "\n".join(lines) + "\n"


def _walk(parser: argparse.ArgumentParser, prefix: str, out: list[str]) -> None:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    # `shoal provision -p ...` runs as well as its subcommands: document both
    runs_alone = parser.get_default("handler") is not None
    if not subs or runs_alone:
        out += [f"## `{prefix}`", "", "```", parser.format_help().rstrip(), "```", ""]
        examples = EXAMPLES.get(prefix)
        if examples:
            out += ["Examples:", "", "```bash", *examples, "```", ""]
    if not subs:
        return
    for name, child in sorted(subs[0].choices.items()):
        _walk(child, f"{prefix} {name}", out)


def cli_md() -> str:
    out = [
        "# CLI reference",
        "",
        "Generated from the argparse parsers by `scripts/gen_docs.py`. `--format json` may stand",
        "anywhere after the command.",
        "",
        "Exit codes: 0 ok; 1 the job or the server said no; 2 connection, authentication or startup",
        "kit; 3 timeout; 4 invalid arguments or local state; 5 internal error (each error code's exit",
        "code is in errors.md); 130 interrupted (Ctrl-C); 141 stdout's reader went away (`shoal job",
        "list | head -1`): the command ends quietly, as `cat` or `grep` would, and what it did on the",
        "server stands.",
        "",
    ]
    _walk(build_parser(), "shoal", out)
    return "\n".join(out)


def _settings_rows(source: str) -> list[str]:
    def row(s: Setting) -> str:
        kind = f"{s.kind}, secret" if s.secret else s.kind
        default = f"`{s.default}`" if s.default else ""
        return f"| `{s.name}` | {kind} | {s.readers} | {default} | {s.meaning} |"

    return [row(s) for s in SETTINGS if s.source == source]


def readme_md() -> str:
    """README.md with its settings tables made from ``shoal.settings``."""
    text = (REPO / "README.md").read_text()
    head, rest = text.split(SETTINGS_BEGIN + "\n", 1)
    _, tail = rest.split(SETTINGS_END + "\n", 1)
    columns = ["| type | read by | default | what it does |", "|---|---|---|---|---|"]
    table = [
        "A value of the wrong type stops the program that reads it with `INVALID_ARGS` naming the",
        "variable; a secret's value is never shown, in an error, a log line or here.",
        "",
        "| variable " + columns[0],
        columns[1],
        *_settings_rows(ENV),
        "",
        f"The server also reads `<server kit>/{STORAGE_JSON}` (optional; each key optional):",
        "",
        "| key " + columns[0],
        columns[1],
        *_settings_rows(STORAGE_JSON),
        "",
    ]
    return head + SETTINGS_BEGIN + "\n" + "\n".join(table) + "\n" + SETTINGS_END + "\n" + tail


def generated() -> dict[Path, str]:
    import os

    os.environ["COLUMNS"] = "100"  # the CLI's help is wrapped to this width
    return {
        DOCS / "errors.md": errors_md(),
        DOCS / "cli-reference.md": cli_md(),
        REPO / "README.md": readme_md(),
    }


if __name__ == "__main__":
    for path, text in generated().items():
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
