"""Job code against its host: a hostile workflow on the server and a hostile training script at a
site try to reach what the host keeps from them (keys, the store, other jobs, the policy files,
the host's processes and environment), and every attempt is refused, while the job itself runs.

What each probe saw comes back the way a submitter would get it: the workflow's in a file of
its own output (downloaded), the script's in its log. A probe that succeeded is a hole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.federation import CUSTOM_CODE_STUDIES, CUSTOM_CODE_STUDY

pytestmark = pytest.mark.e2e

SECRET_ENV = "AWS_SECRET_ACCESS_KEY"  # what a host's environment may hold; its jobs must not see it

#: Tries each access and says what happened: "denied ..." is what the test wants everywhere.
PROBE = r"""
import errno, json, os, socket

def _try(action):
    try:
        got = action()
        return "ALLOWED" + ("" if got is None else f" ({got})")
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__
        return "denied " + name

def _read(path):
    with open(path, "rb") as f:
        return f"{len(f.read(1 << 20))} bytes"

def _append(path):
    with open(path, "ab"):
        return None

def _connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=3).close()

def probe(targets):
    seen = {}
    for path in targets["read"]:
        seen["read " + path] = _try(lambda p=path: _read(p))
    for path in targets["list"]:
        seen["list " + path] = _try(lambda p=path: sorted(os.listdir(p))[:3])
    for path in targets["write"]:
        seen["write " + path] = _try(lambda p=path: _append(p))
    for pid in targets["signal"]:
        seen[f"signal {pid}"] = _try(lambda p=pid: os.kill(p, 0))
        seen[f"environ of {pid}"] = _try(lambda p=pid: _read(f"/proc/{p}/environ"))
    for port in targets["connect"]:
        seen[f"connect {port}"] = _try(lambda p=port: _connect(p))
    seen["secret env"] = "ALLOWED" if os.environ.get(targets["secret_env"]) else "denied"
    return seen
"""

HOSTILE_WORKFLOW = (
    PROBE
    + r"""
from shoal.workflows.base import Workflow

class Hostile(Workflow):
    def run(self):
        seen = probe(json.loads(TARGETS))
        (self.ctx.workspace / "probe.json").write_text(json.dumps(seen))
        # A link and a FIFO among its outputs: the server must keep neither (nor follow them).
        os.symlink(json.loads(TARGETS)["read"][0], self.ctx.workspace / "key-link.pem")
        os.mkfifo(self.ctx.workspace / "blocker")
"""
)

HOSTILE_SCRIPT = (
    PROBE
    + r"""
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

print("PROBE " + json.dumps(probe(json.loads(TARGETS))), flush=True)
flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    flare.send(FLModel(params=model.params, num_examples=1))
"""
)

#: Hands back, as its result, a link to the site's own key: the agent must not upload what the
#: link points at.
KEY_THIEF = r"""
import json, os
from shoal.fl import client as flare
from shoal.wire.channel import SyncChannel

channel = SyncChannel.from_env()
while True:
    message = channel.receive(None)
    if message is None or message.get("op") == "stop":
        break
    if message.get("op") == "task":
        link = os.path.join(message["result_dir"], "result.safetensors")
        os.symlink(KEY, link)
        channel.send({"op": "result", "task_id": message["task_id"], "path": link, "num_examples": 1})
"""

#: Names a file outside its folder as a task's model: the server must not serve it to the sites.
MODEL_THIEF = r"""
from shoal.workflows.base import Workflow

class Thief(Workflow):
    def run(self):
        self.ctx._channel.send({"op": "task", "task_id": "abc123", "model_path": KEY,
                                "sites": self.ctx.sites, "round": 0, "total_rounds": 1})
        for _ in self.ctx.results("abc123", min_responses=1, timeout=30):
            pass
"""


#: Says it can resume, then hands the server a checkpoint whose "model" is the server's key:
#: named by its path, or by a link in its own folder. The server must take neither into the
#: blob store (whence a resumed job would read it back).
CHECKPOINT_THIEF = r"""
import os
from shoal.workflows.base import Workflow

