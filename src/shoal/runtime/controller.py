"""Entry point of a job's controller process: load the server app's workflow and run it.

The server starts ``python -m shoal.runtime.controller`` per job, in its own process group,
with one end of a socketpair. Whatever the workflow does, the last message on the channel
says how it ended ("done" or "error"), so the server can settle the job with a reason.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from shoal.wire import logconfig
from shoal.wire.channel import SyncChannel
from shoal.wire.controller import Done, Resumable, WorkflowError
from shoal.wire.jobdef import BUILTIN_WORKFLOW_CLASSES, BUILTIN_WORKFLOWS
from shoal.wire.messages import encode
from shoal.wire.status import brief
from shoal.workflows.base import ResumePoint, RoundFailed, Workflow, WorkflowContext
from shoal.workflows.update_checks import UpdateChecks

LAST_WORD_WAIT = 10.0  # seconds to wait for the server to read the outcome before exiting anyway


def _load_class(dotted: str) -> type[Workflow]:
    module_name, _, class_name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Workflow)):
        raise TypeError(f"{dotted} is not a shoal Workflow subclass")
    return cls


class CustomCodeRefused(Exception):
    """The job's server app names custom code, and its study does not allow it."""


def resolve_workflow(
    config: dict[str, Any], *, allow_custom_code: bool = True
) -> tuple[type[Workflow], dict[str, Any]]:
    """``"workflow": "fedavg"`` names a built-in; ``{"class": "mod.Cls"}`` names custom code,
    which is imported only if ``allow_custom_code`` (a built-in's own class path always is)."""
    spec = config.get("workflow", "fedavg")
    if isinstance(spec, str):
        if spec not in BUILTIN_WORKFLOWS:
            raise ValueError(
                f"unknown workflow {spec!r}; built-in ones: {', '.join(sorted(BUILTIN_WORKFLOWS))}"
            )
        dotted = BUILTIN_WORKFLOWS[spec]
    elif isinstance(spec, dict) and isinstance(spec.get("class"), str):
        dotted = spec["class"]
        if not allow_custom_code and dotted not in BUILTIN_WORKFLOW_CLASSES:
            raise CustomCodeRefused(
                f"the workflow class {dotted[:200]!r} is custom code, which this study does not allow"
            )
    else:
        raise ValueError('\'workflow\' must be a built-in name or {"class": "module.Class"}')
    args = config.get("args", {})
    if not isinstance(args, dict):
        raise ValueError("'args' must be a JSON object")
    cls = _load_class(dotted)
    if isinstance(spec, str):
        check_arguments(spec, cls, args)
    return cls, args


#: JSON types a built-in workflow's argument may take, by the annotation its signature gives.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}


def check_arguments(name: str, cls: type[Workflow], args: dict[str, Any]) -> None:
    """A built-in workflow takes only the arguments its classes name, each of its type: a typo
    (``num_roundz``) would otherwise be ignored without a word, and a string where a number
    goes would fail deep inside the first round. Custom workflows read what they like."""
    accepted: dict[str, str] = {}  # argument -> its annotation, from the class and its bases
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in named and param.name not in ("self", "ctx"):
                accepted.setdefault(param.name, str(param.annotation))
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(accepted), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"workflow {name!r} takes no argument {unknown[0]!r}{hint}; "
            f"its arguments: {', '.join(sorted(accepted))}"
        )
    for key, value in args.items():
        annotation = accepted[key]
        wanted = _JSON_TYPES.get(annotation.removesuffix(" | None"))
        if wanted is None or (value is None and annotation.endswith(" | None")):
            continue
        if not isinstance(value, wanted) or (bool not in wanted and isinstance(value, bool)):
            raise ValueError(
                f"workflow {name!r}: {key} must be {annotation.removesuffix(' | None')}, not {value!r}"
            )


def check_privacy_support(cls: type[Workflow], app_dir: Path) -> None:
    """A job whose privacy block asks the server for central noise or a budget runs only a
    workflow that applies them (FedAvg and its subclasses): any other would finish without
    either, and the job would look protected when it was not."""
    from shoal.privacy.central import read_job_privacy
    from shoal.workflows.fedavg import FedAvg

    asked = sorted(k for k in ("server_dp", "budget") if k in read_job_privacy(app_dir))
    if asked and not issubclass(cls, FedAvg):
        raise ValueError(
            f"the job's privacy block sets {' and '.join(asked)}, which the workflow {cls.__name__} "
            "does not apply (FedAvg-based workflows do: docs/privacy.md)"
        )


