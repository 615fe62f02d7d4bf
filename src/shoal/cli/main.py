"""``shoal``: parse, call the SDK, render. The only place that turns errors into exit codes.

Imports stay standard-library only here and at the top of every command module; heavy
packages (aiohttp, numpy, cryptography) load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable

from shoal import __version__, settings
from shoal.cli.output import Result, emit_event, error_event, render_error, render_result, terminal_columns
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from shoal.api.client import AdminClient

# argparse looks each of its messages up in the "argparse" gettext domain, for which Python
# ships no translations; every lookup imports locale and probes for .mo files (~3 ms of each CLI
# call). shoal's own messages are English, and so stay argparse's.
argparse._ = str  # type: ignore[attr-defined]
argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore[attr-defined]

FORMATS = ("txt", "json", "jsonl")
Handler = Callable[[argparse.Namespace], Result]


class ArgumentsRejected(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus its ``import shutil`` (with bz2 and lzma: ~6 ms of every
    call, since ``add_argument`` builds a formatter) just to learn the terminal's width."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # what argparse does with shutil's answer
        super().__init__(prog, indent_increment, max_help_position, width)


class UnknownChoice(Exception):
    """A word that is none of an argument's choices (a mistyped command): told in one line
    with the nearest choices, not with the whole help."""

    def __init__(self, parser: argparse.ArgumentParser, action: argparse.Action, value: str) -> None:
        super().__init__(value)
        self.parser = parser
        self.value = value
        self.choices = [str(c) for c in action.choices or ()]
        self.is_command = isinstance(action, argparse._SubParsersAction)

    def error(self) -> ShoalError:
        import difflib  # only on this error's path

        near = difflib.get_close_matches(self.value, self.choices, n=3, cutoff=0.6)
        prog = self.parser.prog
        what = f"'{prog}' has no command" if self.is_command else "not one of the choices:"
        shown = self.value if len(self.value) <= 40 else self.value[:40] + "..."
        if near:
            say = " or ".join(f"'{prog} {n}'" if self.is_command else f"'{n}'" for n in near)
            hint = f"Did you mean {say}?"
        else:
            hint = f"Run '{prog} --help' for usage."
        detail = f"{what} '{shown}'" if self.is_command else f"'{shown}' is {what} {', '.join(self.choices)}"
        return ShoalError("INVALID_ARGS", detail, hint=hint)


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors follow the output mode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ArgumentsRejected(self, message)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and isinstance(value, str) and value not in action.choices:
            raise UnknownChoice(self, action, value)
        super()._check_value(action, value)


#: Other names of the formats: Flower's ``--format default`` is the human view (seed 003), and
#: names are read case-insensitively, as Flower reads them (``--format JSON``).
FORMAT_ALIASES = {"default": "txt"}


def hoist_format(argv: list[str]) -> tuple[str, list[str]]:
    """``--format X`` may stand anywhere after the command; take it out before parsing. The
    name comes back in its canonical form (``JSON`` is ``json``, ``default`` is ``txt``)."""
    fmt = "txt"
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--format" and i + 1 < len(argv):
            fmt = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    fmt = fmt.lower()
    return FORMAT_ALIASES.get(fmt, fmt), rest


# Top-level command -> module that registers it. Only the family a command line names is
# built: argparse construction (and its gettext lookups) is a visible share of cold start.
FAMILIES = {
    "job": "shoal.cli.job",
    "config": "shoal.cli.config",
    "poc": "shoal.cli.poc",
    "server": "shoal.cli.daemons",
    "site": "shoal.cli.daemons",
    "system": "shoal.cli.system",
    "run": "shoal.cli.runs",
    "ls": "shoal.cli.runs",
    "stop": "shoal.cli.runs",
    "new": "shoal.cli.runs",
    "build": "shoal.cli.runs",
    "simulate": "shoal.cli.simulate",
    "recipe": "shoal.cli.recipes",
    "provision": "shoal.cli.provision",
    "preflight": "shoal.cli.preflight",
    "completion": "shoal.cli.completion",
    "dashboard": "shoal.cli.dashboard",
}


# Commands of the run surface (seed 003): their JSON is {"success": ..., ...}, not the envelope.
RUN_SURFACE = frozenset({"run", "ls", "stop", "new", "build"})


def build_parser(argv: list[str] | None = None) -> Parser:
    """The parser for ``argv``'s command family, or for every family when none is named."""
    import importlib

    from shoal.cli.schema import add_schema_flags

    parser = Parser(prog="shoal", description="Federated learning jobs: server, sites and admin CLI.")
    parser.add_argument("-V", "--version", action="version", version=f"shoal {__version__}")
    parser.add_argument(
        "--format", choices=FORMATS, default="txt", help="output: txt (default; also 'default'), json, jsonl"
    )
    groups = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    first = next((w for w in argv or [] if not w.startswith("-")), None)
    modules = [FAMILIES[first]] if first in FAMILIES else list(dict.fromkeys(FAMILIES.values()))
    words = [w for w in argv or [] if not w.startswith("-")]
    second = words[1] if len(words) > 1 else None
    for name in modules:
        module = importlib.import_module(name)
        if name == "shoal.cli.job":
            module.register(groups, wanted=second)  # only the subcommand being run
        else:
            module.register(groups)
    add_schema_flags(parser)
    return parser


