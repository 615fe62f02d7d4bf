"""Contract suite for every JobStore implementation: SQLite on a temp file, and PostgreSQL (a
fresh database on the session's throwaway server, tests/pgserver.py).

A new backend joins by adding a branch to the ``factory`` fixture; it must pass everything here.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.store.base import JOB_ID_LIMIT, JobRecord, JobStore, Submitter
from shoal.store.sql import load_migrations
from shoal.store.sqlite import SqliteJobStore
from shoal.wire.status import TERMINAL, TRANSITIONS, JobStatus

ALICE = Submitter(name="alice@example.com", org="acme", role="lead")
BOB = Submitter(name="bob@example.com", org="acme", role="lead")
SHA = "a" * 64

StoreFactory = Callable[[Path], JobStore]
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> StoreFactory:
    """Opens the test's one store (each call a new connection to the same data)."""
    if request.param == "sqlite":
        return lambda tmp: SqliteJobStore(tmp / "jobs.db")
    from shoal.store.postgres import PostgresJobStore

    url = request.getfixturevalue("postgres").new_schema()
    return lambda tmp: PostgresJobStore(url)


@pytest.fixture
def store(factory: StoreFactory, tmp_path: Path) -> Iterator[JobStore]:
    s = factory(tmp_path)
    yield s
    s.close()


def create_tok(
    store: JobStore, name: str = "job", study: str = "default", **kw: Any
) -> tuple[JobRecord, bool]:
    """Create a job and also report whether it was new (for submit-token tests)."""
    kw.setdefault("submitter", ALICE)
    meta = kw.pop("meta", {"name": name})
    return store.create_job(study=study, name=name, meta=meta, content_sha256=SHA, **kw)


def create(store: JobStore, name: str = "job", study: str = "default", **kw: Any) -> JobRecord:
    return create_tok(store, name, study, **kw)[0]


# --- create / get --------------------------------------------------------------------------


def test_create_returns_submitted_record(store: JobStore) -> None:
    record, created = store.create_job(
        study="s1",
        name="hello",
        meta={"name": "hello", "min_clients": 2},
        content_sha256=SHA,
        submitter=ALICE,
    )
    assert created is True
    assert record.status is JobStatus.SUBMITTED
    assert record.study == "s1" and record.name == "hello" and record.submitter == ALICE
    assert record.meta == {"name": "hello", "min_clients": 2}
    assert record.start_time is None and record.end_time is None and record.first_error is None
    assert abs(record.submit_time - time.time()) < 5
    assert store.get_job(record.job_id) == record


def test_ids_random_in_range_and_unique(store: JobStore) -> None:
    ids = {create(store, f"j{i}").job_id for i in range(300)}
    assert len(ids) == 300
    assert all(1 <= i < JOB_ID_LIMIT for i in ids)
    assert max(ids) > 2**40  # random over the whole range, not a counter


def test_get_unknown_is_none(store: JobStore) -> None:
    assert store.get_job(12345) is None


def test_submit_token_stripped_from_meta(store: JobStore) -> None:
    record = create(store, meta={"name": "x", "submit_token": "tok"})
    assert "submit_token" not in record.meta
    stored = store.get_job(record.job_id)
    assert stored is not None and "submit_token" not in stored.meta


def test_clone_keeps_origin(store: JobStore) -> None:
    origin = create(store)
    clone = create(store, cloned_from=origin.job_id)
    assert clone.cloned_from == origin.job_id and clone.job_id != origin.job_id


def test_commit_visible_from_second_connection(factory: StoreFactory, tmp_path: Path) -> None:
    first = factory(tmp_path)
    record = create(first)
    second = factory(tmp_path)
    try:
        assert second.get_job(record.job_id) == record
    finally:
        second.close()
        first.close()


