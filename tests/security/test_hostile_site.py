"""A hostile site (a real site certificate, its own client) against the site API: results only
for its open task, bounded by the task's model, nothing left behind by a refused or abandoned
upload, no path built from a request's task id, and caps on what it adds to a job's view.

site-2's agent is stopped and a HostileSite speaks for site-2; site-1 is a real agent running a
slow script. Rounds close on a 2 s deadline with one answer, so the hostile site can let one
pass and answer it late. The server's result floor is 1 MiB (local/limits.json)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.wire.channel import METRIC_KEYS_PER_SITE, NOTICE_CHARS_MAX, NOTICES_PER_SITE
from tests.e2e.jobs import slow_job
from tests.federation import Federation, start_federation, stop_federation
from tests.security.hostile_site import (
    HostileSite,
    result_files,
    safetensors_bytes,
    safetensors_head,
    server_job_dir,
    stop_site_agent,
    workflow_pid,
)

pytestmark = pytest.mark.e2e

FLOOR = 2**20


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(
        tmp_path_factory.mktemp("hostile"), server_local={"limits.json": {"result_floor_bytes": FLOOR}}
    )
    try:
        stop_site_agent(federation, "site-2")
        yield federation
    finally:
        stop_federation(federation)


def submit(fed: Federation, tmp_path: Path, round_timeout: float = 2) -> str:
    job = slow_job(tmp_path / "job", rounds=1000, delay=0.05)
    args = {"num_rounds": 1000, "min_responses": 1, "round_timeout": round_timeout}
    server = {"workflow": "fedavg", "args": args}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    code, doc = fed.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    return str(doc["data"]["job_id"])


def site_stats(fed: Federation, job_id: str) -> dict[str, Any]:
    code, doc = fed.cli.json("job", "stats", job_id)
    assert code == 0, doc
    return dict(doc["data"]["sites"]["site-2"])


def meta(fed: Federation, job_id: str) -> dict[str, Any]:
    code, doc = fed.cli.json("job", "meta", job_id)
    assert code == 0, doc
    return dict(doc["data"])


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def run_against(
    fed: Federation, tmp_path: Path, scenario: Callable[[HostileSite, str], Any], round_timeout: float = 2
) -> None:
    """Submit a job, play ``scenario`` as site-2 while it runs, then abort the job."""

    async def main() -> None:
        async with HostileSite(fed, "site-2") as site:
            job_id = submit(fed, tmp_path, round_timeout)
            try:
                await scenario(site, job_id)
            finally:
                await asyncio.to_thread(fed.cli.json, "job", "abort", job_id, "--force")

    asyncio.run(main())


def test_late_and_repeated_results_are_refused_and_not_counted(fed: Federation, tmp_path: Path) -> None:
    async def scenario(site: HostileSite, job_id: str) -> None:
        first = await site.next("task", job_id)
        second = await site.next("task", job_id)  # the first round closed without site-2
        late, current = first["task_id"], second["task_id"]
        before = await asyncio.to_thread(site_stats, fed, job_id)
        assert before.get("results", 0) == 0, before

        ack = await site.inline_result(job_id, late, safetensors_bytes())
        assert ack["ok"] is False and ack["error_code"] == "TASK_NOT_OPEN", ack
        status, body = await site.put(site.result_url(job_id, late), safetensors_bytes())
        assert (status, body["error_code"]) == (409, "TASK_NOT_OPEN"), body
        status, body = await site.get(site.result_url(job_id, late))
        assert (status, body["error_code"]) == (409, "TASK_NOT_OPEN"), body

        answer = safetensors_bytes()
        assert (await site.inline_result(job_id, current, answer))["ok"] is True
        ack = await site.inline_result(job_id, current, answer)  # the same task again
        assert ack["ok"] is False and ack["error_code"] == "TASK_NOT_OPEN", ack
        status, body = await site.put(site.result_url(job_id, current), answer)
        assert (status, body["error_code"]) == (409, "TASK_NOT_OPEN"), body

        after = await asyncio.to_thread(site_stats, fed, job_id)
        assert after["results"] == 1 and after["bytes_from_site"] == len(answer), after
        assert not [f for f in result_files(fed, job_id) if late in f or current in f]

    run_against(fed, tmp_path, scenario)


def test_an_inline_result_reaches_the_workflow_as_its_bytes_and_leaves_no_file(
    fed: Federation, tmp_path: Path
) -> None:
    """A small result taken inline goes to the workflow inside its message (decisions/0044):
    while the workflow process is stopped no file of it appears in the job's results folder
    (before, one waited there until the workflow released it), and once the workflow runs again
    the round it closes holds the answer (its metric, which only site-2 reports)."""

    async def scenario(site: HostileSite, job_id: str) -> None:
        task = await site.next("task", job_id)
        workflow = workflow_pid(fed, job_id)
        os.kill(workflow, signal.SIGSTOP)
        try:
            header = {"num_examples": 1, "metrics": {"probe": 7.0}, "meta": {}}
            ack = await site.inline_result(job_id, task["task_id"], safetensors_bytes(), header)
            assert ack["ok"] is True, ack
            assert not [f for f in result_files(fed, job_id) if "site-2" in f], result_files(fed, job_id)
        finally:
            os.kill(workflow, signal.SIGCONT)

        def probed() -> bool:
            stats = meta(fed, job_id)["progress"]["stats"]
            return bool(stats["rounds_done"]) and stats["last_metrics"].get("probe") == 7.0

        await asyncio.to_thread(eventually, probed, 60, "the round holds site-2's answer")
        assert not [f for f in result_files(fed, job_id) if "site-2" in f], result_files(fed, job_id)

    run_against(fed, tmp_path, scenario, round_timeout=60)


BAD_HEADERS: list[dict[str, Any]] = [
    {"num_examples": "many"},
    {"num_examples": -5},
    {"metrics": {"loss": "low"}},
    {"meta": []},
]


def test_a_result_header_the_server_cannot_use_is_refused(fed: Federation, tmp_path: Path) -> None:
    """A site's agent checks its script's header (shoal.wire.results); the server checks it again
    for a site that does not: refused INVALID_ARGS either way, counted nowhere."""

    async def scenario(site: HostileSite, job_id: str) -> None:
        task = (await site.next("task", job_id))["task_id"]
        for header in BAD_HEADERS:
            ack = await site.inline_result(job_id, task, safetensors_bytes(), header)
            assert ack["ok"] is False and ack["error_code"] == "INVALID_ARGS", (header, ack)
            sent = {"X-Shoal-Result": json.dumps(header)}
            status, body = await site.put(site.result_url(job_id, task), safetensors_bytes(), sent)
            assert (status, body["error_code"]) == (400, "INVALID_ARGS"), (header, body)
        stats = await asyncio.to_thread(site_stats, fed, job_id)
        assert stats.get("results", 0) == 0 and stats.get("bytes_from_site", 0) == 0, stats

    run_against(fed, tmp_path, scenario)


def test_a_result_for_another_jobs_task_is_refused(fed: Federation, tmp_path: Path) -> None:
    """site-2 takes part in two jobs at once; the open task of one is foreign to the other."""

    async def scenario(site: HostileSite, job_id: str) -> None:
        other = await asyncio.to_thread(submit, fed, tmp_path / "other")
        try:
            mine = (await site.next("task", job_id))["task_id"]
            foreign = (await site.next("task", other))["task_id"]
            ack = await site.inline_result(job_id, foreign, safetensors_bytes())
            assert ack["ok"] is False and ack["error_code"] == "TASK_NOT_OPEN", ack
            status, body = await site.put(site.result_url(job_id, foreign), safetensors_bytes())
            assert (status, body["error_code"]) == (409, "TASK_NOT_OPEN"), body
            status, body = await site.put(site.result_url(other, mine), safetensors_bytes())
            assert (status, body["error_code"]) == (409, "TASK_NOT_OPEN"), body
            for job in (job_id, other):
                stats = await asyncio.to_thread(site_stats, fed, job)
                assert stats.get("results", 0) == 0 and stats.get("bytes_from_site", 0) == 0, stats
                assert not [f for f in result_files(fed, job) if "site-2" in f], result_files(fed, job)
        finally:
            await asyncio.to_thread(fed.cli.json, "job", "abort", other, "--force")

    run_against(fed, tmp_path, scenario)


def test_an_upload_past_the_bound_is_refused_as_it_streams_and_leaves_nothing(
    fed: Federation, tmp_path: Path
) -> None:
    total_floats = 6 * 2**20  # 48 MiB of valid safetensors for a task whose model is a few bytes
    answered = asyncio.Event()
    sent = [0]

    async def body() -> AsyncIterator[bytes]:
        """After 8 MiB (8 times the bound) it waits for the server's answer, up to 20 s: a
        server that stores everything before it answers gets the rest after that."""
        yield safetensors_head(total_floats)
        for i in range(total_floats * 8 // 2**20):
            if i == 8:
                try:  # the client ends here once answered
                    await asyncio.wait_for(answered.wait(), 20)
                except TimeoutError:
                    pass
            sent[0] += 2**20
            yield bytes(2**20)

    async def scenario(site: HostileSite, job_id: str) -> None:
        task = await site.next("task", job_id)
        url = site.result_url(job_id, task["task_id"])
        try:
            status, answer = await site.put(url, body(), answered=answered)
        finally:
            answered.set()
        assert (status, answer["error_code"]) == (413, "RESULT_TOO_LARGE"), answer
        assert sent[0] <= 8 * 2**20, f"the server answered only after {sent[0]} bytes"
        assert not [f for f in result_files(fed, job_id) if "site-2" in f], result_files(fed, job_id)
        huge = {"X-Shoal-Total": str(48 * 2**20)}  # said up front: refused before any byte is read
        status, answer = await site.put(url, b"x" * 1000, headers=huge)
        assert (status, answer["error_code"]) == (413, "RESULT_TOO_LARGE"), answer
        assert not [f for f in result_files(fed, job_id) if "site-2" in f], result_files(fed, job_id)
        stats = await asyncio.to_thread(site_stats, fed, job_id)
        assert stats.get("results", 0) == 0 and stats.get("bytes_from_site", 0) == 0, stats

    run_against(fed, tmp_path, scenario)


def test_partial_uploads_go_when_refused_and_when_their_task_closes(fed: Federation, tmp_path: Path) -> None:
    async def scenario(site: HostileSite, job_id: str) -> None:
        task = await site.next("task", job_id)
        url = site.result_url(job_id, task["task_id"])
        part = f".{task['task_id']}-site-2.part"
        # fewer bytes than announced, on a connection that stays: refused (409), nothing kept
        status, answer = await site.put(url, b"x" * 1000, headers={"X-Shoal-Total": "2000"})
        assert status == 409 and answer["received"] == 0, answer
        assert part not in result_files(fed, job_id)
        # a resume from an offset the server does not hold: refused (409), nothing kept
        status, answer = await site.put(url, b"x" * 10, offset=5)
        assert status == 409 and answer["received"] == 0, answer
        assert part not in result_files(fed, job_id)
        # a link that breaks mid-upload: kept for the resume while the task is open ...
        await site.put_cut_off(job_id, task["task_id"], total=4000, sent=b"x" * 1000)
        for _ in range(50):  # the server takes in the broken connection, and closes the file
            status, answer = await site.get(url)
            if answer.get("received") == 1000:
                break
            await asyncio.sleep(0.1)
        assert (status, answer["received"]) == (200, 1000), answer
        assert part in result_files(fed, job_id)
        # ... and gone once the round closes without it
        await site.next("task", job_id)
        await asyncio.to_thread(
            eventually, lambda: part not in result_files(fed, job_id), 10, "the partial upload removed"
        )

    run_against(fed, tmp_path, scenario)


def test_an_upload_whose_round_closes_while_it_streams_is_refused_cleanly(
    fed: Federation, tmp_path: Path
) -> None:
    """A slow site's upload (by PUT: past the inline size) still streaming when its round closes
    without it: TASK_NOT_OPEN (the site drops it), not an internal error, and nothing is kept."""
    floats = 64 * 2**10  # 512 KiB: within the 1 MiB bound, too big for the control channel
    round_closed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield safetensors_head(floats) + bytes(4 * floats)
        await asyncio.wait_for(round_closed.wait(), 30)
        yield bytes(4 * floats)

    async def scenario(site: HostileSite, job_id: str) -> None:
        task = await site.next("task", job_id)

        async def close_round() -> None:
            await site.next("task", job_id)
            round_closed.set()

        closer = asyncio.create_task(close_round())
        total = {"X-Shoal-Total": str(len(safetensors_head(floats)) + 8 * floats)}
        status, answer = await site.put(site.result_url(job_id, task["task_id"]), body(), headers=total)
        await closer
        assert (status, answer.get("error_code")) == (409, "TASK_NOT_OPEN"), answer
        assert not [f for f in result_files(fed, job_id) if task["task_id"] in f]
        stats = await asyncio.to_thread(site_stats, fed, job_id)
        assert stats.get("results", 0) == 0 and stats.get("bytes_from_site", 0) == 0, stats

    run_against(fed, tmp_path, scenario)


def test_task_ids_that_are_paths_reveal_nothing(fed: Federation, tmp_path: Path) -> None:
    """The upload-status route used to build a path from the task id it was given: a file
    outside the job's results, named to fit, had its size told."""

    async def scenario(site: HostileSite, job_id: str) -> None:
        await site.next("task", job_id)
        # files outside the job's results, named as an upload's partial file would end
        probes = [
            server_job_dir(fed, job_id) / "probe-site-2.part",
            server_job_dir(fed, job_id).parent / "probe-site-2.part",
        ]
        for probe in probes:
            probe.write_bytes(b"s" * 12345)
        for task_id in (
            ".%2F..%2Fprobe",
            "%2E%2F%2E%2E%2Fprobe",
            ".%2F..%2F..%2Fprobe",
            "..%2F..%2F..%2Fjobs",
        ):
            status, answer = await site.get(site.result_url(job_id, task_id))
            assert (status, answer.get("error_code")) == (409, "TASK_NOT_OPEN"), (task_id, answer)
            assert "12345" not in json.dumps(answer), (task_id, answer)
            status, answer = await site.put(site.result_url(job_id, task_id), safetensors_bytes())
            assert (status, answer.get("error_code")) == (409, "TASK_NOT_OPEN"), (task_id, answer)
        for probe in probes:
            assert probe.read_bytes() == b"s" * 12345
            probe.unlink()

    run_against(fed, tmp_path, scenario)


