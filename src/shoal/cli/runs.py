"""``shoal run``, ``ls``, ``stop`` (seed 003), plus ``new`` and ``build``: the app surface.

The same jobs as ``shoal job``, seen as runs of app bundles: ``run-id`` is the job id as a JSON
number. JSON output is ``{"success": true, ...}`` or ``{"success": false, "error-message": ...}``
(valid JSON, and a non-zero exit code on failure).
"""

from __future__ import annotations

import argparse
import sys

from shoal.cli.output import Result, clock, number_text, progress, table, utc_stamp, write_human
from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from shoal.api.client import AdminClient
    from shoal.app.federation import Federation
    from shoal.app.project import AppProject


def run_id_arg(value: str) -> str:
    """A run id: its digits, or 'last' (the newest run of the study)."""
    from shoal.cli.job_args import job_id_arg

    return job_id_arg(value)


def _run_id(client: AdminClient, federation: Federation, typed: str) -> int:
    """The run ``typed`` names. Unlike ``shoal job``, no prefixes: scripts written for Flower
    pass whole ids, and a mistyped one must not find (or stop) another run."""
    from shoal.cli.job_args import LAST, resolve_job_id

    return int(resolve_job_id(client, federation.study, typed) if typed == LAST else typed)


def register(groups: Any) -> None:
    p = groups.add_parser("run", help="build an app project's bundle and start a run of it")
    p.add_argument("app_dir", nargs="?", default=".", help="the app project (default: current folder)")
    p.add_argument("federation", nargs="?", default=None, help="a federation from pyproject.toml")
    p.add_argument(
        "-c",
        "--run-config",
        action="append",
        default=[],
        metavar="CONFIG",
        help="override app settings: 'K=V K2=V2' (TOML values) or a .toml file; repeatable",
    )
    p.add_argument(
        "--stream", action="store_true", help="follow the run until it ends; exit with its outcome"
    )
    p.set_defaults(handler=cmd_run)

    p = groups.add_parser("ls", help="list runs")
    p.add_argument("app_dir", nargs="?", default=".", help="the app project (default: current folder)")
    p.add_argument("federation", nargs="?", default=None, help="a federation from pyproject.toml")
    p.add_argument(
        "--run-id", type=run_id_arg, default=None, help="show this run only (or 'last', or its first digits)"
    )
    p.set_defaults(handler=cmd_ls)

    p = groups.add_parser("stop", help="stop a run")
    p.add_argument("run_id", type=run_id_arg, help="the run to stop (or 'last')")
    p.add_argument("app_dir", nargs="?", default=".", help="the app project (default: current folder)")
    p.add_argument("federation", nargs="?", default=None, help="a federation from pyproject.toml")
    p.set_defaults(handler=cmd_stop)

    p = groups.add_parser("new", help="create an app project that runs on the POC as it is")
    p.add_argument("name", help="project name (and folder)")
    p.set_defaults(handler=cmd_new)

    p = groups.add_parser("build", help="build an app project's bundle (.fab) into the current folder")
    p.add_argument("app_dir", nargs="?", default=".", help="the app project (default: current folder)")
    p.set_defaults(handler=cmd_build)


def _load(args: argparse.Namespace) -> tuple[AppProject, Federation]:
    from pathlib import Path

    from shoal.app.project import load_project

    if args.format != "json":
        progress("Loading project configuration... ")
    project = load_project(Path(args.app_dir))
    federation = project.federation(args.federation)
    if args.format != "json":
        progress("Success")
    return project, federation


def _federation_only(args: argparse.Namespace) -> Federation:
    """The federation for ``ls`` and ``stop``, which never touch the app itself.

    Outside an app project (no pyproject.toml, or one that is not a shoal app, such as a
    library's own) and with no federation named, they talk to the active startup kit, so
    ``shoal ls`` works from any folder. Naming a federation still needs the project."""
    import os

    from shoal.app.federation import Federation, is_app_project

    named = args.app_dir != "."  # a folder the user named must exist, as for 'shoal run'
    if args.federation is None and not is_app_project(args.app_dir):
        if not named or os.path.isdir(args.app_dir):
            return Federation("(active startup kit)")
    return _load(args)[1]


def _client(federation: Federation) -> Any:
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit

    return AdminClient(resolve_admin_kit(federation.kit_id, federation.startup_kit))


def cmd_build(args: argparse.Namespace) -> Result:
    from pathlib import Path

    from shoal.app.bundle import build_bundle
    from shoal.app.project import load_project

    bundle = build_bundle(load_project(Path(args.app_dir)), Path.cwd())
    data = {**bundle.describe(), "fab-path": str(bundle.path)}
    return Result(data, human=f"🎊 Successfully built {bundle.filename}")


