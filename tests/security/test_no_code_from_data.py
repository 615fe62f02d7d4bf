"""Loading data must never run code: no pickle, dill, marshal.loads, torch.load or eval in shoal."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from shoal.errors import ShoalError
from shoal.wire.models import check_safetensors, load_params, save_params

SRC = Path(__file__).resolve().parents[2] / "src" / "shoal"
FORBIDDEN_MODULES = {"pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec"}
FORBIDDEN_ATTRS = {
    ("torch", "load"),
    ("marshal", "loads"),
    ("pickle", "loads"),
    ("np", "load"),
    ("numpy", "load"),
}


def test_no_deserialiser_that_runs_code_is_used_anywhere_in_shoal() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            problems += [f"{path}:{node.lineno} imports {n}" for n in names & FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    problems.append(f"{path}:{node.lineno} calls {func.id}")
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    if (func.value.id, func.attr) in FORBIDDEN_ATTRS:
                        problems.append(f"{path}:{node.lineno} calls {func.value.id}.{func.attr}")
    assert problems == []


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x05\x00",
        b"\xff" * 8 + b"{}",
        b"\x02\x00\x00\x00\x00\x00\x00\x00[]",
        b'\x10\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype": 1}}',
    ],
)
def test_malformed_safetensors_is_refused_cleanly(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ShoalError) as err:
        check_safetensors(path)
    assert err.value.code == "MODEL_INVALID"
    with pytest.raises(ShoalError) as err:
        load_params(path)
    assert err.value.code == "MODEL_INVALID"


def test_valid_safetensors_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    save_params({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    check_safetensors(path)
    np.testing.assert_array_equal(load_params(path)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
