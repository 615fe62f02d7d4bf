"""Bad input gets its own error code, exit code and hint, and leaves the store unchanged."""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import EXAMPLES, Cli
from tests.e2e.conftest import Federation
from tests.federation import archive_blobs
from tests.ports import free_port

if TYPE_CHECKING:
    from shoal.api.client import AdminClient
    from shoal.errors import ShoalError

pytestmark = pytest.mark.e2e


def job_ids(fed: Federation) -> set[str]:
    code, doc = fed.cli.json("job", "list")
    assert code == 0
    return {row["job_id"] for row in doc["data"]}


def _no_meta(job: Path) -> None:
    (job / "meta.json").unlink()


def _bad_json(job: Path) -> None:
    (job / "meta.json").write_text('{"name": "x", "min_clients": 2,')


def _missing_app(job: Path) -> None:
    meta = json.loads((job / "meta.json").read_text())
    meta["deploy_map"] = {"no-such-app": ["@ALL"]}
    (job / "meta.json").write_text(json.dumps(meta))


def _too_many_clients(job: Path) -> None:
    meta = json.loads((job / "meta.json").read_text())
    meta["min_clients"] = 5
    (job / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("breaker", "error_code"),
    [
        (_no_meta, "JOB_META_MISSING"),
        (_bad_json, "JOB_META_INVALID"),
        (_missing_app, "JOB_APP_MISSING"),
        (_too_many_clients, "MIN_CLIENTS_UNSATISFIABLE"),
    ],
)
def test_bad_job_folder_is_refused_and_stores_nothing(
    federation: Federation, tmp_path: Path, breaker: Callable[[Path], None], error_code: str
) -> None:
    job = tmp_path / "job"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    breaker(job)
    before = job_ids(federation)
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 1, doc
    assert doc["status"] == "error" and doc["error_code"] == error_code
    assert doc["message"] and doc["hint"]
    assert job_ids(federation) == before
    human = federation.cli.run("job", "submit", "-j", job)
    assert (
        human.returncode == 1 and f"Code: {error_code} (exit 1)" in human.stderr and "Hint:" in human.stderr
    )
    assert human.stdout == ""


def test_missing_job_folder(federation: Federation, tmp_path: Path) -> None:
    code, doc = federation.cli.json("job", "submit", "-j", tmp_path / "nope")
    assert code == 1 and doc["error_code"] == "JOB_FOLDER_NOT_FOUND"


def test_unknown_job_id(federation: Federation) -> None:
    for command in (("meta",), ("wait",), ("download",)):
        code, doc = federation.cli.json("job", *command, "12345")
        assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND", doc
        assert "default" in doc["message"] and "--study" in doc["hint"]


def test_invalid_arguments_exit_4(federation: Federation) -> None:
    code, doc = federation.cli.json("job", "wait", "1", "--timeout", "-1")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "usage" in doc["data"]
    human = federation.cli.run("job", "meta")
    assert human.returncode == 4
    assert human.stderr.startswith("usage: shoal job meta") and "Code: INVALID_ARGS (exit 4)" in human.stderr
    code, doc = federation.cli.json("job", "submit", "--submit-token", "bad token!")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS"
    for bad in ("0", "-1"):  # "at most 0 jobs" was read as "no limit"
        code, doc = federation.cli.json("job", "list", "-m", bad)
        assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "must be > 0" in doc["message"], doc


@pytest.mark.parametrize("value", ["0", "-3", "ten", "", "9223372036854775808", "9" * 5000, "\u0661\u0662"])
def test_the_api_refuses_a_max_that_is_not_a_positive_count(federation: Federation, value: str) -> None:
    """Scripts that call the API directly get the same answer as the CLI: INVALID_ARGS. Past
    SQLite's 64-bit integers was INTERNAL_ERROR (OverflowError); Arabic-Indic digits passed."""
    import urllib.parse

    from shoal.api.http import Connection
    from shoal.api.tls import client_context

    poc = json.loads((federation.workspace / "poc.json").read_text())
    ctx = client_context(str(federation.kits / "admin@example.com"))
    conn = Connection(poc["server"]["host"], int(poc["server"]["port"]), ctx, timeout=10)
    resp = conn.request("GET", "/api/v1/jobs?" + urllib.parse.urlencode({"max": value}))
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 400 and doc["error_code"] == "INVALID_ARGS", doc


