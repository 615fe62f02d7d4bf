"""FedProx, the client side: a proximal term that keeps local training near the global model.

The server runs FedAvg unchanged and sends ``mu`` with every task (``model.meta["mu"]``); each
site adds ``mu / 2 * ||w - w_global||²`` to its loss, which damps client drift when the sites'
data differ. These helpers work on numpy arrays and on torch tensors alike (they only use
``-``, ``*``, ``**`` and ``.sum()``), so neither path imports the other's library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def proximal_term(params: Mapping[str, Any], global_params: Mapping[str, Any], mu: float) -> Any:
    """``mu / 2 * sum ||w - w_global||²`` over the tensors both share (add it to the loss)."""
    total: Any = 0.0
    for name, value in params.items():
        if name in global_params:
            total = total + ((value - global_params[name]) ** 2).sum()
    return total * (mu / 2)


def proximal_gradient(
    params: Mapping[str, Any], global_params: Mapping[str, Any], mu: float
) -> dict[str, Any]:
    """The term's gradient, ``mu * (w - w_global)`` per tensor (add it to the loss gradient
    where there is no autograd, as in numpy training loops)."""
    return {
        name: (value - global_params[name]) * mu for name, value in params.items() if name in global_params
    }
