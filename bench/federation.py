"""A throwaway POC federation for benchmarks, in a temporary folder, stopped on exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.api.client import AdminClient

BENCH = Path(__file__).resolve().parent


@dataclass
class BenchFederation:
    workspace: Path
    env: dict[str, str]

    def shoal(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", *map(str, args)], capture_output=True, text=True, env=self.env
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"shoal {' '.join(map(str, args))} failed: {proc.stdout}{proc.stderr}")
        return proc

    def shoal_json(self, *args: str | Path) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.shoal(*args, "--format", "json").stdout)
        return doc

    def summary(self, job_id: str) -> dict[str, Any]:
        """A job's metrics_summary.json straight from the server's job workspace (same machine:
        no download, which for a 1 GB model would be the measurement)."""
        path = self.workspace / "kits" / "server" / "workspace" / "jobs" / job_id / "workspace"
        summary: dict[str, Any] = json.loads((path / "metrics_summary.json").read_text())
        return summary

    def admin_client(self) -> AdminClient:
        """An SDK client on this federation's admin kit, as a script would hold one."""
        from shoal.api.client import AdminClient
        from shoal.api.kits import resolve_admin_kit

        saved = os.environ.get("SHOAL_HOME")
        os.environ["SHOAL_HOME"] = self.env["SHOAL_HOME"]
        try:
            return AdminClient(resolve_admin_kit(None, None))
        finally:
            if saved is None:
                os.environ.pop("SHOAL_HOME", None)
            else:
                os.environ["SHOAL_HOME"] = saved


@contextmanager
def federation(
    sites: int = 2, env: dict[str, str] | None = None, limits: dict[str, int] | None = None
) -> Iterator[BenchFederation]:
    """``env``: more variables for the CLI and, through ``poc start``, the server and sites;
    ``limits``: the server kit's ``local/limits.json`` (a 1 GB model's job with no initial model
    needs ``result_floor_bytes``: its first task's model is empty, its results are not)."""
    extra = env or {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env["SHOAL_HOME"] = str(home)
        env.update(extra)
        fed = BenchFederation(home / "poc", env)
        fed.shoal("poc", "prepare", "-n", str(sites), "--workspace", fed.workspace)
        if limits:
            (fed.workspace / "kits" / "server" / "local" / "limits.json").write_text(json.dumps(limits))
        fed.shoal("poc", "start", "--workspace", fed.workspace)
        try:
            yield fed
        finally:
            fed.shoal("poc", "stop", "--workspace", fed.workspace, check=False)