def _kit_copy_with_port(kit: Path, dest: Path, port: int) -> Path:
    shutil.copytree(kit, dest)
    cfg = dest / "startup" / "fed_admin.json"
    data = json.loads(cfg.read_text())
    data["server"]["port"] = port
    cfg.write_text(json.dumps(data))
    return dest


def test_dead_server_is_exit_2(federation: Federation, tmp_path: Path) -> None:
    kit = _kit_copy_with_port(federation.kits / "admin@example.com", tmp_path / "kit", free_port())
    code, doc = federation.cli.json("job", "list", "--startup-kit", kit)
    assert code == 2 and doc["error_code"] == "CONNECTION_FAILED"
    code, doc = federation.cli.json("job", "wait", "1", "--startup-kit", kit)
    assert code == 2 and doc["error_code"] == "CONNECTION_FAILED"


def test_kit_from_another_ca_is_refused(federation: Federation, tmp_path: Path) -> None:
    other = Cli(tmp_path / "other-home")
    prepared = other.run("poc", "prepare", "--workspace", tmp_path / "other-poc")
    assert prepared.returncode == 0, prepared.stderr
    server_port = json.loads((federation.workspace / "poc.json").read_text())["server"]["port"]
    foreign = _kit_copy_with_port(
        tmp_path / "other-poc" / "kits" / "admin@example.com", tmp_path / "foreign", server_port
    )
    code, doc = federation.cli.json("job", "list", "--startup-kit", foreign)
    assert code == 2 and doc["error_code"] == "AUTH_FAILED", doc


def test_missing_startup_kit(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "empty-home")
    code, doc = cli.json("job", "list")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING" and doc["hint"]
    code, doc = cli.json("job", "list", "--startup-kit", tmp_path)
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING"
    code, doc = cli.json("job", "list", "--kit-id", "nobody")
    assert code == 2 and doc["error_code"] == "STARTUP_KIT_MISSING"


BAD_RESULT_CLIENT = """
import os, tempfile
from shoal.fl import client as flare
from shoal.wire.channel import SyncChannel

channel = SyncChannel.from_env()
task = channel.receive(30)
fd, path = tempfile.mkstemp(suffix=".safetensors", dir=task["result_dir"])
os.write(fd, b"\\xff" * 8 + b"not a safetensors file")  # small: it is offered inline first
os.close(fd)
channel.send({"op": "result", "task_id": task["task_id"], "path": path, "num_examples": 1})
channel.receive(30)
"""


def test_a_malformed_result_fails_the_job_with_model_invalid(federation: Federation, tmp_path: Path) -> None:
    """A site script that hands back bytes that are not safetensors (bypassing the client API):
    the server refuses the inline copy, the site sends it by PUT, which is refused as
    MODEL_INVALID, and the job fails saying so; nothing of it reaches the workflow."""
    job = tmp_path / "bad-result"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "client.py").write_text(BAD_RESULT_CLIENT)
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert "MODEL_INVALID" in error["message"] and error["site"].startswith("site-"), error


def test_a_download_into_a_place_that_cannot_hold_it(federation: Federation, tmp_path: Path) -> None:
    """A file where a folder should be, or a folder nobody may write (root ignores file modes,
    so /proc stands in for that): OUTPUT_DIR_NOT_WRITABLE with the path, not an internal error."""
    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120"
    )
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for place in (a_file / "below", Path("/proc/shoal-download")):
        code, doc = federation.cli.json("job", "download", job_id, "-o", place)
        assert code == 1 and doc["error_code"] == "OUTPUT_DIR_NOT_WRITABLE", doc
        assert str(place) in doc["message"], doc


