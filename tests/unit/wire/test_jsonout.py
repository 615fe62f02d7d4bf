from __future__ import annotations

import json
import math

from shoal.wire.jsonout import dumps, finite


def test_non_finite_numbers_become_null_everywhere_in_the_document() -> None:
    doc = {"loss": math.nan, "rounds": [{"m": math.inf}, (-math.inf, 1.5)], "name": "x", "n": 3}
    text = dumps(doc, sort_keys=True)
    assert json.loads(text) == {"loss": None, "rounds": [{"m": None}, [None, 1.5]], "name": "x", "n": 3}
    assert "NaN" not in text and "Infinity" not in text


def test_finite_documents_are_written_as_json_would_write_them() -> None:
    doc = {"a": [1, 2.5, "s", None, True], "b": {"c": -0.0}}
    assert dumps(doc, indent=2) == json.dumps(doc, indent=2)
    assert finite(doc) == doc