class Thief(Workflow):
    resumable = True

    def run(self):
        name = KEY
        if HOW == "link":
            name = "model.safetensors"
            os.symlink(KEY, self.ctx.run_dir / name)
        self.ctx._channel.send({"op": "checkpoint", "round": 0, "model_path": name, "state": {}})
        for _ in self.ctx.results("none", min_responses=1, timeout=30):
            pass
"""


#: Sends a task whose model is "the checkpoint of round 7" without having checkpointed it
#: ("never"), or the checkpoint of round 0 twice, its held file gone with the first task
#: ("twice"): the server holds no such model and must refuse, never serve a file of its choosing.
CHECKPOINTED_TASK_THIEF = r"""
import numpy as np
from shoal.fl.model import FLModel
from shoal.workflows.base import Workflow

class Thief(Workflow):
    resumable = True

    def run(self):
        if HOW == "twice":
            self.ctx.checkpoint(0, FLModel(params={"w": np.zeros(4, dtype=np.float32)}), {})
        rounds = [0, 0] if HOW == "twice" else [7]
        for number, rnd in enumerate(rounds):  # the first of two goes to no site: it only takes the file
            sites = self.ctx.sites if number == len(rounds) - 1 else []
            self.ctx._channel.send({"op": "task", "task_id": f"abc{number}", "model_path": KEY,
                                    "sites": sites, "round": 0, "total_rounds": 1,
                                    "checkpoint_round": rnd})
        self.ctx._pending[f"abc{len(rounds) - 1}"] = set(self.ctx.sites)
        for _ in self.ctx.results(f"abc{len(rounds) - 1}", min_responses=1, timeout=30):
            pass
"""


#: Says its training is over (the sites end their part), then sends a task anyway.
TASK_AFTER_FINISHING = r"""
import numpy as np
from shoal.fl.model import FLModel
from shoal.workflows.base import Workflow

class Late(Workflow):
    def run(self):
        self.ctx._channel.send({"op": "finishing"})
        task = self.ctx.send_task("train", FLModel(params={"w": np.zeros(4, dtype=np.float32)}))
        for _ in self.ctx.results(task, min_responses=1, timeout=30):
            pass
"""


#: Nests 3,000 folders in its scratch and its output folder, then ends: the server's walk of
#: them raised RecursionError, and the job was never settled.
DEEP_WORKFLOW = r"""
import os
from shoal.workflows.base import Workflow