def test_a_sites_notices_and_metric_names_are_capped(fed: Federation, tmp_path: Path) -> None:
    async def scenario(site: HostileSite, job_id: str) -> None:
        await site.next("task", job_id)
        for i in range(100):
            await site.send({"type": "notice", "job_id": job_id, "message": f"{i:03d}" + "n" * 40_000})
        for i in range(3000):
            await site.send({"type": "metric", "job_id": job_id, "key": f"k{i:04d}" + "m" * 150, "value": i})
        await asyncio.sleep(1)
        shown = await asyncio.to_thread(meta, fed, job_id)
        mine = [n for n in shown["notices"] if n.startswith("site-2")]
        assert len(mine) <= NOTICES_PER_SITE + 2, len(mine)
        assert all(len(n) <= NOTICE_CHARS_MAX + 100 for n in mine)
        assert any("more notices were dropped" in n for n in mine), mine[-3:]
        assert any("metrics were dropped" in n for n in mine), mine[-3:]
        assert len(json.dumps(shown)) < 100_000
        stats = await asyncio.to_thread(site_stats, fed, job_id)
        names = [k for k in stats["metrics"] if not k.endswith("_step")]
        assert len(names) == METRIC_KEYS_PER_SITE, len(names)

    run_against(fed, tmp_path, scenario)
