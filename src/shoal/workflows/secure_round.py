"""Secure aggregation on the server: one FedAvg round in which the server learns only the sum.

Five steps, each a task to the sites (their client API answers the protocol's tasks itself,
``shoal.privacy.secagg_site``): advertise keys; share secrets (sealed to each recipient, relayed);
train and upload masked updates; sign the survivor set (the consistency round); unmask (the
survivors, having checked that at least the threshold signed the set they were told, reveal the
self-mask seeds of the sites that uploaded and the mask keys of those that dropped before). A
site that drops after its upload is still in the sum; fewer than ``threshold`` survivors fail the
round, never a wrong model. The server never holds a site's update in the clear, and logs no
key, share or mask.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from shoal.privacy import secagg
from shoal.privacy.secagg import WEIGHT_TENSOR, unb64
from shoal.wire.flmodel import FLModel
from shoal.workflows.base import BadUpdate, RoundFailed, Workflow

#: The dtypes a site may ask its tensors back in (a site names them; anything else is float32).
FLOAT_DTYPES = ("float16", "float32", "float64")


def _public_keys(site: str, meta: Mapping[str, Any]) -> dict[str, str]:
    try:
        keys = {k: str(meta[k]) for k in ("c", "s", "v")}
        if any(len(base64.b64decode(v, validate=True)) != 32 for v in keys.values()):
            raise ValueError
    except (KeyError, ValueError) as exc:
        raise BadUpdate(site, "its secure aggregation keys are not three 32-byte public keys") from exc
    return keys


def unmask(
    total: dict[str, np.ndarray],
    rnd: int,
    order: list[str],
    keys: Mapping[str, Mapping[str, str]],
    uploaded: list[str],
    dropped: list[str],
    reveals: Mapping[str, Mapping[str, Mapping[str, str]]],
    threshold: int,
    partners: Mapping[str, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The decoded sum of the uploaded updates, from their masked sum ``total`` and the shares
    the survivors revealed (``reveals[site] = {"b": {owner: share}, "s": {owner: share}}``)."""
    point = {site: order.index(site) + 1 for site in order}

    def secret(owner: str, kind: str) -> bytes:
        try:
            shares = {
                point[h]: int(str(r[kind][owner]), 16) for h, r in reveals.items() if owner in r.get(kind, {})
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RoundFailed(f"secure aggregation: a share of a secret of {owner} is malformed") from exc
        if len(shares) < threshold:
            raise RoundFailed(
                f"secure aggregation: {len(shares)} shares of a secret of {owner}, {threshold} needed"
            )
        try:
            return secagg.join(dict(list(shares.items())[:threshold]))
        except ValueError as exc:
            raise RoundFailed(f"secure aggregation: the shares of {owner} do not rebuild its secret") from exc

    out = {}
    seeds = {owner: secret(owner, "b") for owner in uploaded}
    mask_keys = {owner: secret(owner, "s") for owner in dropped}
    for name, masked in total.items():
        flat = masked.reshape(-1).copy()
        context = secagg.mask_context(rnd, name)
        for owner in uploaded:
            flat = flat - secagg.expand(seeds[owner], context, flat.size)
        for gone, private in mask_keys.items():
            pairs = uploaded if partners is None else [o for o in uploaded if o in partners[gone]]
            for owner in pairs:  # the mask each uploader added for its pair with the dropped site
                flat = flat - secagg.pair_mask(
                    owner, gone, private, unb64(keys[owner]["s"]), context, flat.size
                )
        out[name] = secagg.decode(flat).reshape(masked.shape)
    return out


def secure_round(
    workflow: Workflow,
    model: FLModel,
    rnd: int,
    total_rounds: int,
    threshold: int,
    clip_norm: float | None = None,
    degree: int | None = None,
) -> tuple[dict[str, Any], dict[str, float], dict[str, dict[str, Any]]]:
    """One round of FedAvg under secure aggregation: the weighted mean, the round's metrics (sent
    in the clear by each site, averaged), and the header meta of each site in the sum (what its
    agent says it applied). With ``clip_norm`` (central DP) each site clips its update to it
    before masking and weighs it 1: the result is the plain mean of clipped updates. With
    ``degree`` each site pairs and shares with that many partners only (SecAgg+'s graph,
    ``secagg.neighbours``, drawn from a fresh seed each round)."""
    tag = {"secagg_round": rnd}
    collect = workflow.collect
    keys = {
        site: _public_keys(site, u.meta)
        for site, u in collect("secagg_advertise", FLModel(params={}, meta=tag), round_number=rnd)
    }
    if len(keys) < threshold:
        raise RoundFailed(f"secure aggregation: {len(keys)} sites gave keys, the threshold is {threshold}")
    order = sorted(keys)
    seed = secrets.token_hex(16)
    graph = {"degree": degree, "seed": seed}
    partners = secagg.neighbours(order, degree, seed)
    meta = {**tag, "keys": keys, "threshold": threshold, **({"graph": graph} if degree else {})}
    shares: dict[str, dict[str, str]] = {}
    for site, update in collect("secagg_share", FLModel(params={}, meta=meta), sites=order, round_number=rnd):
        sealed = update.meta.get("shares")
        if not isinstance(sealed, dict) or set(sealed) != {site, *partners[site]}:
            raise BadUpdate(site, "its secure aggregation shares are not one for each of its partners")
        shares[site] = {k: str(v) for k, v in sealed.items()}
    if len(shares) < threshold:
        raise RoundFailed(
            f"secure aggregation: {len(shares)} sites shared secrets, the threshold is {threshold}"
        )
    task = FLModel(
        params=model.params,
        meta={
            **model.meta,
            "secagg": {
                "round": rnd,
                "keys": {s: keys[s] for s in shares},
                "shares": shares,
                **({"clip_norm": clip_norm} if clip_norm else {}),
            },
        },
    )
    del model
    total: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    uploaded: list[str] = []
    metas: dict[str, dict[str, Any]] = {}
    metrics: dict[str, float] = {}
    for site, update in collect(
        "train", task, sites=sorted(shares), round_number=rnd, total_rounds=total_rounds
    ):
        params = {name: np.asarray(update.params[name]) for name in update.params}
        if any(a.dtype != np.uint64 for a in params.values()) or WEIGHT_TENSOR not in params:
            raise BadUpdate(site, "its update is not masked (secure aggregation expects uint64 tensors)")
        if total and set(params) != set(total):
            raise BadUpdate(site, "its masked tensors differ from the other sites'")
        for name, arr in params.items():
            total[name] = total[name] + arr if name in total else arr.copy()
        dtypes = {**dtypes, **dict(update.meta.get("dtypes") or {})}
        uploaded.append(site)
        metas[site] = dict(update.meta)
        for key, value in update.metrics.items():
            metrics[key] = metrics.get(key, 0.0) + float(value)
    if len(uploaded) < threshold:
        raise RoundFailed(f"secure aggregation: {len(uploaded)} sites uploaded, the threshold is {threshold}")
    dropped = sorted(set(shares) - set(uploaded))
    survivors = {**tag, "uploaded": sorted(uploaded), "dropped": dropped}
    # the consistency round: each site signs the survivor set it is told; each checks, before
    # revealing anything, that at least the threshold signed the same set
    signatures = {
        site: str(u.meta.get("sig"))
        for site, u in collect(
            "secagg_consistency",
            FLModel(params={}, meta=survivors),
            sites=sorted(uploaded),
            round_number=rnd,
            min_responses=threshold,
        )
    }
    unmask_meta = {**survivors, "signatures": signatures}
    reveals = {
        site: u.meta
        for site, u in collect(
            "secagg_unmask",
            FLModel(params={}, meta=unmask_meta),
            sites=sorted(uploaded),
            round_number=rnd,
            min_responses=threshold,
        )
    }
    sums = unmask(total, rnd, order, keys, sorted(uploaded), dropped, reveals, threshold, partners)
    weight = float(sums.pop(WEIGHT_TENSOR)[0])
    if weight <= 0:
        raise RoundFailed("secure aggregation: the sites' total weight is not positive")
    kinds = {name: dtypes.get(name) if dtypes.get(name) in FLOAT_DTYPES else "float32" for name in sums}
    mean = {name: (value / weight).astype(kinds[name]) for name, value in sums.items()}
    return mean, {k: v / len(uploaded) for k, v in metrics.items()}, metas
