"""Arguments the CLI must refuse itself, before the server sees them or anything is uploaded:
each gets its code, exit code and hint, and changes nothing on the server or on disk."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from shoal.api import client as admin_client
from shoal.api.kits import resolve_admin_kit
from shoal.errors import ShoalError
from shoal.wire.jobdef import holds_meta
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation
from tests.e2e.jobs import copy_hello

pytestmark = pytest.mark.e2e

LONG = "a" * 20000


def job_ids(fed: Federation) -> set[str]:
    code, doc = fed.cli.json("job", "list")
    assert code == 0, doc
    return {row["job_id"] for row in doc["data"]}


def finished_job(fed: Federation) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120")
    assert code == 0, doc
    job_id: str = doc["data"]["job_id"]
    return job_id


def refused(fed: Federation, *argv: str | Path, code: str, exit_code: int) -> dict[str, str]:
    """Refused alike in both modes: one JSON envelope, or the human lines on stderr."""
    got, doc = fed.cli.json(*argv, timeout=30)
    assert (got, doc["error_code"]) == (exit_code, code), doc
    human = fed.cli.run(*argv, timeout=30)
    assert human.returncode == exit_code and human.stdout == "", human.stderr
    assert f"Code: {code} (exit {exit_code})" in human.stderr and "SHOAL_DEBUG" not in human.stderr
    result: dict[str, str] = doc
    return result


# --- values too long for the server -------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("job", "list", "--study", LONG),
        ("job", "list", "-n", LONG),
        ("job", "list", "-i", "1" * 17),
        ("job", "meta", "1" * 20000),
        ("job", "logs", "1", "--site", LONG),
        ("job", "stats", "1", "--site", LONG),
        ("job", "log-config", "1", "DEBUG", "--site", LONG),
    ],
    ids=["study", "name", "id-prefix", "job-id", "logs-site", "stats-site", "log-config-site"],
)
def test_an_over_long_value_is_refused_before_it_is_sent(
    federation: Federation, argv: tuple[str, ...]
) -> None:
    """aiohttp answered these with a bare HTTP 400 the CLI called INTERNAL_ERROR (exit 5,
    "re-run with SHOAL_DEBUG=1"): they are the caller's invalid arguments."""
    doc = refused(federation, *argv, code="INVALID_ARGS", exit_code=4)
    assert "too long" in doc["message"] or "at most" in doc["message"] or "digits" in doc["message"], doc


