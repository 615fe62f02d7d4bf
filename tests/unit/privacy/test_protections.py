"""Differential privacy and privacy filters, as numbers: the noise is what it is calibrated to,
epsilon is the accountant's and agrees with the exact Gaussian-mechanism value, filters keep what
they say they keep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from shoal.privacy.accounting import Ledger, dp_sgd_epsilon, gaussian_epsilon
from shoal.privacy.central import JobPrivacy
from shoal.privacy.protections import (
    APPLIED_META_KEY,
    PrivacySpecError,
    apply_site_privacy,
    check_privacy,
    site_privacy,
    update_norm,
)

SEED = 20261204


def test_client_noise_standard_deviation_matches_its_calibration() -> None:
    """An update equal to the global model (difference 0) comes back as pure noise, whose
    standard deviation must be noise_multiplier * clip_norm: with 200 000 draws the sample
    standard deviation is within 1% (its standard error is 0.16%) and the mean near 0."""
    n = 200_000
    global_params = {"w": np.ones(n, dtype=np.float64)}
    spec = {"client_dp": {"clip_norm": 0.5, "noise_multiplier": 1.5}}
    out, applied = apply_site_privacy(global_params, global_params, spec, np.random.default_rng(SEED))
    noise = out["w"] - 1.0
    assert abs(noise.std() - 0.75) / 0.75 < 0.01
    assert abs(noise.mean()) < 5 * 0.75 / math.sqrt(n)
    assert applied["client_dp"] == {"clip_norm": 0.5, "noise_multiplier": 1.5}


def test_client_update_is_clipped_to_its_norm_before_noise() -> None:
    rng = np.random.default_rng(SEED)
    global_params = {"a": np.zeros(50), "b": np.zeros((5, 5))}
    params = {"a": rng.normal(0, 10, 50), "b": rng.normal(0, 10, (5, 5))}
    assert update_norm(params) > 50
    tiny = {"client_dp": {"clip_norm": 2.0, "noise_multiplier": 1e-9}}
    out, applied = apply_site_privacy(params, global_params, tiny, rng)
    assert update_norm(out) == pytest.approx(2.0, rel=1e-6)
    assert applied["clipped"] is True
    # the direction is kept: clipping scales, it does not reshape
    np.testing.assert_allclose(out["a"] / np.linalg.norm(out["a"]), params["a"] / np.linalg.norm(params["a"]))


def test_server_noise_standard_deviation_is_noise_multiplier_clip_over_sites() -> None:
    privacy = JobPrivacy({"server_dp": {"clip_norm": 2.0, "noise_multiplier": 1.2}}, seed=SEED)
    mean = {"w": np.zeros(200_000, dtype=np.float32), "steps": np.array([3], dtype=np.int64)}
    out = privacy.noised(mean, count=4)
    assert abs(float(out["w"].std()) - 0.6) / 0.6 < 0.01  # 1.2 * 2.0 / 4
    assert out["w"].dtype == np.float32 and out["steps"][0] == 3  # integers carry no noise
    assert privacy.ledger.central_rounds == 1


def test_server_clips_each_update_around_the_global_model_and_weighs_it_one() -> None:
    privacy = JobPrivacy({"server_dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}})
    global_params = {"w": np.full(4, 10.0)}
    update, weight = privacy.server_update("site-1", {"w": np.full(4, 20.0)}, {}, global_params)
    assert weight == 1.0
    assert update_norm({"w": update["w"] - 10.0}) == pytest.approx(1.0)


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """The exact epsilon of a Gaussian mechanism with mu = sensitivity/sigma at ``delta``
    (Balle & Wang 2018), found by bisection: an independent check of the accountant."""

    def phi(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    def delta_at(eps: float) -> float:
        return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)

    low, high = 0.0, 100.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if delta_at(mid) > delta else (low, mid)
    return high


@pytest.mark.parametrize(("z", "rounds", "delta"), [(1.0, 10, 1e-5), (2.0, 50, 1e-6), (0.8, 1, 1e-5)])
def test_epsilon_is_the_accountants_and_bounds_the_exact_value(z: float, rounds: int, delta: float) -> None:
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(z), rounds)
    eps = gaussian_epsilon(z, rounds, delta)
    assert eps == pytest.approx(accountant.get_epsilon(delta), rel=1e-12)
    # T rounds of noise z are one Gaussian mechanism with mu = sqrt(T)/z: RDP is an upper bound
    # on its exact epsilon, and a tight one
    exact = _exact_gaussian_epsilon(math.sqrt(rounds) / z, delta)
    assert exact <= eps <= exact * 1.35


def test_known_value_ten_rounds_of_noise_one() -> None:
    """A fixed point a reader can check against the accountant by hand."""
    assert gaussian_epsilon(1.0, 10, 1e-5) == pytest.approx(19.05, abs=0.01)


def test_ledger_per_site_and_job() -> None:
    ledger = Ledger(delta=1e-5, central=2.0)
    for _ in range(3):
        ledger.record_site("site-1", {"client_dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}})
        ledger.record_site("site-2", None)  # sent without local noise
        ledger.central_rounds += 1
    report = ledger.report()
    assert report["sites"]["site-1"] == {"epsilon": gaussian_epsilon(1.0, 3, 1e-5), "rounds": 3}
    assert report["sites"]["site-2"] == {"epsilon": None, "rounds": 3}  # no guarantee of its own
    central = gaussian_epsilon(2.0, 3, 1e-5)
    assert report["central_epsilon"] == central
    # site-2's data is protected in the model by the central noise alone: the job's weakest
    assert report["epsilon"] == max(min(gaussian_epsilon(1.0, 3, 1e-5), central), central)


def test_per_example_epsilon_composes_every_rounds_dp_sgd_apart_from_the_update_level() -> None:
    """Each round a site's script reports the DP-SGD it ran; the ledger composes all rounds (the
    script's own accountant, in a process that ran one round, saw one) and keeps it apart from the
    update-level epsilon, which stays "no guarantee" without update noise. A round reported
    without DP-SGD, or with a report that is not one, leaves that site with no per-example
    guarantee."""
    ledger = Ledger(delta=1e-5, example=True)
    report = {"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "epsilon": 1.23}
    for _ in range(3):
        ledger.record_site("site-1", None, report)
        ledger.record_site("site-2", None, {**report, "steps": "40"} if _ == 1 else report)
    out = ledger.report()
    want = dp_sgd_epsilon([(1.1, 0.05, 40)] * 3, 1e-5)
    assert want == pytest.approx(dp_sgd_epsilon([(1.1, 0.05, 120)], 1e-5))
    assert out["sites"]["site-1"] == {
        "epsilon": None,
        "rounds": 3,
        "example_epsilon": pytest.approx(want),
        "reported_example_epsilon": 1.23,
    }
    assert out["sites"]["site-2"]["example_epsilon"] is None
    assert out["epsilon"] is None and out["example_epsilon"] is None  # the weakest site's


def test_per_example_epsilon_matches_opacus_accountant() -> None:
    opacus = pytest.importorskip("opacus.accountants")
    accountant = opacus.RDPAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=1.1, sample_rate=0.05)
    assert dp_sgd_epsilon([(1.1, 0.05, 30), (1.1, 0.05, 20)], 1e-5) == pytest.approx(
        accountant.get_epsilon(1e-5), rel=1e-4
    )


def test_budget_blocks_the_round_that_would_exceed_it() -> None:
    privacy = JobPrivacy(
        {
            "client_dp": {"clip_norm": 1.0, "noise_multiplier": 1.0},
            "budget": {"epsilon": gaussian_epsilon(1.0, 2, 1e-5) + 1e-9, "delta": 1e-5},
        }
    )
    applied = {APPLIED_META_KEY: {"client_dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}}}
    for _ in range(2):
        assert privacy.blocked(["site-1"]) is None
        privacy.server_update("site-1", {}, applied, {})
    reason = privacy.blocked(["site-1"])
    assert reason is not None and "privacy budget" in reason


def test_a_budget_without_noise_allows_no_round() -> None:
    privacy = JobPrivacy({"budget": {"epsilon": 100.0, "delta": 1e-5}})
    assert privacy.blocked(["site-1"]) is not None


def test_top_fraction_keeps_the_largest_changes_only() -> None:
    rng = np.random.default_rng(SEED)
    global_params = {"w": rng.normal(size=1000).astype(np.float32)}
    params = {"w": global_params["w"] + rng.normal(size=1000).astype(np.float32)}
    out, applied = apply_site_privacy(params, global_params, {"top_fraction": 0.05})
    changed = out["w"] != global_params["w"]
    assert changed.sum() == 50 and applied["top_fraction"] == 0.05
    delta = np.abs(params["w"] - global_params["w"])
    assert delta[changed].min() >= delta[~changed].max()


def test_quantize_leaves_at_most_two_to_the_bits_levels() -> None:
    rng = np.random.default_rng(SEED)
    params = {"w": rng.normal(size=5000)}
    out, _ = apply_site_privacy(params, {}, {"quantize_bits": 3})
    assert len(np.unique(out["w"])) <= 8
    assert np.abs(out["w"] - params["w"]).max() <= (params["w"].max() - params["w"].min()) / 7 / 2 + 1e-12


def test_exclude_sends_the_global_value_back() -> None:
    global_params = {"secret": np.zeros(3, dtype=np.float32), "w": np.zeros(2, dtype=np.float32)}
    params = {"secret": np.array([1, 2, 3], dtype=np.float32), "w": np.ones(2, dtype=np.float32)}
    out, applied = apply_site_privacy(params, global_params, {"exclude": ["secret"]})
    np.testing.assert_array_equal(out["secret"], 0)
    np.testing.assert_array_equal(out["w"], 1)
    assert applied["exclude"] == ["secret"]


def test_site_policy_tightens_a_job_never_loosens_it() -> None:
    job = {
        "client_dp": {"clip_norm": 1.0, "noise_multiplier": 0.5},
        "top_fraction": 0.5,
        "exclude": ["a"],
    }
    site = {"client_dp": {"clip_norm": 2.0, "noise_multiplier": 1.0}, "top_fraction": 0.9, "exclude": ["b"]}
    got = site_privacy(job, check_privacy(site))
    assert got["client_dp"] == {"clip_norm": 1.0, "noise_multiplier": 1.0}
    assert got["top_fraction"] == 0.5 and got["exclude"] == ["a", "b"]
    assert site_privacy(None, {"quantize_bits": 4}) == {"quantize_bits": 4}


@pytest.mark.parametrize(
    "block",
    [
        {"client_dp": {"clip_norm": 0, "noise_multiplier": 1}},
        {"client_dp": {"clip_norm": 1}},
        {"server_dp": {"clip_norm": 1, "noise_multiplier": True}},
        {"top_fraction": 1.5},
        {"quantize_bits": 0},
        {"exclude": "w"},
        {"example_dp": {"noise_multiplier": 1.0}},
        {"to_sites": {"top_fraction": 0.5}},
        {"to_sites": {"quantize_bits": 17}},
        {"example_dp": {"noise_multiplier": 1.0, "max_grad_norm": -1}},
        {"budget": {"epsilon": 1, "delta": 2}},
        {"noise": 1},
        [],
    ],
)
def test_a_wrong_privacy_block_is_refused_naming_it(block: object) -> None:
    with pytest.raises(PrivacySpecError):
        check_privacy(block)


def test_a_site_policy_cannot_set_the_jobs_server_side_keys(tmp_path: Path) -> None:
    from shoal.errors import ShoalError
    from shoal.site.policy import check_site_policy

    with pytest.raises(ShoalError) as err:
        check_site_policy({"privacy": {"budget": {"epsilon": 1, "delta": 1e-5}}}, tmp_path / "p.json")
    assert err.value.code == "LOCAL_FILE_ERROR" and err.value.context.get("key") == "privacy"


def test_the_simulator_applies_and_accounts_a_jobs_privacy_as_sites_do(tmp_path: Path) -> None:
    """The same job in the simulator: every virtual site's update gets the job's client_dp (its
    agent-side record says so), and metrics_summary.json gives the accountant's epsilons."""
    import json
    import shutil

    from tests.conftest import EXAMPLES

    from shoal.simulator.engine import simulate

    job = tmp_path / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    meta = json.loads((job / "meta.json").read_text())
    dp = {"clip_norm": 5.0, "noise_multiplier": 2.0}
    (job / "meta.json").write_text(json.dumps({**meta, "privacy": {"client_dp": dp}}))
    workspace = simulate(job, 3, workers=1, out_dir=tmp_path / "out")
    summary = json.loads((workspace / "metrics_summary.json").read_text())
    eps = gaussian_epsilon(2.0, 5, 1e-5)
    assert summary["privacy"]["sites"] == {f"site-{i}": {"epsilon": eps, "rounds": 5} for i in (1, 2, 3)}
    assert summary["privacy"]["epsilon"] == eps and summary["privacy"]["central_epsilon"] is None