def cmd_run(args: argparse.Namespace) -> Result:
    import tempfile
    from pathlib import Path

    from shoal.app.bundle import build_bundle
    from shoal.app.jobfolder import write_job_folder
    from shoal.app.project import parse_run_config
    from shoal.wire.archive import zip_folder

    project, federation = _load(args)
    config = {**project.config, **parse_run_config(args.run_config)}
    client = _client(federation)
    with tempfile.TemporaryDirectory(prefix="shoal-run-") as tmp:
        bundle = build_bundle(project, Path(tmp) / "dist")
        job = write_job_folder(project, bundle, config, Path(tmp) / "job")
        archive = Path(tmp) / "job.zip"
        zip_folder(job, archive)
        answer = client.submit_job(archive, federation.study)
    run_id = int(answer["job_id"])
    data: dict[str, Any] = {"run-id": run_id, **bundle.describe()}
    human = f"🎊 Successfully built {bundle.filename}\n🎊 Successfully started run {run_id}"
    if not args.stream:
        return Result(data, human=human)
    if args.format != "json":
        write_human(human)
        sys.stdout.flush()
    # From here the run exists: whatever ends the command (the run failing, a lost connection,
    # Ctrl-C), its JSON still carries run-id and the run's last known status, so a script can
    # tell "the run failed" (status finished:*) from "the command failed" (no run-id).
    last = {"status": "PENDING"}
    try:
        status = _follow(client, str(run_id), federation.study, last)
    except ShoalError as err:
        err.data = {**data, "status": _run_status(last["status"]), **(err.data or {})}
        raise
    except KeyboardInterrupt:
        raise ShoalError("INTERRUPTED", data={**data, "status": _run_status(last["status"])}) from None
    data["status"] = _run_status(status)
    if status != "FINISHED_OK":
        reason = last.get("reason", "")
        raise ShoalError(
            "RUN_ENDED_UNSUCCESSFULLY",
            reason or None,
            data={**data, "status-details": reason},
            run_id=run_id,
            status=_run_status(status),
        )
    return Result(data, human=f"✅ Run {run_id} {_run_status(status)}")


def _follow(client: AdminClient, job_id: str, study: str, last: dict[str, str]) -> str:
    """Print each change of the run (status, round, metrics) to stderr until it ends; ``last``
    holds its latest status and reason for the caller, should the following be cut short."""
    version = -1
    while True:
        answer = client.job_events(job_id, study, version, 25.0)
        version, meta = answer["version"], answer["job"]
        last["status"] = str(meta["status"])
        last["reason"] = str(meta.get("status_reason") or "")
        prog = meta.get("progress")
        last_metrics = (prog.get("last_metrics") if prog is not None else None) or {}
        metrics = " ".join(f"{k}={number_text(v)}" for k, v in last_metrics.items())
        rnd = prog.get("current_round") if prog is not None else None
        total = prog.get("total_rounds") if prog is not None else None
        where = f" round {rnd + 1}/{total}" if isinstance(rnd, int) else ""
        progress(f"[{_run_status(meta['status'])}]{where} {metrics}".rstrip())
        if answer["terminal"]:
            return str(meta["status"])


def _run_status(status: str) -> str:
    from shoal.wire.status import RUN_STATUS, JobStatus

    try:
        return RUN_STATUS[JobStatus(status)]
    except ValueError:
        return status.lower()


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """A job-list row as a run; plain ``job submit`` jobs get fab-* values from the job itself
    (fab-id ``job/<name>``, version 0.0.0, the stored archive's hash)."""
    fab = row.get("fab") or {}
    return {
        "run-id": int(row["job_id"]),
        "fab-id": fab.get("id", f"job/{row['job_name']}"),
        "fab-name": fab.get("name", row["job_name"]),
        "fab-version": fab.get("version", "0.0.0"),
        "fab-hash": fab.get("hash", str(row.get("content_sha256", ""))[:8]),
        "status": _run_status(row["status"]),
        "elapsed": clock(row.get("duration_s")),  # start to end, or to the server's now
        "created-at": utc_stamp(row.get("submit_time")),
        "running-at": utc_stamp(row.get("start_time")),
        "finished-at": utc_stamp(row.get("end_time")),
    }


