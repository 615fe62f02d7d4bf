"""Job folders the e2e tests build: variations of hello-numpy written into tmp_path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES

SLOW_CLIENT = """
import time
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    print("working on round", model.current_round, flush=True)
    time.sleep({delay})
    params = model.params or {{"w": __import__("numpy").zeros(2)}}
    flare.log_metric("step_loss", 0.5, step=model.current_round)
    flare.send(FLModel(params=params, metrics={{"loss": 1.0}}, num_examples=1))
"""

#: Reports a loss that is a function of the round (``r``, from 0): tells what a human view labels
#: with which round, or makes a loss explode.
ROUND_LOSS_CLIENT = """
import time
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    r = model.current_round
    time.sleep({delay})
    params = model.params or {{"w": __import__("numpy").zeros(2)}}
    flare.send(FLModel(params=params, metrics={{"loss": float({loss})}}, num_examples=1))
"""

STUBBORN_CLIENT = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)  # {marker}"])
print("stubborn script and its child", os.getpid(), child.pid, flush=True)
while True:
    time.sleep(0.1)
"""


def export_recipe(job_py: Path, dest: Path) -> Path:
    """Run an example's ``job.py --export --export-dir DEST``, as a user would; the job folder."""
    proc = subprocess.run(
        [sys.executable, str(job_py), "--export", "--export-dir", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (dest / "meta.json").is_file()
    return dest


def copy_hello(dest: Path) -> Path:
    shutil.copytree(EXAMPLES / "hello-numpy", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def slow_job(
    dest: Path, rounds: int = 1000, delay: float = 0.05, meta: dict[str, object] | None = None
) -> Path:
    """A job that keeps running for a while (rounds × delay), for abort, stats, logs, log-config."""
    copy_hello(dest)
    (dest / "app" / "custom" / "client.py").write_text(SLOW_CLIENT.format(delay=delay))
    server_cfg = {"workflow": "fedavg", "args": {"num_rounds": rounds}}
    (dest / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server_cfg))
    if meta:
        data = json.loads((dest / "meta.json").read_text())
        data.update(meta)
        (dest / "meta.json").write_text(json.dumps(data))
    return dest


def round_loss_job(dest: Path, loss: str, rounds: int = 5, delay: float = 0.0) -> Path:
    """Each site reports ``loss`` (a Python expression of the round ``r``) every round."""
    slow_job(dest, rounds=rounds, delay=delay)
    (dest / "app" / "custom" / "client.py").write_text(ROUND_LOSS_CLIENT.format(delay=delay, loss=loss))
    return dest


def stubborn_job(dest: Path, marker: str) -> Path:
    """Its site script ignores SIGTERM and forks a child that does too."""
    copy_hello(dest)
    (dest / "app" / "custom" / "client.py").write_text(STUBBORN_CLIENT.format(marker=marker))
    return dest


def paced_hello(dest: Path, rounds: int, delay: float) -> Path:
    """hello-numpy's own training (deterministic per site) over ``rounds`` FedAvg rounds, each
    site taking at least ``delay`` seconds a round: a job to kill the server in the middle of,
    whose final model says whether every round was run once."""
    copy_hello(dest)
    client = dest / "app" / "custom" / "client.py"
    text = client.read_text()
    paced = text.replace(
        "        if model is None:\n            break\n",
        f"        if model is None:\n            break\n        __import__('time').sleep({delay})\n",
        1,
    )
    assert paced != text, "hello-numpy's client changed: pace it another way"
    client.write_text(paced)
    server_cfg = {"workflow": "fedavg", "args": {"num_rounds": rounds}}
    (dest / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server_cfg))
    return dest
