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
    "shoal server migrate-store": {"mutating": True, "idempotent": True, "output_modes": ["human", "json"]},
    "shoal site start": {"mutating": True, "idempotent": False, "output_modes": []},
}

EXAMPLES: dict[str, list[str]] = {
    "shoal provision": [
        "shoal provision -p project.yml -w ./workspace",
        "shoal provision -p project.yml -w ./workspace --force site-2",
    ],
    "shoal provision init": ["shoal provision init -o project.yml"],
    "shoal provision add-site": ["shoal provision add-site hospital-3 --org hospital3.org -w ./workspace"],
    "shoal provision add-user": [
        "shoal provision add-user lead@hospital3.org --org hospital3.org --role lead -w ./workspace"
    ],
    "shoal provision renew": ["shoal provision renew site-1 -w ./workspace"],
    "shoal provision revoke": ["shoal provision revoke site-2 -w ./workspace"],
    "shoal provision list": ["shoal provision list -w ./workspace --format json"],
    "shoal preflight": [
        "shoal preflight --startup-kit ./workspace/kits/site-1",
        "shoal preflight --startup-kit ./workspace/kits/server --format json",
    ],
    "shoal system sites": ["shoal system sites --format json"],
    "shoal system restart-site": ["shoal system restart-site site-1"],
    "shoal system shutdown-site": ["shoal system shutdown-site site-1"],
    "shoal system remove-site": ["shoal system remove-site site-2 --force"],
    "shoal build": ["shoal build examples/quickstart-app"],
    "shoal config add": ["shoal config add prod ~/kits/admin@example.org"],
    "shoal config list": ["shoal config list --format json"],
    "shoal config use": ["shoal config use prod"],
    "shoal config remove": ["shoal config remove prod"],
    "shoal job submit": [
        "shoal job submit -j ./my_job",
        "shoal job submit -j ./my_job --submit-token retry-001 --format json",
        "shoal job submit -j examples/hello-numpy --wait",
    ],
    "shoal job list": ["shoal job list -m 10 -r --format json", "shoal job list -n hello"],
    "shoal job meta": ["shoal job meta last", "shoal job meta 4070415 --format json"],
    "shoal job wait": ["shoal job wait <job_id> --timeout 3600 --format json"],
    "shoal job monitor": ["shoal job monitor last", "shoal job monitor <job_id> --format jsonl"],
    "shoal job download": [
        "shoal job download <job_id> -o ./downloads --format json",
        "shoal job download last --only metrics",
    ],
    "shoal job abort": ["shoal job abort <job_id> --force"],
    "shoal job delete": ["shoal job delete <job_id> --force"],
    "shoal job clone": ["shoal job clone last"],
    "shoal job logs": [
        "shoal job logs last --site all --tail 20",
        "shoal job logs <job_id> --site site-1 --follow",
        "shoal job logs <job_id> --since 2026-12-01T10:00:00Z --format json",
    ],
    "shoal job log-config": ["shoal job log-config <job_id> DEBUG --site site-1"],
    "shoal job plot": [
        "shoal job plot last",
        "shoal job plot <job_id> --metric accuracy --format json",
        "shoal job plot last --follow   # redraws as each round ends, until the job ends",
    ],
    "shoal dashboard": [
        "shoal dashboard                      # prints http://127.0.0.1:8750/?token=...: open it once",
        "shoal dashboard --port 0 --kit-id prod --study cancer",
    ],
    "shoal completion": [
        "source <(shoal completion bash)   # in ~/.bashrc",
        "source <(shoal completion zsh)    # in ~/.zshrc",
    ],
    "shoal job stats": ["shoal job stats last", "shoal job stats <job_id> --site site-1 --format json"],
    "shoal ls": ["shoal ls", "shoal ls --run-id last --format json"],
    "shoal new": ["shoal new myapp && shoal run myapp"],
    "shoal poc prepare": ["shoal poc prepare -n 3"],
    "shoal poc start": ["shoal poc start"],
    "shoal poc stop": ["shoal poc stop"],
    "shoal poc clean": ["shoal poc clean"],
    "shoal poc add-user": ["shoal poc add-user lead lead@example.com"],
    "shoal recipe list": ["shoal recipe list"],
    "shoal recipe show": ["shoal recipe show fedprox --format json"],
    "shoal run": [
        "shoal run examples/quickstart-app --stream",
        'shoal run -c "num-rounds=10 min-clients=2" --format json',
        "shoal run . prod --run-config settings.toml",
    ],
    "shoal server start": ["shoal server start -k ./kits/server"],
    "shoal server migrate-store": [
        "shoal server migrate-store -k ./kits/server",
        "shoal server migrate-store -k ./kits/server --merge",
    ],
    "shoal simulate": ["shoal simulate -j examples/hello-numpy -n 50", "shoal simulate -j ./my_job -o ./sim"],
    "shoal site start": ["shoal site start -k ./kits/site-1"],
    "shoal stop": ["shoal stop <run-id>", "shoal stop last --format json"],
    "shoal system status": ["shoal system status --format json"],
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
