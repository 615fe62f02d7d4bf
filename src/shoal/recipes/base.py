"""The Recipe base class: a job described in Python, exported as a job folder or simulated.

A recipe is a dataclass. Its fields are the job's knobs (each with a ``help`` in its metadata,
which ``shoal recipe show`` prints), its class variables say which built-in workflow runs on
the server and how ``shoal recipe list`` names it. ``export(dir)`` writes the same job folder a
person would write by hand (meta.json, app/config/*.json, app/custom/...), so what ``job
submit`` accepts, ``shoal simulate`` runs, and nothing about a recipe is hidden from review.

Paths in ``train_script`` and ``custom_files`` are relative to ``source_dir``: by default the
folder of the running ``job.py`` (the ``__main__`` module), else the current folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from shoal.errors import ShoalError
from shoal.wire.jobdef import JOB_NAME_RE, tracker_names


def knob(default: Any, help: str) -> Any:
    """A recipe field with the one-line help ``recipe show`` prints."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class Recipe:
    """A job built in Python. Subclasses set ``recipe_name`` and ``workflow`` and add fields."""

    recipe_name: ClassVar[str] = ""
    workflow: ClassVar[str] = ""

    name: str = knob("", "the job's name (meta.json name)")
    min_clients: int = knob(2, "sites needed before the job starts")
    sites: list[str] | None = knob(None, "run on these sites only (default: every site, @ALL)")
    train_script: str | None = knob("client.py", "the training script, relative to job.py's folder")
    train_args: str = knob("", "command-line arguments for the training script")
    client_module: str | None = knob(
        None, "a built-in client module (shoal.fl.clients.*) to run instead of a script"
    )
    custom_files: list[str] = knob([], "more files or folders beside job.py that the script needs")
    round_timeout: float = knob(0.0, "per-round deadline in seconds (0: none)")
    min_responses: int | None = knob(None, "results that close a round, k of n (default: min_clients)")
    log_streaming: bool = knob(True, "stream site logs to the server while the job runs")
    trackers: list[str] = knob(
        [], "experiment trackers the server writes the metrics to: tensorboard, mlflow, wandb"
    )
    privacy: dict[str, Any] | None = knob(
        None,
        "meta.json 'privacy': client_dp/server_dp {clip_norm, noise_multiplier}, budget {epsilon, delta}, "
        "exclude, top_fraction, quantize_bits (docs/privacy.md)",
    )
    source_dir: Path | None = field(default=None, repr=False, metadata={"help": ""})

    def __post_init__(self) -> None:
        if not self.name:
            raise ShoalError("INVALID_ARGS", f"{type(self).__name__} needs a name")
        if not isinstance(self.name, str) or not JOB_NAME_RE.fullmatch(self.name):
            # the server's rule for meta.json names; it also keeps ./<name>, export's default
            # folder, one plain folder beside the working directory
            raise ShoalError(
                "INVALID_ARGS",
                f"name {self.name!r} is not a job name: 1-128 characters: letters, digits, '.', '_', "
                "'-' or space, starting with a letter or digit",
            )
        if self.min_clients < 1:
            raise ShoalError("INVALID_ARGS", f"min_clients must be at least 1, got {self.min_clients}")
        if self.min_responses is not None and not 1 <= self.min_responses:
            raise ShoalError("INVALID_ARGS", f"min_responses must be at least 1, got {self.min_responses}")
        if self.round_timeout < 0:
            raise ShoalError("INVALID_ARGS", "round_timeout must not be negative")
        try:
            tracker_names({"trackers": self.trackers})
        except ValueError as exc:
            raise ShoalError("INVALID_ARGS", str(exc)) from exc
        if (self.train_script is None) == (self.client_module is None):
            raise ShoalError("INVALID_ARGS", "give either train_script or client_module")
        if self.client_module is not None and not self.client_module.startswith("shoal.fl.clients."):
            raise ShoalError("INVALID_ARGS", "client_module must be a built-in shoal.fl.clients module")
        if self.privacy is not None:
            from shoal.privacy.protections import PrivacySpecError, check_privacy

            try:
                self.privacy = check_privacy(self.privacy)
            except PrivacySpecError as exc:
                raise ShoalError("INVALID_ARGS", str(exc), hint="See docs/privacy.md.") from exc

    # --- what subclasses describe ----------------------------------------------------------
    def workflow_args(self) -> dict[str, Any]:
        """The server workflow's ``args``; subclasses add their own to these."""
        args: dict[str, Any] = {}
        if self.round_timeout:
            args["round_timeout"] = self.round_timeout
        if self.min_responses is not None:
            args["min_responses"] = self.min_responses
        return args

    def client_config(self) -> dict[str, Any]:
        if self.client_module is not None:
            return {"module": self.client_module, "args": self.train_args}
        return {"script": Path(str(self.train_script)).name, "args": self.train_args}

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "min_clients": self.min_clients,
            "deploy_map": {"app": ["server", *self.sites] if self.sites else ["@ALL"]},
            "resource_spec": {},
        }
        if not self.log_streaming:  # streaming is the default (decisions/0020)
            meta["log_streaming"] = False
        if self.trackers:
            meta["trackers"] = list(self.trackers)
        if self.privacy:
            meta["privacy"] = self.privacy
        return meta

    # --- what users call --------------------------------------------------------------------
    def export(self, job_dir: Path | str, force: bool = False) -> Path:
        """Write the job folder and return it. A folder that already holds a job is refused,
        or with ``force`` has its job (meta.json and app/, what an export writes) replaced."""
        out = Path(job_dir).expanduser().resolve()
        if out.exists() and not out.is_dir():
            raise ShoalError("LOCAL_FILE_ERROR", f"{out} is not a folder", path=str(out))
        if (out / "meta.json").exists() or (out / "app").exists():
            if not force:
                raise ShoalError(
                    "INVALID_ARGS",
                    f"{out} already holds a job",
                    hint="Export into a new or empty folder, or pass --force to replace that job.",
                )
            self._check_sources()  # nothing is removed for an export that cannot be written
            (out / "meta.json").unlink(missing_ok=True)
            shutil.rmtree(out / "app", ignore_errors=True)
        source, copies = self._check_sources()  # everything is checked before anything is written
        config = out / "app" / "config"
        custom = out / "app" / "custom"
        config.mkdir(parents=True, exist_ok=True)
        custom.mkdir(parents=True, exist_ok=True)
        for rel in copies:
            src = self._inside(source, rel)
            dest = custom / Path(rel).name
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)
        server = {"workflow": self.workflow, "args": self.workflow_args()}
        _write_json(out / "meta.json", self.meta())
        _write_json(config / "config_fed_server.json", server)
        _write_json(config / "config_fed_client.json", self.client_config())
        return out

    def simulate(
        self, n: int | None = None, *, workers: int | None = None, out_dir: Path | None = None
    ) -> Path:
        """Export to a temporary folder and run it with ``n`` virtual sites (default
        min_clients; below 1 is INVALID_ARGS); returns the result workspace (global model,
        metrics_summary.json, logs)."""
        import tempfile

        from shoal.simulator.engine import simulate

        with tempfile.TemporaryDirectory(prefix=f"shoal-recipe-{self.recipe_name}-") as tmp:
            job = self.export(Path(tmp) / self.name)
            return simulate(job, self.min_clients if n is None else n, workers=workers, out_dir=out_dir)

    def main(self, argv: list[str] | None = None) -> int:
        """The ``job.py`` convention. ``--export --export-dir DIR`` writes the job folder
        (``--force`` replaces a job already there); otherwise the job runs: in the simulator
        (``-n`` sites, ``--workers``, ``-o`` to keep the results), or on a real server with
        ``--poc`` or ``--startup-kit``/``--kit-id``, as FLARE's ``recipe.execute(PocEnv())``.
        A run ends by printing the metrics it reached; no temporary folder is left behind.

        Returns the exit code the shoal CLI would give (0, or the error's: 4 for bad arguments
        or an unusable folder, 1 for a failed job, 2 for a server out of reach), for
        ``raise SystemExit(...)``."""
        parser = argparse.ArgumentParser(description=f"{self.name}: a {self.recipe_name} recipe")
        parser.add_argument("--export", action="store_true", help="write the job folder and stop")
        parser.add_argument("--export-dir", default=None, help="where to export (default: ./<name>)")
        parser.add_argument("--force", action="store_true", help="with --export: replace a job already there")
        parser.add_argument("-n", "--n-sites", type=int, default=None, help="simulated sites")
        parser.add_argument("--workers", type=int, default=None, help="simulator worker processes")
        parser.add_argument("-o", "--out", default=None, help="keep the simulator's results in this folder")
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--poc", action="store_true", help="run on the local POC (shoal poc start)")
        where.add_argument("--startup-kit", default=None, help="run on the server of this admin kit")
        where.add_argument("--kit-id", default=None, help="run on the server of this registered kit")
        parser.add_argument("--study", default="default", help="with a server: the job's study")
        try:
            opts = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0), or a usage error argparse has printed: INVALID_ARGS
            return 0 if exc.code == 0 else ShoalError("INVALID_ARGS").exit_code
        try:
            if opts.export:
                job = self.export(Path(opts.export_dir or self.name), force=opts.force)
                print(f"Exported job {self.name!r} to {job}")
                print(f"Submit it with: shoal job submit -j {job}")
            elif opts.poc or opts.startup_kit or opts.kit_id:
                self._run_on_server(opts)
            else:
                self._simulate_and_report(opts)
        except ShoalError as exc:
            return _report(exc)
        except OSError as exc:  # a folder that cannot be made or written, as the CLI reports it
            where_ = f": {exc.filename}" if exc.filename else ""
            return _report(ShoalError("LOCAL_FILE_ERROR", f"{exc.strerror or exc}{where_}"))
        return 0

    def _simulate_and_report(self, opts: argparse.Namespace) -> None:
        import tempfile

        from shoal.recipes.execute import final_metrics, metrics_text

        with tempfile.TemporaryDirectory(prefix=f"shoal-recipe-{self.recipe_name}-") as tmp:
            out = Path(opts.out) if opts.out else Path(tmp) / "result"
            workspace = self.simulate(opts.n_sites, workers=opts.workers, out_dir=out)
            print(f"Simulated job {self.name!r}: {metrics_text(final_metrics(workspace))}")
            if opts.out:
                print(f"results in {workspace}")
            else:
                print("results not kept (-o DIR keeps them)")

    def _run_on_server(self, opts: argparse.Namespace) -> None:
        import tempfile

        from shoal.recipes.execute import metrics_text, poc_admin_kit, run_on_server

        kit = poc_admin_kit() if opts.poc else opts.startup_kit
        with tempfile.TemporaryDirectory(prefix=f"shoal-recipe-{self.recipe_name}-") as tmp:
            job = self.export(Path(tmp) / self.name)
            meta = run_on_server(job, startup_kit=kit, kit_id=opts.kit_id, study=opts.study)
        progress = meta.get("progress")
        metrics = (progress.get("last_metrics") if progress is not None else None) or {}
        print(f"Job {meta['job_id']} ({self.name!r}) finished: {metrics_text(metrics)}")
        print(f"results: shoal job download {meta['job_id']}")

    # --- helpers ----------------------------------------------------------------------------
    def _check_sources(self) -> tuple[Path, list[str]]:
        """The folder job.py's files come from and the files to copy, each checked to exist
        inside it."""
        source = self._source()
        copies = [*([self.train_script] if self.train_script else []), *self.custom_files]
        for rel in copies:
            self._inside(source, rel)
        return source, copies

    def _source(self) -> Path:
        if self.source_dir is not None:
            return Path(self.source_dir).resolve()
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        return Path(main_file).resolve().parent if main_file else Path.cwd()

    @staticmethod
    def _inside(source: Path, rel: str) -> Path:
        path = (source / rel).resolve()
        if not path.is_relative_to(source):
            raise ShoalError("INVALID_ARGS", f"{rel!r} is outside {source}")
        if not path.exists():
            raise ShoalError(
                "INVALID_ARGS", f"{rel!r} does not exist in {source}", hint="Paths are relative to job.py."
            )
        return path

    @classmethod
    def parameters(cls) -> list[dict[str, Any]]:
        """Every knob of this recipe: name, type, default, help (for ``recipe show``)."""
        out = []
        for f in fields(cls):
            if not f.metadata.get("help"):
                continue
            if f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                default = f.default if f.default is not MISSING else None
            out.append(
                {
                    "name": f.name,
                    "type": str(f.type),
                    "default": default,
                    "required": f.name == "name",
                    "help": f.metadata["help"],
                }
            )
        return out

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _report(exc: ShoalError) -> int:
    print(f"{exc.code}: {exc}", file=sys.stderr)
    if exc.hint:
        print(f"Hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
