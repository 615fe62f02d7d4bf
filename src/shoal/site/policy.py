"""A site's own policy, ``<site kit>/local/site_policy.json``: read and checked once, at start.

A policy protects the site, so it must never fail open: a value of the wrong type (the string
``"false"`` is truthy), an unknown key (a misspelt ``allow_custom_cod``) or a file that is not
a JSON object refuses to start the agent, naming the file and the key, instead of running
jobs with the protection silently off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError

POLICY_FILE = Path("local") / "site_policy.json"
#: ``share_metrics``: false keeps what the scripts log on the site (its own TensorBoard files),
#: never sent to the server (docs/observability.md).
BOOL_KEYS = ("allow_custom_code", "allow_log_streaming", "allow_network", "share_metrics")  # absent: true
#: ``studies``: the studies served (absent or null: every study); ``data_paths``: folders (or
#: files) training scripts may read, beyond their own job's (absent: none).
STRING_LIST_KEYS = ("studies", "data_paths")
#: ``privacy``: protections every job's results get at this site, at least (shoal.privacy.protections:
#: client_dp, exclude, top_fraction, quantize_bits); a job may ask for more, never for less.
PRIVACY_KEY = "privacy"
POLICY_HINT = (
    "Fix the site's local/site_policy.json: a JSON object whose allow_custom_code, allow_log_streaming, "
    "allow_network and share_metrics are true or false, whose studies is a list of study names "
    "(or null: every study), whose data_paths is a list of absolute paths training scripts may read, "
    "and whose privacy is an object of client_dp, exclude, top_fraction and quantize_bits (docs/privacy.md)."
)


def load_site_policy(kit_dir: Path) -> dict[str, Any]:
    """The checked policy of the site kit at ``kit_dir`` ({} when it has none)."""
    path = kit_dir / POLICY_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"cannot read it: {exc}") from exc
    return check_site_policy(data, path)


def check_site_policy(data: object, path: Path) -> dict[str, Any]:
    """``data`` as a policy, or LOCAL_FILE_ERROR naming ``path`` and the offending key."""
    if not isinstance(data, dict):
        raise _bad(path, f"it must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - {*BOOL_KEYS, *STRING_LIST_KEYS, PRIVACY_KEY})
    if unknown:
        raise _bad(path, f"unknown key(s) {', '.join(map(repr, unknown))}", key=unknown[0])
    for key in BOOL_KEYS:
        if key in data and not isinstance(data[key], bool):
            raise _bad(path, f"'{key}' must be true or false, not {json.dumps(data[key])}", key=key)
    for key in STRING_LIST_KEYS:
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _bad(path, f"'{key}' must be a list of strings or null, not {json.dumps(value)}", key=key)
    for path_text in data.get("data_paths") or []:
        if not os.path.isabs(path_text):
            raise _bad(path, f"'data_paths' must hold absolute paths, not {path_text!r}", key="data_paths")
    if data.get(PRIVACY_KEY) is not None:
        from shoal.privacy.protections import SITE_KEYS, PrivacySpecError, check_privacy

        try:
            data = {**data, PRIVACY_KEY: check_privacy(data[PRIVACY_KEY], allowed=SITE_KEYS)}
        except PrivacySpecError as exc:
            raise _bad(path, str(exc), key=PRIVACY_KEY) from exc
    return dict(data)


RESOURCES_FILE = Path("local") / "resources.json"
RESOURCES_HINT = (
    "Fix the site's local/resources.json: a JSON object with any of gpus (a list of GPU ids), cpus and "
    "max_jobs (whole numbers >= 1) and memory_gib (a number), each what the site's jobs may use."
)


def load_site_resources(kit_dir: Path) -> dict[str, Any]:
    """What the site's jobs may use, checked ({} when it declares nothing: no GPUs, no limits)."""
    from shoal.wire.resources import ResourceError, check_declaration

    path = kit_dir / RESOURCES_FILE
    if not path.exists():
        return {}
    try:
        return check_declaration(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        key = exc.key if isinstance(exc, ResourceError) else None
        raise ShoalError(
            "LOCAL_FILE_ERROR",
            f"site resources {path}: {exc}",
            hint=RESOURCES_HINT,
            file=str(path),
            key=key,
        ) from exc


def _bad(path: Path, problem: str, **details: Any) -> ShoalError:
    return ShoalError(
        "LOCAL_FILE_ERROR", f"site policy {path}: {problem}", hint=POLICY_HINT, file=str(path), **details
    )
