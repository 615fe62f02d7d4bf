"""JSON for the outside world: documents every parser accepts.

Python's ``json`` writes a diverged loss as ``NaN`` (or ``Infinity``), which is not JSON: jq
may take it, but JavaScript, Go and most strict parsers refuse the whole document. Whatever
shoal hands to users and scripts (API responses, CLI envelopes, metrics files) goes through
``dumps``, which writes non-finite numbers as ``null``. Inside shoal (the channels between its
own processes) values stay as they are.
"""

from __future__ import annotations

import json
import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN and ±Infinity as null. Costs nothing when there are none."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite(obj), allow_nan=False, **kwargs)


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (dicts, lists and tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(value) for value in obj]
    return obj
