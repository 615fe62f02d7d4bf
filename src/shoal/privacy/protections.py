"""What leaves a site, made private: clipping, Gaussian noise, and filters on an update.

A job declares its protections in ``meta.json`` under ``"privacy"`` (docs/privacy.md); a site may
require some of its own in ``local/site_policy.json`` (``"privacy"``, the same form), and the
site agent applies the stricter of the two to every result *after* the training script has
written it and *before* it is sent: a job's code cannot skip them, because it never holds the
bytes that leave. The server reads what was applied from the result's header (``meta`` key
``shoal_privacy``, written by the agent, never by the script) to account for the privacy spent.

Order, and why: excluded tensors are put back to the global model's values first; the update
(the difference to the global model) is clipped to ``clip_norm`` and Gaussian noise of standard
deviation ``noise_multiplier * clip_norm`` is added (the Gaussian mechanism, sensitivity
``clip_norm``); sparsification and quantization come last, so they are post-processing of a noisy
value and cost no privacy (selecting the top entries of a noise-free update would leak which
entries are large). Numpy only; standard library at import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The keys of a ``"privacy"`` block, in meta.json and in a site's policy.
SITE_KEYS = ("client_dp", "exclude", "top_fraction", "quantize_bits", "to_sites")
#: The keys of ``to_sites``: filters on the model a site *receives* (docs/privacy.md).
TO_SITE_KEYS = ("exclude", "quantize_bits")
JOB_KEYS = (*SITE_KEYS, "server_dp", "budget", "example_dp")
#: Where the agent records what it applied, in a result's header meta (a script's own value is
#: replaced, never trusted).
APPLIED_META_KEY = "shoal_privacy"
#: Where a training script that ran DP-SGD (``example_dp``) reports, in its result's meta, the
#: mechanism it ran this round and its accountant's epsilon (``shoal.privacy.accounting``).
EXAMPLE_META_KEY = "example_dp"


class PrivacySpecError(ValueError):
    """A privacy block that cannot be applied as written; the message names the key."""


def _positive(block: Mapping[str, Any], key: str, where: str) -> float:
    value: Any = block.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PrivacySpecError(f"{where}.{key} must be a number > 0, not {value!r:.40}")
    if not math.isfinite(value) or value <= 0:
        raise PrivacySpecError(f"{where}.{key} must be a number > 0, not {value!r:.40}")
    return float(value)


def _dp_block(value: Any, where: str, adaptive: bool = False) -> dict[str, Any]:
    keys = {"clip_norm", "noise_multiplier", *(["adaptive"] if adaptive else [])}
    if not isinstance(value, dict) or set(value) - keys:
        raise PrivacySpecError(f"{where} must be an object with clip_norm and noise_multiplier (numbers > 0)")
    out: dict[str, Any] = {key: _positive(value, key, where) for key in ("clip_norm", "noise_multiplier")}
    if value.get("adaptive") is not None:
        out["adaptive"] = _adaptive_block(value["adaptive"], f"{where}.adaptive", out["noise_multiplier"])
    return out


def _adaptive_block(value: Any, where: str, noise_multiplier: float) -> dict[str, float]:
    """Adaptive clipping (Andrew et al. 2021): the clip norm follows the ``target_quantile`` of
    the updates' norms, learnt from a noisy count (noise ``count_noise``) at ``learning_rate``.
    The count spends privacy too, so ``count_noise`` must exceed half the noise multiplier."""
    names = ("target_quantile", "learning_rate", "count_noise")
    if not isinstance(value, dict) or set(value) - set(names):
        raise PrivacySpecError(f"{where} must be an object with {', '.join(names)}")
    out = {key: _positive(value, key, where) for key in names}
    if out["target_quantile"] >= 1:
        raise PrivacySpecError(f"{where}.target_quantile must be in (0, 1)")
    if 2 * out["count_noise"] <= noise_multiplier:
        raise PrivacySpecError(
            f"{where}.count_noise must be more than half the noise_multiplier ({noise_multiplier / 2:g}): "
            "the count's privacy is paid out of the same budget"
        )
    return out


def check_privacy(
    data: Any, *, allowed: tuple[str, ...] = JOB_KEYS, where: str = "privacy"
) -> dict[str, Any]:
    """``data`` as a checked privacy block (absent keys: that protection is off), or
    PrivacySpecError naming the first key that is wrong."""
    if not isinstance(data, dict):
        raise PrivacySpecError(f"{where} must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PrivacySpecError(f"{where} has unknown key {unknown[0]!r}; known: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    for key in ("client_dp", "server_dp"):
        if data.get(key) is not None:
            out[key] = _dp_block(data[key], f"{where}.{key}", adaptive=key == "server_dp")
    example = data.get("example_dp")
    if example is not None:
        if not isinstance(example, dict) or set(example) != {"noise_multiplier", "max_grad_norm"}:
            raise PrivacySpecError(
                f"{where}.example_dp must be an object with noise_multiplier and max_grad_norm (numbers > 0)"
            )
        out["example_dp"] = {k: _positive(example, k, f"{where}.example_dp") for k in sorted(example)}
    if data.get("to_sites") is not None and "to_sites" in allowed:
        out["to_sites"] = check_privacy(data["to_sites"], allowed=TO_SITE_KEYS, where=f"{where}.to_sites")
    exclude = data.get("exclude")
    if exclude is not None:
        if not isinstance(exclude, list) or not all(isinstance(x, str) and x for x in exclude):
            raise PrivacySpecError(f"{where}.exclude must be a list of tensor names")
        out["exclude"] = sorted(set(exclude))
    fraction = data.get("top_fraction")
    if fraction is not None:
        if _positive(data, "top_fraction", where) > 1:
            raise PrivacySpecError(f"{where}.top_fraction must be in (0, 1], not {fraction!r}")
        out["top_fraction"] = float(fraction)
    bits = data.get("quantize_bits")
    if bits is not None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise PrivacySpecError(
                f"{where}.quantize_bits must be a whole number from 1 to 16, not {bits!r:.40}"
            )
        out["quantize_bits"] = bits
    budget = data.get("budget")
    if budget is not None:
        if not isinstance(budget, dict) or set(budget) - {"epsilon", "delta"}:
            raise PrivacySpecError(f"{where}.budget must be an object with epsilon and delta")
        eps = _positive(budget, "epsilon", f"{where}.budget")
        delta = _positive(budget, "delta", f"{where}.budget")
        if delta >= 1:
            raise PrivacySpecError(f"{where}.budget.delta must be below 1, not {delta}")
        out["budget"] = {"epsilon": eps, "delta": delta}
    return out


def strictest(job: Mapping[str, Any], site: Mapping[str, Any]) -> dict[str, Any]:
    """The site-side protections to apply: the job's, tightened by the site's policy wherever the
    site asks for more (more noise, a smaller clip norm, more tensors excluded, fewer entries
    kept, fewer bits). A site's requirement is never loosened by a job."""
    # to_sites is not merged: the job's is the server's to apply, the site's the agent's
    out = {k: v for k, v in job.items() if k in SITE_KEYS and k != "to_sites"}
    if "client_dp" in site:
        mine = site["client_dp"]
        theirs = out.get("client_dp") or mine
        out["client_dp"] = {
            "clip_norm": min(mine["clip_norm"], theirs["clip_norm"]),
            "noise_multiplier": max(mine["noise_multiplier"], theirs["noise_multiplier"]),
        }
    if "exclude" in site:
        out["exclude"] = sorted({*out.get("exclude", []), *site["exclude"]})
    for key in ("top_fraction", "quantize_bits"):
        if key in site:
            out[key] = min(site[key], out.get(key, site[key]))
    return out


