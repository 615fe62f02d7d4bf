"""hello-pt training script: receive the global weights, train the MLP locally, send the update.

Per round it reports, on the held-out test split every site shares:
  * ``global_accuracy`` / ``global_loss``: the model the server sent (the previous round's FedAvg);
  * ``accuracy`` / ``loss``: this site's update after local training, the model it sends.
The server averages both per round (weighted by training rows) into metrics_summary.json.
"""

from __future__ import annotations

import argparse
import zlib

import torch
from net import evaluate, held_out_data, local_train, make_net, site_data

from shoal.fl import FLModel
from shoal.fl import client as flare
from shoal.fl.pt import from_state_dict, load_into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-sites", type=int, default=2)
    args = parser.parse_args()

    # Same numbers in a federation and in the simulator: one thread, deterministic kernels.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    flare.init()
    site = flare.site_name()
    x, y = site_data(site, args.num_sites)
    x_test, y_test = held_out_data()
    print(f"{site}: {len(y)} training rows, labels {torch.bincount(y, minlength=10).tolist()}")
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        net = make_net()  # seeded: round 0 (empty params) starts from the same weights everywhere
        load_into(net, model.params)
        global_accuracy, global_loss = evaluate(net, x_test, y_test)
        seed = zlib.crc32(f"{site}/{model.current_round}".encode())
        train_loss = local_train(
            net, x, y, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed
        )
        accuracy, loss = evaluate(net, x_test, y_test)
        print(
            f"{site}: round {model.current_round}: global model accuracy {global_accuracy:.4f}, "
            f"local update accuracy {accuracy:.4f} (train loss {train_loss:.4f})"
        )
        flare.send(
            FLModel(
                params=from_state_dict(net.state_dict()),
                metrics={
                    "accuracy": accuracy,
                    "loss": loss,
                    "global_accuracy": global_accuracy,
                    "global_loss": global_loss,
                    "train_loss": train_loss,
                },
                num_examples=len(y),
            )
        )


if __name__ == "__main__":
    main()