BAD_HEADER_CLIENT = """
import os, tempfile
import numpy as np
from shoal.wire.channel import SyncChannel
from shoal.wire.models import save_params

channel = SyncChannel.from_env()
task = channel.receive(30)
path = os.path.join(task["result_dir"], "result.safetensors")
save_params({"w": np.zeros(2)}, __import__("pathlib").Path(path))
channel.send({"op": "result", "task_id": task["task_id"], "path": path, "num_examples": NUM_EXAMPLES})
channel.receive(30)
"""


@pytest.mark.parametrize("num_examples", ['"many"', "-5", "2.5"])
def test_a_result_header_the_server_cannot_use_fails_the_job_with_invalid_args(
    federation: Federation, tmp_path: Path, num_examples: str
) -> None:
    """A site's agent checks what its script says about a result by the server's own rule
    (shoal.wire.results) instead of failing inside: the job fails naming the field, the site's
    control channel stays up. (The server's own check of a site that does not:
    tests/security/test_hostile_site.py.)"""
    job = tmp_path / "bad-header"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "client.py").write_text(BAD_HEADER_CLIENT.replace("NUM_EXAMPLES", num_examples))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 1 and doc["data"]["status"] == "FAILED", doc
    code, doc = federation.cli.json("job", "meta", doc["data"]["job_id"])
    error = doc["data"]["first_error"]
    assert "INVALID_ARGS" in error["message"] and "num_examples" in error["message"], error
    code, doc = federation.cli.json("system", "status")
    assert code == 0 and len(doc["data"]["sites"]) == 2, doc  # both sites still connected


def test_a_typo_in_a_builtin_workflows_arguments_ends_the_job_naming_it(
    federation: Federation, tmp_path: Path
) -> None:
    """``num_roundz`` used to be ignored: the job ran with the default and reported success."""
    job = tmp_path / "typo"
    shutil.copytree(EXAMPLES / "hello-numpy", job, ignore=shutil.ignore_patterns("__pycache__"))
    config = {"workflow": "fedavg", "args": {"num_roundz": 3}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(config))
    code, doc = federation.cli.json("job", "submit", "-j", job, "--wait", "--timeout", "120")
    assert code == 1 and doc["data"]["status"] == "FINISHED_EXCEPTION", doc
    assert "did you mean 'num_rounds'?" in doc["message"], doc


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_download_onto_a_full_disk_says_so(federation: Federation) -> None:
    """/dev/full answers every write with ENOSPC: that is the local disk, not the connection
    (it was reported as CONNECTION_FAILED)."""
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit
    from shoal.errors import ShoalError

    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120"
    )
    assert code == 0, doc
    kit = resolve_admin_kit(None, str(federation.kits / "admin@example.com"))
    with AdminClient(kit) as client, pytest.raises(ShoalError) as err:
        client.download_result(doc["data"]["job_id"], "default", Path("/dev/full"))
    assert err.value.code == "LOCAL_FILE_ERROR" and "/dev/full" in err.value.message, err.value.message


# --- what the server itself refuses (sent with the SDK client: the CLI may check first) ----


def admin_client(fed: Federation) -> AdminClient:
    from shoal.api.client import AdminClient
    from shoal.api.kits import resolve_admin_kit

    return AdminClient(resolve_admin_kit(None, str(fed.kits / "admin@example.com")))


def refused_by_server(fed: Federation, job: Path, token: str | None = None) -> ShoalError:
    """Upload ``job`` (a folder, zipped as the CLI would, or a zip) straight to the server."""
    from shoal.errors import ShoalError
    from shoal.wire.archive import zip_folder

    archive = job
    if job.is_dir():
        archive = job.parent / f"{job.name}.zip"
        zip_folder(job, archive)
    with admin_client(fed) as client, pytest.raises(ShoalError) as err:
        client.submit_job(archive, "default", token)
    return err.value


