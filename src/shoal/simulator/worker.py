"""The site side of the simulator: run one site's training script for one task, in a pool worker.

A real site starts the script once and feeds it every task over a socket. Here a worker process
serves many virtual sites, so each task is one run of the script (``runpy``) with the client
API attached to an in-process channel (``shoal.fl.client.attach``): ``receive()`` yields the
task, ``send()`` writes the update as a safetensors file beside the model (the real client code
does that), and the next ``receive()`` returns None, so the script's loop ends as it would on a
real site when the job stops.

What a run sees is what a real site's process sees: ``SHOAL_SITE_NAME``, ``SHOAL_JOB_ID``,
``SHOAL_APP_DIR``,
``sys.argv`` from ``config_fed_client.json``, the app's ``custom/`` folder first on
``sys.path``, the site's own folder as the working directory, stdout and stderr (file
descriptors 1 and 2, so C extensions and child processes too) appended to the site's
``log.txt``. Heavy third-party modules (numpy, torch) stay imported between runs, which is what
makes a run cheap; modules of the job's own ``custom/`` folder are dropped after each run, so
module-level state never leaks from one site into the next.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import runpy
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from shoal import settings
from shoal.fl import client
from shoal.wire.channel import SyncChannel, encode
from shoal.wire.controller import Result, SiteFailed
from shoal.wire.messages import SCRIPT, BadMessage, Message, UnknownMessage, decode
from shoal.wire.messages import encode as encode_message
from shoal.wire.script import ScriptMetric, ScriptResult


@dataclasses.dataclass(frozen=True)
class SiteTask:
    """Everything a worker needs to run one task for one site (sent to it as a JSON line)."""

    site: str
    job_id: str
    app_dir: str
    entry: tuple[str, str]  # ("script", absolute path) or ("module", dotted name)
    argv: tuple[str, ...]
    work_dir: str
    log_path: str
    task: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SiteTask:
        kind, target = doc["entry"]
        return cls(
            site=str(doc["site"]),
            job_id=str(doc["job_id"]),
            app_dir=str(doc["app_dir"]),
            entry=(str(kind), str(target)),
            argv=tuple(str(a) for a in doc["argv"]),
            work_dir=str(doc["work_dir"]),
            log_path=str(doc["log_path"]),
            task=dict(doc["task"]),
        )


class TaskChannel(SyncChannel):
    """The client API's transport for one task: it hands out the task once, then says "over".

    A subclass of ``SyncChannel`` (the transport type the client module expects) with no
    socket behind it: messages the script sends are kept for the worker to return.
    """

    def __init__(self, task: dict[str, Any]) -> None:  # no socket: do not call super().__init__
        self._inbox: list[dict[str, Any]] = [task]
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        return self._inbox.pop(0) if self._inbox else None

    def close(self) -> None:
        self._inbox.clear()


def serve(fd: int) -> None:
    """A worker process's life: read a ``SiteTask`` per line on the socket ``fd`` (JSON), run
    it, write the answer back as one JSON line; leave when the simulator closes its end.

    Only JSON crosses, both ways: nothing the worker reads can make it run code, whoever
    wrote it (no pickle, unlike ``concurrent.futures``; decisions/0023). The worker was started
    in a session and process group of its own (``sim_pool``), which is how the simulator
    kills it with every process its scripts started, and why a Ctrl-C in the terminal
    reaches only the simulator.
    """
    sock = socket.socket(fileno=fd)
    reader = sock.makefile("rb")
    for line in reader:
        spec = SiteTask.from_json(json.loads(line))
        answer = run_site_task(spec)
        try:
            data = encode(answer)
        except (
            TypeError,
            ValueError,
        ) as exc:  # a meta value JSON cannot carry: a site could not send it either
            reason = f"the result cannot be sent as JSON: {exc}"
            failed = SiteFailed(site=spec.site, type=type(exc).__name__, reason=reason)
            data = encode({**encode_message(failed), "worker": answer.get("worker")})
        sock.sendall(data)


class _ScriptExit(Exception):
    def __init__(self, code: object, output: str = "") -> None:
        tail = f"; last output: {output}" if output else ""
        super().__init__(f"the training script exited with code {code}{tail}")


def run_site_task(spec: SiteTask) -> dict[str, Any]:
    """Run the script once for ``spec.task``; return the message the controller should get.

    The answer is ``{"op": "result", ...}`` (as the real server relays it) or
    ``{"op": "site_failed", ...}``, plus ``worker`` facts (pid, peak RSS, seconds) for reports.
    """
    started = time.monotonic()
    given = spec
    error: tuple[str, str] | None = None
    try:
        spec = _received(spec)
    except Exception as exc:  # as a real site: a model its filters did not pass is never used
        error = ("PrivacyFilterFailed", f"the task's model: {type(exc).__name__}: {exc}")
    channel = TaskChannel(spec.task)
    if error is None:
        try:
            with _site_process_view(spec):
                client.attach(channel)
                _run_entry(spec)
        except _ScriptExit as exc:
            error = ("ProcessExit", str(exc))
        except Exception as exc:
            error = (type(exc).__name__, f"{type(exc).__name__}: {exc}")
    answer = _answer(spec, channel.sent, error)
    if spec is not given:  # the site's filtered copy of the model: used, and not kept
        Path(spec.task["model_path"]).unlink(missing_ok=True)
    answer["worker"] = {
        "pid": os.getpid(),
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "seconds": time.monotonic() - started,
    }
    return answer


def _run_entry(spec: SiteTask) -> None:
    kind, target = spec.entry
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, str):  # what the interpreter does with sys.exit("message")
            print(exc.code, file=sys.stderr)
            raise _ScriptExit(1, exc.code) from None
        if exc.code not in (None, 0):
            raise _ScriptExit(exc.code) from None
    except Exception:
        traceback.print_exc()  # into the site's log, as a crashing script's traceback would be
        raise


def _answer(spec: SiteTask, sent: list[dict[str, Any]], error: tuple[str, str] | None) -> dict[str, Any]:
    """The answer a server would relay to the workflow (a controller channel ``Result`` or
    ``SiteFailed``), plus the metrics the script logged (``logged``) for the transport to relay
    first. What the script sent is read as the agent reads it (``shoal.wire.script``)."""
    said: list[Message] = []
    for raw in sent:
        try:
            said.append(decode(SCRIPT, raw))
        except UnknownMessage:
            continue
        except BadMessage as exc:  # refused as the agent refuses it
            if raw.get(SCRIPT.key) == ScriptResult.TYPE and error is None:
                error = ("ResultRefused", f"INVALID_ARGS: {exc}")
    result = next((m for m in said if isinstance(m, ScriptResult)), None)
    metrics = [encode_message(m) for m in said if isinstance(m, ScriptMetric)]
    if error is None and result is None:
        error = ("NoResult", "the training script ended without sending a result for the task")
    if error is not None:
        failed = SiteFailed(site=spec.site, type=error[0], reason=error[1])
        return {**encode_message(failed), "logged": metrics}
    assert result is not None
    try:
        meta = _privatized(spec, Path(result.path), dict(result.info.meta))
    except Exception as exc:  # as a real site: an update that cannot be protected never goes
        return encode_message(SiteFailed(site=spec.site, type="PrivacyFilterFailed", reason=str(exc)))
    info = dataclasses.replace(result.info, meta=meta)  # num_examples: the workflow's context checks it
    answer = Result(task_id=result.task_id, site=spec.site, path=result.path, info=info)
    return {**encode_message(answer), "logged": metrics}


def _received(spec: SiteTask) -> SiteTask:
    """``spec`` with the job's filters on what a site receives (``privacy.to_sites``) applied, as
    the real server applies them: to a copy of the task's model in the site's own folder (the
    task's file is every virtual site's)."""
    import shutil

    from shoal.privacy.central import read_job_privacy
    from shoal.privacy.protections import filter_model_file

    to_sites = read_job_privacy(Path(spec.app_dir)).get("to_sites")
    model = Path(spec.task["model_path"])
    if not to_sites or not model.exists():
        return spec
    mine = Path(spec.work_dir) / f"received-{spec.task['task_id']}.safetensors"
    mine.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, mine)
    filter_model_file(mine, to_sites)
    return dataclasses.replace(spec, task={**spec.task, "model_path": str(mine)})


def _privatized(spec: SiteTask, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Apply the job's privacy block to the update at ``path`` as a real site's agent does
    (shoal.privacy.protections), and return the result meta recording what was applied."""
    import json

    from shoal.privacy.protections import APPLIED_META_KEY, apply_site_privacy, site_privacy
    from shoal.wire.models import load_params, save_params

    meta.pop(APPLIED_META_KEY, None)  # only the site's side says what it applied
    job_meta = json.loads((Path(spec.app_dir).parent / "meta.json").read_text())
    privacy = site_privacy(job_meta.get("privacy"), None)
    if not privacy:
        return meta
    model = Path(spec.task["model_path"])
    params, applied = apply_site_privacy(
        load_params(path), load_params(model) if model.exists() else {}, privacy
    )
    save_params(params, path)
    return {**meta, APPLIED_META_KEY: applied}