class Deep(Workflow):
    def run(self):
        for top in (self.ctx.run_dir, self.ctx.workspace):
            fd = os.open(top, os.O_RDONLY)
            for _ in range(3000):
                os.mkdir("d", dir_fd=fd)
                child = os.open("d", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = child
            os.close(fd)
        (self.ctx.workspace / "result.txt").write_text("kept")
"""


#: Leaves, before each round's end, a link to the server's key where the server hands back the
#: workflow's spare (decisions/0054), and says what it finds there the next time.
SPARE_LINKER = r"""
import os, time
from shoal.workflows.fedavg import FedAvg

class Linker(FedAvg):
    def _checkpoint(self, rnd, model):
        spare = os.path.join(self.ctx.run_dir, "spare.safetensors")
        deadline = time.monotonic() + 10  # the server takes this round's releases in its own time
        while os.path.islink(spare) and time.monotonic() < deadline:
            time.sleep(0.01)
        if os.path.lexists(spare):
            print(f"round {rnd}: the spare is a regular file: {not os.path.islink(spare)}", flush=True)
        os.symlink(KEY, spare + ".link")
        os.replace(spare + ".link", spare)  # the server may be handing a spare over right now
        super()._checkpoint(rnd, model)
"""

#: The same at a site: a link to the site's key where the agent hands back the sent result.
SPARE_LINKING_CLIENT = r"""
import os, time
import numpy as np
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    deadline = time.monotonic() + 10  # the agent hands it back once the upload is done
    while os.path.islink("spare.safetensors") and time.monotonic() < deadline:
        time.sleep(0.01)
    if os.path.lexists("spare.safetensors"):
        regular = not os.path.islink("spare.safetensors")
        print(f"round {model.current_round}: the spare is a regular file: {regular}")
    os.symlink(KEY, "spare.link")
    os.replace("spare.link", "spare.safetensors")
    flare.send(FLModel(params={"w": np.full(100_000, 1.0, np.float32)}, num_examples=1))
"""


@pytest.fixture(scope="module", params=["forked", "cold"])
def fed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Federation]:
    """Job processes forked from the warm fork servers, and started cold (SHOAL_WARM_SPARES=0):
    both paths confine the same way."""
    warm = {"SHOAL_WARM_SPARES": "0"} if request.param == "cold" else {}
    federation = start_federation(
        tmp_path_factory.mktemp("isolation"),
        studies=CUSTOM_CODE_STUDIES,
        env={SECRET_ENV: "hunter2", **warm},
        site_local={"site-2": {"site_policy.json": {"allow_network": False}}},
    )
    try:
        yield federation
    finally:
        stop_federation(federation)


def _pids(fed: Federation) -> dict[str, int]:
    return {k: int(v) for k, v in json.loads((fed.workspace / "run" / "pids.json").read_text()).items()}


def _targets(fed: Federation, other_job: str) -> dict[str, Any]:
    kits = fed.kits
    server_ws = kits / "server" / "workspace"
    port = json.loads((fed.workspace / "poc.json").read_text())["server"]["port"]
    return {
        "read": [
            str(kits / "server" / "startup" / "server.key"),
            str(kits / "site-1" / "startup" / "client.key"),
            str(kits / "site-2" / "startup" / "client.key"),
            str(kits / "admin@example.com" / "startup" / "client.key"),
            str(fed.workspace / "ca" / "rootCA.key"),
            str(server_ws / "store.db"),
            str(server_ws / "jobs" / other_job / "job" / "meta.json"),
            str(kits / "site-1" / "workspace" / "jobs" / other_job / "job" / "meta.json"),
            str(fed.cli.home / "config.toml"),
            # the folder the server and agents were started from (python -m put it on sys.path)
            str(Path.cwd() / "pyproject.toml"),
        ],
        "list": [
            str(server_ws / "blobs"),
            str(server_ws / "jobs"),
            str(kits / "site-1" / "workspace" / "jobs"),
        ],
        "write": [
            str(kits / "server" / "local" / "authorization.json"),
            str(kits / "site-1" / "local" / "site_policy.json"),
            str(server_ws / "audit.jsonl"),
        ],
        "signal": sorted(_pids(fed).values()),
        "connect": [port],
        "secret_env": SECRET_ENV,
    }


def _job(dest: Path, *, server: dict[str, Any] | None = None, client: str | None = None) -> Path:
    shutil.copytree(EXAMPLES / "hello-numpy", dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = dest / "app" / "config"
    if server is not None:
        (config / "config_fed_server.json").write_text(json.dumps(server))
    if client is not None:
        (dest / "app" / "custom" / "client.py").write_text(client)
    return dest


def _denied_everywhere(seen: dict[str, str]) -> None:
    holes = {k: v for k, v in seen.items() if not v.startswith("denied")}
    assert not holes, f"job code reached what its host keeps from it: {holes}"


@pytest.fixture(scope="module")
def other_job(fed: Federation) -> str:
    """A job of someone else's, finished, whose files the probes try to read."""
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "60")
    assert code == 0, doc
    return str(doc["data"]["job_id"])


