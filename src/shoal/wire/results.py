"""What a site says about a result besides its tensors: one type through every hop.

A training script's ``send(FLModel(...))`` writes ``num_examples``, ``metrics`` and ``meta``;
the agent passes them to the server (in a PUT's header or an inline result message), the
server checks them once (``checked_result_info``) and hands them to the workflow with the
result's path, which gives them back to the workflow's code in the FLModel. Each hop carries a
``ResultInfo``, flattened into its message (``shoal.wire.messages.record``), never a dict copied
field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.wire.messages import BadMessage, decode_record, record


@record
@dataclass(frozen=True, slots=True)
class ResultInfo:
    """A result's weight for FedAvg (the examples it trained on; 0 leaves it out), its metrics
    (names to numbers) and its meta (any JSON object)."""

    num_examples: int = 1
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        """The JSON object a result's header travels as."""
        return {"num_examples": self.num_examples, "metrics": self.metrics, "meta": self.meta}


def checked_result_info(raw: Any) -> ResultInfo:
    """A site's word about its result, checked before the workflow sees it: the examples a whole
    number >= 0, metrics numbers, meta an object. BadMessage saying what is wrong otherwise."""
    if not isinstance(raw, dict):
        raise BadMessage("the result header is not a JSON object")
    info: ResultInfo = decode_record(ResultInfo, raw)
    if info.num_examples < 0:
        raise BadMessage(f"num_examples must be a whole number >= 0, not {info.num_examples!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in info.metrics.values()):
        raise BadMessage("metrics must map names to numbers")
    return info
