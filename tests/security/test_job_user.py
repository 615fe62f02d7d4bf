"""A root host that runs its jobs as another user (SHOAL_JOB_USER): the second layer under
Landlock. The job's processes run as that user, its folders are handed to it, and the probes of
test_job_isolation are refused while the job trains and its workflow finishes.

This machine keeps Python under /root, which only root may enter, so the test lets others
search /root (mode o+x, no listing) for its duration, as an operator would install Python where
the job user can read it, and puts the federation in a folder the job user may traverse."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.sandbox.privileges import reachable_by
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.federation import CUSTOM_CODE_STUDIES, CUSTOM_CODE_STUDY
from tests.security.test_job_isolation import (
    HOSTILE_SCRIPT,
    HOSTILE_WORKFLOW,
    _denied_everywhere,
    _job,
    _targets,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="a job user is for hosts that run as root"),
]

NOBODY = 65534
WHOAMI = "import os\nprint('UID', os.getuid(), os.getgid(), flush=True)\n"


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    root_mode = os.stat("/root").st_mode
    opened = not reachable_by(sys.executable, NOBODY, NOBODY)
    if opened:
        os.chmod("/root", root_mode | 0o001)
    home = Path(tempfile.mkdtemp(prefix="shoal-job-user-"))
    home.chmod(0o755)
    try:
        federation = start_federation(home, studies=CUSTOM_CODE_STUDIES, env={"SHOAL_JOB_USER": "nobody"})
        try:
            yield federation
        finally:
            stop_federation(federation)
    finally:
        if opened:
            os.chmod("/root", root_mode)
        shutil.rmtree(home, ignore_errors=True)


def test_jobs_run_as_the_job_user_and_reach_nothing(fed: Federation, tmp_path: Path) -> None:
    code, doc = fed.cli.json("job", "submit", "-j", _job(tmp_path / "plain"), "--wait", "--timeout", "60")
    assert code == 0, doc  # an ordinary job trains as the job user
    other = str(doc["data"]["job_id"])
    targets = json.dumps(_targets(fed, other))
    script = WHOAMI + f"TARGETS = {targets!r}\n" + HOSTILE_SCRIPT
    job = _job(tmp_path / "job", server={"workflow": {"class": "hostile.Hostile"}}, client=script)
    (job / "app" / "custom" / "hostile.py").write_text(WHOAMI + f"TARGETS = {targets!r}\n" + HOSTILE_WORKFLOW)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 0, doc
    out = tmp_path / "download"
    code, dl = fed.cli.json("job", "download", doc["data"]["job_id"], "-o", out, "--study", CUSTOM_CODE_STUDY)
    assert code == 0, dl
    workspace = next(out.rglob("probe.json")).parent
    _denied_everywhere(json.loads((workspace / "probe.json").read_text()))
    assert f"UID {NOBODY} {NOBODY}" in (workspace / "server" / "log.txt").read_text()
    for site in ("site-1", "site-2"):
        log = (workspace / site / "log.txt").read_text()
        assert f"UID {NOBODY} {NOBODY}" in log, log[-2000:]
        seen = json.loads(next(x for x in log.splitlines() if x.startswith("PROBE ")).removeprefix("PROBE "))
        seen = {k: v for k, v in seen.items() if not k.startswith("connect")}  # sites allow the network
        _denied_everywhere(seen)
    server_log = (fed.workspace / "logs" / "server.log").read_text()
    assert "jobs run as nobody" in server_log