def test_a_custom_workflow_reaches_nothing_of_the_server(
    fed: Federation, other_job: str, tmp_path: Path
) -> None:
    """Issue 13 finding 1: a lead's custom workflow read the server's key, the store and other
    jobs, and wrote the policy files. Now each is refused, and so are signals to the server and
    its sites, their /proc environ, a TCP connection, and the host's environment."""
    authorization = (fed.kits / "server" / "local" / "authorization.json").read_bytes()
    job = _job(tmp_path / "job", server={"workflow": {"class": "hostile.Hostile"}})
    targets = json.dumps(_targets(fed, other_job))
    (job / "app" / "custom" / "hostile.py").write_text(f"TARGETS = {targets!r}\n" + HOSTILE_WORKFLOW)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    out = tmp_path / "download"
    code, doc = fed.cli.json("job", "download", job_id, "-o", out, "--study", CUSTOM_CODE_STUDY)
    assert code == 0, doc
    workspace = next(out.rglob("probe.json")).parent
    seen = json.loads((workspace / "probe.json").read_text())
    t = _targets(fed, other_job)
    assert len(seen) == len(t["read"]) + len(t["list"]) + len(t["write"]) + 2 * len(t["signal"]) + 2, seen
    _denied_everywhere(seen)
    assert not (workspace / "key-link.pem").exists() and not (workspace / "blocker").exists()
    code, meta = fed.cli.json("job", "meta", job_id, "--study", CUSTOM_CODE_STUDY)
    assert any("key-link.pem" in n and "not kept" in n for n in meta["data"]["notices"]), meta
    assert (fed.kits / "server" / "local" / "authorization.json").read_bytes() == authorization


def test_a_training_script_reaches_nothing_of_its_site(
    fed: Federation, other_job: str, tmp_path: Path
) -> None:
    """Issue 13 finding 3: a script printed its site's key, and the submitter then acted as the
    site. Now the key, the other kits, the store, other jobs, the policy files, the host's
    processes and environment are all out of its reach; the job still trains."""
    targets = json.dumps(_targets(fed, other_job))
    job = _job(tmp_path / "job", client=f"TARGETS = {targets!r}\n" + HOSTILE_SCRIPT)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 0, doc
    out = tmp_path / "download"
    code, doc = fed.cli.json("job", "download", doc["data"]["job_id"], "-o", out)
    assert code == 0, doc
    for site in ("site-1", "site-2"):
        log = next(p for p in out.rglob("log.txt") if p.parent.name == site).read_text()
        line = next(x for x in log.splitlines() if x.startswith("PROBE "))
        seen = json.loads(line.removeprefix("PROBE "))
        connect = next(k for k in seen if k.startswith("connect"))
        if site == "site-1":  # sites allow their scripts the network unless their policy says not
            assert seen.pop(connect) == "ALLOWED", seen
        _denied_everywhere(seen)
        assert "PRIVATE KEY" not in log


def test_a_result_that_links_to_the_sites_key_is_refused(fed: Federation, tmp_path: Path) -> None:
    """The agent used to upload (and then delete) whatever path the script named: a link to the
    site's key went to the server as the site's update."""
    key = fed.kits / "site-1" / "startup" / "client.key"
    before = key.read_bytes()
    job = _job(tmp_path / "job", client=f"KEY = {str(key)!r}\n" + KEY_THIEF)
    code, doc = fed.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "60")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, meta = fed.cli.json("job", "meta", doc["data"]["job_id"])
    error = meta["data"]["first_error"]
    assert error["type"] == "ResultRefused" and "not a regular file" in error["message"], error
    assert key.read_bytes() == before  # still there, unchanged (it used to be deleted)
    results = fed.kits / "server" / "workspace" / "jobs" / doc["data"]["job_id"]
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in results.rglob("*") if p.is_file())


