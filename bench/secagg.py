"""What secure aggregation costs: per-round overhead on the POC (2 sites) against plain FedAvg,
and the protocol's work and bytes for 10 and 100 sites, played in-process by the real site and
server code (``shoal.privacy.secagg_site``, ``shoal.workflows.secure_round.unmask``) without the network.

Not the network's time for 10 or 100 sites (the light bench sites do not run training scripts,
which hold the keys): the in-process figures are the CPU each site and the server spend, and the
bytes each message carries, which the network then moves.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from shoal.privacy import secagg
from shoal.privacy.secagg_site import SiteProtocol
from shoal.wire.jsonout import dumps
from shoal.workflows.secure_round import unmask


def protocol_round(n_sites: int, n_params: int, drop: int = 0, degree: int | None = None) -> dict[str, float]:
    """One round among ``n_sites`` (the last ``drop`` of them gone after sharing): seconds per
    site and for the server's unmasking, and bytes of each message. With ``degree``, SecAgg+'s
    sparse graph (each site pairs with that many partners; threshold a majority of its holders)."""
    names = [f"site-{i:03d}" for i in range(n_sites)]
    holders = n_sites if degree is None else min(n_sites, degree + 1)
    threshold = max(2, holders // 2 + 1)
    sites = {n: SiteProtocol(n) for n in names}
    params = {"w": np.random.default_rng(0).normal(size=n_params).astype(np.float32)}
    t0 = time.perf_counter()
    keys = {n: s.answer("secagg_advertise", {"secagg_round": 0}) for n, s in sites.items()}
    graph = {"degree": degree, "seed": "bench"} if degree else {}
    meta = {"secagg_round": 0, "keys": keys, "threshold": threshold, **({"graph": graph} if graph else {})}
    shares = {n: s.answer("secagg_share", meta)["shares"] for n, s in sites.items()}
    setup = (time.perf_counter() - t0) / n_sites
    train: dict[str, Any] = {"round": 0, "keys": keys, "shares": shares}
    uploaded = names[: n_sites - drop]
    t0 = time.perf_counter()
    masked = {n: sites[n].mask(params, 10.0, train) for n in uploaded}
    per_site_mask = (time.perf_counter() - t0) / len(uploaded)
    total: dict[str, np.ndarray] = {}
    for upd in masked.values():
        for name, arr in upd.items():
            total[name] = total[name] + arr if name in total else arr.copy()
    dropped = names[n_sites - drop :]
    told = {"secagg_round": 0, "uploaded": uploaded, "dropped": dropped}
    signatures = {n: sites[n].answer("secagg_consistency", told)["sig"] for n in uploaded}
    reveal_meta = {**told, "signatures": signatures}
    reveals = {n: sites[n].answer("secagg_unmask", reveal_meta) for n in uploaded}
    t0 = time.perf_counter()
    partners = secagg.neighbours(names, degree, "bench")
    unmask(total, 0, names, keys, uploaded, dropped, reveals, threshold, partners)
    server = time.perf_counter() - t0
    return {
        "site_setup_s": setup,
        "site_mask_s": per_site_mask,
        "server_unmask_s": server,
        "upload_bytes": float(sum(a.nbytes for a in masked[uploaded[0]].values())),
        "plain_upload_bytes": float(params["w"].nbytes),
        "train_task_meta_bytes": float(len(dumps({"secagg": train}))),
        "unmask_answer_bytes": float(len(json.dumps(reveals[uploaded[0]]))),
    }
