"""What the server does with a site's result file once the workflow has folded it in."""

from __future__ import annotations

from pathlib import Path

from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.run_tasks import TaskBook, TaskState
from shoal.wire.models import SPARE_MODEL


def _book(tmp_path: Path) -> tuple[JobPaths, TaskBook, TaskState]:
    paths = JobPaths(tmp_path / "job")
    for folder in (paths.run, paths.models, paths.results):
        folder.mkdir(parents=True)
    book = TaskBook(paths)
    task = TaskState("t1", paths.models / "t1.safetensors", {"site-1", "site-2"})
    book.tasks[task.task_id] = task
    return paths, book, task


def test_a_released_result_becomes_the_workflows_spare_and_the_next_one_replaces_it(tmp_path: Path) -> None:
    """decisions/0054: the file (its pages fresh from the upload) goes to the workflow's folder
    for its next model to be written over; one spare at a time, nothing left in results/."""
    paths, book, _ = _book(tmp_path)
    for site in ("site-1", "site-2"):
        book.result_path("t1", site).write_bytes(f"update of {site}".encode())
    book.release_result("t1", "site-1", True, set())
    assert (paths.run / SPARE_MODEL).read_bytes() == b"update of site-1"
    book.release_result("t1", "site-2", True, set())
    assert (paths.run / SPARE_MODEL).read_bytes() == b"update of site-2"
    assert list(paths.results.iterdir()) == []


def test_a_release_for_a_site_outside_the_job_or_an_unknown_task_moves_nothing(tmp_path: Path) -> None:
    paths, book, _ = _book(tmp_path)
    book.result_path("t1", "site-1").write_bytes(b"update")
    book.release_result("t1", "site-1", False, set())  # a name the workflow made up
    book.release_result("t9", "site-1", True, set())
    assert not (paths.run / SPARE_MODEL).exists()
    assert book.result_path("t1", "site-1").read_bytes() == b"update"