def site_privacy(job_block: Any, site_block: Mapping[str, Any] | None) -> dict[str, Any]:
    """The protections a site applies to a job's results: the job's declared ones (checked, as
    the server checked them at submit) tightened by the site's policy."""
    job = check_privacy(job_block) if job_block is not None else {}
    return strictest(job, site_block or {})


def update_norm(delta: Mapping[str, Any]) -> float:
    """The L2 norm of an update taken over all its float tensors together."""
    import numpy as np

    return float(math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())))


def clip(delta: dict[str, Any], clip_norm: float) -> float:
    """Scale ``delta`` (in place) so that its norm is at most ``clip_norm``; returns the norm it had."""
    norm = update_norm(delta)
    if norm > clip_norm:
        scale = clip_norm / norm
        for name in delta:
            delta[name] = delta[name] * scale
    return norm


def clip_update(
    params: Mapping[str, Any], global_params: Mapping[str, Any], clip_norm: float
) -> dict[str, Any]:
    """``params`` with its float tensors' change from ``global_params`` clipped to ``clip_norm``
    (together): the server's clipping for central DP, done at the site when the server cannot see
    the update (secure aggregation)."""
    import numpy as np

    out = {name: np.asarray(params[name]) for name in params}
    floats = _float_names(out)
    base = {n: _base_of(global_params, n, out[n].shape) for n in floats}
    delta = {n: out[n].astype(np.float64) - base[n] for n in floats}
    clip(delta, clip_norm)
    for n in floats:
        out[n] = (base[n] + delta[n]).astype(out[n].dtype)
    return out


