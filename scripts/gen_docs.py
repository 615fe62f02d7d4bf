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

DOCS = Path(__file__).resolve().parents[1] / "docs"


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


def generated() -> dict[Path, str]:
    import os

    os.environ["COLUMNS"] = "100"
    return {DOCS / "errors.md": errors_md(), DOCS / "cli-reference.md": cli_md()}


if __name__ == "__main__":
    for path, text in generated().items():
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
