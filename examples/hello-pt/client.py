"""hello-pt training script: receive the global weights, train the MLP locally, send the update.

When the job's privacy block asks for ``example_dp`` (docs/privacy.md), local training is DP-SGD
with Opacus (``pip install 'shoal[opacus]'``) and each update carries, in its meta, the mechanism
run and Opacus' epsilon, which the server accounts.

Per round it reports, on the held-out test split every site shares:
  * ``global_accuracy`` / ``global_loss``: the model the server sent (the previous round's FedAvg);
  * ``accuracy`` / ``loss``: this site's update after local training, the model it sends.
The server averages both per round (weighted by training rows) into metrics_summary.json.
"""

from __future__ import annotations

import argparse
import zlib

import torch
from net import evaluate, held_out_data, local_train, local_train_dp, make_net, site_data

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
    privacy = flare.job_privacy()
    example_dp = privacy.get("example_dp")
    engine = None
    if example_dp:
        from opacus import PrivacyEngine

        # one engine per process: its accountant adds up every round this site trains; "rdp" is
        # the analysis the server's accountant (dp-accounting) repeats over all rounds
        engine = PrivacyEngine(accountant="rdp")
        delta = float((privacy.get("budget") or {}).get("delta", 1e-5))
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        net = make_net()  # seeded: round 0 (empty params) starts from the same weights everywhere
        load_into(net, model.params)
        global_accuracy, global_loss = evaluate(net, x_test, y_test)
        meta = {}
        if engine is not None:
            train_loss, meta["example_dp"] = local_train_dp(
                net,
                x,
                y,
                engine=engine,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                noise_multiplier=example_dp["noise_multiplier"],
                max_grad_norm=example_dp["max_grad_norm"],
                delta=delta,
            )
        else:
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
                meta=meta,
            )
        )


if __name__ == "__main__":
    main()