def test_adaptive_clipping_follows_the_target_quantile_of_the_norms() -> None:
    """Updates of norms 1..10 each round, target the median: the clip norm moves from 100 (every
    update unclipped) and from 0.01 (every update clipped) to near the median norm (~5.5)."""
    adaptive = {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise": 2.0}
    for start in (100.0, 0.01):
        spec = {"server_dp": {"clip_norm": start, "noise_multiplier": 1.0, "adaptive": adaptive}}
        privacy = JobPrivacy(check_privacy(spec), seed=SEED)
        for _ in range(300):
            for i in range(1, 11):
                privacy.server_update(f"site-{i}", {"w": np.full(4, i / 2.0)}, {}, {"w": np.zeros(4)})
            privacy.noised({"w": np.zeros(4)}, 10)
        assert 3.0 < privacy.clip_norm < 8.0, (start, privacy.clip_norm)
        assert privacy.report()["clip_norm"] == privacy.clip_norm


def test_adaptive_clipping_pays_for_the_count_with_more_update_noise() -> None:
    """The update's noise multiplier grows so that update and count together are a Gaussian
    mechanism of the declared multiplier (what the ledger accounts): z_u^-2 + (2 s)^-2 = z^-2."""
    adaptive = {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise": 2.0}
    privacy = JobPrivacy(
        check_privacy({"server_dp": {"clip_norm": 1, "noise_multiplier": 1.2, "adaptive": adaptive}})
    )
    z_update = privacy.update_noise_multiplier()
    assert z_update**-2 + 4.0**-2 == pytest.approx(1.2**-2)
    mean = privacy.noised({"w": np.zeros(200_000)}, 1)
    assert abs(float(mean["w"].std()) - z_update) / z_update < 0.01
    assert privacy.ledger.central == 1.2
    with pytest.raises(PrivacySpecError, match="count_noise"):
        check_privacy({"server_dp": {"clip_norm": 1, "noise_multiplier": 5, "adaptive": adaptive}})


def test_to_sites_filters_remove_and_quantize_idempotently_and_are_not_merged() -> None:
    """The job's to_sites is the server's to apply, a site policy's the agent's: site_privacy
    (what the agent applies to results) carries neither."""
    from shoal.privacy.protections import filter_to_site

    spec = check_privacy({"to_sites": {"exclude": ["a", "b"], "quantize_bits": 3}})["to_sites"]
    assert "to_sites" not in site_privacy({"to_sites": spec}, {"to_sites": {"exclude": ["c"]}})
    params = {
        "a": np.ones(2, np.float32),
        "b": np.ones(2, np.float32),
        "w": np.linspace(-2, 2, 50).astype(np.float32),
        "n": np.arange(5),
    }
    once, applied = filter_to_site(params, spec)
    assert sorted(once) == ["n", "w"] and applied == {"exclude": ["a", "b"], "quantize_bits": 3}
    assert len(np.unique(once["w"])) == 8 and once["w"].dtype == np.float32
    np.testing.assert_array_equal(once["n"], params["n"])  # integers pass as they are
    twice, _ = filter_to_site(once, spec)
    np.testing.assert_allclose(twice["w"], once["w"], rtol=0, atol=1e-6)


def test_a_resumed_job_keeps_its_ledger_clip_norm_and_noise() -> None:
    """What a checkpoint holds of privacy (decisions/0040), through JSON as the store keeps it:
    a job resumed after a server restart has spent what it had, clips where it clipped, and
    draws the noise an uninterrupted run would have drawn next."""
    import json

    spec = {
        "server_dp": {
            "clip_norm": 1.0,
            "noise_multiplier": 1.0,
            "adaptive": {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise": 10.0},
        },
        "budget": {"epsilon": 1000.0, "delta": 1e-5},
    }
    applied = {APPLIED_META_KEY: {"client_dp": {"clip_norm": 1.0, "noise_multiplier": 2.0}}}
    plain = JobPrivacy(spec, seed=SEED)
    for _ in range(2):  # two rounds before the server dies
        plain.server_update("site-1", {"w": np.ones(3)}, applied, {"w": np.zeros(3)})
        plain.noised({"w": np.zeros(3)}, 1)
    resumed = JobPrivacy(spec, seed=None)  # a new process: its own generator, no ledger
    resumed.restore(json.loads(json.dumps(plain.state())))
    assert resumed.report() == plain.report() and resumed.clip_norm == plain.clip_norm
    for privacy in (plain, resumed):
        privacy.server_update("site-1", {"w": np.ones(3)}, applied, {"w": np.zeros(3)})
    np.testing.assert_array_equal(
        resumed.noised({"w": np.zeros(3)}, 1)["w"], plain.noised({"w": np.zeros(3)}, 1)["w"]
    )
    assert resumed.report() == plain.report()
