"""What a person sees of a job (issue 16): monitor, stats and meta text, a diverged loss.

Every test drives the real CLI against the session's real federation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import round_loss_job
from tests.e2e.test_job_family import submit

pytestmark = pytest.mark.e2e

HELLO = EXAMPLES / "hello-numpy"


def test_a_diverging_loss_is_a_notice_in_meta_monitor_and_stats(
    federation: Federation, tmp_path: Path
) -> None:
    job_id = submit(federation, round_loss_job(tmp_path / "boom", "10.0 ** (4 * r)"))
    proc = federation.cli.run("job", "monitor", job_id, "--format", "jsonl", "--timeout", "120")
    assert proc.returncode == 0, proc.stderr  # every round ran: the job finished, and says so
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    notices = events[-1]["notices"]
    assert len(notices) == 1 and notices[0].startswith(
        "diverged: the global loss grew from 1 to 10000 by round 2"
    )
    code, doc = federation.cli.json("job", "meta", job_id)
    assert code == 0 and doc["data"]["notices"] == notices
    human = federation.cli.run("job", "meta", job_id)
    assert f"Notice:      {notices[0]}" in human.stdout
    again = federation.cli.run("job", "monitor", job_id)
    assert again.returncode == 0 and f"Notice: {notices[0]}" in again.stdout


def test_a_converging_job_has_no_notice(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0
    code, doc = federation.cli.json("job", "meta", job_id)
    assert "notices" not in doc["data"], doc["data"]


def test_monitor_prints_a_line_per_change_with_the_round_of_its_loss(
    federation: Federation, tmp_path: Path
) -> None:
    # The loss a site reports in round r (from 0) is r + 1: a label is right when it matches.
    job_id = submit(federation, round_loss_job(tmp_path / "count", "r + 1", rounds=6, delay=0.2))
    proc = federation.cli.run("job", "monitor", job_id, "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"job {job_id} ")]
    said = [line.split(" [elapsed")[0] for line in lines]
    assert len(said) == len(set(said)), lines  # nothing printed twice
    labelled = [re.search(r"round (\d+)/6 loss=(\d+) \(round (\d+)\)", line) for line in lines]
    pairs = [(int(m[1]), int(m[2]), int(m[3])) for m in labelled if m]
    assert pairs, lines
    for under_way, loss, of_round in pairs:
        assert loss == of_round and of_round in (under_way - 1, under_way), lines
    assert any("left]" in line for line in lines), lines  # time left once a round has ended
    assert "Rounds: 6 of 6" in proc.stdout and "loss=6 (round 6)" in proc.stdout


def test_monitor_metric_needs_no_stats_target(federation: Federation, tmp_path: Path) -> None:
    from tests.e2e.jobs import slow_job

    job_id = submit(federation, slow_job(tmp_path / "slow", rounds=8, delay=0.2))
    proc = federation.cli.run("job", "monitor", job_id, "--metric", "step_loss", "--timeout", "120")
    assert proc.returncode == 0, proc.stderr
    assert "site-1.step_loss=0.5" in proc.stderr, proc.stderr


def test_stats_of_a_finished_job_are_its_final_figures_in_text_and_json(federation: Federation) -> None:
    job_id = submit(federation, HELLO)
    code, _ = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0
    code, doc = federation.cli.json("job", "stats", job_id)
    assert code == 0, doc
    server = doc["data"]["server"]
    assert server["round"] == 5 and server["current_round"] == 4 and server["rounds_done"] == 5
    assert server["last_metrics_round"] == 4 and server["last_metrics"]["loss"] < 1
    code, meta = federation.cli.json("job", "meta", job_id)
    assert meta["data"]["progress"]["last_metrics"] == server["last_metrics"]
    text = federation.cli.run("job", "stats", job_id).stdout
    assert "round 5 of 5, rounds done 5" in text and "metrics of round 5: loss=" in text
    site_loss = doc["data"]["sites"]["site-1"]["metrics"]["loss"]
    assert f"loss={site_loss:.6g}" in text.split("site-1:")[1]  # per-site metrics, as in JSON
    meta_text = federation.cli.run("job", "meta", job_id).stdout
    assert f"Ended:       {meta['data']['end_time']}" in meta_text
    assert re.search(r"^Metrics: +loss=\S+ \(final of round 5\)$", meta_text, re.M), meta_text


def test_logs_of_a_running_job_stream_by_default_with_times(federation: Federation, tmp_path: Path) -> None:
    """No example set log_streaming, so 'job logs --site site-1' of a running job was
    LOG_NOT_FOUND although the README says logs stream."""
    from tests.e2e.jobs import slow_job
    from tests.e2e.test_job_family import wait_for_round

    job_id = submit(federation, slow_job(tmp_path / "slow", rounds=2000, delay=0.05))
    try:
        wait_for_round(federation, job_id)
        deadline = time.monotonic() + 20
        while True:
            proc = federation.cli.run("job", "logs", job_id, "--site", "site-1")
            assert proc.returncode == 0, proc.stderr
            if "working on round" in proc.stdout:
                break
            assert time.monotonic() < deadline, proc.stdout
            time.sleep(0.2)
        line = next(x for x in proc.stdout.splitlines() if "working on round" in x)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 - working on round", line), line
        wrong = federation.cli.run("job", "logs", job_id, "--site", "site-7")
        assert wrong.returncode == 1 and "its sites: site-1, site-2" in wrong.stderr, wrong.stderr
    finally:
        federation.cli.json("job", "abort", job_id, "--force")


def test_logs_follow_prints_lines_as_they_come_until_the_job_ends(
    federation: Federation, tmp_path: Path
) -> None:
    from tests.e2e.jobs import slow_job

    job_id = submit(federation, slow_job(tmp_path / "slow", rounds=15, delay=0.2))
    proc = federation.cli.run("job", "logs", job_id, "--site", "all", "--follow", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for r in range(15):
        assert sum(1 for x in lines if x.startswith("site-1 | ") and x.endswith(f"working on round {r}")) == 1
    assert any(x.startswith("server | ") and "round 14 done" in x for x in lines), lines[-5:]
    code, doc = federation.cli.json("job", "meta", job_id)
    assert doc["data"]["status"] == "FINISHED_OK"
    stamped = federation.cli.run("job", "logs", job_id, "--site", "site-2", "--timestamps")
    assert re.search(r"\+00:00 - working on round 14$", stamped.stdout, re.M), stamped.stdout
    refused = federation.cli.run("job", "logs", job_id, "--follow", "--format", "json")
    assert refused.returncode == 4 and json.loads(refused.stdout)["error_code"] == "INVALID_ARGS"


@pytest.mark.parametrize("columns", ["200", "80"])
def test_tables_never_break_an_id_and_look_alike(federation: Federation, columns: str) -> None:
    """'shoal ls' folded at a fixed 120 columns: a run id over two lines, 'finished:comple' /
    'ted'; 'job list' showed microseconds. Both are the one plain table now."""
    job_id = submit(federation, HELLO)
    federation.cli.json("job", "wait", job_id, "--timeout", "120")
    env = {**federation.cli.env(), "COLUMNS": columns}
    ls = federation.cli.run("ls", env=env)
    jobs = federation.cli.run("job", "list", env=env)
    assert ls.returncode == 0 and jobs.returncode == 0, ls.stderr + jobs.stderr
    (run_line,) = [line for line in ls.stdout.splitlines() if job_id in line]
    assert run_line.split()[0] == job_id and "finished:completed" in run_line.split()
    (job_line,) = [line for line in jobs.stdout.splitlines() if job_id in line]
    assert re.search(r" FINISHED_OK +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +\d\d:\d\d:\d\d ", job_line), job_line
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", run_line)
    for out in (ls.stdout, jobs.stdout):
        header, dashes = out.splitlines()[:2]
        assert header.split()[0] in ("RUN", "JOB") and set(dashes) <= {"-", " "}
        if columns == "200":
            assert max(len(line) for line in out.splitlines()) <= 200 and "…" not in out


def test_a_job_id_may_be_its_first_digits_or_last(federation: Federation) -> None:
    """Ids are 16 random digits and nothing helped type them."""
    submitted = federation.cli.run("job", "submit", "-j", HELLO)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().removeprefix("job_id: ")
    assert f"next: shoal job monitor {job_id}" in submitted.stderr  # stdout stays the one line
    code, doc = federation.cli.json("job", "wait", "last", "--timeout", "120")
    assert code == 0 and doc["data"]["job_id"] == job_id, doc
    code, doc = federation.cli.json("job", "meta", job_id[:7])
    assert code == 0 and doc["data"]["job_id"] == job_id
    code, doc = federation.cli.json("job", "stats", job_id[:7])
    assert code == 0 and doc["data"]["job_id"] == job_id
    listed = federation.cli.run("ls", "--run-id", "last", "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["runs"][0]["run-id"] == int(job_id)
    short = federation.cli.run("ls", "--run-id", job_id[:7], "--format", "json")  # Flower's: whole ids
    assert short.returncode == 1 and json.loads(short.stdout)["success"] is False
    # a prefix that more than one id starts with names none of them
    while True:
        code, jobs = federation.cli.json("job", "list")
        firsts = [row["job_id"][0] for row in jobs["data"]]
        shared = next((d for d in set(firsts) if firsts.count(d) > 1), None)
        if shared:
            break
        submit(federation, HELLO)
    code, doc = federation.cli.json("job", "meta", shared)
    assert code == 4 and doc["error_code"] == "JOB_ID_AMBIGUOUS" and "could be" in doc["message"], doc
    code, doc = federation.cli.json("job", "meta", "0000000")
    assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["job", "sumbit"], "Did you mean 'shoal job submit'?"),
        (["jbo", "list"], "Did you mean 'shoal job'?"),
        (["job", "monitor", "1", "--stats-target", "cleint"], "Did you mean 'client'?"),
        (["xyzzy"], "Run 'shoal --help' for usage."),
    ],
)
def test_a_typo_is_one_error_with_a_suggestion(federation: Federation, argv: list[str], hint: str) -> None:
    """'shoal job sumbit' printed the 30 lines of the job family's help."""
    proc = federation.cli.run(*argv)
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        proc.stderr.splitlines()[0],
        f"Hint: {hint}",
        "Code: INVALID_ARGS (exit 4)",
    ]
    code, doc = federation.cli.json(*argv)
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and doc["hint"] == hint


