"""Secure aggregation's protocol, played in-process by real site objects and the server's unmasking:
the sum is FedAvg's within the fixed-point tolerance, masked bytes tell nothing, dropouts after
sharing are tolerated, too many fail, and a site refuses to reveal both secrets of one site."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shoal.privacy import secagg
from shoal.privacy.secagg import WEIGHT_TENSOR
from shoal.privacy.secagg_site import ProtocolError, SiteProtocol
from shoal.workflows.base import RoundFailed
from shoal.workflows.secure_round import unmask

RND = 3


def _setup(
    names: list[str], threshold: int, graph: dict[str, Any] | None = None
) -> tuple[dict[str, SiteProtocol], dict[str, Any], dict[str, Any]]:
    sites = {n: SiteProtocol(n) for n in names}
    keys = {n: s.answer("secagg_advertise", {"secagg_round": RND}) for n, s in sites.items()}
    meta = {"secagg_round": RND, "keys": keys, "threshold": threshold, **({"graph": graph} if graph else {})}
    shares = {n: s.answer("secagg_share", meta)["shares"] for n, s in sites.items()}
    return sites, keys, {"round": RND, "keys": keys, "shares": shares}


def _updates(names: list[str]) -> dict[str, tuple[dict[str, np.ndarray], float]]:
    rng = np.random.default_rng(7)
    return {
        n: ({"w": rng.normal(size=(4, 5)), "b": rng.normal(size=3)}, float(i + 1) * 10)
        for i, n in enumerate(names)
    }


def _run(
    names: list[str], threshold: int, upload: list[str], answer: list[str], degree: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, tuple[dict[str, np.ndarray], float]]]:
    graph = {"degree": degree, "seed": "graph-seed"} if degree else None
    sites, keys, train = _setup(names, threshold, graph)
    updates = _updates(names)
    total: dict[str, np.ndarray] = {}
    for n in upload:
        params, weight = updates[n]
        for name, arr in sites[n].mask(params, weight, train).items():
            total[name] = total[name] + arr if name in total else arr.copy()
    dropped = sorted(set(names) - set(upload))
    told = {"secagg_round": RND, "uploaded": sorted(upload), "dropped": dropped}
    signatures = {n: sites[n].answer("secagg_consistency", told)["sig"] for n in upload}
    reveal_meta = {**told, "signatures": signatures}
    reveals = {n: sites[n].answer("secagg_unmask", reveal_meta) for n in answer}
    partners = secagg.neighbours(sorted(names), degree, "graph-seed")
    return unmask(
        total, RND, sorted(names), keys, sorted(upload), dropped, reveals, threshold, partners
    ), updates


def _fedavg(updates: dict[str, tuple[dict[str, np.ndarray], float]], who: list[str]) -> dict[str, np.ndarray]:
    weight = sum(updates[n][1] for n in who)
    return {k: np.asarray(sum(updates[n][0][k] * updates[n][1] for n in who) / weight) for k in ("w", "b")}


def _mean(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    weight = sums.pop(WEIGHT_TENSOR)[0]
    return {k: v / weight for k, v in sums.items()}


def test_the_unmasked_sum_is_fedavgs_within_the_encoding_tolerance() -> None:
    names = ["site-1", "site-2", "site-3", "site-4"]
    sums, updates = _run(names, 3, upload=names, answer=names)
    want = _fedavg(updates, names)
    for k in want:
        np.testing.assert_allclose(_mean(dict(sums))[k], want[k], atol=4 * 2.0**-secagg.FRAC_BITS)


def test_a_site_that_drops_after_its_upload_is_still_in_the_sum() -> None:
    names = ["site-1", "site-2", "site-3"]
    sums, updates = _run(names, 2, upload=names, answer=["site-1", "site-2"])  # site-3 gone at unmask
    want = _fedavg(updates, names)
    for k in want:
        np.testing.assert_allclose(_mean(dict(sums))[k], want[k], atol=1e-6)


def test_a_site_that_drops_before_uploading_is_left_out_and_its_masks_removed() -> None:
    names = ["site-1", "site-2", "site-3", "site-4"]
    sums, updates = _run(names, 2, upload=["site-1", "site-2", "site-4"], answer=["site-1", "site-4"])
    want = _fedavg(updates, ["site-1", "site-2", "site-4"])
    for k in want:
        np.testing.assert_allclose(_mean(dict(sums))[k], want[k], atol=1e-6)


def test_too_few_survivors_fail_the_round_never_a_wrong_sum() -> None:
    names = ["site-1", "site-2", "site-3"]
    with pytest.raises(RoundFailed, match="needed"):
        _run(names, 3, upload=names, answer=["site-1", "site-2"])


def test_what_the_server_receives_from_a_site_tells_nothing_of_its_update() -> None:
    """The same update masked in two runs of the protocol gives unrelated values: uniform-looking
    64-bit words (about half the bits set), uncorrelated with each other and with the update."""
    names = ["site-1", "site-2", "site-3"]
    params = {"w": np.linspace(-1, 1, 4000)}
    seen = []
    for _ in range(2):
        sites, _, train = _setup(names, 2)
        seen.append(sites["site-1"].mask(params, 5.0, train)["w"])
    a, b = seen
    assert not np.array_equal(a, b)
    bits = np.unpackbits(a.view(np.uint8)).mean()
    assert 0.48 < bits < 0.52
    as_float = a.astype(np.float64)
    assert abs(np.corrcoef(as_float, b.astype(np.float64))[0, 1]) < 0.1
    assert abs(np.corrcoef(as_float, params["w"])[0, 1]) < 0.1


def test_a_site_refuses_to_reveal_both_secrets_of_one_site() -> None:
    names = ["site-1", "site-2", "site-3"]
    sites, _, train = _setup(names, 2)
    sites["site-1"].mask({"w": np.ones(2)}, 1.0, train)
    meta = {"secagg_round": RND, "uploaded": ["site-1", "site-2"], "dropped": ["site-2", "site-3"]}
    with pytest.raises(ProtocolError, match="both secrets"):
        sites["site-1"].answer("secagg_unmask", meta)


def test_fixed_point_encoding_round_trips_and_sums_exactly() -> None:
    values = np.array([-3.25, 0.0, 1e6, -1e-7])
    assert np.allclose(secagg.decode(secagg.encode(values)), values, atol=2.0**-secagg.FRAC_BITS)
    total = secagg.encode(values) + secagg.encode(-values)
    assert np.all(secagg.decode(total) == 0.0)
    with pytest.raises(ValueError):
        secagg.encode([1e13])


def test_shamir_shares_rebuild_from_any_threshold() -> None:
    secret = bytes(range(32))
    shares = secagg.split(secret, [1, 2, 3, 4, 5], 3)
    assert secagg.join({k: shares[k] for k in (2, 4, 5)}) == secret
    with pytest.raises(ValueError):  # below the threshold: nothing comes back
        secagg.join({k: shares[k] for k in (1, 2)})


SPARSE = [f"site-{i:03d}" for i in range(1, 61)]


def test_the_sparse_graph_is_symmetric_and_of_the_degree_asked() -> None:
    graph = secagg.neighbours(SPARSE, 6, "seed")
    assert all(len(p) == 6 and n not in p for n, p in graph.items())
    assert all(n in graph[p] for n, ps in graph.items() for p in ps)  # both sides of every pair agree
    assert secagg.neighbours(SPARSE, 6, "other") != graph  # a fresh seed, a fresh graph
    assert secagg.neighbours(SPARSE[:5], 6, "seed") == {
        n: [o for o in SPARSE[:5] if o != n] for n in SPARSE[:5]
    }


def test_secagg_plus_shares_only_with_partners_and_sums_right_with_drops() -> None:
    """60 sites of degree 6, threshold 4: each site seals 7 shares (its partners and itself), not
    60; five sites drop before uploading and five more after; the sum is the uploaders' FedAvg."""
    _, _, train = _setup(SPARSE, 4, {"degree": 6, "seed": "graph-seed"})
    assert all(len(to) == 7 for to in train["shares"].values())
    before = set(SPARSE[10:15])
    after = set(SPARSE[40:45])
    upload = [n for n in SPARSE if n not in before]
    answer = [n for n in upload if n not in after]
    sums, updates = _run(SPARSE, 4, upload=upload, answer=answer, degree=6)
    want = _fedavg(updates, upload)
    for k in want:
        np.testing.assert_allclose(_mean(dict(sums))[k], want[k], atol=1e-6)


