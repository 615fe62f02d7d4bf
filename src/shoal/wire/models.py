"""Model weights on the wire and on disk: safetensors files of numpy arrays, never pickle.

Loading a safetensors file cannot run code, and it maps straight onto numpy arrays. Metadata
(round numbers and the like) travels in the JSON messages beside the file, not inside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import ShoalError

if TYPE_CHECKING:
    import numpy as np

Params = dict[str, "np.ndarray"]


def save_params(params: Params, path: Path) -> None:
    """Write weights atomically (temp file then rename), so a reader never sees half a file."""
    import numpy as np
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, str(tmp))
    os.replace(tmp, path)


def load_params(path: Path) -> Params:
    """Read weights; a file that is not valid safetensors is refused with MODEL_INVALID."""
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise ShoalError("MODEL_INVALID", f"{path.name}: {exc}") from exc
