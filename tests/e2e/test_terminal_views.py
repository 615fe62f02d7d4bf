"""``shoal job plot`` draws a finished job's curve from its metrics_summary.json, and ``shoal
completion bash|zsh`` completes what the parsers know, run in the real shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from tests.conftest import Cli
from tests.e2e.conftest import Federation
from tests.e2e.jobs import round_loss_job, slow_job

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