def _base_of(global_params: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> Any:
    """The global model's value of ``name`` as float64, or zeros where it has none of that shape."""
    import numpy as np

    value = global_params.get(name)
    if value is not None and np.shape(value) == shape:
        return np.asarray(value, dtype=np.float64)
    return np.zeros(shape, dtype=np.float64)


def add_gaussian_noise(delta: dict[str, Any], std: float, rng: Any) -> None:
    """Add independent N(0, std²) noise to every entry of ``delta`` (in place)."""
    for name, value in delta.items():
        delta[name] = value + rng.normal(0.0, std, size=value.shape)


def _float_names(params: Mapping[str, Any]) -> list[str]:
    import numpy as np

    return [n for n in params if np.asarray(params[n]).dtype.kind == "f"]


def apply_site_privacy(
    params: Mapping[str, Any], global_params: Mapping[str, Any], spec: Mapping[str, Any], rng: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` (a site's update) with the protections of ``spec`` applied, and a record of
    what was applied (for the result header). ``global_params`` is the model of the task the
    update answers (empty in a round that started from no model: the update is then its own
    difference to zero). Only float tensors are changed; integer ones (counters) pass as they
    are unless excluded."""
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng()
    out = {name: np.asarray(params[name]) for name in params}
    if any(arr.dtype == np.uint64 for arr in out.values()):
        # a securely aggregated (masked) update: noise or filters on it would break the masks
        raise PrivacySpecError("privacy filters cannot apply to a masked (secure aggregation) update")
    applied: dict[str, Any] = {}

    def base(name: str) -> Any:
        value = global_params.get(name)
        if value is not None and np.shape(value) == out[name].shape:
            return np.asarray(value, dtype=np.float64)
        return np.zeros(out[name].shape, dtype=np.float64)

    for name in spec.get("exclude", []):
        if name in out:
            if name in global_params:
                out[name] = np.asarray(global_params[name]).astype(out[name].dtype)
            else:
                del out[name]  # nothing to send back in its place: it does not leave at all
    if spec.get("exclude"):
        applied["exclude"] = list(spec["exclude"])
    names = _float_names(out)
    excluded = set(spec.get("exclude", []))
    names = [n for n in names if n not in excluded]
    delta = {n: out[n].astype(np.float64) - base(n) for n in names}
    dp = spec.get("client_dp")
    if dp:
        norm = clip(delta, dp["clip_norm"])
        add_gaussian_noise(delta, dp["noise_multiplier"] * dp["clip_norm"], rng)
        applied["client_dp"] = dict(dp)
        applied["clipped"] = norm > dp["clip_norm"]
    fraction = spec.get("top_fraction")
    if fraction is not None and fraction < 1:
        for n in names:
            flat = np.abs(delta[n]).reshape(-1)
            keep = max(1, math.ceil(fraction * flat.size))
            if keep < flat.size:
                cut = np.partition(flat, flat.size - keep)[flat.size - keep]
                mask = np.abs(delta[n]) >= cut
                # ties at the cut could keep more than asked: drop the surplus, last first
                surplus = int(mask.sum()) - keep
                if surplus > 0:
                    tied = np.flatnonzero((np.abs(delta[n]) == cut).reshape(-1))
                    mask.reshape(-1)[tied[-surplus:]] = False
                delta[n] = np.where(mask, delta[n], 0.0)
        applied["top_fraction"] = fraction
    bits = spec.get("quantize_bits")
    if bits is not None:
        for n in names:
            delta[n] = quantized(delta[n], bits, with_zero=True)
        applied["quantize_bits"] = bits
    for n in names:
        out[n] = (base(n) + delta[n]).astype(out[n].dtype)
    return out, applied


def quantized(value: Any, bits: int, *, with_zero: bool = False) -> Any:
    """``value`` (float64) rounded to one of 2^bits evenly spaced levels from its minimum to its
    maximum (with ``with_zero``, the range stretched to hold 0, so unchanged entries stay 0)."""
    import numpy as np

    if with_zero:
        low, high = float(value.min(initial=0.0)), float(value.max(initial=0.0))
    elif value.size:
        low, high = float(value.min()), float(value.max())
    else:
        return value
    step = (high - low) / (2**bits - 1) if high > low else 1.0
    return np.round((value - low) / step) * step + low


def filter_to_site(
    params: Mapping[str, Any], spec: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model a site receives, filtered by a ``to_sites`` block: the tensors named in
    ``exclude`` removed, each float tensor's values quantized to ``2^quantize_bits`` levels. The
    job's block is applied by the server to every task's model as it takes it from the workflow
    (the job's code cannot skip it: it protects the model from the sites), a site policy's by that
    site's agent before the script may read it (it holds whatever a server sends). Both are
    idempotent. Returns the params and what was applied."""
    import numpy as np

    out = {name: params[name] for name in params if name not in set(spec.get("exclude", []))}
    applied: dict[str, Any] = {}
    if spec.get("exclude"):
        applied["exclude"] = list(spec["exclude"])
    bits = spec.get("quantize_bits")
    if bits is not None:
        for name in _float_names(out):
            value = np.asarray(out[name])
            out[name] = quantized(value.astype(np.float64), bits).astype(value.dtype)
        applied["quantize_bits"] = bits
    return out, applied


def filter_model_file(path: Any, spec: Mapping[str, Any]) -> None:
    """Apply a ``to_sites`` block to the safetensors file at ``path``, in place (through a
    temporary file beside it, so the path never holds a half-written model)."""
    from pathlib import Path

    from shoal.wire.models import load_params, save_params

    path = Path(path)
    params, _ = filter_to_site(load_params(path), spec)
    tmp = path.with_name(path.name + ".filtered")
    save_params(params, tmp)
    tmp.replace(path)
