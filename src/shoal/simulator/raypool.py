"""The simulator's sites as Ray actors on an existing Ray cluster (``shoal simulate --ray``).

The same ``SitePool`` as the local ``WorkerPool``: ``submit(spec)`` gives a future of a site
run's answer, and each run is ``run_site_task`` in a process that keeps its imports between
runs, here a Ray actor. The workflow stays in this process, unchanged, so the job's model is
the local simulator's for the same job (decisions/0035).

A cluster's nodes need not share this machine's disk, so files travel through Ray's object
store: the job folder once (as a zip), each task's model once (every site of the task reads the
same object), and back each run's result and the log lines it wrote. An actor keeps the job
and each of its sites' working folders in a temporary folder of its node, so a script that
keeps state in its working folder between rounds finds it: site ``site-i`` always runs on
actor ``(i - 1) mod W``.

Ray is an extra (``pip install 'shoal[ray]'``), imported only here, only for ``--ray``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import socket
import tempfile
import threading
import zipfile
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal.errors import ShoalError
from shoal.simulator.pool import WorkerDied
from shoal.simulator.worker import SiteTask
from shoal.wire.controller import Result
from shoal.wire.messages import CONTROLLER


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


#: Seconds a cluster's head gets to accept a connection before the simulation gives up on it.
CONNECT_TIMEOUT = 5.0


def _answers(address: str) -> None:
    """Refuse at once a ``host:port`` where nothing listens: Ray itself retries such an address
    for minutes before it gives up. ``auto`` (and ``ray://``) is left to Ray, which finds the
    cluster this machine runs (or says there is none) by itself."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except (OSError, ValueError) as exc:
        raise ShoalError(
            "RAY_UNAVAILABLE", f"no Ray cluster answers at {address!r}: {type(exc).__name__}: {exc}"
        ) from None


class SiteActor:
    """One Ray actor: runs site tasks one after another in its process, as a pool worker does.

    Its folder (a temporary folder on its node) holds ``job/`` (the job, unpacked once),
    ``models/`` (the current task's model), ``sites/<site>/`` (each site's working folder,
    kept between rounds) and ``logs/`` (one run's output, sent back and emptied)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shoal-ray-site-"))
        self.job_id = ""
        self.model_key = ""

    def run(
        self, spec_doc: dict[str, Any], job: list[Any], model: list[Any], model_key: str
    ) -> dict[str, Any]:
        """One site task. ``job`` and ``model`` hold an object reference each, inside a list so
        that Ray hands over the reference, not the bytes: they are fetched only when this actor
        has not got them yet (a new job, a new task's model), not once per site."""
        import ray

        from shoal.simulator.worker import run_site_task

        spec = SiteTask.from_json(spec_doc)
        if spec.job_id != self.job_id:  # a new job: unpack it (the only one this actor runs)
            shutil.rmtree(self.root / "job", ignore_errors=True)
            with zipfile.ZipFile(io.BytesIO(ray.get(job[0]))) as zf:
                zf.extractall(self.root / "job")
            self.job_id = spec.job_id
        local_model = self.root / "models" / Path(str(spec.task["model_path"])).name
        if model_key != self.model_key:
            shutil.rmtree(self.root / "models", ignore_errors=True)
            local_model.parent.mkdir(parents=True)
            local_model.write_bytes(ray.get(model[0]))
            self.model_key = model_key
        job_dir = Path(spec.app_dir).parent
        entry_kind, entry = spec.entry
        if entry_kind == "script":
            entry = str(self.root / "job" / Path(entry).relative_to(job_dir))
        log = self.root / "logs" / f"{spec.site}.txt"
        log.unlink(missing_ok=True)
        task = {k: v for k, v in spec.task.items() if k != "result_dir"}
        task["model_path"] = str(local_model)
        here = SiteTask(
            site=spec.site,
            job_id=spec.job_id,
            app_dir=str(self.root / "job" / Path(spec.app_dir).relative_to(job_dir)),
            entry=(entry_kind, entry),
            argv=spec.argv,
            work_dir=str(self.root / "sites" / spec.site),
            log_path=str(log),
            task=task,
        )
        answer = run_site_task(here)
        out: dict[str, Any] = {"answer": answer, "log": log.read_bytes() if log.exists() else b""}
        if answer.get(CONTROLLER.key) == Result.TYPE:
            result = Path(str(answer["path"]))
            out["result"] = result.read_bytes()
            result.unlink(missing_ok=True)
        return out

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class RayPool:
    """``size`` SiteActors on the cluster at ``address`` (``auto``: the one this machine runs);
    see the module. ``stop`` removes the actors and disconnects; the cluster stays."""

    def __init__(self, address: str, workers: int | None, n_sites: int, job_dir: Path) -> None:
        try:
            import ray as ray_module
        except ImportError as exc:
            raise ShoalError(
                "RAY_UNAVAILABLE",
                "--ray needs Ray, which is not installed",
                hint="Install the extra: pip install 'shoal[ray]'.",
            ) from exc
        _answers(address)
        ray: Any = ray_module  # its typing does not cover the calls made here
        self._ray = ray
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, a version mismatch, ...: said plainly
            raise ShoalError(
                "RAY_UNAVAILABLE", f"cannot join the Ray cluster at {address!r}: {type(exc).__name__}: {exc}"
            ) from None
        # as many actors as asked for, or as the cluster has CPUs; never more than sites
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.size = min(size, n_sites)
        actor = ray.remote(num_cpus=1)(SiteActor)  # one run at a time, as a pool worker
        self._actors = [actor.remote() for _ in range(self.size)]
        self._job = ray.put(_zip_folder(job_dir))
        self._model: tuple[str, Any] = ("", None)  # the current task's model: its path, its object
        self._lock = threading.Lock()
        self._stopped = False
        self._pending: set[Future[dict[str, Any]]] = set()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(grace=0.0)

    def _model_ref(self, path: str) -> tuple[Any, str]:
        """The task model's object, put once for every site of the task."""
        with self._lock:
            if self._model[0] != path:
                self._model = (path, self._ray.put(Path(path).read_bytes()))
            return self._model[1], path

    def submit(self, spec: SiteTask) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        if self._stopped:
            future.set_exception(WorkerDied("the simulator's Ray actors were stopped"))
            return future
        future.set_running_or_notify_cancel()
        model, key = self._model_ref(str(spec.task["model_path"]))
        actor = self._actors[(int(spec.site.rsplit("-", 1)[-1]) - 1) % self.size]
        ref = actor.run.remote(spec.to_json(), [self._job], [model], key)
        self._pending.add(future)
        threading.Thread(target=self._wait, args=(ref, spec, future), daemon=True).start()
        return future

    def _wait(self, ref: Any, spec: SiteTask, future: Future[dict[str, Any]]) -> None:
        """Take the actor's answer (in a thread of its own: ``ray.get`` blocks), put its result
        and log lines where the local pool would have, and settle the future."""
        try:
            out = self._ray.get(ref)
            answer: dict[str, Any] = out["answer"]
            log = Path(spec.log_path)
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as f:
                f.write(out["log"])
            if answer.get(CONTROLLER.key) == Result.TYPE:
                folder = Path(str(spec.task.get("result_dir") or Path(str(spec.task["model_path"])).parent))
                dest = folder / Path(str(answer["path"])).name
                dest.write_bytes(out["result"])
                answer["path"] = str(dest)
        except Exception as exc:  # the actor died (RayActorError), the cluster went away, ...
            self._pending.discard(future)
            future.set_exception(WorkerDied(f"the Ray actor running {spec.site}'s task failed: {exc}"))
            return
        self._pending.discard(future)
        future.set_result(answer)

    def stop(self, *, grace: float) -> None:
        """Remove the actors (a run still going is killed with its actor) and disconnect."""
        if self._stopped:
            return
        self._stopped = True
        for actor in self._actors:
            with contextlib.suppress(Exception):
                if grace > 0 and not self._pending:
                    self._ray.get(actor.close.remote(), timeout=grace)
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        with contextlib.suppress(Exception):
            self._ray.shutdown()
