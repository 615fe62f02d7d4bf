"""decisions/0054 across real processes: the site agent hands each sent result back to the
training script's folder, and the script's next result is written over it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e.jobs import copy_hello
from tests.federation import Federation

SPARE_CLIENT = """
import os
import time

import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    deadline = time.monotonic() + (10 if model.current_round else 0)  # handed back after its upload
    while not os.path.exists("spare.safetensors") and time.monotonic() < deadline:
        time.sleep(0.01)
    had = os.path.exists("spare.safetensors")  # the script's folder is its working folder
    inode = os.stat("spare.safetensors").st_ino if had else None
    flare.send(FLModel(params={"w": np.full(100_000, 1.0, np.float32)}, num_examples=1))
    print(f"round {model.current_round}: spare {had}, inode {inode}")
"""


def test_each_result_after_the_first_is_written_over_the_last_one_sent(
    federation: Federation, tmp_path: Path
) -> None:
    job = copy_hello(tmp_path / "spare")
    (job / "app" / "custom" / "client.py").write_text(SPARE_CLIENT)
    server = {"workflow": "fedavg", "args": {"num_rounds": 3}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    code, doc = federation.cli.json("job", "download", doc["data"]["job_id"], "-o", tmp_path / "dl")
    assert code == 0, doc
    for site in ("site-1", "site-2"):
        log = next((tmp_path / "dl").rglob(f"{site}/log.txt")).read_text()
        assert "round 0: spare False, inode None" in log, log[-2000:]
        # Each later round finds the last result handed back, and it is the same file every
        # time: the result was written over the spare, and that file came back. (A result
        # written to a new file would be created while the spare still exists, so it could not
        # have the spare's inode number.)
        inodes = re.findall(r"round [12]: spare True, inode (\d+)", log)
        assert len(inodes) == 2 and inodes[0] == inodes[1], log[-2000:]
