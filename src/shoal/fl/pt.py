"""PyTorch at the edge: shoal params (name -> numpy array) to and from ``state_dict``s.

shoal moves models as safetensors files of numpy arrays, so the server, the wire and the
aggregation never need torch (it is the optional extra ``shoal[torch]``). A PyTorch training
script converts at its own edge with these three functions; nothing is pickled on the way,
unlike ``torch.save``/``torch.load``, so a model file can never run code when it is read.

torch is imported here and only here: importing ``shoal.fl.client`` and the rest of shoal's
numpy path must stay free of it (tests/unit/fl/test_pt.py checks that in a fresh process).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["from_state_dict", "load_into", "to_state_dict"]


def to_state_dict(params: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Tensors for ``module.load_state_dict``, keeping each array's dtype.

    ``torch.from_numpy`` shares memory with its array and refuses non-contiguous or read-only
    views (safetensors loads can be either), so each array is copied to a fresh contiguous one
    first: the tensors own their memory and later in-place training cannot write into the
    arrays the caller received.
    """
    return {name: torch.from_numpy(np.array(value, copy=True, order="C")) for name, value in params.items()}


def from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """numpy arrays for ``FLModel(params=...)``: detached (no autograd graph) and on the CPU.

    ``.numpy()`` shares memory with the tensor; the arrays are copied so that training the
    module further after sending cannot change what was sent.
    """
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in state_dict.items()}


def load_into(module: torch.nn.Module, params: Mapping[str, np.ndarray]) -> bool:
    """Load ``params`` into ``module`` (strictly: every name must match); return whether it did.

    Empty params mean the server has no model yet (round 0 without an ``initial_model``), so the
    module keeps the weights it was built with, which every site must build identically (seed).
    """
    if not params:
        return False
    module.load_state_dict(to_state_dict(params))
    return True
