"""Secure aggregation at a site: the client API answers the protocol's tasks by itself.

The training script does not change: ``flare.receive()`` answers the ``secagg_advertise``,
``secagg_share`` and ``secagg_unmask`` tasks on its own (they never reach the script), and
``flare.send()`` masks the update of a ``train`` task whose meta carries ``secagg``. The keys,
seed and shares of a round live in this process's memory only, and are dropped when the round
is unmasked.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.privacy import secagg
from shoal.privacy.secagg import WEIGHT_TENSOR, b64, unb64

TASKS = ("secagg_advertise", "secagg_share", "secagg_consistency", "secagg_unmask")


class ProtocolError(ValueError):
    """The server asked for something the protocol forbids (both secrets of one site, too few
    survivors): the site refuses rather than reveal it."""


@dataclass
class _Round:
    enc_private: bytes
    enc_public: bytes
    mask_private: bytes
    mask_public: bytes
    seed: bytes
    sign_private: bytes = b""
    sign_public: bytes = b""
    signed: bytes | None = None  # the survivor set this site signed (the consistency round)
    keys: dict[str, dict[str, bytes]] = field(default_factory=dict)  # site -> {"c", "s"} publics
    threshold: int = 0
    sealed_for_me: dict[str, str] = field(default_factory=dict)  # sender -> sealed share
    partners: list[str] = field(default_factory=list)  # the sites this one masks and shares with
    shared: set[str] = field(default_factory=set)  # the sites that shared secrets this round


class SiteProtocol:
    def __init__(self, site: str) -> None:
        self.site = site
        self.rounds: dict[int, _Round] = {}

    def answer(self, task_name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The result meta of a protocol task."""
        rnd = int(meta["secagg_round"])
        if task_name == "secagg_advertise":
            enc_private, enc_public = secagg.keypair()
            mask_private, mask_public = secagg.keypair()
            sign_private, sign_public = secagg.signing_keypair()
            self.rounds = {
                rnd: _Round(
                    enc_private,
                    enc_public,
                    mask_private,
                    mask_public,
                    secrets.token_bytes(32),
                    sign_private,
                    sign_public,
                )
            }
            return {"c": b64(enc_public), "s": b64(mask_public), "v": b64(sign_public)}
        state = self.rounds.get(rnd)
        if state is None:
            raise ProtocolError(f"secure aggregation round {rnd} was not started at this site")
        if task_name == "secagg_share":
            return self._share(state, rnd, meta)
        if task_name == "secagg_consistency":
            return self._consistency(state, rnd, meta)
        if task_name == "secagg_unmask":
            try:
                return self._unmask(state, rnd, meta)
            finally:
                self.rounds.pop(rnd, None)  # never answered twice
        raise ProtocolError(f"unknown secure aggregation task {task_name!r}")

    def _share(self, state: _Round, rnd: int, meta: Mapping[str, Any]) -> dict[str, Any]:
        state.keys = {site: {k: unb64(v) for k, v in pub.items()} for site, pub in meta["keys"].items()}
        state.threshold = int(meta["threshold"])
        if self.site not in state.keys or state.keys[self.site]["s"] != state.mask_public:
            raise ProtocolError("the server did not relay this site's own public key")
        order = sorted(state.keys)
        graph = meta.get("graph") or {}
        state.partners = secagg.neighbours(order, graph.get("degree"), str(graph.get("seed", "")))[self.site]
        holders = sorted([*state.partners, self.site])
        if len(holders) < state.threshold:
            raise ProtocolError(
                f"{len(holders)} holders of this site's shares, the threshold is {state.threshold}"
            )
        points = [order.index(s) + 1 for s in holders]
        mask_shares = secagg.split(state.mask_private, points, state.threshold)
        seed_shares = secagg.split(state.seed, points, state.threshold)
        out = {}
        for site in holders:
            x = order.index(site) + 1
            plain = json.dumps({"s": hex(mask_shares[x]), "b": hex(seed_shares[x])}).encode()
            key = secagg.agree(state.enc_private, state.keys[site]["c"], b"encrypt")
            out[site] = secagg.seal(key, plain, f"{rnd} {self.site}->{site}".encode())
        return {"shares": out}

    def mask(self, params: Mapping[str, Any], weight: float, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The masked update: fixed-point ``weight * params`` plus every pairwise mask and this
        site's self-mask, and the weight as one more masked tensor."""
        rnd = int(meta["round"])
        state = self.rounds.get(rnd)
        if state is None:
            raise ProtocolError(f"secure aggregation round {rnd} has no keys at this site")
        shares = meta["shares"]
        state.sealed_for_me = {sender: to[self.site] for sender, to in shares.items() if self.site in to}
        state.shared = set(shares)
        partners = [s for s in state.partners if s in shares]
        values = {name: np.asarray(v, dtype=np.float64) * weight for name, v in params.items()}
        values[WEIGHT_TENSOR] = np.array([weight], dtype=np.float64)
        out = {}
        for name, value in values.items():
            context = secagg.mask_context(rnd, name)
            total = secagg.encode(value).reshape(-1)
            total = total + secagg.expand(state.seed, context, total.size)
            for other in partners:
                total = total + secagg.pair_mask(
                    self.site, other, state.mask_private, state.keys[other]["s"], context, total.size
                )
            out[name] = total.reshape(value.shape)
        return out

    def _consistency(self, state: _Round, rnd: int, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Sign the survivor set the server announces (once a round): the sites then check, before
        revealing anything, that at least the threshold of them signed the very set each was told,
        so a server that tells sites different sets cannot gather both secrets of one site
        (Bonawitz et al. 2017, the consistency check)."""
        if state.signed is not None:
            raise ProtocolError("the server asked this site to sign a second survivor set this round")
        state.signed = secagg.survivor_view(rnd, list(meta["uploaded"]), list(meta["dropped"]))
        return {"sig": b64(secagg.sign(state.sign_private, state.signed))}

    def _check_signatures(self, state: _Round, rnd: int, meta: Mapping[str, Any]) -> None:
        view = secagg.survivor_view(rnd, list(meta["uploaded"]), list(meta["dropped"]))
        if state.signed is None or view != state.signed:
            raise ProtocolError("the survivor set to unmask is not the one this site signed")
        signatures = meta.get("signatures")
        if not isinstance(signatures, dict):
            raise ProtocolError("the server sent no signatures of the survivor set")
        valid = 0
        for site in set(meta["uploaded"]):
            public = (state.keys.get(site) or {}).get("v")
            sig = signatures.get(site)
            try:
                ok = public is not None and isinstance(sig, str) and secagg.verify(public, unb64(sig), view)
            except ValueError:  # not base64
                ok = False
            valid += ok
        if valid < state.threshold:
            raise ProtocolError(
                f"only {valid} sites signed the survivor set this site was told, the threshold is "
                f"{state.threshold}: the server may have told sites different sets"
            )

    def _unmask(self, state: _Round, rnd: int, meta: Mapping[str, Any]) -> dict[str, Any]:
        uploaded, dropped = set(meta["uploaded"]), set(meta["dropped"])
        if uploaded & dropped:
            raise ProtocolError("the server asked for both secrets of one site")
        self._check_signatures(state, rnd, meta)
        if not (uploaded | dropped) <= state.shared:
            raise ProtocolError("the server named sites that did not share secrets this round")
        if len(uploaded) < state.threshold:
            raise ProtocolError(f"only {len(uploaded)} sites uploaded, the threshold is {state.threshold}")
        reveal: dict[str, dict[str, str]] = {"b": {}, "s": {}}
        for sender in sorted((uploaded | dropped) & set(state.sealed_for_me)):  # my partners' only
            key = secagg.agree(state.enc_private, state.keys[sender]["c"], b"encrypt")
            share = json.loads(
                secagg.unseal(key, state.sealed_for_me[sender], f"{rnd} {sender}->{self.site}".encode())
            )
            if sender in uploaded:
                reveal["b"][sender] = share["b"]
            else:
                reveal["s"][sender] = share["s"]
        return reveal
