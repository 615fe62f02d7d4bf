"""``shoal job plot`` draws a finished job's curve from its metrics_summary.json and a running
job's from the server's record (``--follow`` redrawing it on a terminal), and ``shoal
completion bash|zsh`` completes what the parsers know, run in the real shell."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from matplotlib.image import imread

from tests.conftest import Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import round_loss_job, slow_job
from tests.terminal import run_in_terminal

pytestmark = pytest.mark.e2e


def test_plot_draws_the_global_and_site_curves(federation: Federation, tmp_path: Path) -> None:
    job = slow_job(tmp_path / "job", rounds=4, delay=0.0)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0, doc
    job_id = doc["data"]["job_id"]

    code, doc = federation.cli.json("job", "plot", job_id, "--metric", "step_loss")
    assert code == 0, doc
    data = doc["data"]
    assert data["metric"] == "step_loss" and data["metrics"] == ["loss", "step_loss"]
    assert data["series"] == {
        site: [{"round": r, "value": 0.5} for r in range(4)] for site in ("site-1", "site-2")
    }
    code, doc = federation.cli.json("job", "plot", job_id)  # the global model's first metric
    assert code == 0 and doc["data"]["series"] == {"global": [{"round": r, "value": 1.0} for r in range(4)]}

    code, doc = federation.cli.json(
        "job", "plot", job_id, "--metric", "step_loss", "--png", tmp_path / "p.png"
    )
    assert code == 0 and doc["data"]["png"] == str(tmp_path / "p.png"), doc
    picture = imread(tmp_path / "p.png")  # a real PNG of 800 x 450 with something drawn on it
    assert picture.shape[:2] == (450, 800) and picture.min() < 0.5

    code, doc = federation.cli.json("job", "plot", job_id, "--metric", "accuracy")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "loss, step_loss" in doc["hint"], doc


def test_plot_in_the_terminal_puts_each_round_where_its_value_is(
    federation: Federation, tmp_path: Path
) -> None:
    """A loss falling 40, 30, 20, 10 over four rounds: the first round's marker on the top row,
    the last one's on the bottom row, at the right end."""
    job = round_loss_job(tmp_path / "job", loss="40 - 10 * r", rounds=4)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait")
    assert code == 0, doc
    proc = federation.cli.run(
        "job", "plot", doc["data"]["job_id"], env={**federation.cli.env(), "COLUMNS": "60"}
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("loss per round")
    plot = lines[1:13]
    assert plot[0].startswith("40 |*") and plot[-1].startswith("10 |") and plot[-1].endswith("*")
    assert sum(line.count("*") for line in plot) == 4
    assert "round 1" in lines[14] and lines[14].rstrip().endswith("round 4") and "* global" in lines[15]


def _rounds_done(fed: Federation, job_id: str, at_least: int) -> None:
    """Return once the running job has finished ``at_least`` rounds (as its stats say)."""
    deadline = time.monotonic() + 120
    while True:
        code, doc = fed.cli.json("job", "stats", job_id)
        assert code == 0, doc
        if doc["data"]["server"]["rounds_done"] >= at_least:
            return
        assert doc["data"]["status"] == "RUNNING" and time.monotonic() < deadline, doc
        time.sleep(0.2)


def test_plot_of_a_running_job_draws_its_rounds_so_far_and_follows_them(
    federation: Federation, tmp_path: Path
) -> None:
    """The global loss of round r (from 0) is r + 1: a running job's plot holds the rounds done
    so far with their values, ``--follow`` redraws on a terminal as rounds end, and once the job
    ended its plot is its metrics_summary.json's, the same values and the rest."""
    job = round_loss_job(tmp_path / "job", loss="r + 1", rounds=8, delay=0.6)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    _rounds_done(federation, job_id, 2)

    code, doc = federation.cli.json("job", "plot", job_id)
    assert code == 0, doc
    data = doc["data"]
    assert data["running"] is True and data["metric"] == "loss", data
    points = data["series"]["global"]
    assert 2 <= len(points) < 8 and points == [{"round": r, "value": r + 1.0} for r in range(len(points))]
    text = federation.cli.run("job", "plot", job_id)
    assert text.returncode == 0 and "loss per round (so far: RUNNING, " in text.stdout, text

    for refused in (
        federation.cli.run("job", "plot", job_id, "--follow", "--format", "json"),
        federation.cli.run("job", "plot", job_id, "--follow"),  # into a pipe
    ):
        assert refused.returncode == 4 and "INVALID_ARGS" in refused.stdout + refused.stderr, refused

    screen = run_in_terminal(federation.cli, "job", "plot", job_id, "--follow")
    assert screen.returncode == 0, screen.output
    frames = re.findall(r"\x1b\[(\d+)F\x1b\[J", screen.output)  # each redraw moves up over the last
    assert len(frames) >= 2 and set(frames) == {"16"}, screen.output
    assert "(so far: RUNNING, " in screen.output
    final = screen.output.rsplit("\x1b[J", 1)[1]  # the finished job's plot, where the last was
    assert final.startswith(f"job {job_id}: loss per round\r\n"), final
    assert "round 1" in final and "round 8" in final and "so far" not in final

    code, doc = federation.cli.json("job", "plot", job_id)
    assert code == 0 and doc["data"]["running"] is False
    assert doc["data"]["series"]["global"] == [{"round": r, "value": r + 1.0} for r in range(8)]


def complete(script: str, *words: str, shell: str = "bash") -> list[str]:
    """What the completion function offers for ``shoal WORDS`` with the cursor on the last word."""
    words_list = " ".join(f"'{w}'" for w in ("shoal", *words))
    call = f'COMP_WORDS=({words_list}); COMP_CWORD={len(words)}; _shoal_complete; echo "${{COMPREPLY[@]}}"'
    if shell == "zsh":  # zsh's bashcompinit calls the function under `emulate -L sh`, as here
        call = f"_probe() {{ emulate -L sh; {call}; }}; _probe"
    probe = f"{script}\n{call}\n"
    proc = subprocess.run([shell, "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_comes_from_the_parsers(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    proc = cli.run("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert complete(script, "jo") == ["job"]
    assert complete(script, "job", "pl") == ["plot"]
    assert set(complete(script, "job", "")) >= {"submit", "list", "plot", "stats", "monitor", "--format"}
    assert complete(script, "job", "plot", "123", "--me") == ["--metric"]
    assert complete(script, "--format", "js") == ["json", "jsonl"]
    assert complete(script, "job", "list", "--format", "j") == ["json", "jsonl"]
    assert complete(script, "job", "monitor", "1", "--stats-target", "a") == ["all"]
    assert complete(script, "completion", "") == ["--help", "bash", "zsh", "--schema", "--format"]

    code, doc = cli.json("completion", "fish")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS", doc


def test_zsh_completion_runs_the_same_function(tmp_path: Path) -> None:
    assert shutil.which("zsh"), (
        "zsh is not installed (.ci/run installs it): the zsh completion cannot be tried"
    )
    proc = Cli(tmp_path / "home").run("completion", "zsh")
    assert proc.returncode == 0, proc.stderr
    # zsh's compgen leaves the prefix to compadd, which keeps the words starting with "pl": the
    # function must have offered job's subcommands (not the top-level commands) for it to find any
    offered = complete(proc.stdout, "job", "pl", shell="zsh")
    assert "plot" in offered and "stats" in offered and "job" not in offered, offered
    assert "--metric" in complete(proc.stdout, "job", "plot", "1", "--m", shell="zsh")
