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

Per-example privacy (``example_dp``: DP-SGD inside the training script, e.g. Opacus) is another
kind of guarantee, about any one *example* of a site's data rather than the site's data as a
whole, and is reported apart (``example_epsilon``), never mixed into the figures above. Each
round the script reports the mechanism it ran: ``steps`` optimizer steps, each a Poisson-sampled
Gaussian mechanism (``sample_rate``, ``noise_multiplier``); the ledger composes every round's
with the same RDP accountant. The script also reports its own accountant's figure
(``reported_epsilon``, Opacus' for the rounds its process ran), shown beside ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DELTA = 1e-5


class AccountantMissing(RuntimeError):
    """The job asks for differential privacy and the accountant is not installed."""


def _accountant() -> Any:
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError as exc:
        raise AccountantMissing(
            "differential privacy needs the accountant: pip install 'shoal[privacy]' (dp-accounting) "
            "where the server runs"
        ) from exc
    return dp_accounting, rdp.RdpAccountant()


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The epsilon at ``delta`` of ``rounds`` compositions of a Gaussian mechanism whose noise is
    ``noise_multiplier`` times its sensitivity (RDP accountant of ``dp-accounting``)."""
    if rounds <= 0:
        return 0.0
    dp_accounting, accountant = _accountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


def dp_sgd_epsilon(steps: list[tuple[float, float, int]], delta: float) -> float:
    """The epsilon at ``delta`` of DP-SGD: for each (noise multiplier, sample rate, count),
    ``count`` steps of a Poisson-sampled Gaussian mechanism, all composed (RDP accountant, the
    analysis Opacus' default ``rdp`` accountant makes)."""
    if not steps:
        return 0.0
    dp_accounting, accountant = _accountant()
    for noise_multiplier, sample_rate, count in steps:
        gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
        accountant.compose(dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian), count)
    return float(accountant.get_epsilon(delta))


def example_steps(report: Any) -> tuple[float, float, int] | None:
    """The (noise multiplier, sample rate, steps) of a script's ``example_dp`` report, or None
    when it is not one (missing, or a value out of range: no guarantee is then claimed)."""
    if not isinstance(report, dict):
        return None
    z, q, n = _number(report.get("noise_multiplier")), _number(report.get("sample_rate")), report.get("steps")
    if z is None or q is None or not isinstance(n, int) or isinstance(n, bool):
        return None
    if not (z > 0 and 0 < q <= 1 and n >= 0):
        return None
    return z, q, n


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a (finite, non-bool) number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass
class Ledger:
    """The rounds each protection has been applied in, and the epsilon they add up to."""

    delta: float = DEFAULT_DELTA
    central: float | None = None  # server_dp's noise multiplier, if the job has it
    central_rounds: int = 0
    site_rounds: dict[str, list[float]] = field(default_factory=dict)  # noise multiplier per round
    # example_dp: per site, each round's DP-SGD steps (None: a round without), the script's figure
    example: bool = False
    example_rounds: dict[str, list[tuple[float, float, int] | None]] = field(default_factory=dict)
    example_reported: dict[str, float | None] = field(default_factory=dict)

    def record_site(self, site: str, applied: dict[str, Any] | None, example: Any = None) -> None:
        """A round's update from ``site`` with what its agent says it applied, and (``example``)
        what its training script reports of DP-SGD."""
        dp = (applied or {}).get("client_dp")
        self.site_rounds.setdefault(site, [])
        if isinstance(dp, dict) and isinstance(dp.get("noise_multiplier"), int | float):
            self.site_rounds[site].append(float(dp["noise_multiplier"]))
        else:
            self.site_rounds[site].append(0.0)  # sent without noise: no finite guarantee
        if self.example:
            self.example_rounds.setdefault(site, []).append(example_steps(example))
            reported = example.get("epsilon") if isinstance(example, dict) else None
            self.example_reported[site] = _number(reported)

    def example_epsilon(self, rounds: list[tuple[float, float, int] | None]) -> float:
        if any(r is None for r in rounds):
            return math.inf  # a round trained without DP-SGD (or said nothing of it)
        return dp_sgd_epsilon([r for r in rounds if r is not None], self.delta)

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
        out: dict[str, Any] = {
            "delta": self.delta,
            "epsilon": _finite(job),
            "central_epsilon": _finite(central) if self.central is not None else None,
            "central_rounds": self.central_rounds,
            "sites": {site: {"epsilon": _finite(eps), "rounds": rounds[site]} for site, eps in sites.items()},
        }
        if self.example:
            examples = {s: self.example_epsilon(r) for s, r in self.example_rounds.items()}
            for site, eps in examples.items():
                out["sites"][site]["example_epsilon"] = _finite(eps)
                out["sites"][site]["reported_example_epsilon"] = self.example_reported.get(site)
            out["example_epsilon"] = _finite(max(examples.values(), default=0.0))
        return out

    def next_round_epsilon(self, client_noise: dict[str, float]) -> float:
        """The job's epsilon if one more round ran, with each site's noise multiplier as given
        (0 for none); what a budget is checked against before the round starts."""
        sites = {s: self.site_epsilon([*self.site_rounds.get(s, []), z]) for s, z in client_noise.items()}
        central = self.central_epsilon(self.central_rounds + 1) if self.central is not None else math.inf
        return self.job_epsilon(sites, central)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
