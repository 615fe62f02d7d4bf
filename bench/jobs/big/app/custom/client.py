"""A large float32 model (--mb megabytes), trained trivially: measures moving and averaging it."""

import argparse

import numpy as np

from shoal.fl import FLModel
from shoal.fl import client as flare

parser = argparse.ArgumentParser()
parser.add_argument("--mb", type=float, default=100)
opts = parser.parse_args()

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    params = dict(model.params) or {"w": np.zeros(int(opts.mb * 2**20) // 4, dtype=np.float32)}
    for value in params.values():
        value += 1.0  # in place: no second copy of the model
    flare.send(FLModel(params=params, num_examples=1))
    del params, model
