"""The client API a training script uses at a site: init, receive, send, is_running.

    from shoal.fl import client as flare
    flare.init()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        ...train...
        flare.send(FLModel(params=new_weights, metrics={"loss": loss}, num_examples=n))

The site agent starts the script with one end of a socketpair; tasks arrive as small JSON
messages naming a safetensors file, so receiving a model needs no polling and no pickle.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shoal import settings
from shoal.fl.model import FLModel
from shoal.wire.channel import METRIC_KEY_MAX, SyncChannel
from shoal.wire.logconfig import apply as apply_log_setting
from shoal.wire.messages import SCRIPT, BadMessage, Dispatch, encode
from shoal.wire.models import SPARE_MODEL, load_params, result_header_json, save_params
from shoal.wire.results import ResultInfo
from shoal.wire.script import ScriptLogConfig, ScriptMetric, ScriptResult, ScriptTask, StopScript

log = logging.getLogger("shoal.fl.client")

_channel: SyncChannel | None = None
_current_task: ScriptTask | None = None
_running = False
_task_name = "train"
_secagg: Any = None  # this site's secure aggregation state (shoal.privacy.secagg_site), made on first use


def init() -> None:
    """Connect to the site agent that started this process. Safe to call twice."""
    global _channel, _running
    if _channel is None:
        _channel = SyncChannel.from_env()
        _running = True


def attach(channel: SyncChannel) -> None:
    """Use ``channel`` as the transport instead of the inherited socket, and start afresh.

    The seam the simulator plugs into (``shoal.simulator.worker``): it attaches an in-process
    channel per task, so the script's own ``init()`` finds it connected and everything else
    (receive, send, log_metric) runs exactly the code a real site runs.
    """
    global _channel, _current_task, _running
    _channel = channel
    _current_task = None
    _running = True


def _require_channel() -> SyncChannel:
    if _channel is None:
        raise RuntimeError("call shoal.fl.client.init() first")
    return _channel


def is_running() -> bool:
    """False once the server has ended the job or the agent has gone away."""
    return _running


def site_name() -> str:
    return settings.text(settings.SITE_NAME)


def job_id() -> str:
    return settings.text(settings.JOB_ID)


def app_dir() -> str:
    """This job's app folder at the site (its ``custom/`` holds the job's files), or ""."""
    return settings.text(settings.APP_DIR)


def job_privacy() -> dict[str, Any]:
    """The job's ``privacy`` block (meta.json, checked by the server at submit), or {}: what a
    script reads to run what only it can, e.g. DP-SGD for ``example_dp`` (docs/privacy.md)."""
    import json

    if not app_dir():
        return {}
    try:
        meta = json.loads((Path(app_dir()).parent / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    block = meta.get("privacy") if isinstance(meta, dict) else None
    return dict(block) if isinstance(block, dict) else {}


def task_name() -> str:
    """The name of the task last received ("train" unless the workflow says otherwise, e.g.
    "validate" or "submit_model" in cross-site evaluation, "stats" in federated statistics)."""
    return _task_name


def receive(timeout: float | None = None) -> FLModel | None:
    """Block until the next task arrives; None when the job is over."""
    global _current_task, _running, _task_name
    channel = _require_channel()
    while True:
        raw = channel.receive(timeout)
        found = _DISPATCH.handler(raw) if raw is not None else None
        if raw is None or (found is not None and isinstance(found[0], StopScript)):
            _running = False
            _current_task = None
            return None
        if found is None:
            continue
        message, handle = found
        model: FLModel | None = handle(message)
        if model is not None:
            return model


def _on_log_config(message: ScriptLogConfig) -> None:
    apply_log_setting(message.setting)


def _on_task(task: ScriptTask) -> FLModel | None:
    """The FLModel the script gets for ``task``; None for secure aggregation's own tasks, which
    the client API answers itself (they never reach the script)."""
    global _current_task, _task_name
    if task.task_name.startswith("secagg_"):
        _answer_secagg(_require_channel(), task)
        return None
    _current_task = task
    _task_name = task.task_name or "train"
    params = load_params(Path(task.model_path))
    return FLModel(
        params=dict(params), meta=dict(task.meta), current_round=task.round, total_rounds=task.total_rounds
    )


class _AgentDispatch(Dispatch):
    """The agent's messages; one the client API cannot read is dropped with a notice (the
    script goes on with the next)."""

    def handler(self, data: Mapping[str, Any]) -> tuple[Any, Any] | None:
        try:
            return super().handler(data)
        except BadMessage as exc:
            log.warning("the site agent sent a malformed message; ignored: %s", exc)
            return None


_DISPATCH = _AgentDispatch(
    SCRIPT,
    {ScriptTask: _on_task, ScriptLogConfig: _on_log_config, StopScript: lambda message: None},
    log,
    "the site agent",
)


def send(model: FLModel) -> None:
    """Return this site's update for the task last received."""
    global _current_task
    channel = _require_channel()
    if _current_task is None:
        raise RuntimeError("send() without a task: call receive() first")
    task = _current_task
    if int(model.num_examples) < 0:
        raise ValueError(
            f"num_examples must be >= 0 (0: this update weighs nothing), got {model.num_examples}"
        )
    params = _to_numpy(model.params)
    meta = model.meta
    secagg_meta = task.meta.get("secagg")
    if secagg_meta is not None:
        # secure aggregation: the weight travels masked inside the update, not in the header
        meta = {**meta, "dtypes": {name: str(getattr(v, "dtype", "float32")) for name, v in params.items()}}
        params = _before_masking(params, task, secagg_meta)
        weight = 1.0 if secagg_meta.get("clip_norm") else float(model.num_examples)
        params = _secagg_state().mask(params, weight, secagg_meta)
    info = ResultInfo(
        num_examples=1 if secagg_meta is not None else int(model.num_examples),
        metrics={k: float(v) for k, v in model.metrics.items()},
        meta=meta,
    )
    result_header_json(info.header())  # too large (or not JSON) fails here, in the script, saying why
    name = _result_file(task)
    # over the spare the agent handed back (its last result, decisions/0054) where there is one
    save_params(params, Path(name), reuse=Path(name).parent / SPARE_MODEL)
    channel.send(encode(ScriptResult(task_id=task.task_id, path=name, info=info)))
    _current_task = None