def resume(workflow: Workflow, ctx: WorkflowContext, folder: Path) -> None:
    """Give the workflow back its last checkpoint, which the server wrote into ``folder``:
    ``checkpoint.json`` (the round and state, JSON) and ``model.safetensors`` (no pickle)."""
    if not workflow.resumable:
        raise RuntimeError(f"the workflow {type(workflow).__name__} cannot resume")
    saved = json.loads((folder / "checkpoint.json").read_text())
    point = ResumePoint(
        last_round=int(saved["last_round"]),
        state=dict(saved["state"]),
        model_path=folder / "model.safetensors",
    )
    logging.getLogger("shoal.workflow").warning(
        "resuming after a server restart from the end of round %d", point.last_round
    )
    workflow.restore(ctx.resume_from(point), point.model())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shoal-controller")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--app-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--sites", required=True, help="comma-separated site names")
    parser.add_argument("--min-clients", type=int, default=1)
    parser.add_argument("--allow-custom-code", action="store_true", help="the study allows custom workflows")
    parser.add_argument("--max-num-examples", type=int, default=UpdateChecks().max_num_examples)
    parser.add_argument("--accept-non-finite", action="store_true", help="fold NaN/inf updates in")
    parser.add_argument(
        "--resume-dir",
        type=Path,
        help="resume from the checkpoint the server wrote here (checkpoint.json, model)",
    )
    opts = parser.parse_args(argv)
    logconfig.setup()
    channel = SyncChannel.from_env()
    custom = opts.app_dir / "custom"
    if custom.is_dir() and opts.allow_custom_code:
        sys.path.insert(0, str(custom))
    try:
        config = json.loads((opts.app_dir / "config" / "config_fed_server.json").read_text())
        cls, args = resolve_workflow(config, allow_custom_code=opts.allow_custom_code)
        check_privacy_support(cls, opts.app_dir)
        ctx = WorkflowContext(
            channel,
            job_id=opts.job_id,
            sites=[s for s in opts.sites.split(",") if s],
            run_dir=opts.run_dir,
            workspace=opts.workspace,
            app_dir=opts.app_dir,
            min_clients=opts.min_clients,
            checks=UpdateChecks(
                reject_non_finite=not opts.accept_non_finite, max_num_examples=opts.max_num_examples
            ),
        )
        workflow = cls(ctx, **args)
        ctx.keeps_checkpoints = bool(cls.resumable)
        # The server records this: a job whose workflow cannot resume ends ABANDONED when the
        # server dies; one that can is started again from its last checkpoint.
        channel.send(encode(Resumable(value=bool(cls.resumable), workflow=cls.__name__[:128])))
        if opts.resume_dir is not None:
            resume(workflow, ctx, opts.resume_dir)
        workflow.run()
        ctx.end_sites()  # the summary then holds what the sites logged after their last result
    except RoundFailed as exc:
        logging.getLogger("shoal.workflow").error("job failed: %s", exc)
        last_word: Done | WorkflowError = WorkflowError(
            status="FAILED", type="RoundFailed", message=brief(str(exc)), site=exc.site
        )
    except Exception as exc:
        traceback.print_exc()
        # All of the message is in the traceback above, in the server log.
        last_word = WorkflowError(
            status="FINISHED_EXCEPTION", type=type(exc).__name__, message=brief(str(exc))
        )
    else:
        stopped_by = getattr(workflow, "stopped_by", None)
        # ended early on purpose (a privacy budget): the reason says why
        last_word = Done(reason=brief(stopped_by) if isinstance(stopped_by, str) and stopped_by else None)
    channel.send(encode(last_word))
    channel.wait_closed(LAST_WORD_WAIT)  # the server closes its side once it has read it
    return 0 if isinstance(last_word, Done) else 1


if __name__ == "__main__":
    raise SystemExit(main())