def test_a_workflow_cannot_serve_a_file_outside_its_folder_as_a_model(
    fed: Federation, tmp_path: Path
) -> None:
    """The server streamed whatever file the workflow named as a task's model to the sites."""
    key = fed.kits / "server" / "startup" / "server.key"
    job = _job(tmp_path / "job", server={"workflow": {"class": "thief.Thief"}})
    (job / "app" / "custom" / "thief.py").write_text(f"KEY = {str(key)!r}\n" + MODEL_THIEF)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 1 and doc["data"]["status"] == "FINISHED_EXCEPTION", doc
    code, meta = fed.cli.json("job", "meta", doc["data"]["job_id"], "--study", CUSTOM_CODE_STUDY)
    assert "not inside the job's folder" in meta["data"]["status_reason"], meta
    assert key.exists()
    for site in ("site-1", "site-2"):
        jobs = fed.kits / site / "workspace" / "jobs" / doc["data"]["job_id"]
        assert not any(b"PRIVATE KEY" in p.read_bytes() for p in jobs.rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["path", "link"])
def test_a_checkpoint_naming_a_file_outside_the_workflows_folder_is_refused(
    fed: Federation, tmp_path: Path, how: str
) -> None:
    """A checkpoint's model is taken out of the workflow's folder like a task's (decisions/0040):
    one named outside it, or a link there, ends the job and nothing of the file is stored."""
    key = fed.kits / "server" / "startup" / "server.key"
    blobs = fed.kits / "server" / "workspace" / "blobs"
    before = {p for p in blobs.rglob("*") if p.is_file()}
    job = _job(tmp_path / "job", server={"workflow": {"class": "thief.Thief"}})
    (job / "app" / "custom" / "thief.py").write_text(
        f"KEY = {str(key)!r}\nHOW = {how!r}\n" + CHECKPOINT_THIEF
    )
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 1 and doc["data"]["status"] == "FINISHED_EXCEPTION", doc
    assert "refused" in doc["data"]["job_meta"]["status_reason"], doc
    assert key.exists() and b"PRIVATE KEY" in key.read_bytes()
    added = {p for p in blobs.rglob("*") if p.is_file()} - before
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in added), added


def test_a_link_left_where_a_host_hands_back_a_spare_is_replaced_and_the_key_never_written(
    fed: Federation, tmp_path: Path
) -> None:
    """decisions/0054: the server gives a folded result to the workflow's folder, the agent a
    sent result to the script's, under one fixed name. A job that leaves a link to its host's
    key there has the link replaced by the file (never written through, never followed), every
    round; the keys stay as they were and the job ends well."""
    server_key = fed.kits / "server" / "startup" / "server.key"
    site_key = fed.kits / "site-1" / "startup" / "client.key"
    before = server_key.read_bytes(), site_key.read_bytes()
    job = _job(
        tmp_path / "job",
        server={"workflow": {"class": "linker.Linker"}, "args": {"num_rounds": 3}},
        client=f"KEY = {str(site_key)!r}\n" + SPARE_LINKING_CLIENT,
    )
    (job / "app" / "custom" / "linker.py").write_text(f"KEY = {str(server_key)!r}\n" + SPARE_LINKER)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "90", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    assert (server_key.read_bytes(), site_key.read_bytes()) == before
    code, got = fed.cli.json(
        "job", "download", doc["data"]["job_id"], "-o", tmp_path / "dl", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 0, got
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "dl").rglob("log.txt")}
    server_log = "".join(text for name, text in logs.items() if not name.startswith("site-"))
    for rnd in (1, 2):  # the link left at the last round's end was replaced by a released result
        assert f"round {rnd}: the spare is a regular file: True" in server_log, server_log[-3000:]
        assert f"round {rnd}: the spare is a regular file: True" in logs["site-1"], logs["site-1"][-3000:]