def test_commit_visible_from_another_process(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    record = create(store)
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT name FROM jobs WHERE job_id = ?', (int(sys.argv[2]),)).fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "jobs.db"), str(record.job_id)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "job"
    store.close()


def test_survives_reopen(factory: StoreFactory, tmp_path: Path) -> None:
    s = factory(tmp_path)
    record = create(s)
    s.close()
    s = factory(tmp_path)
    assert s.get_job(record.job_id) == record
    s.close()


# --- submit tokens -------------------------------------------------------------------------


def test_same_token_same_content_returns_existing(store: JobStore) -> None:
    first, created1 = create_tok(store, submit_token="t1", content_hash="sha256:1")
    again, created2 = create_tok(store, submit_token="t1", content_hash="sha256:1")
    assert created1 and not created2
    assert again.job_id == first.job_id
    assert len(store.list_jobs(study="default")) == 1
    assert store.find_by_submit_token("default", ALICE, "t1") == first


def test_token_scope_is_study_and_identity(store: JobStore) -> None:
    a, _ = create_tok(store, submit_token="t", content_hash="sha256:1")
    b, cb = create_tok(store, submit_token="t", content_hash="sha256:1", submitter=BOB)
    c, cc = create_tok(store, submit_token="t", content_hash="sha256:1", study="other")
    d, cd = create_tok(
        store, submit_token="t", content_hash="sha256:1", submitter=Submitter(ALICE.name, ALICE.org, "member")
    )
    assert cb and cc and cd
    assert len({a.job_id, b.job_id, c.job_id, d.job_id}) == 4


def test_token_conflict(store: JobStore) -> None:
    first, _ = create_tok(store, submit_token="t1", content_hash="sha256:1")
    with pytest.raises(ShoalError) as err:
        create_tok(store, submit_token="t1", content_hash="sha256:2")
    assert err.value.code == "SUBMIT_TOKEN_CONFLICT"
    assert err.value.data == {"existing_job_id": str(first.job_id)}
    assert len(store.list_jobs(study=None)) == 1


def test_token_of_deleted_job(store: JobStore) -> None:
    first, _ = create_tok(store, submit_token="t1", content_hash="sha256:1")
    assert store.delete_job(first.job_id, deleted_by=ALICE) == 1
    attempts: list[Callable[[], object]] = [
        lambda: create_tok(store, submit_token="t1", content_hash="sha256:1"),
        lambda: create_tok(store, submit_token="t1", content_hash="sha256:other"),
        lambda: store.find_by_submit_token("default", ALICE, "t1"),
    ]
    for attempt in attempts:
        with pytest.raises(ShoalError) as err:
            attempt()
        assert err.value.code == "SUBMIT_TOKEN_JOB_DELETED"
        data = err.value.data or {}
        assert data["job_id"] == str(first.job_id) and data["state"] == "job_deleted"
        assert data["deleted_time"].endswith("+00:00")
    assert store.list_jobs(study=None) == []


def test_token_records_survive_reopen(factory: StoreFactory, tmp_path: Path) -> None:
    s = factory(tmp_path)
    first, _ = create_tok(s, submit_token="t1", content_hash="sha256:1")
    s.close()
    s = factory(tmp_path)
    again, created = create_tok(s, submit_token="t1", content_hash="sha256:1")
    assert not created and again.job_id == first.job_id
    s.close()


def test_find_unknown_token(store: JobStore) -> None:
    assert store.find_by_submit_token("default", ALICE, "nope") is None


def test_twenty_threads_one_token_one_job(store: JobStore) -> None:
    barrier = threading.Barrier(20)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            record, created = store.create_job(
                study="default",
                name="race",
                meta={},
                content_sha256=SHA,
                submitter=ALICE,
                submit_token="race",
                content_hash="sha256:r",
            )
            results.append((record.job_id, created))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(store.list_jobs(study=None)) == 1


def test_two_stores_one_token_one_job(factory: StoreFactory, tmp_path: Path) -> None:
    """Two connections (as two processes would hold) racing on one token still make one job."""
    stores = [factory(tmp_path) for _ in range(2)]
    barrier = threading.Barrier(10)
    ids: list[int] = []

    def worker(s: JobStore) -> None:
        barrier.wait()
        record, _ = s.create_job(
            study="d",
            name="r",
            meta={},
            content_sha256=SHA,
            submitter=ALICE,
            submit_token="x",
            content_hash="h",
        )
        ids.append(record.job_id)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 10
    for s in stores:
        s.close()


# --- transitions ---------------------------------------------------------------------------


def test_happy_path_sets_times(store: JobStore) -> None:
    job = create(store)
    d = store.transition(job.job_id, JobStatus.DISPATCHED)
    assert d is not None and d.status is JobStatus.DISPATCHED and d.start_time is None
    r = store.transition(job.job_id, JobStatus.RUNNING)
    assert r is not None and r.start_time is not None and r.end_time is None
    f = store.transition(job.job_id, JobStatus.FINISHED_OK, reason="all rounds done")
    assert f is not None and f.end_time is not None and f.end_time >= r.start_time
    assert f.status_reason == "all rounds done"
    assert store.get_job(job.job_id) == f


@pytest.mark.parametrize("current", list(JobStatus))
@pytest.mark.parametrize("new", list(JobStatus))
def test_transition_table_enforced(store: JobStore, current: JobStatus, new: JobStatus) -> None:
    job = create(store)
    path = {
        JobStatus.SUBMITTED: [],
        JobStatus.DISPATCHED: [JobStatus.DISPATCHED],
        JobStatus.RUNNING: [JobStatus.DISPATCHED, JobStatus.RUNNING],
    }.get(current, [JobStatus.DISPATCHED, JobStatus.RUNNING, current])
    for step in path:
        assert store.transition(job.job_id, step) is not None
    before = store.get_job(job.job_id)
    result = store.transition(job.job_id, new, reason="x")
    if new in TRANSITIONS.get(current, frozenset()):
        assert result is not None and result.status is new
    else:
        assert result is None
        assert store.get_job(job.job_id) == before


def test_terminal_never_overwritten(store: JobStore) -> None:
    job = create(store)
    assert store.transition(job.job_id, JobStatus.ABORTED, reason="user abort") is not None
    for status in JobStatus:
        assert store.transition(job.job_id, status, reason="late") is None
    final = store.get_job(job.job_id)
    assert final is not None and final.status is JobStatus.ABORTED and final.status_reason == "user abort"
    assert final.status in TERMINAL


def test_concurrent_terminal_transitions_one_wins(store: JobStore) -> None:
    job = create(store)
    store.transition(job.job_id, JobStatus.DISPATCHED)
    store.transition(job.job_id, JobStatus.RUNNING)
    barrier = threading.Barrier(len(TERMINAL))
    wins: list[JobStatus] = []

    def worker(status: JobStatus) -> None:
        barrier.wait()
        if store.transition(job.job_id, status) is not None:
            wins.append(status)

    threads = [threading.Thread(target=worker, args=(s,)) for s in TERMINAL]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    final = store.get_job(job.job_id)
    assert final is not None and final.status is wins[0]


def test_first_error_kept_once(store: JobStore) -> None:
    job = create(store)
    e1 = {"site": "site-1", "type": "RuntimeError", "message": "boom"}
    e2 = {"site": "site-2", "type": "ValueError", "message": "later"}
    store.transition(job.job_id, JobStatus.DISPATCHED, first_error=e1)
    r = store.transition(job.job_id, JobStatus.FAILED, reason="site-1 failed", first_error=e2)
    assert r is not None and r.first_error == e1


def test_set_first_error_keeps_the_first(store: JobStore) -> None:
    job = create(store)
    first = {"site": "site-1", "type": "ProcessExit", "message": "exit code 1"}
    store.set_first_error(job.job_id, first)
    store.set_first_error(job.job_id, {"site": "site-2", "type": "Other", "message": "later"})
    record = store.get_job(job.job_id)
    assert record is not None and record.first_error == first


def test_jobs_using_content_counts_clones(store: JobStore) -> None:
    first = create(store)
    clone, _ = store.create_job(
        study="default",
        name=first.name,
        meta=first.meta,
        content_sha256=first.content_sha256,
        submitter=first.submitter,
        cloned_from=first.job_id,
    )
    assert clone.cloned_from == first.job_id
    assert store.jobs_using_content(first.content_sha256) == 2
    store.delete_job(first.job_id)
    assert store.jobs_using_content(first.content_sha256) == 1


def test_transition_unknown_job(store: JobStore) -> None:
    assert store.transition(999, JobStatus.DISPATCHED) is None


def test_set_status_reason(store: JobStore) -> None:
    job = create(store)
    store.set_status_reason(job.job_id, "waiting for 2 sites")
    record = store.get_job(job.job_id)
    assert record is not None and record.status_reason == "waiting for 2 sites"


def test_jobs_in_status_oldest_first(store: JobStore) -> None:
    jobs = [create(store, f"j{i}") for i in range(5)]
    store.transition(jobs[1].job_id, JobStatus.DISPATCHED)
    store.transition(jobs[3].job_id, JobStatus.ABORTED)
    pending = store.jobs_in_status([JobStatus.SUBMITTED])
    assert [j.job_id for j in pending] == [jobs[i].job_id for i in (0, 2, 4)]
    live = store.jobs_in_status({JobStatus.SUBMITTED, JobStatus.DISPATCHED})
    assert [j.job_id for j in live] == [jobs[i].job_id for i in (0, 1, 2, 4)]
    assert store.jobs_in_status([]) == []


# --- listing -------------------------------------------------------------------------------


def test_list_order_limit_reverse(store: JobStore) -> None:
    jobs = [create(store, f"j{i}") for i in range(6)]
    ids = [j.job_id for j in jobs]
    assert [j.job_id for j in store.list_jobs(study="default")] == ids
    assert [j.job_id for j in store.list_jobs(study="default", reverse=True)] == ids[::-1]
    assert [j.job_id for j in store.list_jobs(study="default", limit=2)] == ids[-2:]
    assert [j.job_id for j in store.list_jobs(study="default", limit=2, reverse=True)] == ids[::-1][:2]
    assert store.list_jobs(study="default", limit=0) == []


@pytest.mark.parametrize("limit", [2**63 - 1, 2**63, 2**200])
def test_a_limit_beyond_64_bits_means_every_job(store: JobStore, limit: int) -> None:
    """SQLite raised OverflowError past a signed 64-bit LIMIT; more than there can be is all."""
    ids = [create(store, f"j{i}").job_id for i in range(3)]
    assert [j.job_id for j in store.list_jobs(study="default", limit=limit)] == ids


def test_list_by_study(store: JobStore) -> None:
    a = create(store, study="a")
    b = create(store, study="b")
    assert [j.job_id for j in store.list_jobs(study="a")] == [a.job_id]
    assert [j.job_id for j in store.list_jobs(study=None)] == [a.job_id, b.job_id]
    assert store.list_jobs(study="nope") == []


def test_list_by_submitter_name_and_org(store: JobStore) -> None:
    """A same-named submitter of another org is someone else; the limit counts only matches."""
    twin = Submitter(name=ALICE.name, org="other", role="lead")
    mine = [create(store, submitter=ALICE).job_id for _ in range(3)]
    create(store, submitter=twin)
    bobs = create(store, submitter=BOB).job_id
    own = store.list_jobs(study="default", submitter_name=ALICE.name, submitter_org=ALICE.org)
    assert [j.job_id for j in own] == mine
    limited = store.list_jobs(study="default", submitter_name=ALICE.name, submitter_org=ALICE.org, limit=2)
    assert [j.job_id for j in limited] == mine[1:]
    org = store.list_jobs(study="default", submitter_org="acme")
    assert [j.job_id for j in org] == [*mine, bobs]
    assert store.list_jobs(study="default", submitter_org="") == []


def test_list_name_prefix_case_insensitive(store: JobStore) -> None:
    create(store, "Hello-World")
    create(store, "hello_numpy")
    create(store, "other")
    names = [j.name for j in store.list_jobs(study="default", name_prefix="HELLO")]
    assert names == ["Hello-World", "hello_numpy"]
    assert store.list_jobs(study="default", name_prefix="zzz") == []


def test_list_id_prefix(store: JobStore) -> None:
    jobs = [create(store, f"j{i}") for i in range(30)]
    target = jobs[7]
    prefix = str(target.job_id)[:6]
    found = store.list_jobs(study="default", id_prefix=prefix)
    assert target.job_id in {j.job_id for j in found}
    assert all(str(j.job_id).startswith(prefix) for j in found)
    assert [j.job_id for j in store.list_jobs(study="default", id_prefix=str(target.job_id))] == [
        target.job_id
    ]


def test_list_fast_with_10000_jobs(store: JobStore) -> None:
    for i in range(10_000):
        create(store, f"job-{i}", study="big" if i % 2 else "small")
    start = time.perf_counter()
    recent = store.list_jobs(study="big", limit=20)
    by_name = store.list_jobs(study="big", name_prefix="job-999")
    store.jobs_in_status([JobStatus.RUNNING])
    elapsed = time.perf_counter() - start
    assert len(recent) == 20 and recent[-1].name == "job-9999"
    assert {j.name for j in by_name} == {
        "job-999",
        "job-9991",
        "job-9993",
        "job-9995",
        "job-9997",
        "job-9999",
    }
    assert elapsed < 0.5, elapsed


# --- delete --------------------------------------------------------------------------------


def test_delete_counts_newly_marked(store: JobStore) -> None:
    plain = create(store)
    assert store.delete_job(plain.job_id) == 0
    assert store.get_job(plain.job_id) is None
    tok, _ = create_tok(store, submit_token="t", content_hash="h")
    assert store.delete_job(tok.job_id) == 1
    assert store.delete_job(tok.job_id) == 0  # already marked
    assert store.delete_job(424242) == 0


# --- SQLite specifics ----------------------------------------------------------------------


def test_sqlite_pragmas_and_schema_version(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(load_migrations())
    conn.close()


def test_sqlite_refuses_newer_schema(tmp_path: Path) -> None:
    SqliteJobStore(tmp_path / "jobs.db").close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 999"):
        SqliteJobStore(tmp_path / "jobs.db")


def test_sqlite_is_a_jobstore(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    assert isinstance(store, JobStore)
    store.close()


def test_count_by_status_counts_every_study(store: JobStore) -> None:
    """What /metrics reports as jobs by status: every study's jobs, by their current status."""
    first = create(store, "a")
    create(store, "b", study="other")
    create(store, "c")
    assert store.transition(first.job_id, JobStatus.DISPATCHED, reason="test")
    assert store.count_by_status() == {JobStatus.SUBMITTED: 2, JobStatus.DISPATCHED: 1}


# --- reads beside a write in flight --------------------------------------------------------


def test_reads_do_not_wait_for_a_write_being_committed(store: JobStore) -> None:
    """A write holds the store's write lock through its durable commit (an fsync that takes tens
    of milliseconds on a busy disk); ``job list`` and ``job meta`` on the server's event loop
    must not queue behind it. The write in flight is held open here through the store's own
    write transaction; every read answers meanwhile, with what was committed before it."""
    job = create(store, "committed")
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with store._write():  # type: ignore[attr-defined]  # the backend's write transaction
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        answers: list[object] = []

        def reads() -> None:
            answers.append(store.get_job(job.job_id))
            answers.append([j.job_id for j in store.list_jobs(study="default", limit=10)])
            answers.append(store.jobs_in_status([JobStatus.SUBMITTED]))
            answers.append(store.count_by_status())

        reader = threading.Thread(target=reads)
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a read waited for the write in flight"
        assert answers[0] == job
        assert answers[1] == [job.job_id]
        assert answers[3] == {JobStatus.SUBMITTED: 1}
    finally:
        release.set()
        thread.join(10)


def test_a_checkpoint_row_is_written_replaced_read_and_dropped(store: JobStore) -> None:
    """A running job's checkpoint (decisions/0040): what the next server resumes it from."""
    from shoal.store.checkpoints import Checkpoint

    job = create(store)
    assert store.get_checkpoint(job.job_id) is None and store.checkpoints() == []
    first = Checkpoint(job_id=job.job_id, sites={"site-1": "app", "site-2": "app"}, min_clients=2)
    store.put_checkpoint(first)
    assert store.get_checkpoint(job.job_id) == first
    state = {"round": 3, "ledger": {"site-1": [0.5, 1.0]}, "text": "ünïcode"}
    later = Checkpoint(
        job_id=job.job_id,
        sites=first.sites,
        min_clients=2,
        resumable=True,
        workflow="FedAvg",
        last_round=3,
        state=state,
        model_sha256="b" * 64,
        restarts=1,
    )
    store.put_checkpoint(later)  # replaces, never adds a second row
    assert store.get_checkpoint(job.job_id) == later
    other = create(store, "other")
    store.put_checkpoint(Checkpoint(job_id=other.job_id, sites={}, min_clients=1))
    assert sorted(c.job_id for c in store.checkpoints()) == sorted([job.job_id, other.job_id])
    store.drop_checkpoint(job.job_id)
    assert store.get_checkpoint(job.job_id) is None
    assert [c.job_id for c in store.checkpoints()] == [other.job_id]
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        bad = Checkpoint(job_id=job.job_id, sites={}, min_clients=1, state={"x": float("nan")})
        store.put_checkpoint(bad)
    assert store.get_checkpoint(job.job_id) is None


# --- leases (decisions/0041) -----------------------------------------------------------------


def test_a_lease_is_taken_once_renewed_and_taken_over_only_once_it_lapsed(store: JobStore) -> None:
    """One replica holds a job; another cannot take it while the lease is live, can once it has
    lapsed (the epoch grows), and the first one's renewal then fails: it must forget the job."""
    job = create(store)
    first = store.take_lease(job.job_id, "replica-a", 30.0)
    assert first is not None and first.epoch == 1 and first.replica == "replica-a"
    assert store.take_lease(job.job_id, "replica-b", 30.0) is None  # live: someone else's
    assert store.renew_leases([first], 30.0)[0].expires_at >= first.expires_at
    assert store.take_lease(job.job_id, "replica-b", 30.0, force=True) is not None  # forced
    taken = store.lease_of(job.job_id)
    assert taken is not None and (taken.replica, taken.epoch) == ("replica-b", 2)
    assert store.renew_leases([first], 30.0) == []  # a's lease is gone: it was taken over
    store.release_lease(taken)  # b stops: the lease lapses at once, its epoch kept
    third = store.take_lease(job.job_id, "replica-a", 30.0)
    assert third is not None and third.epoch == 3
    store.end_lease(taken)  # not b's any more: nothing removed
    assert store.lease_of(job.job_id) == third
    store.end_lease(third)
    assert store.lease_of(job.job_id) is None and store.leases() == []


def test_a_lapsed_lease_is_taken_by_one_of_many_replicas_at_once(
    factory: StoreFactory, tmp_path: Path
) -> None:
    """Eight replicas (each its own connection) race for one lapsed lease: exactly one wins."""
    stores = [factory(tmp_path) for _ in range(8)]
    try:
        job = create(stores[0])
        held = stores[0].take_lease(job.job_id, "dead", 0.0)
        assert held is not None
        time.sleep(0.01)  # it lapsed
        won: list[object] = []
        barrier = threading.Barrier(len(stores))

        def race(i: int) -> None:
            barrier.wait()
            lease = stores[i].take_lease(job.job_id, f"replica-{i}", 30.0)
            if lease is not None:
                won.append(lease)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        assert stores[0].lease_of(job.job_id) == won[0]
    finally:
        for s in stores:
            s.close()


def test_a_replica_that_lost_the_lease_cannot_write_the_job(store: JobStore) -> None:
    """Fencing: every write about a job given the lease it was started under is refused, and
    writes nothing, once another replica has taken the job over."""
    from shoal.store.checkpoints import Checkpoint
    from shoal.store.leases import LeaseLost

    job = create(store)
    old = store.take_lease(job.job_id, "replica-a", 0.0)
    assert old is not None
    assert store.transition(job.job_id, JobStatus.DISPATCHED, reason="deploying", fence=old) is not None
    assert store.transition(job.job_id, JobStatus.RUNNING, reason="running", fence=old) is not None
    store.put_checkpoint(Checkpoint(job_id=job.job_id, sites={"s": "app"}, min_clients=1), fence=old)
    time.sleep(0.01)
    new = store.take_lease(job.job_id, "replica-b", 30.0)
    assert new is not None and new.epoch == old.epoch + 1
    late = Checkpoint(job_id=job.job_id, sites={"s": "app"}, min_clients=1, last_round=7)
    writes: list[Callable[[], object]] = [
        lambda: store.transition(job.job_id, JobStatus.FINISHED_OK, reason="done", fence=old),
        lambda: store.set_status_reason(job.job_id, "stale", fence=old),
        lambda: store.set_first_error(job.job_id, {"site": "server", "type": "X", "message": "m"}, fence=old),
        lambda: store.put_checkpoint(late, fence=old),
        lambda: store.drop_checkpoint(job.job_id, fence=old),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    after = store.get_job(job.job_id)
    assert after is not None and after.status is JobStatus.RUNNING
    assert after.status_reason == "running" and after.first_error is None
    row = store.get_checkpoint(job.job_id)
    assert row is not None and row.last_round is None
    # the new holder writes
    store.set_status_reason(job.job_id, "resumed", fence=new)
    assert store.transition(job.job_id, JobStatus.FINISHED_OK, reason="done", fence=new) is not None


def test_the_holders_progress_is_kept_with_its_lease_until_another_takes_it(store: JobStore) -> None:
    """What replicas that do not run a job show of it: the holder's last word, never a stale
    holder's once the job was taken over; a renewal that says nothing keeps what was said."""
    job = create(store)
    lease = store.take_lease(job.job_id, "replica-a", 0.0)
    assert lease is not None and store.lease_progress(job.job_id) is None
    store.renew_leases([lease], 0.0, {job.job_id: {"round": 3, "last_metrics": {"loss": 0.5}}})
    store.renew_leases([lease], 0.0)
    assert store.lease_progress(job.job_id) == ("replica-a", {"round": 3, "last_metrics": {"loss": 0.5}})
    time.sleep(0.01)
    taken = store.take_lease(job.job_id, "replica-b", 30.0)
    assert taken is not None and store.lease_progress(job.job_id) is None
    store.renew_leases([lease], 30.0, {job.job_id: {"round": 9}})  # a's word is refused with its renewal
    assert store.lease_progress(job.job_id) is None


def test_jobs_without_a_live_lease_are_the_ones_to_take_over(store: JobStore) -> None:
    running = [create(store, f"job-{i}") for i in range(3)]
    for job in running:
        store.transition(job.job_id, JobStatus.DISPATCHED)
        store.transition(job.job_id, JobStatus.RUNNING)
    store.take_lease(running[0].job_id, "live", 60.0)
    store.take_lease(running[1].job_id, "dead", 0.0)  # lapsed; running[2] has none
    now = time.time() + 0.01
    found = store.jobs_without_live_lease([JobStatus.RUNNING], now)
    assert [j.job_id for j in found] == [running[1].job_id, running[2].job_id]
    assert store.jobs_without_live_lease([JobStatus.SUBMITTED], now) == []


def test_a_waiting_reason_for_a_status_is_not_written_once_the_job_moved_on(store: JobStore) -> None:
    """A replica that saw a job waiting must not write over what the one that started it said."""
    job = create(store)
    store.set_status_reason(job.job_id, "waiting for sites", status=JobStatus.SUBMITTED)
    store.transition(job.job_id, JobStatus.DISPATCHED, reason="deploying")
    store.set_status_reason(job.job_id, "waiting for sites: none", status=JobStatus.SUBMITTED)
    after = store.get_job(job.job_id)
    assert after is not None and after.status_reason == "deploying"


# --- site sessions (decisions/0047) ----------------------------------------------------------


def _session(site: str, replica: str, since: float = 1000.0) -> Any:
    from shoal.store.sessions import SiteSession

    return SiteSession(site=site, replica=replica, since=since, org="acme", version="1.2")


def test_a_site_session_is_listed_while_its_channel_is_open_on_a_live_replica(store: JobStore) -> None:
    """Opened on a replica, a site is listed with that replica; the close of an older channel
    (the site moved to another replica, or reconnected to the same one) removes nothing; the
    current channel's close removes it."""
    store.replica_started("replica-a", 30.0)
    store.replica_started("replica-b", 30.0)
    assert store.site_sessions() == []
    store.site_opened(_session("site-1", "replica-a"))
    store.site_opened(_session("site-2", "replica-b", 1001.0))
    assert [(s.site, s.replica, s.since, s.org, s.version) for s in store.site_sessions()] == [
        ("site-1", "replica-a", 1000.0, "acme", "1.2"),
        ("site-2", "replica-b", 1001.0, "acme", "1.2"),
    ]
    store.site_opened(_session("site-1", "replica-b", 1002.0))  # it reconnected to b
    store.site_closed(_session("site-1", "replica-a"))  # a notices its old channel closing: not its row
    assert [(s.site, s.replica) for s in store.site_sessions()] == [
        ("site-1", "replica-b"),
        ("site-2", "replica-b"),
    ]
    store.site_opened(_session("site-2", "replica-b", 1003.0))  # again on b: a newer channel
    store.site_closed(_session("site-2", "replica-b", 1001.0))  # the older one's close
    store.site_closed(_session("site-1", "replica-b", 1002.0))
    assert [(s.site, s.since) for s in store.site_sessions()] == [("site-2", 1003.0)]


def test_a_sessions_hello_facts_come_back_for_scheduling_from_another_replica(store: JobStore) -> None:
    """What the replica running a job needs of a site on another replica (decisions/0048): its
    studies (None: every one), declared resources and the jobs its agent ran, as written."""
    from shoal.store.sessions import SiteSession

    store.replica_started("replica-a", 30.0)
    said = SiteSession(
        "site-1", "replica-a", 1000.0, "acme", "1.2", ("cancer", "alpha"), {"gpus": ["0"]}, ("7", "9")
    )
    store.site_opened(said)
    store.site_opened(_session("site-2", "replica-a"))
    got = {s.site: s for s in store.site_sessions()}
    assert got["site-1"].studies == ("alpha", "cancer")
    assert got["site-1"].resources == {"gpus": ["0"]} and got["site-1"].jobs == ("7", "9")
    assert (got["site-2"].studies, got["site-2"].resources, got["site-2"].jobs) == (None, {}, ())


def test_the_sessions_of_a_dead_replica_are_not_listed_and_go_when_it_starts_again(
    factory: StoreFactory, tmp_path: Path
) -> None:
    """A replica that died closed nothing: its rows stop being listed once its heartbeat lapses
    (seen from another connection, another replica), and go when it starts again; a replica
    gone for long has its rows removed by another's heartbeat; a replica stopping removes its own."""
    from shoal.store.sessions import FORGET_AFTER

    a, b = factory(tmp_path), factory(tmp_path)
    try:
        a.replica_started("replica-a", 30.0)
        b.replica_started("replica-b", 0.05)
        b.site_opened(_session("site-1", "replica-b"))
        a.site_opened(_session("site-2", "replica-a"))
        assert [s.site for s in a.site_sessions()] == ["site-1", "site-2"]
        time.sleep(0.1)  # b died: its heartbeat lapsed
        assert [(s.site, s.replica) for s in a.site_sessions()] == [("site-2", "replica-a")]
        b.replica_alive("replica-b", 30.0)  # a replica only paused, back: its rows show again
        assert [s.site for s in a.site_sessions()] == ["site-1", "site-2"]
        b.replica_started("replica-b", 30.0)  # it restarted: its old channels are gone
        assert [s.site for s in a.site_sessions()] == ["site-2"]
        b.site_opened(_session("site-1", "replica-b"))
        b.replica_alive("replica-b", -FORGET_AFTER - 1)  # long gone
        a.replica_alive("replica-a", 30.0)  # a's heartbeat clears what b left
        b.replica_alive("replica-b", 30.0)
        assert [s.site for s in a.site_sessions()] == ["site-2"]
        a.replica_stopped("replica-a")
        assert a.site_sessions() == []
    finally:
        a.close()
        b.close()


# --- site mail (decisions/0047) --------------------------------------------------------------


def test_site_mail_is_taken_once_in_order_by_its_replica_only(factory: StoreFactory, tmp_path: Path) -> None:
    a, b = factory(tmp_path), factory(tmp_path)
    try:
        a.post_site_mail("site-1", "replica-b", {"type": "one"})
        a.post_site_mail("site-2", "replica-b", {"type": "two"})
        a.post_site_mail("site-3", "replica-c", {"type": "other"})
        assert a.take_site_mail("replica-a") == []
        got = b.take_site_mail("replica-b")
        assert [(m.site, m.replica, m.message) for m in got] == [
            ("site-1", "replica-b", {"type": "one"}),
            ("site-2", "replica-b", {"type": "two"}),
        ]
        assert b.take_site_mail("replica-b") == []  # taken once
        assert [m.site for m in a.take_site_mail("replica-c")] == ["site-3"]
    finally:
        a.close()
        b.close()


def test_site_mail_posted_on_postgresql_wakes_its_replicas_listener(
    postgres: Any,  # tests/pgserver.py's session server
) -> None:
    """The NOTIFY sent with a post reaches the addressee's listener (another connection) at once,
    not the listener of another replica."""
    from shoal.store.postgres import PostgresJobStore

    url = postgres.new_schema()
    store = PostgresJobStore(url)
    woken: dict[str, threading.Event] = {"replica-b": threading.Event(), "replica-c": threading.Event()}
    stop = threading.Event()
    threads = [
        threading.Thread(target=store.listen_site_mail, args=(name, event.set, stop), daemon=True)
        for name, event in woken.items()
    ]
    try:
        for t in threads:
            t.start()
        for event in woken.values():  # each wakes once at its LISTEN: what was posted before
            assert event.wait(10)
            event.clear()
        started = time.monotonic()
        store.post_site_mail("site-1", "replica-b", {"type": "hello"})
        assert woken["replica-b"].wait(5)
        assert time.monotonic() - started < 2.0
        assert not woken["replica-c"].wait(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        store.close()
