"""Training script: each site fits y = x·w + b on data only it holds, FedAvg combines them."""

import zlib

import numpy as np

from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
seed = zlib.crc32(flare.site_name().encode())
rng = np.random.default_rng(seed)
x = rng.normal(rng.normal(0, 1, 3), 1.0, size=(100 + seed % 100, 3))
y = x @ np.array([1.5, -2.0, 0.5]) + 0.3 + rng.normal(0, 0.05, len(x))

while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    w = np.array(model.params.get("w", np.zeros(3)))
    b = float(np.array(model.params.get("b", np.zeros(1)))[0])
    loss = float(np.mean((x @ w + b - y) ** 2))
    for _ in range(20):
        err = x @ w + b - y
        w -= 0.05 * 2 * x.T @ err / len(y)
        b -= 0.05 * 2 * err.mean()
    print(f"round {model.current_round}: loss {loss:.4f}", flush=True)
    flare.send(FLModel(params={"w": w, "b": np.array([b])}, metrics={"loss": loss}, num_examples=len(y)))
