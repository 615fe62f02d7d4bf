"""``shoal completion bash|zsh``: a shell completion script generated from shoal's own parsers.

Every command, subcommand, option and choice the parsers know goes into one bash function, so
the script can never name a command that does not exist or miss one that does: it is rebuilt
from the parsers each time it is asked for. zsh runs the same function through its bash
completion layer (``bashcompinit``). Standard library only.
"""

from __future__ import annotations

import argparse
import re

from shoal.cli.output import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SHELLS = ("bash", "zsh")
#: Words the script may hold unquoted in a case pattern and compgen's word list.
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.:@/+=-]+$")


def register(groups: Any) -> None:
    from shoal.cli.main import Parser

    p: Parser = groups.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    p.set_defaults(handler=cmd_completion)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_words(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], tuple[list[str], dict[str, list[str]]]]:
    """For each command path (``()``, ``("job",)``, ``("job", "list")``, ...): the words that may
    follow it (subcommands, options, a positional's choices) and each option's choices."""
    words: list[str] = []
    choices: dict[str, list[str]] = {}
    subs = _subparsers(parser)
    words.extend(subs)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        names = [s for s in action.option_strings if s.startswith("--")] or list(action.option_strings)
        words.extend(names)
        if action.choices is not None:
            listed = [str(c) for c in action.choices]
            if action.option_strings:
                for name in action.option_strings:
                    choices[name] = listed
            else:
                words.extend(listed)
    found = {path: ([w for w in dict.fromkeys(words) if SAFE_WORD.match(w)], choices)}
    for name, child in subs.items():
        found.update(command_words(child, (*path, name)))
    return found


def bash_function(parser: argparse.ArgumentParser) -> str:
    table = command_words(parser)
    global_opts = ["--format"]  # the one option that stands anywhere after the command
    paths = sorted((" ".join(p) for p in table if p), key=lambda p: (p.count(" "), p))
    lines = [
        "_shoal_complete() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="" word i',
        '    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        case "${path:+$path }$word" in',
        f'            {"|".join(repr_case(p) for p in paths)}) path="${{path:+$path }}$word" ;;',
        "        esac",
        "    done",
        '    local words=""',
        '    case "$path:$prev" in',
    ]
    for path, (_, choices) in sorted(table.items()):
        for option, listed in sorted(choices.items()):
            safe = [c for c in listed if SAFE_WORD.match(c)]
            if safe and SAFE_WORD.match(option):
                lines.append(
                    f'        {repr_case(" ".join(path) + ":" + option)}) words="{" ".join(safe)}" ;;'
                )
    lines.append('        *:--format) words="txt json jsonl default" ;;')
    lines.append('        *) case "$path" in')
    for path, (words, _) in sorted(table.items()):
        shown = list(dict.fromkeys([*words, *global_opts])) if path else words
        lines.append(f'            {repr_case(" ".join(path))}) words="{" ".join(shown)}" ;;')
    lines += [
        "           esac ;;",
        "    esac",
        '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "}",
        "complete -o default -F _shoal_complete shoal",
    ]
    return "\n".join(lines) + "\n"


def repr_case(text: str) -> str:
    """A case pattern matching ``text`` exactly (quoted: a path holds spaces, a choice '*'-free)."""
    return f'"{text}"'


def script(shell: str) -> str:
    from shoal.cli.main import build_parser

    body = bash_function(build_parser(None))
    if shell == "zsh":
        head = (
            "# shoal completion for zsh: add  source <(shoal completion zsh)  to ~/.zshrc\n"
            "autoload -U +X compinit && { (( $+functions[compdef] )) || compinit; }\n"
            "autoload -U +X bashcompinit && bashcompinit\n"
        )
    else:
        head = "# shoal completion for bash: add  source <(shoal completion bash)  to ~/.bashrc\n"
    return head + body


def cmd_completion(args: argparse.Namespace) -> Result:
    text = script(args.shell)
    return Result({"shell": args.shell, "script": text}, human=text.rstrip("\n"))
