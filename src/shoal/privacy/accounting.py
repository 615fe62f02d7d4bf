"""How much privacy a job has spent: (epsilon, delta) per site and for the job.

Computed with Google's ``dp-accounting`` (its Rényi-DP accountant), never by a formula of our
own: composing Gaussian mechanisms tightly is subtle, and a maintained accountant is what a
reviewer can check. It is an optional extra (``pip install 'shoal[privacy]'``), imported only by
a job that asks for differential privacy.

What is counted, and why so:

- a site's epsilon (``client_dp``): every round whose update that site sent, clipped to C with
  noise N(0, (zC)²) added at the site, is one Gaussian mechanism of noise multiplier z over the
  site's whole data (it protects the site's data as a whole, against everyone downstream,
  the server included);
- the job's central epsilon (``server_dp``): every round, the server clips each site's update to
  C, averages them without weights and adds N(0, (zC/n)²) to the mean: one Gaussian mechanism of
  noise multiplier z with respect to any one site's participation (it protects the released
  model, not the updates the server sees);
- the job's epsilon: the weakest guarantee any site has in the released model, each site's
  being the better of its own epsilon and the central one.

Every participating site takes part in every round (no sampling is assumed, so no amplification
by sampling is claimed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DELTA = 1e-5


class AccountantMissing(RuntimeError):
    """The job asks for differential privacy and the accountant is not installed."""


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The epsilon at ``delta`` of ``rounds`` compositions of a Gaussian mechanism whose noise is
    ``noise_multiplier`` times its sensitivity (RDP accountant of ``dp-accounting``)."""
    if rounds <= 0:
        return 0.0
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError as exc:
        raise AccountantMissing(
            "differential privacy needs the accountant: pip install 'shoal[privacy]' (dp-accounting) "
            "where the server runs"
        ) from exc
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


@dataclass
class Ledger:
    """The rounds each protection has been applied in, and the epsilon they add up to."""

    delta: float = DEFAULT_DELTA
    central: float | None = None  # server_dp's noise multiplier, if the job has it
    central_rounds: int = 0
    site_rounds: dict[str, list[float]] = field(default_factory=dict)  # noise multiplier per round

    def record_site(self, site: str, applied: dict[str, Any] | None) -> None:
        """A round's update from ``site`` with what its agent says it applied."""
        dp = (applied or {}).get("client_dp")
        self.site_rounds.setdefault(site, [])
        if isinstance(dp, dict) and isinstance(dp.get("noise_multiplier"), int | float):
            self.site_rounds[site].append(float(dp["noise_multiplier"]))
        else:
            self.site_rounds[site].append(0.0)  # sent without noise: no finite guarantee

    def site_epsilon(self, rounds: list[float]) -> float:
        if not rounds:
            return 0.0
        if min(rounds) <= 0:
            return math.inf
        # Rounds with different noise: accounting every round at the smallest multiplier is an
        # upper bound (more noise never costs more privacy).
        return gaussian_epsilon(min(rounds), len(rounds), self.delta)

    def central_epsilon(self, rounds: int | None = None) -> float:
        if self.central is None:
            return math.inf
        return gaussian_epsilon(self.central, self.central_rounds if rounds is None else rounds, self.delta)

    def job_epsilon(self, sites: dict[str, float], central: float) -> float:
        if not sites:
            return 0.0 if self.central is not None and self.central_rounds == 0 else central
        return max(min(eps, central) for eps in sites.values())

    def report(self) -> dict[str, Any]:
        """What ``job meta`` and ``metrics_summary.json`` show (infinity as null: no guarantee)."""
        rounds = {site: len(r) for site, r in self.site_rounds.items()}
        sites = {site: self.site_epsilon(r) for site, r in self.site_rounds.items()}
        central = self.central_epsilon()
        job = self.job_epsilon(sites, central)
        return {
            "delta": self.delta,
            "epsilon": _finite(job),
            "central_epsilon": _finite(central) if self.central is not None else None,
            "central_rounds": self.central_rounds,
            "sites": {site: {"epsilon": _finite(eps), "rounds": rounds[site]} for site, eps in sites.items()},
        }

    def next_round_epsilon(self, client_noise: dict[str, float]) -> float:
        """The job's epsilon if one more round ran, with each site's noise multiplier as given
        (0 for none); what a budget is checked against before the round starts."""
        sites = {s: self.site_epsilon([*self.site_rounds.get(s, []), z]) for s, z in client_noise.items()}
        central = self.central_epsilon(self.central_rounds + 1) if self.central is not None else math.inf
        return self.job_epsilon(sites, central)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