def blob_files(fed: Federation) -> set[str]:
    """The server's blobs. The store is the session's, which other tests write to: compare what
    a step added (``after - before``) or whether one blob is there, never the whole set."""
    root = fed.workspace / "kits" / "server" / "workspace" / "blobs"
    return {p.relative_to(root).as_posix() for p in root.glob("??/*")}


def hello_variant(dest: Path, marker: str, meta_text: str | None = None) -> Path:
    """hello-numpy with content of its own (so its archive is a blob of its own)."""
    shutil.copytree(EXAMPLES / "hello-numpy", dest, ignore=shutil.ignore_patterns("__pycache__"))
    client = dest / "app" / "custom" / "client.py"
    client.write_text(client.read_text() + f"\n# {marker}\n")
    if meta_text is not None:
        (dest / "meta.json").write_text(meta_text)
    return dest


HELLO_META = '{"name": "bad", "min_clients": 2, "deploy_map": {"app": ["@ALL"]}'


def test_a_refused_submit_leaves_no_blob_behind(federation: Federation, tmp_path: Path) -> None:
    """The archive used to be stored before the token was checked and the record written: every
    refusal left a blob no job references, counted against the store quota, never freed."""
    token = f"blobs-{uuid.uuid4().hex}"
    first = hello_variant(tmp_path / "first", token)
    code, doc = federation.cli.json("job", "submit", "-j", first, "--submit-token", token)
    assert code == 0, doc
    job_id = doc["data"]["job_id"]
    refusals = [
        (hello_variant(tmp_path / "other", token + "-other"), token, "SUBMIT_TOKEN_CONFLICT"),
        (
            hello_variant(tmp_path / "nan", token + "-nan", HELLO_META + ', "x": NaN}'),
            None,
            "JOB_META_INVALID",
        ),
        (
            hello_variant(tmp_path / "owned", token + "-p", HELLO_META + ', "progress": "x"}'),
            None,
            "JOB_META_INVALID",
        ),
    ]
    for job, job_token, error_code in refusals:
        before = archive_blobs(federation)
        assert refused_by_server(federation, job, job_token).code == error_code
        assert archive_blobs(federation) - before == set(), job.name
    code, doc = federation.cli.json("job", "wait", job_id, "--timeout", "120")
    assert code == 0, doc  # delete refuses a running job
    code, doc = federation.cli.json("job", "delete", job_id, "--force")
    assert code == 0, doc
    before = archive_blobs(federation)
    assert refused_by_server(federation, first, token).code == "SUBMIT_TOKEN_JOB_DELETED"
    assert archive_blobs(federation) - before == set()


