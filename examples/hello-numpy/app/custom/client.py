"""hello-numpy training script: receive the global model, train locally, send the update back."""

from __future__ import annotations

import argparse

from linreg import initial_params, local_train, mse, site_data

from shoal.fl import FLModel
from shoal.fl import client as flare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    flare.init()
    site = flare.site_name()
    x, y = site_data(site)
    print(f"{site}: {len(y)} rows of local data")
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        params = model.params or initial_params()
        loss = mse(params, x, y)
        if flare.task_name() == "validate":  # cross-site evaluation: score a model, train nothing
            owner = model.meta.get("model_owner", "?")
            print(f"{site}: the {owner} model's loss on local data {loss:.6f}")
            flare.send(FLModel(params={}, metrics={"mse": loss}, num_examples=len(y)))
            continue
        mu = float(model.meta.get("mu", 0.0))  # FedProx sends mu with each task; FedAvg does not
        update = local_train(params, x, y, args.lr, args.epochs, mu=mu)
        print(f"{site}: round {model.current_round}: loss of the global model on local data {loss:.6f}")
        flare.send(FLModel(params=update, metrics={"loss": loss}, num_examples=len(y)))


if __name__ == "__main__":
    main()
