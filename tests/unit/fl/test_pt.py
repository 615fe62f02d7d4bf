"""shoal.fl.pt: numpy params <-> PyTorch state_dicts, and torch stays out of shoal's numpy path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shoal.fl.pt import from_state_dict, load_into, to_state_dict  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_round_trip_keeps_values_shape_and_dtype(dtype: type[np.generic]) -> None:
    params = {"w": np.arange(12, dtype=dtype).reshape(3, 4), "b": np.array([7], dtype=dtype)}
    sd = to_state_dict(params)
    assert all(isinstance(t, torch.Tensor) for t in sd.values())
    assert sd["w"].dtype == torch.from_numpy(np.zeros(1, dtype=dtype)).dtype
    back = from_state_dict(sd)
    for name, want in params.items():
        assert back[name].dtype == want.dtype and back[name].shape == want.shape
        np.testing.assert_array_equal(back[name], want)


def test_conversions_copy_instead_of_sharing_memory() -> None:
    source = np.arange(6, dtype=np.float32).reshape(2, 3)
    view = source.T  # not contiguous: torch.from_numpy alone would keep the strides of a view
    read_only = np.ones(3, dtype=np.float32)
    read_only.flags.writeable = False  # as a safetensors load may hand it over
    sd = to_state_dict({"t": view, "r": read_only})
    sd["t"].add_(100)
    sd["r"].add_(1)
    assert source[0, 0] == 0 and read_only[0] == 1
    tensor = torch.zeros(2)
    out = from_state_dict({"x": tensor})
    tensor.add_(5)
    assert out["x"].tolist() == [0.0, 0.0]


def test_load_into_a_real_module_and_back() -> None:
    torch.manual_seed(1)
    source = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    params = from_state_dict(source.state_dict())
    assert set(params) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    torch.manual_seed(2)
    target = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert load_into(target, params) is True
    x = torch.randn(5, 4)
    torch.testing.assert_close(target(x), source(x))


def test_load_into_with_empty_params_keeps_the_initial_weights() -> None:
    module = torch.nn.Linear(2, 2)
    before = from_state_dict(module.state_dict())
    assert load_into(module, {}) is False
    after = from_state_dict(module.state_dict())
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_load_into_rejects_names_that_do_not_match() -> None:
    with pytest.raises(RuntimeError):
        load_into(torch.nn.Linear(2, 2), {"nope": np.zeros(2, dtype=np.float32)})


def test_shoal_numpy_path_does_not_import_torch() -> None:
    probe = (
        "import sys\n"
        "import shoal.fl.client, shoal.workflows.fedavg, shoal.simulator.engine, shoal.cli.main\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
