"""Returns every model it receives, unchanged: a smoke test of the federation itself.

Useful to check that a site can take part (connectivity, policy, versions) without running any
of a job's custom code, and to measure shoal's own overhead per round.
"""

from __future__ import annotations

from shoal.fl import FLModel
from shoal.fl import client as flare


def main() -> None:
    flare.init()
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        print(f"{flare.site_name()}: echo round {model.current_round}", flush=True)
        flare.send(FLModel(params=model.params, metrics={"echo": 1.0}, num_examples=1))


if __name__ == "__main__":
    main()