@pytest.mark.parametrize("how", ["never", "twice"])
def test_a_task_naming_a_checkpoint_the_server_does_not_hold_is_refused(
    fed: Federation, tmp_path: Path, how: str
) -> None:
    """A task may send the model its workflow checkpointed just before (decisions/0045): the
    server then serves the file it took, and a task naming any other checkpoint ends the job;
    the path the message names is never read."""
    key = fed.kits / "server" / "startup" / "server.key"
    job = _job(tmp_path / "job", server={"workflow": {"class": "thief.Thief"}})
    (job / "app" / "custom" / "thief.py").write_text(
        f"KEY = {str(key)!r}\nHOW = {how!r}\n" + CHECKPOINTED_TASK_THIEF
    )
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 1 and doc["data"]["status"] == "FINISHED_EXCEPTION", doc
    reason = doc["data"]["job_meta"]["status_reason"]
    assert "refused" in reason and "not the last checkpoint the workflow sent" in reason, reason
    assert key.exists() and b"PRIVATE KEY" in key.read_bytes()
    for site in ("site-1", "site-2"):
        jobs = fed.kits / site / "workspace" / "jobs" / doc["data"]["job_id"]
        assert not any(b"PRIVATE KEY" in p.read_bytes() for p in jobs.rglob("*") if p.is_file())


def test_a_task_after_the_workflow_said_its_training_was_over_ends_the_job(
    fed: Federation, tmp_path: Path
) -> None:
    """Once the workflow said ``Finishing`` its sites are ending (decisions/0053): a task after
    it is a broken workflow's, and the job ends saying so rather than waiting on sites that left."""
    job = _job(tmp_path / "job", server={"workflow": {"class": "late.Late"}})
    (job / "app" / "custom" / "late.py").write_text(TASK_AFTER_FINISHING)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 1 and doc["data"]["status"] == "FINISHED_EXCEPTION", doc
    reason = doc["data"]["job_meta"]["status_reason"]
    assert "a task after the workflow said its training was over" in reason, reason


def test_custom_workflows_are_refused_where_the_study_does_not_allow_them(
    fed: Federation, tmp_path: Path
) -> None:
    """Custom server code is off by default: a study turns it on (allow_custom_code)."""
    job = _job(tmp_path / "job", server={"workflow": {"class": "hostile.Hostile"}})
    (job / "app" / "custom" / "hostile.py").write_text("raise SystemExit('must never run')\n")
    code, doc = fed.cli.json("job", "submit", "-j", job)
    assert code == 1 and doc["error_code"] == "CUSTOM_CODE_NOT_ALLOWED", doc
    # A built-in workflow named by its class path is not custom code.
    job2 = _job(
        tmp_path / "job2",
        server={"workflow": {"class": "shoal.workflows.fedavg.FedAvg"}, "args": {"num_rounds": 1}},
    )
    code, doc = fed.cli.json("job", "submit", "-j", job2, "--wait", "--timeout", "60")
    assert code == 0, doc


def test_the_host_says_what_confines_its_jobs(fed: Federation) -> None:
    """A loud line at start names the layers (here: Landlock, and no capabilities as root)."""
    for name in ("server", "site-1"):
        log = (fed.workspace / "logs" / f"{name}.log").read_text()
        assert "job sandbox: Landlock ABI" in log, log[-2000:]
        if os.geteuid() == 0:
            assert "without capabilities" in log or "jobs run as" in log


def test_a_workflow_that_nests_folders_without_end_still_settles(fed: Federation, tmp_path: Path) -> None:
    job = _job(tmp_path / "job", server={"workflow": {"class": "deep.Deep"}})
    (job / "app" / "custom" / "deep.py").write_text(DEEP_WORKFLOW)
    code, doc = fed.cli.json(
        "job", "submit", "-j", job, "--wait", "--timeout", "60", "--study", CUSTOM_CODE_STUDY
    )
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc
    job_dir = fed.kits / "server" / "workspace" / "jobs" / doc["data"]["job_id"]
    assert (job_dir / "workspace" / "result.txt").read_text() == "kept"
    assert not (job_dir / "run").exists() and not (job_dir / "out").exists()
    code, meta = fed.cli.json("job", "meta", doc["data"]["job_id"], "--study", CUSTOM_CODE_STUDY)
    assert any("deeper than" in n for n in meta["data"]["notices"]), meta
    code, doc = fed.cli.json("job", "submit", "-j", _job(tmp_path / "next"), "--wait", "--timeout", "60")
    assert code == 0, doc  # the server goes on running jobs