def test_the_servers_own_refusal_of_a_long_request_is_invalid_args(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the CLI's guard (an SDK caller, a server with a smaller limit), the server's bare 400
    is INVALID_ARGS; the server drops that connection unannounced, and the next call still works."""
    monkeypatch.setattr(admin_client, "MAX_TARGET_BYTES", 10**6)
    kit = resolve_admin_kit(None, str(federation.kits / "admin@example.com"))
    with admin_client.AdminClient(kit) as client:
        client.list_jobs("default")  # a kept-alive connection, as a monitor's
        with pytest.raises(ShoalError) as caught:
            client.list_jobs(LONG)
        assert caught.value.code == "INVALID_ARGS" and "HTTP 400" in caught.value.message
        assert isinstance(client.list_jobs("default"), list)  # was CONNECTION_FAILED


# --- -j that is not a job folder or zip ---------------------------------------------------


def test_a_pipe_a_device_or_a_plain_file_is_not_a_job(federation: Federation, tmp_path: Path) -> None:
    """A FIFO hung the upload for ever, /dev/zero ended in CONNECTION_FAILED, a meta.json got
    ARCHIVE_UNSAFE; none of them is sent."""
    before = job_ids(federation)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        doc = refused(federation, "job", "submit", "-j", path, code="JOB_FOLDER_NOT_FOUND", exit_code=1)
        assert str(path) in doc["message"], doc
    job = copy_hello(tmp_path / "job")
    doc = refused(
        federation, "job", "submit", "-j", job / "meta.json", code="JOB_FOLDER_NOT_FOUND", exit_code=1
    )
    assert "not a zip archive" in doc["message"] and f"-j {job}" in doc["hint"], doc
    assert job_ids(federation) == before


def test_an_empty_job_folder_argument_is_refused(federation: Federation, tmp_path: Path) -> None:
    """Path("") is ".": the current directory was zipped and uploaded."""
    before = job_ids(federation)
    code, doc = federation.cli.json("job", "submit", "-j", "")
    assert code == 4 and doc["error_code"] == "INVALID_ARGS" and "must not be empty" in doc["message"], doc
    assert job_ids(federation) == before


def test_a_folder_without_meta_json_is_refused_before_it_is_zipped(
    federation: Federation, tmp_path: Path
) -> None:
    """It was zipped and uploaded whole (200 MB, 8 s) before the server said JOB_META_MISSING;
    the local refusal names the folder, which the server never sees."""
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 1024)
    (folder / "README").write_text("no job here")
    before = job_ids(federation)
    doc = refused(federation, "job", "submit", "-j", folder, code="JOB_META_MISSING", exit_code=1)
    assert str(folder) in doc["message"], doc
    assert job_ids(federation) == before


# (archive entries, does the server find meta.json?)
LAYOUTS = {
    "root": ("", [], True),
    "wrapper": ("job/", [], True),
    "wrapper-and-hidden-file": ("job/", [".DS_Store"], True),
    "wrapper-and-readme": ("job/", ["README.md"], False),
    "two-levels": ("outer/job/", [], False),
    "no-meta": ("job/", [], False),
}


def _zip_of_hello(tmp_path: Path, name: str) -> Path:
    """hello-numpy zipped with the layout ``name``; min_clients 5 makes the server refuse a job
    it can read (MIN_CLIENTS_UNSATISFIABLE), so this test stores nothing."""
    prefix, extras, _ = LAYOUTS[name]
    job = copy_hello(tmp_path / f"src-{name}")
    meta = json.loads((job / "meta.json").read_text())
    (job / "meta.json").write_text(json.dumps({**meta, "min_clients": 5}))
    if name == "no-meta":
        (job / "meta.json").unlink()
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(p for p in job.rglob("*") if p.is_file()):
            zf.write(file, prefix + file.relative_to(job).as_posix())
        for extra in extras:
            zf.writestr(extra, "x")
    return archive


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_cli_looks_for_meta_json_in_a_zip_where_the_server_does(
    federation: Federation, tmp_path: Path, layout: str
) -> None:
    """The local check refuses exactly the archives the server would refuse for lacking
    meta.json (sent here through the SDK, which does not check), and no other."""
    archive = _zip_of_hello(tmp_path, layout)
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    expected = LAYOUTS[layout][2]
    assert holds_meta(names) is expected
    kit = resolve_admin_kit(None, str(federation.kits / "admin@example.com"))
    with admin_client.AdminClient(kit) as client, pytest.raises(ShoalError) as by_server:
        client.submit_job(archive, "default")
    assert (by_server.value.code != "JOB_META_MISSING") is expected, by_server.value.message
    code, doc = federation.cli.json("job", "submit", "-j", archive)
    assert code == 1, doc
    assert doc["error_code"] == ("MIN_CLIENTS_UNSATISFIABLE" if expected else "JOB_META_MISSING"), doc
    if not expected:
        assert str(archive) in doc["message"], "refused locally: the message names the local file"


# --- numbers, formats and job ids ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("job", "wait", "1", "--timeout", "nan"),
        ("job", "wait", "1", "--timeout", "inf"),
        ("job", "monitor", "1", "--timeout", "NaN"),
        ("job", "wait", "1", "--interval", "nan"),
        ("job", "monitor", "1", "--interval", "inf"),
        ("job", "submit", "--wait", "--timeout", "nan"),
        ("job", "logs", "1", "--tail", "nan"),
    ],
)
def test_a_number_that_is_not_finite_is_refused(federation: Federation, argv: tuple[str, ...]) -> None:
    """--timeout nan was accepted and meant "wait for ever"."""
    doc = refused(federation, *argv, code="INVALID_ARGS", exit_code=4)
    assert argv[-2] in doc["message"], doc


@pytest.mark.parametrize("fmt", ["xml", "YAML", "yaml"])
def test_an_unknown_format_is_invalid_args(federation: Federation, fmt: str) -> None:
    """It exited 2, the code of connection, auth and kit failures."""
    proc = federation.cli.run("job", "list", "--format", fmt)
    assert proc.returncode == 4 and proc.stdout == "", proc.stderr
    assert "Code: INVALID_ARGS (exit 4)" in proc.stderr and "Hint: Use --format" in proc.stderr


def test_a_job_id_in_other_digits_is_not_the_job(federation: Federation) -> None:
    """'١١٧٥…' (Arabic-Indic digits) resolved to job 1175…: str.isdecimal accepts any script."""
    job_id = finished_job(federation)
    arabic = "".join(chr(0x660 + int(d)) for d in job_id)
    for command in ("meta", "download", "logs"):
        doc = refused(federation, "job", command, arabic, code="INVALID_ARGS", exit_code=4)
        assert "digits 0-9" in doc["message"], doc
    code, doc = federation.cli.json("job", "meta", job_id)
    assert code == 0 and doc["data"]["job_id"] == job_id


# --- downloads that are refused change nothing locally ------------------------------------


def test_a_refused_download_creates_no_output_folder(federation: Federation, tmp_path: Path) -> None:
    """A member may see a job but not download it: the refusal left the -o folder behind."""
    member = "member-download@example.org"
    proc = federation.cli.run("poc", "add-user", "member", member, "--workspace", federation.workspace)
    assert proc.returncode == 0, proc.stderr
    job_id = finished_job(federation)
    out = tmp_path / "out" / "deeper"
    code, doc = federation.cli.json(
        "job", "download", job_id, "-o", out, "--startup-kit", federation.kits / member
    )
    assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED", doc
    assert not (tmp_path / "out").exists()


def test_force_does_not_replace_a_file_that_has_the_jobs_name(federation: Federation, tmp_path: Path) -> None:
    """It said "check permissions"; the file is not a download --force may replace."""
    job_id = finished_job(federation)
    (tmp_path / job_id).write_text("mine")
    doc = refused(
        federation, "job", "download", job_id, "-o", tmp_path, "--force", code="DOWNLOAD_EXISTS", exit_code=4
    )
    assert "is a file" in doc["message"] and "permission" not in doc["hint"], doc
    assert (tmp_path / job_id).read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [job_id]


def test_force_still_replaces_an_earlier_download(federation: Federation, tmp_path: Path) -> None:
    job_id = finished_job(federation)
    for _ in range(2):
        code, doc = federation.cli.json("job", "download", job_id, "-o", tmp_path, "--force")
        assert code == 0, doc
    shutil.rmtree(tmp_path / job_id)