def _result_file(task: ScriptTask) -> str:
    """A new file for the task's result where this process may write: its job's own folder at
    a site, beside the model elsewhere."""
    out_dir = Path(task.result_dir or Path(task.model_path).parent)
    fd, name = tempfile.mkstemp(prefix="result-", suffix=".safetensors", dir=out_dir)
    os.close(fd)
    return name


def _before_masking(
    params: dict[str, Any], task: ScriptTask, secagg_meta: Mapping[str, Any]
) -> dict[str, Any]:
    """A masked update cannot be protected once it has left: under secure aggregation the site's
    protections (``privacy``, handed over by the agent) and the server's clipping for central DP
    (``clip_norm`` in the task's secagg meta; the update then weighs 1) are applied here, to the
    clear update, before the masks. Done in the training script's process (docs/privacy.md)."""
    spec = task.privacy
    clip_norm = secagg_meta.get("clip_norm")
    if not spec and not clip_norm:
        return params
    from shoal.privacy.protections import apply_site_privacy, clip_update

    global_params = load_params(Path(task.model_path))
    if spec:
        params = apply_site_privacy(params, global_params, spec)[0]
    if clip_norm:
        params = clip_update(params, global_params, float(clip_norm))
    return params


def _secagg_state() -> Any:
    global _secagg
    if _secagg is None:
        from shoal.privacy.secagg_site import SiteProtocol

        _secagg = SiteProtocol(site_name())
    return _secagg


def _answer_secagg(channel: SyncChannel, task: ScriptTask) -> None:
    """Answer one of secure aggregation's own tasks (keys, shares, unmasking) with a result whose
    meta carries the answer; a request the protocol forbids is refused by failing the script."""
    answer = _secagg_state().answer(task.task_name, dict(task.meta))
    name = _result_file(task)
    save_params({}, Path(name))
    info = ResultInfo(num_examples=0, metrics={}, meta=answer)
    channel.send(encode(ScriptResult(task_id=task.task_id, path=name, info=info)))


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Send one training metric to the server as it happens."""
    if not isinstance(key, str) or not 0 < len(key) <= METRIC_KEY_MAX:
        raise ValueError(f"a metric's key must be a string of 1 to {METRIC_KEY_MAX} characters")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise ValueError(f"a metric's step must be a whole number or None, not {step!r}")
    _require_channel().send(encode(ScriptMetric(key=key, value=float(value), step=step)))


def _to_numpy(params: Mapping[str, Any]) -> dict[str, Any]:
    """Accept numpy arrays or torch tensors; torch is touched only if a tensor is given."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if hasattr(value, "detach") and hasattr(value, "cpu"):
            value = value.detach().cpu().numpy()
        out[name] = value
    return out