def test_secagg_plus_fails_when_a_sites_partners_are_too_few_to_rebuild_it() -> None:
    """Drop enough of one site's 6 partners after it uploads that fewer than the threshold of
    its share holders answer: the round fails naming the missing shares, never a wrong sum."""
    victim = SPARSE[20]
    gone = set(secagg.neighbours(SPARSE, 6, "graph-seed")[victim][:4])
    answer = [n for n in SPARSE if n not in gone]
    with pytest.raises(RoundFailed, match="needed"):
        _run(SPARSE, 4, upload=SPARSE, answer=answer, degree=6)


def _signed_round(names: list[str], threshold: int) -> tuple[dict[str, SiteProtocol], dict[str, Any]]:
    sites, _, train = _setup(names, threshold)
    for n in names:
        sites[n].mask({"w": np.ones(2)}, 1.0, train)
    return sites, train


def test_a_server_that_tells_sites_different_survivor_sets_gets_no_shares() -> None:
    """The consistency round (Bonawitz et al. 2017): the server tells site-1 and site-2 that
    site-3 uploaded (to get shares of its self-mask seed) and site-4 that it dropped (to get a
    share of its mask key): together they would unmask site-3's update. Each site checks that at
    least the threshold (3 of 4) signed the very set it was told: site-4 finds only its own
    signature and refuses; the others reveal only seed shares, so site-3's masks stay."""
    names = ["site-1", "site-2", "site-3", "site-4"]
    sites, _ = _signed_round(names, 3)
    honest = {"secagg_round": RND, "uploaded": names, "dropped": []}
    lie = {"secagg_round": RND, "uploaded": ["site-1", "site-2", "site-4"], "dropped": ["site-3"]}
    sigs = {n: sites[n].answer("secagg_consistency", honest)["sig"] for n in ("site-1", "site-2", "site-3")}
    sigs["site-4"] = sites["site-4"].answer("secagg_consistency", lie)["sig"]
    with pytest.raises(ProtocolError, match="only 1 sites signed"):
        sites["site-4"].answer("secagg_unmask", {**lie, "signatures": sigs})
    # the honest view has 3 signatures: those sites reveal, seed shares only
    reveal = sites["site-1"].answer("secagg_unmask", {**honest, "signatures": sigs})
    assert reveal["s"] == {} and "site-3" in reveal["b"]


def test_a_site_refuses_to_unmask_a_set_it_did_not_sign_or_to_sign_twice() -> None:
    names = ["site-1", "site-2", "site-3"]
    sites, _ = _signed_round(names, 2)
    told = {"secagg_round": RND, "uploaded": names, "dropped": []}
    sigs = {n: sites[n].answer("secagg_consistency", told)["sig"] for n in names}
    other = {"secagg_round": RND, "uploaded": ["site-1", "site-2"], "dropped": ["site-3"]}
    with pytest.raises(ProtocolError, match="second survivor set"):
        sites["site-1"].answer("secagg_consistency", other)
    with pytest.raises(ProtocolError, match="not the one this site signed"):
        sites["site-1"].answer("secagg_unmask", {**other, "signatures": sigs})
    forged = {**sigs, "site-2": sigs["site-1"], "site-3": sigs["site-1"]}  # one site's, thrice
    with pytest.raises(ProtocolError, match="only 1 sites signed"):
        sites["site-2"].answer("secagg_unmask", {**told, "signatures": forged})
