"""The server side of a job's privacy block: central DP on the aggregate, the ledger, the budget.

FedAvg asks three things of it each round: may another round run within the budget
(``blocked``), what to fold in for one site's update (``server_update``: clipped when the job
has ``server_dp``), and the noise to add to the round's mean (``noised``). It keeps the ledger
(``shoal.privacy.accounting``) and tells the server what was spent after each round, so ``job meta``
shows it while the job runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shoal.privacy.accounting import DEFAULT_DELTA, Ledger
from shoal.privacy.protections import (
    APPLIED_META_KEY,
    EXAMPLE_META_KEY,
    add_gaussian_noise,
    check_privacy,
    clip,
)

log = logging.getLogger("shoal.workflow")


def read_job_privacy(app_dir: Path) -> dict[str, Any]:
    """The checked ``privacy`` block of the job's meta.json (beside its app folders), or {}."""
    path = app_dir.parent / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    block = meta.get("privacy") if isinstance(meta, dict) else None
    return check_privacy(block) if block is not None else {}


class JobPrivacy:
    def __init__(self, spec: Mapping[str, Any], seed: int | None = None) -> None:
        import numpy as np

        self.spec = dict(spec)
        budget = self.spec.get("budget") or {}
        self.ledger = Ledger(
            delta=float(budget.get("delta", DEFAULT_DELTA)), example=bool(self.spec.get("example_dp"))
        )
        self.server_dp = self.spec.get("server_dp")
        if self.server_dp:
            self.ledger.central = self.server_dp["noise_multiplier"]
        self.client_noise = (self.spec.get("client_dp") or {}).get("noise_multiplier", 0.0)
        self.rng = np.random.default_rng(seed)
        # adaptive clipping: the clip norm in force, and the round's count of unclipped updates
        self.clip_norm = self.server_dp["clip_norm"] if self.server_dp else 0.0
        self.unclipped = 0
        self.active = bool(self.server_dp or self.spec.get("client_dp") or budget or self.ledger.example)

    def blocked(self, sites: list[str]) -> str | None:
        """Why the next round may not run (it would spend more than the budget), or None."""
        budget = self.spec.get("budget")
        if not budget:
            return None
        noise = {s: max(self.client_noise, *self.ledger.site_rounds.get(s, [0.0])[-1:]) for s in sites}
        after = self.ledger.next_round_epsilon(noise)
        if after > budget["epsilon"]:
            return (
                f"privacy budget: another round would spend epsilon {after:.4g} > {budget['epsilon']:.4g} "
                f"(delta {budget['delta']:.3g})"
            )
        return None

    def server_update(
        self, site: str, params: Mapping[str, Any], meta: Mapping[str, Any], global_params: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | Mapping[str, Any], float | None]:
        """One site's update as it is folded in, and its weight (None: the site's example count).
        With ``server_dp`` the update is clipped to ``clip_norm`` around the global model and
        weighs 1: example counts would scale one site's influence beyond what the noise covers."""
        self.record(site, meta)
        if not self.server_dp:
            return params, None
        import numpy as np

        out = {name: np.asarray(params[name]) for name in params}
        floats = [n for n in out if out[n].dtype.kind == "f"]
        base = {n: _base(global_params, n, out[n].shape) for n in floats}
        delta = {n: out[n].astype(np.float64) - base[n] for n in floats}
        if clip(delta, self.clip_norm) <= self.clip_norm:
            self.unclipped += 1
        for n in floats:
            out[n] = (base[n] + delta[n]).astype(out[n].dtype)
        return out, 1.0

    def record(self, site: str, meta: Any) -> None:
        """Account one site's update in this round from its header meta (what its agent says it
        applied, what its script says of DP-SGD)."""
        if isinstance(meta, Mapping):
            self.ledger.record_site(site, meta.get(APPLIED_META_KEY), meta.get(EXAMPLE_META_KEY))
        else:
            self.ledger.record_site(site, None)

    def update_noise_multiplier(self) -> float:
        """The noise multiplier of the update itself. With adaptive clipping part of the privacy
        goes to the count, so the update gets more noise: (z⁻² - (2σ_b)⁻²)^(-1/2), which makes the
        pair exactly a Gaussian mechanism of multiplier z (Andrew et al. 2021, theorem 1)."""
        assert self.server_dp is not None
        z = float(self.server_dp["noise_multiplier"])
        adaptive = self.server_dp.get("adaptive")
        if not adaptive:
            return z
        return float((z**-2 - (2 * adaptive["count_noise"]) ** -2) ** -0.5)

    def noised(self, mean: dict[str, Any], count: int) -> dict[str, Any]:
        """The round's mean with central noise N(0, (z·C/n)²) on its float tensors; with adaptive
        clipping, then the clip norm moves towards the target quantile of the updates' norms."""
        if not self.server_dp:
            return mean
        std = self.update_noise_multiplier() * self.clip_norm / count
        floats = {n: mean[n].astype("float64") for n in mean if mean[n].dtype.kind == "f"}
        add_gaussian_noise(floats, std, self.rng)
        for n, value in floats.items():
            mean[n] = value.astype(mean[n].dtype)
        self.ledger.central_rounds += 1
        adaptive = self.server_dp.get("adaptive")
        if adaptive:
            # the fraction of updates that were not clipped, from a noisy count: counting b_i - 1/2
            # (sensitivity 1/2 under adding or removing a site) is why 2·count_noise is its multiplier
            noisy = (self.unclipped + self.rng.normal(0.0, adaptive["count_noise"])) / count
            self.clip_norm *= math.exp(-adaptive["learning_rate"] * (noisy - adaptive["target_quantile"]))
        self.unclipped = 0
        return mean

    def state(self) -> dict[str, Any]:
        """What resuming the job after a server restart needs (JSON): the ledger, the adaptive
        clip norm, and the noise generator's state, so the resumed rounds draw the same noise."""
        return {
            "ledger": dataclasses.asdict(self.ledger),
            "clip_norm": self.clip_norm,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what ``state`` returned (an empty mapping: nothing was spent yet)."""
        ledger = state.get("ledger")
        if isinstance(ledger, dict):
            self.ledger.central_rounds = int(ledger.get("central_rounds", 0))
            self.ledger.site_rounds = {
                str(site): [float(z) for z in rounds]
                for site, rounds in (ledger.get("site_rounds") or {}).items()
            }
        if isinstance(state.get("clip_norm"), int | float):
            self.clip_norm = float(state["clip_norm"])
        if isinstance(state.get("rng"), dict):
            self.rng.bit_generator.state = state["rng"]

    def report(self) -> dict[str, Any]:
        out = self.ledger.report()
        if self.server_dp and self.server_dp.get("adaptive"):
            out["clip_norm"] = self.clip_norm  # the adaptive clip norm now
        if self.spec.get("budget"):
            out["budget"] = dict(self.spec["budget"])
        return out


def _base(global_params: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> Any:
    import numpy as np

    value = global_params.get(name)
    if value is not None and np.shape(value) == shape:
        return np.asarray(value, dtype=np.float64)
    return np.zeros(shape, dtype=np.float64)
