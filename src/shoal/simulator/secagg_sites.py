"""Secure aggregation in the simulator: each virtual site's side of the protocol, in-process.

On a real site the client API answers the protocol's tasks (keys, shares, unmasking) from state
kept in the training script's process for the round, and masks the update in ``send()``. The
simulator runs a script once per task, in any of its workers, so that state cannot live there:
the simulator's own process plays every site's side instead (``shoal.privacy.secagg_site``, the
same code), answers the protocol's tasks without running a script, and masks each site's update
when its run comes back, after the site's protections were applied to it in the clear (as the
client API does before masking). The workflow then sees what a server sees: masked uint64
updates and revealed shares. Keys, seeds and shares stay in this process's memory, never logged.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shoal.privacy.secagg_site import SiteProtocol
from shoal.wire.controller import Result, SiteFailed
from shoal.wire.messages import encode
from shoal.wire.results import ResultInfo


def _failed(site: str, exc: Exception) -> dict[str, Any]:
    return encode(SiteFailed(site=site, type=type(exc).__name__, reason=str(exc)))


class SimulatedSecAgg:
    """Every virtual site's protocol state, by site name."""

    def __init__(self) -> None:
        self._sites: dict[str, SiteProtocol] = {}

    def _site(self, site: str) -> SiteProtocol:
        if site not in self._sites:
            self._sites[site] = SiteProtocol(site)
        return self._sites[site]

    def answer(self, site: str, task: Mapping[str, Any]) -> dict[str, Any]:
        """The message a site's client API would send for a protocol task: a result whose meta
        carries the answer (and no tensors), or the site's failure if it refuses the request."""
        from shoal.wire.models import save_params

        try:
            meta = self._site(site).answer(str(task["task_name"]), dict(task.get("meta") or {}))
        except Exception as exc:  # the protocol refuses (e.g. both secrets of one site asked)
            return _failed(site, exc)
        # beside the task's model, like every result here: the workflow's next task clears them
        fd, name = tempfile.mkstemp(
            prefix="secagg-", suffix=".safetensors", dir=Path(task["model_path"]).parent
        )
        os.close(fd)
        save_params({}, Path(name))
        info = ResultInfo(num_examples=0, metrics={}, meta=meta)
        return encode(Result(task_id=str(task["task_id"]), site=site, path=name, info=info))

    def mask(
        self, site: str, secagg: Mapping[str, Any], answer: dict[str, Any], model_path: str
    ) -> dict[str, Any]:
        """A site's train result (clear, protected already) masked in place, as the client API
        masks it in ``send()``: the server's clip first when it asks (central DP, weight 1)."""
        if answer.get("op") != "result":
            return answer
        from shoal.privacy.protections import clip_update
        from shoal.wire.models import load_params, save_params

        path = Path(str(answer["path"]))
        params = {name: value for name, value in load_params(path).items()}
        dtypes = {name: str(value.dtype) for name, value in params.items()}
        clip_norm = secagg.get("clip_norm")
        if clip_norm:
            params = clip_update(params, load_params(Path(model_path)), float(clip_norm))
        weight = 1.0 if clip_norm else float(answer.get("num_examples", 1))
        try:
            masked = self._site(site).mask(params, weight, secagg)
        except Exception as exc:
            return _failed(site, exc)
        save_params(masked, path)
        return {**answer, "num_examples": 1, "meta": {**dict(answer.get("meta") or {}), "dtypes": dtypes}}