class _site_process_view:  # noqa: N801 - used as a context manager, reads like one
    """Make this worker look like the site's own process for one run, and undo it afterwards."""

    def __init__(self, spec: SiteTask) -> None:
        self.spec = spec

    def __enter__(self) -> None:
        spec = self.spec
        Path(spec.work_dir).mkdir(parents=True, exist_ok=True)
        Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        self._cwd = os.getcwd()
        self._argv = list(sys.argv)
        self._path = list(sys.path)
        self._modules = set(sys.modules)
        self._env = {k: os.environ.get(k) for k in (settings.SITE_NAME, settings.JOB_ID, settings.APP_DIR)}
        _flush()
        self._saved_fds = (os.dup(1), os.dup(2))
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.environ[settings.SITE_NAME] = spec.site
        os.environ[settings.JOB_ID] = spec.job_id
        os.environ[settings.APP_DIR] = spec.app_dir
        os.chdir(spec.work_dir)
        custom = os.path.join(spec.app_dir, "custom")
        sys.path.insert(0, custom)
        sys.argv = [spec.entry[1], *spec.argv]

    def __exit__(self, *exc: object) -> None:
        _flush()
        for fd, saved in zip((1, 2), self._saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        os.chdir(self._cwd)
        sys.argv = self._argv
        sys.path[:] = self._path
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        forget_job_modules(self.spec.app_dir, self._modules)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def forget_job_modules(app_dir: str, before: set[str]) -> None:
    """Drop modules this run imported from the job's own folder (the next site re-imports
    them fresh); keep library modules, which is what makes the next run cheap."""
    root = os.path.realpath(app_dir) + os.sep
    for name in set(sys.modules) - before:
        # vars(), not getattr(): some modules answer any attribute (torch.ops, torch.classes
        # hand back a namespace object for ``__path__``), which is neither a path nor iterable.
        attrs = vars(sys.modules.get(name) or sys)
        try:
            entries = list(attrs.get("__path__") or [])  # a list, or a namespace package's path
        except TypeError:
            entries = []
        places = [attrs.get("__file__"), *entries]
        if any(isinstance(p, str) and os.path.realpath(p).startswith(root) for p in places):
            sys.modules.pop(name, None)