def test_a_refused_submit_keeps_a_blob_another_job_uses(federation: Federation, tmp_path: Path) -> None:
    """Blobs are content-addressed: an archive refused for its token may be another job's."""
    token = f"shared-{uuid.uuid4().hex}"
    code, doc = federation.cli.json(
        "job", "submit", "-j", hello_variant(tmp_path / "first", token), "--submit-token", token
    )
    assert code == 0, doc
    shared = hello_variant(tmp_path / "shared", token + "-shared")
    before = archive_blobs(federation)
    code, doc = federation.cli.json("job", "submit", "-j", shared)
    assert code == 0, doc
    added = archive_blobs(federation) - before
    assert added, "the shared archive was stored as a blob of its own (its marker makes it new)"
    assert refused_by_server(federation, shared, token).code == "SUBMIT_TOKEN_CONFLICT"
    assert added <= archive_blobs(federation)
    code, doc = federation.cli.json("job", "wait", doc["data"]["job_id"], "--timeout", "120")
    assert code == 0 and doc["data"]["status"] == "FINISHED_OK", doc


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('"x": NaN', "NaN"),
        ('"x": 1e999', "1e999"),
        ('"x": ' + "[" * 100_000 + "]" * 100_000, "levels deep"),
        ('"progress": "oops"', "'progress'"),
        ('"notices": "oops"', "'notices'"),
        ('"status": "FINISHED_OK"', "'status'"),
        ('"fab": "oops"', "'fab'"),
    ],
)
def test_a_meta_json_the_server_cannot_keep_is_job_meta_invalid(
    federation: Federation, tmp_path: Path, extra: str, says: str
) -> None:
    """NaN, 1e999 and deep nesting were INTERNAL_ERROR; "progress": "oops" was stored and then
    broke ``job meta``, ``wait`` and ``monitor`` (AttributeError inside the server)."""
    job = hello_variant(tmp_path / "job", "meta", HELLO_META + f", {extra}}}")
    error = refused_by_server(federation, job)
    assert error.code == "JOB_META_INVALID" and says in error.message, error.message
    code, doc = federation.cli.json("job", "submit", "-j", job)
    assert code == 1 and doc["error_code"] == "JOB_META_INVALID" and says in doc["message"], doc


@pytest.mark.parametrize("file", ["config_fed_server.json", "config_fed_client.json"])
def test_a_config_with_nan_is_job_config_invalid(federation: Federation, tmp_path: Path, file: str) -> None:
    job = hello_variant(tmp_path / "job", "config")
    config = job / "app" / "config" / file
    config.write_text(config.read_text().rstrip().removesuffix("}") + ', "x": NaN}')
    error = refused_by_server(federation, job)
    assert error.code == "JOB_CONFIG_INVALID" and "NaN" in error.message, error.message


def test_a_submit_token_with_a_final_newline_is_refused(federation: Federation, tmp_path: Path) -> None:
    """A token ending in a newline passed the server's ^...$ check: a job that "nl1" cannot find."""
    token = f"nl-{uuid.uuid4().hex[:8]}"
    job = hello_variant(tmp_path / "job", token)
    assert refused_by_server(federation, job, token + "\n").code == "INVALID_ARGS"
    code, doc = federation.cli.json("job", "list", "--submit-token", token)
    assert code == 0 and doc["data"] == [], doc


def _zip_of(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "{}")
    return path


@pytest.mark.parametrize(
    "names",
    [[], ["app/config/config_fed_server.json"], ["one/meta.json", "two/meta.json"]],
    ids=["empty", "no-meta", "two-wrappers"],
)
def test_no_meta_json_names_no_server_path(federation: Federation, tmp_path: Path, names: list[str]) -> None:
    """It used to say "no meta.json in /…/kits/server/workspace/tmp/<hex>/extracted"."""
    error = refused_by_server(federation, _zip_of(tmp_path / "job.zip", names))
    assert error.code == "JOB_META_MISSING", error.message
    for server_side in (str(federation.workspace), "workspace", "tmp/", "extracted"):
        assert server_side not in error.message, error.message


def test_a_download_range_of_thousands_of_digits_sends_the_whole_file(federation: Federation) -> None:
    """int() of over 4300 digits raises ValueError: that was INTERNAL_ERROR, not a full download."""
    from shoal.api.http import Connection
    from shoal.api.tls import client_context

    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120"
    )
    assert code == 0, doc
    poc = json.loads((federation.workspace / "poc.json").read_text())
    ctx = client_context(str(federation.kits / "admin@example.com"))
    conn = Connection(poc["server"]["host"], int(poc["server"]["port"]), ctx, timeout=30)
    path = f"/api/v1/jobs/{doc['data']['job_id']}/result"
    resp = conn.request("GET", path, headers={"Range": "bytes=" + "9" * 5000 + "-"})
    body = resp.read()
    conn.close()
    assert resp.status == 200 and body[:2] == b"PK", (resp.status, body[:200])
