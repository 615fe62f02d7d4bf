"""``--schema``: a JSON description of any command, generated from its argparse parser.

Agents discover arguments and contracts without scraping help text. The arguments come from
the parser itself, so they cannot drift; what the parser cannot know (is the command
mutating? idempotent? retry-safe?) lives in one table below.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~6 ms to import, and every command loads this module
    from typing import Any

SCHEMA_VERSION = "1"

_READ = {"mutating": False, "idempotent": True}
_NO_TOKEN = {"supported": False}

# Contract facts per command; anything not listed is a read-only, idempotent, json-only command.
CONTRACTS: dict[str, dict[str, Any]] = {
    "shoal job submit": {
        "mutating": True,
        "idempotent": False,
        "retry_token": {
            "supported": True,
            "flag": "--submit-token",
            "scope": "study + submitter + token",
            "retry_safe_when_present": True,
            "effect": "Retries with the same token and the same job content return the same job_id; "
            "different content with the same token is refused with SUBMIT_TOKEN_CONFLICT.",
        },
    },
    "shoal job download": {"mutating": True, "idempotent": False},
    "shoal job abort": {"mutating": True, "idempotent": True},
    "shoal job delete": {"mutating": True, "idempotent": False},
    "shoal job clone": {"mutating": True, "idempotent": False},
    "shoal job log-config": {"mutating": True, "idempotent": True},
    "shoal job monitor": {"streaming": True, "output_modes": ["json", "jsonl"]},
    "shoal config add": {"mutating": True, "idempotent": False},
    "shoal config use": {"mutating": True, "idempotent": True},
    "shoal config remove": {"mutating": True, "idempotent": True},
    "shoal poc prepare": {"mutating": True, "idempotent": False},
    "shoal poc start": {"mutating": True, "idempotent": False},
    "shoal poc stop": {"mutating": True, "idempotent": True},
    "shoal poc clean": {"mutating": True, "idempotent": True},
    "shoal server start": {"mutating": True, "idempotent": False, "output_modes": []},
    "shoal site start": {"mutating": True, "idempotent": False, "output_modes": []},
}

EXAMPLES: dict[str, list[str]] = {
    "shoal job submit": [
        "shoal job submit -j ./my_job",
        "shoal job submit -j ./my_job --submit-token retry-001 --format json",
    ],
    "shoal job wait": ["shoal job wait <job_id> --timeout 3600 --format json"],
    "shoal job download": ["shoal job download <job_id> -o ./downloads --format json"],
    "shoal job list": ["shoal job list -m 10 -r --format json"],
}


def _arg_type(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "boolean"
    if action.type is int or getattr(action.type, "__name__", "") in ("non_negative_int", "positive_int"):
        return "integer"
    if action.type is float or getattr(action.type, "__name__", "") in ("non_negative", "positive"):
        return "number"
    name = (action.dest or "").lower()
    if name.endswith("_id"):  # --kit-id, kit_id, job_id: names, not places on disk
        return "string"
    if any(part in name for part in ("dir", "path", "folder", "file", "kit")) and action.type is None:
        return "path"
    return "string"


def describe_argument(action: argparse.Action) -> dict[str, Any]:
    if action.option_strings:
        name = max(action.option_strings, key=len)
    else:
        name = action.dest
    arg: dict[str, Any] = {
        "name": name,
        "type": _arg_type(action),
        "required": bool(action.required),
        "description": action.help or "",
        "default": action.default if action.default is not argparse.SUPPRESS else None,
    }
    if action.choices is not None:
        arg["choices"] = list(action.choices)
    aliases = [o for o in action.option_strings if o != name]
    if aliases:
        arg["aliases"] = aliases
    if action.nargs in ("?", "*", "+"):
        arg["nargs"] = action.nargs
    return arg


def describe(parser: argparse.ArgumentParser) -> dict[str, Any]:
    command = parser.prog
    contract = {
        "streaming": False,
        "output_modes": ["json"],
        **_READ,
        "retry_token": _NO_TOKEN,
        **CONTRACTS.get(command, {}),
    }
    args = [
        describe_argument(a)
        for a in parser._actions
        # hidden arguments (a deprecated command's swallowed rest) are no part of the contract
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "description": parser.description or "",
        "args": args,
        "examples": EXAMPLES.get(command, []),
        **contract,
    }


def add_schema_flags(parser: argparse.ArgumentParser) -> None:
    """Give every leaf command a ``--schema`` flag (handled before argument validation)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.add_argument(
            "--schema", action="store_true", help="print this command's schema as JSON and exit"
        )
        return
    for child in {id(c): c for c in subs[0].choices.values()}.values():
        add_schema_flags(child)