def test_deprecated_commands_work_but_are_not_listed(federation: Federation) -> None:
    listed = federation.cli.run("job", "--help").stdout
    assert "create" not in listed and "DEPRECATED" not in listed and "submit" in listed
    code, doc = federation.cli.json("job", "create")
    assert code == 0 and doc["data"]["deprecated"] is True


def test_what_a_first_submit_trips_over(federation: Federation, tmp_path: Path) -> None:
    import subprocess
    import sys

    bare = subprocess.run(
        [sys.executable, "-m", "shoal", "job", "submit", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=federation.cli.env(),
        timeout=60,
    )
    doc = json.loads(bare.stdout)
    assert bare.returncode == 1 and doc["error_code"] == "JOB_FOLDER_NOT_FOUND"
    assert "no -j given" in doc["message"] and str(tmp_path) in doc["message"], doc
    code, doc = federation.cli.json("job", "submit", "-j", EXAMPLES / "quickstart-app")
    assert code == 1 and doc["error_code"] == "JOB_META_MISSING" and "is an app project" in doc["message"]
    assert doc["hint"] == f"Run it with 'shoal run {EXAMPLES / 'quickstart-app'}'."


def test_poc_start_on_a_running_poc_succeeds(federation: Federation) -> None:
    code, doc = federation.cli.json("poc", "start", "--workspace", federation.workspace)
    assert code == 0 and doc["data"]["already_running"] is True, doc
    assert set(doc["data"]["pids"]) == {"server", "site-1", "site-2"}
    code, doc = federation.cli.json("system", "status")
    assert code == 0 and len(doc["data"]["sites"]) == 2  # nothing was started twice


def test_download_only_fetches_what_is_asked(federation: Federation, tmp_path: Path) -> None:
    job_id = submit(federation, HELLO)
    federation.cli.json("job", "wait", job_id, "--timeout", "120")

    def fetched(only: str) -> tuple[set[str], dict[str, object]]:
        out = tmp_path / only.replace(",", "+")
        code, doc = federation.cli.json("job", "download", job_id, "--only", only, "-o", out)
        assert code == 0, doc
        root = out / job_id
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}, doc["data"]

    files, data = fetched("metrics")
    assert files == {"meta.json", "workspace/metrics_summary.json"}, files
    assert data["missing_artifacts"] == [] and data["only"] == ["metrics"]
    files, data = fetched("model,logs")
    assert "workspace/FL_global_model.safetensors" in files and "workspace/site-1/log.txt" in files
    assert not any(f.startswith("job/") or f.endswith("metrics_summary.json") for f in files), files
    assert data["missing_artifacts"] == []
    files, _ = fetched("job")
    assert "job/meta.json" in files and not any(f.startswith("workspace/") for f in files)
    code, doc = federation.cli.json("job", "download", job_id, "--only", "weights", "-o", tmp_path / "x")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and not (tmp_path / "x").exists()