def cmd_ls(args: argparse.Namespace) -> Result:
    federation = _federation_only(args)
    client = _client(federation)
    if args.run_id is not None:
        run_id = str(_run_id(client, federation, args.run_id))
        rows = client.list_jobs(federation.study, id_prefix=run_id)
        rows = [r for r in rows if r["job_id"] == run_id]
        if not rows:
            raise ShoalError("RUN_NOT_FOUND", run_id=run_id)
    else:
        if args.format != "json":
            progress("📄 Listing all runs...")
        rows = client.list_jobs(federation.study)
    runs = [run_view(r) for r in rows]
    return Result({"runs": runs}, human=lambda: _table(runs))


def _table(runs: list[dict[str, Any]]) -> str:
    """The runs as the one table every list of the CLI uses (``job list`` too)."""
    rows = [{**r, "fab": f"{r['fab-id']} (v{r['fab-version']})"} for r in runs]
    columns = [
        ("run-id", "RUN ID"),
        ("fab", "FAB"),
        ("status", "STATUS"),
        ("elapsed", "ELAPSED"),
        ("created-at", "CREATED AT"),
        ("running-at", "RUNNING AT"),
        ("finished-at", "FINISHED AT"),
    ]
    return table(rows, columns, fit=("fab",))


def cmd_stop(args: argparse.Namespace) -> Result:
    federation = _federation_only(args)
    client = _client(federation)
    run_id = _run_id(client, federation, args.run_id)
    if args.format != "json":
        progress(f"✋ Stopping run ID {run_id}...")
    try:
        client.abort_job(str(run_id), federation.study)
    except ShoalError as err:  # said in runs, and without the job family's --study hints
        if err.code == "JOB_NOT_FOUND":
            raise ShoalError("RUN_NOT_FOUND", run_id=run_id) from None
        if err.code == "JOB_NOT_RUNNING":
            rows = client.list_jobs(federation.study, id_prefix=str(run_id), max_results=1)
            status = _run_status(rows[0]["status"]) if rows else "finished"
            raise ShoalError("RUN_FINISHED", f"it is {status}", run_id=run_id) from None
        raise
    return Result({"run-id": run_id}, human=f"✅ Run {run_id} successfully stopped.")


NEW_PYPROJECT = """[project]
name = "{name}"
version = "1.0.0"
description = "A shoal app: federated linear regression with numpy"
dependencies = ["shoal", "numpy"]

[tool.shoal.app]
publisher = "local"
serverapp = "fedavg"
clientapp = "client.py"

[tool.shoal.app.config]
num-rounds = 3
min-clients = 2

[tool.shoal.federations]
default = "local"

[tool.shoal.federations.local]
# the admin startup kit 'shoal poc prepare' registers; or: startup-kit = "path/to/kit"
kit-id = "admin@example.com"
"""

NEW_CLIENT = '''"""Training script: each site fits y = x·w + b on data only it holds, FedAvg combines them."""

import zlib

import numpy as np

from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
seed = zlib.crc32(flare.site_name().encode())
rng = np.random.default_rng(seed)
x = rng.normal(rng.normal(0, 1, 3), 1.0, size=(100 + seed % 100, 3))
y = x @ np.array([1.5, -2.0, 0.5]) + 0.3 + rng.normal(0, 0.05, len(x))

while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    w = np.array(model.params.get("w", np.zeros(3)))
    b = float(np.array(model.params.get("b", np.zeros(1)))[0])
    loss = float(np.mean((x @ w + b - y) ** 2))
    for _ in range(20):
        err = x @ w + b - y
        w -= 0.05 * 2 * x.T @ err / len(y)
        b -= 0.05 * 2 * err.mean()
    print(f"round {model.current_round}: loss {loss:.4f}", flush=True)
    flare.send(FLModel(params={"w": w, "b": np.array([b])}, metrics={"loss": loss}, num_examples=len(y)))
'''


def cmd_new(args: argparse.Namespace) -> Result:
    from pathlib import Path

    from shoal.app.project import is_project_name

    if not is_project_name(args.name):
        raise ShoalError(
            "INVALID_ARGS",
            f"{args.name!r} is not a project name: letters, digits, '-' and '_' (no '.': the "
            "bundle's file name joins names with dots), starting and ending with a letter or digit",
        )
    root = Path(args.name).resolve()
    if root.exists():
        raise ShoalError("INVALID_ARGS", f"{root} already exists")
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(NEW_PYPROJECT.format(name=args.name))
    (root / "client.py").write_text(NEW_CLIENT)
    (root / ".gitignore").write_text("__pycache__/\n*.fab\n.venv/\n")
    data = {"path": str(root), "next_step": f"shoal run {args.name}"}
    return Result(
        data, human=f"🎊 Created {root}\nnext: shoal poc prepare && shoal poc start && shoal run {args.name}"
    )
