"""The messages between a site agent and its job's training script (the script channel).

The agent (``shoal.site.job``) hands the script its tasks, log settings and the end of the job;
the script, through the client API (``shoal.fl.client``), answers each task with a result file
and logs metrics as it trains. In ``shoal simulate`` the simulator's worker
(``shoal.simulator.worker``) stands in for the agent. The script runs the job's code, so the
agent checks what it says (a result for a task it was given, a file in its own folder) before it
goes further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.wire.messages import AGENT, FLAT, SCRIPT, SCRIPT_PROCESS, Message, register
from shoal.wire.results import ResultInfo

# --- site agent -> training script -------------------------------------------------------------


@register(SCRIPT, "task", sender=AGENT, receiver=SCRIPT_PROCESS)
@dataclass(frozen=True, slots=True)
class ScriptTask(Message):
    """A task: its model in ``model_path`` (read-only to the script); the result is written into
    ``result_dir`` (beside the model when absent, as in the simulator)."""

    task_id: str
    model_path: str
    task_name: str = "train"
    round: int | None = None
    total_rounds: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    result_dir: str | None = None
    #: under secure aggregation: the protections the client API applies before masking (the
    #: agent cannot touch a masked update; docs/privacy.md)
    privacy: dict[str, Any] = field(default_factory=dict)


@register(SCRIPT, "log_config", sender=AGENT, receiver=SCRIPT_PROCESS)
@dataclass(frozen=True, slots=True)
class ScriptLogConfig(Message):
    """A log level or mode for the script, live."""

    setting: str


@register(SCRIPT, "stop", sender=AGENT, receiver=SCRIPT_PROCESS)
@dataclass(frozen=True, slots=True)
class StopScript(Message):
    """The job is over: ``receive()`` returns None and ``is_running()`` False."""

    reason: str = ""


# --- training script -> site agent -------------------------------------------------------------


@register(SCRIPT, "result", sender=SCRIPT_PROCESS, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class ScriptResult(Message):
    """The script's answer to a task: its update in ``path`` (in its own folder), with what it
    says about it (the header that travels on to the workflow)."""

    task_id: str
    path: str
    info: ResultInfo = field(default_factory=ResultInfo, metadata={FLAT: True})


@register(SCRIPT, "metric", sender=SCRIPT_PROCESS, receiver=AGENT)
@dataclass(frozen=True, slots=True)
class ScriptMetric(Message):
    """A metric the script logged with ``flare.log_metric``."""

    key: str
    value: float
    step: int | None = None
