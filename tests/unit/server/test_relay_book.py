"""What a site's replica remembers of the jobs other replicas run (decisions/0048)."""

from __future__ import annotations

from shoal.server.relay_book import MAX_TASKS, RelayBook


def test_a_task_is_open_once_passed_and_until_answered() -> None:
    book = RelayBook()
    assert book.open_task("s1", "7", "t1") is None  # nothing passed: nothing to serve or take
    entry = book.passed("s1", "7", "replica-a")
    book.task_passed(entry, "t1", "blob-1", 1000)
    found = book.open_task("s1", "7", "t1")
    assert found is not None and found[1].model_bytes == 1000 and found[0].holder == "replica-a"
    assert book.open_task("s2", "7", "t1") is None  # another site's: not this one's to answer
    found[1].answered = True
    assert book.open_task("s1", "7", "t1") is None  # one result per task


def test_a_takeover_replaces_the_entry_and_old_tasks_go() -> None:
    book = RelayBook()
    entry = book.passed("s1", "7", "replica-a")
    for n in range(MAX_TASKS + 2):
        book.task_passed(entry, f"t{n}", None, 10)
    assert list(entry.tasks) == [f"t{n}" for n in range(2, MAX_TASKS + 2)]
    taken = book.passed("s1", "7", "replica-b")  # the job's new replica: its word counts now
    assert taken.holder == "replica-b" and not taken.tasks
    book.forget("s1", "7")
    assert book.get("s1", "7") is None
