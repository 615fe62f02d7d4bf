"""What every site's update must pass before any workflow sees it: finite values, a sane weight.

A site is a peer we authenticate, not one we trust: an update with NaN or infinity poisons a
weighted mean for good (NaN + anything is NaN), and ``num_examples`` of 10**15 makes one site's
update the whole global model. ``WorkflowContext.results`` applies these checks to each result
as it arrives, so they hold for every workflow, built-in or custom, on the server and in the
simulator alike; a refused update fails the job naming the site (``BadUpdate``).

The operator sets them in the server kit's ``local/limits.json`` (``reject_non_finite_updates``,
``max_num_examples``); a job cannot loosen them (decisions/0017). Standard library only at
import: the server reads its settings without numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The most examples one site may say it trained on for one update: above any real dataset's
#: share of one site (a few billion), far below what makes float weights meaningless.
DEFAULT_MAX_NUM_EXAMPLES = 4_000_000_000
#: The keys of ``local/limits.json`` read here.
REJECT_NON_FINITE_KEY = "reject_non_finite_updates"
MAX_NUM_EXAMPLES_KEY = "max_num_examples"


@dataclass(frozen=True)
class UpdateChecks:
    """The server's rules for a site's update; the defaults are what a server without
    ``local/limits.json`` applies (and what the simulator applies unless told otherwise)."""

    reject_non_finite: bool = True
    max_num_examples: int = DEFAULT_MAX_NUM_EXAMPLES

    def controller_args(self) -> list[str]:
        """How the server hands these rules to a job's controller process."""
        args = ["--max-num-examples", str(self.max_num_examples)]
        return args if self.reject_non_finite else [*args, "--accept-non-finite"]

    def num_examples_problem(self, value: Any) -> str | None:
        """Why ``value`` cannot weigh an update, or None: a whole number from 0 (the update
        weighs nothing) to ``max_num_examples``."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"num_examples must be a whole number >= 0, not {value!r:.40}"
        if value > self.max_num_examples:
            return (
                f"num_examples {value} is more than the server allows for one site's update "
                f"({MAX_NUM_EXAMPLES_KEY} {self.max_num_examples} in the server's local/limits.json)"
            )
        return None

    def values_problem(self, params: Mapping[str, Any]) -> str | None:
        """Why these tensors cannot be folded into a model, or None (always None when the
        operator turned the finiteness check off)."""
        if not self.reject_non_finite:
            return None
        name = first_non_finite(params)
        return None if name is None else non_finite_problem(name)


def non_finite_problem(name: str) -> str:
    """What a refused update's tensor ``name`` holds, as the job's failure says it."""
    return (
        f"tensor {name!r} holds NaN or infinite values (the server refuses non-finite updates: "
        f"{REJECT_NON_FINITE_KEY} in its local/limits.json)"
    )


def non_finite_values(values: Any) -> bool:
    """Whether an array (a tensor, or a chunk of one) holds NaN or an infinity: the check an
    update's reader applies to each piece it reads (``LazyParams.inspect``) when the check is
    folded into its own pass (FedAvg's sum, decisions/0050)."""
    return values.dtype.kind in "fc" and not _all_finite(values)


def read_through(params: Mapping[str, Any]) -> None:
    """Read every value of ``params`` once and drop it: an update whose checks run as it is read
    (``LazyParams.inspect``) but that its workflow does not read (it weighs nothing) is held to
    them all the same. Memory stays at one chunk."""
    from shoal.wire.models import LazyParams

    for name in params:
        if isinstance(params, LazyParams):
            for _ in params.chunks(name):
                pass
        else:
            params[name]


def first_non_finite(params: Mapping[str, Any]) -> str | None:
    """The first tensor (by name) holding NaN or an infinity, or None.

    A streamed update (``LazyParams``) is read a chunk at a time, so memory stays at one chunk
    whatever the model's size; integer tensors cannot hold either and are not read at all.
    """
    import numpy as np

    from shoal.wire.models import LazyParams

    for name in sorted(params):
        if isinstance(params, LazyParams):
            if params.shape(name)[1].kind not in "fc":
                continue
            if any(not _all_finite(chunk) for _, chunk in params.chunks(name)):
                return name
            continue
        arr = np.asarray(params[name])
        if arr.dtype.kind in "fc" and not _all_finite(arr):
            return name
    return None


def _all_finite(arr: Any) -> bool:
    """Whether a float (or complex) array holds no NaN and no infinity. For real floats, its
    sum says it in one pass without a temporary array, and where the sum overflowed, its
    minimum and maximum (a NaN anywhere makes both NaN, an infinity is one of them): against
    ``isfinite(arr).all()``, a third of the time on a 100 MB update, which the workflow reads
    once per site per round."""
    import numpy as np

    if arr.size == 0:
        return True
    if arr.dtype.kind == "f":
        # One pass first: a NaN or an infinity anywhere makes the sum NaN or infinite (NaN
        # propagates; inf plus anything finite stays inf; inf plus -inf is NaN). A sum that
        # overflowed from finite values alone is told apart by the exact two-pass check.
        with np.errstate(over="ignore", invalid="ignore"):  # the overflows this looks for
            total = arr.sum()
        if np.isfinite(total):
            return True
        return bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))
    return bool(np.isfinite(arr).all())


def update_checks_from_limits(data: Mapping[str, Any], path: Path) -> UpdateChecks:
    """The rules ``local/limits.json`` sets (its other keys are the server's byte limits);
    a wrongly typed value is LOCAL_FILE_ERROR naming the key, never a silently open check."""
    from shoal.security.localfiles import operator_file_error

    reject = data.get(REJECT_NON_FINITE_KEY, True)
    if not isinstance(reject, bool):
        raise operator_file_error(
            path, f"'{REJECT_NON_FINITE_KEY}' must be true or false, not {reject!r:.80}"
        )
    limit = data.get(MAX_NUM_EXAMPLES_KEY, DEFAULT_MAX_NUM_EXAMPLES)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise operator_file_error(
            path, f"'{MAX_NUM_EXAMPLES_KEY}' must be a whole number >= 1, not {limit!r:.80}"
        )
    return UpdateChecks(reject_non_finite=reject, max_num_examples=limit)
