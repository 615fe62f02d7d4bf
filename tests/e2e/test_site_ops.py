"""A site in trouble: a workspace it cannot write, a disk that fills, a log past the server's
limit, a bad site policy or kit. Each is reported, naming the site and the cause; none leaves a
job hanging or its log silently dropped."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello
from tests.faults.test_network import wait_sites
from tests.federation import alive, own_federation

pytestmark = pytest.mark.e2e

# Well under the server's round deadline (60 s): a site that cannot report would reach it.
PROMPT = 30


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with own_federation(tmp_path_factory.mktemp("siteops")) as federation:
        yield federation


def start_agent(
    fed: Federation, site: str, *args: str | Path, fsize: int | None = None
) -> subprocess.Popen[bytes]:
    """Our own ``shoal site start`` for ``site``, its output in the POC's log folder; with
    ``fsize``, no file it writes may grow past that many bytes (a disk that fills)."""

    def limit_files() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    with (fed.workspace / "logs" / f"{site}-own.log").open("ab") as log:  # the child keeps a copy
        return subprocess.Popen(
            [sys.executable, "-m", "shoal", "site", "start", "-k", fed.kits / site, *map(str, args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=fed.cli.env(),
            preexec_fn=limit_files,
        )


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    os.killpg(agent.pid, signal.SIGTERM)
    agent.wait(timeout=30)


@contextmanager
def own_site(fed: Federation, site: str, *args: str | Path, fsize: int | None = None) -> Iterator[None]:
    """``site`` runs as our own agent process (with ``args``) for the block; a plain one after."""
    pids_file = fed.workspace / "run" / "pids.json"
    pids = json.loads(pids_file.read_text())
    if site in pids:  # the POC's own agent: stopped for good (poc stop no longer looks for it)
        os.killpg(pids.pop(site), signal.SIGTERM)
        pids_file.write_text(json.dumps(pids))
    else:
        stop_agent(PLAIN.pop(site))
    wait_sites(fed, {"site-1", "site-2"} - {site})
    agent = start_agent(fed, site, *args, fsize=fsize)
    try:
        wait_sites(fed, {"site-1", "site-2"})
        yield
    finally:
        stop_agent(agent)
        PLAIN[site] = start_agent(fed, site)
        wait_sites(fed, {"site-1", "site-2"})


PLAIN: dict[str, subprocess.Popen[bytes]] = {}  # plain agents that took over from the POC's


@pytest.fixture(scope="module", autouse=True)
def _stop_plain_agents(fed: Federation) -> Iterator[None]:
    yield
    for agent in PLAIN.values():
        stop_agent(agent)
    PLAIN.clear()


def chatty_job(dest: Path, lines: int, width: int) -> Path:
    """hello-numpy whose script first prints ``lines`` numbered lines of ``width`` characters."""
    copy_hello(dest)
    (dest / "app" / "custom" / "chatter.py").write_text(
        f'for i in range({lines}):\n    print(f"chatter line {{i:09d}}", "x" * {width})\n'
    )
    script = dest / "app" / "custom" / "client.py"
    script.write_text(script.read_text().replace("\nimport ", "\nimport chatter  # noqa\nimport ", 1))
    return dest


def failed_fast(fed: Federation, job: Path) -> dict[str, Any]:
    """Submit, wait at most PROMPT seconds; the job must have failed. Its meta."""
    started = time.monotonic()
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", str(PROMPT))
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    assert time.monotonic() - started < PROMPT
    meta: dict[str, Any] = doc["data"]["job_meta"]
    return meta


def test_a_site_that_cannot_write_its_workspace_fails_the_job_at_once(
    fed: Federation, tmp_path: Path
) -> None:
    """The job folder cannot be made (here ``jobs`` is a file; a read-only disk does the same):
    the failure, not a crash while logging it, reaches the server."""
    workspace = tmp_path / "blocked"
    workspace.mkdir()
    (workspace / "jobs").write_text("not a folder")
    with own_site(fed, "site-1", "--workspace", workspace):
        meta = failed_fast(fed, EXAMPLES / "hello-numpy")
    assert meta["first_error"]["site"] == "site-1"
    assert "[Errno 20] Not a directory" in meta["first_error"]["message"]
    assert str(workspace / "jobs") in meta["status_reason"]


def test_a_site_whose_disk_fills_fails_the_job_at_once(fed: Federation, tmp_path: Path) -> None:
    """The script's output cannot be written (a file size limit stands in for a full disk): the
    job fails saying so, and the script is not left blocked on a pipe nobody reads."""
    job = chatty_job(tmp_path / "chatty", lines=20_000, width=200)
    chatter = job / "app" / "custom" / "chatter.py"  # its pid, in its working folder (it may write there)
    chatter.write_text("import os\nopen('script.pid', 'w').write(str(os.getpid()))\n" + chatter.read_text())
    with own_site(fed, "site-1", "--workspace", tmp_path / "site-1", fsize=2**20):
        meta = failed_fast(fed, job)
        assert meta["first_error"]["site"] == "site-1", meta
        assert "cannot keep the script's output" in meta["first_error"]["message"]
        assert "File too large" in meta["first_error"]["message"]
        [pid_file] = (tmp_path / "site-1" / "jobs").rglob("script.pid")
        script = int(pid_file.read_text())
        deadline = time.monotonic() + PROMPT  # with its site still running: not left blocked
        while alive(script):
            assert time.monotonic() < deadline, f"the script {script} was left running"
            time.sleep(0.05)


def test_a_log_past_the_servers_limit_arrives_cut_to_its_end(fed: Federation, tmp_path: Path) -> None:
    from shoal.server.site_jobs import MAX_LOG_BYTES

    lines = 80_000  # of about 1 KB: 80 MB, past the server's 64 MiB
    job = chatty_job(tmp_path / "huge", lines=lines, width=1000)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "300", timeout=330)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    meta = fed.cli.json("job", "meta", job_id)[1]["data"]
    assert any("site-1: log.txt was cut" in n for n in meta["notices"]), meta["notices"]
    assert any("site-1: log.json was cut" in n for n in meta["notices"]), meta["notices"]

    site_dir = fed.kits / "server" / "workspace" / "jobs" / job_id / "workspace" / "site-1"
    text = site_dir / "log.txt"
    assert 0.9 * MAX_LOG_BYTES < text.stat().st_size <= MAX_LOG_BYTES
    with text.open("rb") as f:
        note, first = f.readline(), f.readline()
        f.seek(-4 * 2**20, os.SEEK_END)
        end = f.read().decode()
    assert note.startswith(b"shoal site: the first ") and b"bytes of this log were cut" in note
    assert first.startswith(b"chatter line ") and len(first) == len(b"chatter line 000000000 ") + 1001
    assert f"chatter line {lines - 1:09d}" in end  # the end, which explains a failure, is kept

    with (site_dir / "log.json").open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f]  # cut at a record: every line is whole
    assert "were cut" in records[0]["message"] and records[1]["message"].startswith("chatter line ")
    assert (site_dir / "log.json").stat().st_size <= MAX_LOG_BYTES

    code, doc = fed.cli.json("job", "logs", job_id, "--site", "site-1")
    assert code == 0, doc


BAD_POLICIES = {
    "string for a bool": ('{"allow_custom_code": "false"}', "allow_custom_code"),
    "string for a list": ('{"studies": "default"}', "studies"),
    "unknown key": ('{"allow_custom_cod": false}', "allow_custom_cod"),
    "a list": ("[]", "JSON object"),
    "truncated": ('{"allow_custom_code": fal', "cannot read"),
}


@pytest.mark.parametrize("case", BAD_POLICIES)
def test_a_bad_site_policy_refuses_to_start_the_site(fed: Federation, tmp_path: Path, case: str) -> None:
    """Never fail open: a policy that cannot be trusted stops the site, naming file and key."""
    import shutil

    text, named = BAD_POLICIES[case]
    kit = Path(shutil.copytree(fed.kits / "site-1", tmp_path / "site-1"))
    policy = kit / "local" / "site_policy.json"
    policy.write_text(text)
    code, doc = fed.cli.json("site", "start", "-k", kit, timeout=60)
    assert code == 4 and doc["error_code"] == "LOCAL_FILE_ERROR", doc
    assert str(policy) in doc["message"] and named in doc["message"]


def test_a_server_kit_is_refused_as_a_site_kit(fed: Federation) -> None:
    code, doc = fed.cli.json("site", "start", "-k", fed.kits / "server", timeout=60)
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING", doc
    assert "is a server kit, not a site kit" in doc["message"]
