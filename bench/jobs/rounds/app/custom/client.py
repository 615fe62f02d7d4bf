"""The smallest useful training script: echo a tiny model back, so a benchmark measures shoal."""

import numpy as np

from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    params = model.params or {"w": np.zeros(4, dtype=np.float32)}
    flare.send(FLModel(params={k: v + 1 for k, v in params.items()}, metrics={"loss": 0.0}, num_examples=1))
