"""Progress drawn in place on a terminal (issue 18): ``job monitor``'s live line with a bar of
the rounds and each site's state, ``job submit`` and ``job download``'s bytes, rate and time
left, ``shoal simulate``'s sites done. The real CLI runs on a pseudo-terminal
(tests/terminal.py) and, for the same job, through pipes, where ``--format json``/``jsonl`` and
the text stay free of any redrawing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello, slow_job
from tests.terminal import drawn_in_place, run_in_terminal

pytestmark = pytest.mark.e2e

BIG = 6 * 2**20  # past shoal.cli.live.LARGE_TRANSFER, and random: the zip cannot shrink it


def test_monitor_draws_a_live_line_on_a_terminal_and_plain_lines_into_a_pipe(
    federation: Federation, tmp_path: Path
) -> None:
    job = slow_job(tmp_path / "job", rounds=6, delay=0.4)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    piped = {
        fmt: subprocess.Popen(
            [sys.executable, "-m", "shoal", "job", "monitor", job_id, "--format", fmt],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=federation.cli.env(),
        )
        for fmt in ("txt", "jsonl")
    }
    screen = run_in_terminal(federation.cli, "job", "monitor", job_id)
    outputs = {fmt: proc.communicate(timeout=120) for fmt, proc in piped.items()}

    assert screen.returncode == 0, screen.output
    assert screen.redraws, screen.output
    # The line says the round of six with a bar of the rounds done, and each site's state.
    assert re.search(r"round [1-6]/6 \[[#-]{20}\] [0-6] done", screen.output), screen.output
    assert re.search(r"\] [1-6] done \d:\d\d:\d\d", screen.output) and "site-1=" in screen.output
    assert f"Job {job_id} status: COMPLETED (FINISHED_OK)" in screen.output
    assert "Rounds: 6 of 6" in screen.output

    for fmt, proc in piped.items():
        assert proc.returncode == 0, outputs[fmt]
    out, err = outputs["txt"]
    assert not drawn_in_place(out + err), (out, err)
    assert re.search(rf"^job {job_id} RUNNING round \d/6", err, re.M), err  # the printed lines
    assert "] 0 done" not in err and "#" not in err  # no bar: as before
    out, err = outputs["jsonl"]
    assert not drawn_in_place(out + err) and err == "", err
    events = [json.loads(line) for line in out.splitlines()]  # every line one JSON event
    assert events[-1]["event"] == "terminal" and events[-1]["status"] == "COMPLETED", events[-1]


def _big_job(dest: Path) -> Path:
    job = copy_hello(dest)
    (job / "app" / "custom" / "weights.bin").write_bytes(os.urandom(BIG))
    return job


def test_submit_and_download_show_bytes_rate_and_time_on_a_terminal_only(
    federation: Federation, tmp_path: Path
) -> None:
    job = _big_job(tmp_path / "big")
    screen = run_in_terminal(federation.cli, "job", "submit", "-j", str(job))
    assert screen.returncode == 0, screen.output
    assert screen.redraws, screen.output
    # the last drawing: every byte, 100%, the rate and the time it took
    assert re.search(
        r"uploading big  6\.\d MiB / 6\.\d MiB \[#{20}\] 100%  [\d.]+ [KMG]?i?B/s  in \d:\d\d:\d\d",
        screen.output,
    ), screen.output
    job_id = re.findall(r"job_id: (\d+)", screen.output)[-1]

    piped = federation.cli.run("job", "submit", "-j", job, "--format", "json")
    assert piped.returncode == 0 and not drawn_in_place(piped.stdout + piped.stderr), piped
    assert set(json.loads(piped.stdout)["data"]) == {"job_id"}  # stdout: exactly the envelope
    text = federation.cli.run("job", "submit", "-j", job)  # human text into a pipe: as before
    assert text.returncode == 0 and not drawn_in_place(text.stdout + text.stderr)
    assert "uploading" not in text.stderr and text.stdout.startswith("job_id: "), text

    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0, doc
    screen = run_in_terminal(federation.cli, "job", "download", job_id, "-o", str(tmp_path / "t"))
    assert screen.returncode == 0, screen.output
    assert re.search(
        rf"downloading job {job_id}  [6-9]\.\d MiB / [6-9]\.\d MiB \[#{{20}}\] 100%", screen.output
    ), screen.output
    assert (tmp_path / "t" / job_id / "job" / "app" / "custom" / "weights.bin").stat().st_size == BIG

    piped = federation.cli.run("job", "download", job_id, "-o", tmp_path / "p", "--format", "json")
    assert piped.returncode == 0 and not drawn_in_place(piped.stdout + piped.stderr), piped
    assert json.loads(piped.stdout)["data"]["job_id"] == job_id
    text = federation.cli.run("job", "download", job_id, "-o", tmp_path / "q")
    assert text.returncode == 0 and not drawn_in_place(text.stdout + text.stderr)
    assert "downloading" not in text.stderr, text.stderr


def test_simulate_shows_the_sites_done_on_a_terminal_only(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    hello = str(EXAMPLES / "hello-numpy")
    screen = run_in_terminal(
        cli, "simulate", "-j", hello, "-n", "6", "--workers", "2", "-o", str(tmp_path / "t")
    )
    assert screen.returncode == 0, screen.output
    assert screen.redraws, screen.output
    for rnd in range(1, 6):  # every round: its sites counted up to six, and its line kept
        assert re.search(rf"round {rnd}/5 \[[#-]{{20}}\] [1-6]/6 sites done \d:\d\d:\d\d", screen.output)
        assert f"round {rnd}/5 [####################] 6/6 sites done" in screen.output
        assert re.search(rf"\r\x1b\[Kround {rnd} done in [\d.]+s: 6 sites loss=", screen.output)
    assert "Simulated hello-numpy with 6 sites on 2 workers: 5 rounds" in screen.output

    text = cli.run("simulate", "-j", hello, "-n", "6", "--workers", "2", "-o", tmp_path / "p")
    assert text.returncode == 0 and not drawn_in_place(text.stdout + text.stderr), text
    assert "sites done" not in text.stderr and "round 5 done in " in text.stderr, text.stderr
    code, doc = cli.json("simulate", "-j", hello, "-n", "6", "--workers", "2", "-o", tmp_path / "j")
    assert code == 0 and doc["data"]["sites"] == 6, doc
