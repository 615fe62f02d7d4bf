"""After a download: find the files scripts consume, so they never guess at a layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_NAMES = (
    "FL_global_model.safetensors",
    "global_model.safetensors",
    "FL_global_model.pt",
    "global_model.pt",
    "global_model.pth",
)
NOT_SITE_DIRS = {"server", "app_server", "local", "logs", "startup", "workspace", "job", "tensorboard"}


def discover(root: Path) -> tuple[dict[str, Any], list[str]]:
    """Return (artifacts, missing) for a downloaded job tree; symlinks are never followed."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    artifacts: dict[str, Any] = {}
    workspace = root / "workspace"
    for name in MODEL_NAMES:
        candidate = workspace / name
        if candidate in files:
            artifacts["global_model"] = str(candidate)
            break
    for f in files:
        if f.name == "metrics_summary.json" and "metrics_summary" not in artifacts:
            artifacts["metrics_summary"] = str(f)
        if f.name == "round_metrics.jsonl" and "round_metrics" not in artifacts:
            artifacts["round_metrics"] = str(f)
    logs: dict[str, str] = {}
    for f in files:
        if f.name != "log.txt" or not f.is_relative_to(workspace):
            continue
        parent = f.parent.name
        if parent in NOT_SITE_DIRS or f.parent == workspace:
            continue
        logs.setdefault(parent, str(f))
    if logs:
        artifacts["client_logs"] = logs
    server_log = workspace / "server" / "log.txt"
    if server_log in files:
        artifacts["server_log"] = str(server_log)
    tensorboard = workspace / "tensorboard"  # event files the server wrote (a job's "trackers")
    if any(f.is_relative_to(tensorboard) for f in files):
        artifacts["tensorboard"] = str(tensorboard)
    missing = [k for k in ("global_model", "metrics_summary", "client_logs") if k not in artifacts]
    return artifacts, missing