#: Exit code when stdout's reader went away (``shoal job list | head -1``): 128 + SIGPIPE, what
#: ``cat`` or ``grep`` report in the same pipeline, so ``set -o pipefail`` scripts see the usual.
EXIT_READER_GONE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one command. A reader that closes stdout early ends the command quietly (no
    traceback, exit 141): whatever the command did on the server is done either way."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # text output is block-buffered into a pipe: fail here, not at exit
        return code
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's last flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_READER_GONE


def _run(argv: list[str] | None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    fmt, rest = hoist_format(raw)
    if fmt not in FORMATS:
        # Bad arguments, like any other (exit 4); with no format to trust, people's text on stderr.
        return render_error(_unknown_format(fmt), "txt")
    first = next((w for w in rest if not w.startswith("-")), "")
    surface = "run" if first in RUN_SURFACE else "job"
    parser = build_parser(rest)
    if "--schema" in rest:
        from shoal.cli.schema import describe

        chosen = _deepest_parser(parser, [w for w in rest if not w.startswith("-")])
        sys.stdout.write(json.dumps(describe(chosen), indent=2) + "\n")
        return 0
    try:
        args = parser.parse_args(rest)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            chosen = _deepest_parser(parser, rest)
            raise ArgumentsRejected(chosen, "a subcommand is required")
        if fmt == "jsonl" and not getattr(args, "supports_jsonl", False):
            raise ShoalError("INVALID_ARGS", "--format jsonl is only supported by streaming commands")
        args.format = fmt
        # Modules and parsers live until this short process exits: keep them out of the
        # collector's sight, so its full pass at exit skips them (~6 ms of every command here).
        gc.freeze()
        return render_result(handler(args), fmt, surface)
    except UnknownChoice as exc:
        return render_error(exc.error(), fmt, surface=surface)
    except ArgumentsRejected as exc:
        rejecting = exc.parser
        if rejecting is parser:  # argparse reports unknown options from the top: point at the command
            rejecting = _deepest_parser(parser, rest)
        err = ShoalError("INVALID_ARGS", str(exc), hint=f"Run '{rejecting.prog} --help' for usage.")
        if fmt in ("json", "jsonl"):
            err.data = {"usage": rejecting.format_usage().strip()}
            return render_error(err, fmt, surface=surface)
        return render_error(err, fmt, usage=rejecting.format_help(), surface=surface)
    except ShoalError as err:
        return render_error(err, fmt, surface=surface)
    except KeyboardInterrupt:
        # Ctrl-C or SIGINT (a CI job cancelled): scripts still get their one last document.
        interrupted = ShoalError("INTERRUPTED")
        if fmt == "jsonl":
            emit_event(error_event(interrupted))
            return interrupted.exit_code
        return render_error(interrupted, fmt, surface=surface)
    except BrokenPipeError:
        raise  # stdout's reader is gone: main() ends quietly, no error to print
    except OSError as exc:  # the network's are ShoalErrors by now (api.client): this is local
        where = f": {exc.filename}" if exc.filename else ""
        local = ShoalError("LOCAL_FILE_ERROR", f"{exc.strerror or exc}{where}")
        return render_error(local, fmt, surface=surface)
    except Exception as exc:
        if settings.flag(settings.DEBUG):
            import traceback

            traceback.print_exc()
        return render_error(
            ShoalError("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"), fmt, surface=surface
        )


def _unknown_format(fmt: str) -> ShoalError:
    return ShoalError(
        "INVALID_ARGS",
        f"--format {fmt!r} is not one of {', '.join(FORMATS)}",
        hint=f"Use --format {', '.join(FORMATS[:-1])} or {FORMATS[-1]} ('default' is txt).",
    )


def _deepest_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser the words in argv lead to, for a help text that fits the mistake."""
    current = parser
    for word in argv:
        sub = next((a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        current = sub.choices[word]
    return current


def lazy(module: str, name: str) -> Handler:
    """A handler that imports its module only when its command runs (CLI start-up stays small)."""

    def handler(args: argparse.Namespace) -> Result:
        import importlib

        target: Handler = getattr(importlib.import_module(module), name)
        return target(args)

    return handler


def add_kit_options(p: argparse.ArgumentParser, study: bool = True) -> None:
    """Options every server-connected command takes."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--kit-id", default=None, help="use this registered startup-kit id for this command only"
    )
    group.add_argument(
        "--startup-kit", default=None, help="use this admin startup-kit directory for this command only"
    )
    if study:
        p.add_argument("--study", default="default", help="study of the job (default: 'default')")


def connect(args: argparse.Namespace) -> AdminClient:
    """Resolve the startup kit (before any network) and return an AdminClient."""
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit

    kit = resolve_admin_kit(getattr(args, "kit_id", None), getattr(args, "startup_kit", None))
    client = AdminClient(kit)
    typed = getattr(args, "job_id", None)
    if isinstance(typed, str) and len(typed) < 16:  # 'last' or a prefix: find the job it means
        from shoal.cli.job_args import resolve_job_id

        args.job_id = resolve_job_id(client, args.study, typed)
    return client
