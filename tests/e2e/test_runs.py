"""run, ls, stop through the real CLI on a POC, with the JSON of seed 003."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e

RUN_KEYS = {"success", "run-id", "fab-id", "fab-name", "fab-version", "fab-hash", "fab-filename"}
LS_KEYS = {
    "run-id",
    "fab-id",
    "fab-name",
    "fab-version",
    "fab-hash",
    "status",
    "elapsed",
    "created-at",
    "running-at",
    "finished-at",
}


def app(tmp_path: Path, federation: Federation, slow: bool = False) -> Path:
    root = tmp_path / "app"
    shutil.copytree(EXAMPLES / "quickstart-app", root)
    text = (root / "pyproject.toml").read_text()
    kit = federation.kits / "admin@example.com"
    text = text.replace('kit-id = "admin@example.com"', f'startup-kit = "{kit}"')
    (root / "pyproject.toml").write_text(text)
    if slow:
        client = (
            (root / "client.py")
            .read_text()
            .replace("    for _ in range(20):", "    time.sleep(0.02)\n    for _ in range(20):")
        )
        (root / "client.py").write_text("import time\n" + client)
    return root


def shoal(fed: Federation, cwd: Path, *args: object) -> tuple[int, dict[str, Any], str]:
    """``shoal ARGS --format json`` in ``cwd``: its exit code, its JSON document and its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "shoal", *map(str, args), "--format", "json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=fed.cli.env(),
        timeout=120,
    )
    doc = json.loads(proc.stdout)  # every document, success or failure, is valid JSON
    assert isinstance(doc["success"], bool) and doc["success"] == (proc.returncode == 0), (doc, proc.stderr)
    return proc.returncode, doc, proc.stderr


def test_run_ls_stop(federation: Federation, tmp_path: Path) -> None:
    root = app(tmp_path, federation, slow=True)
    code, doc, _ = shoal(federation, root, "run", "--run-config", "num-rounds=100000")
    assert code == 0 and set(doc) == RUN_KEYS
    run_id = doc["run-id"]
    assert isinstance(run_id, int) and int(float(run_id)) == run_id  # survives a float64 parser
    assert json.loads(json.dumps(doc), parse_int=float)["run-id"] == float(run_id)
    assert (
        doc["fab-id"] == "local/quickstart-app"
        and doc["fab-version"] == "1.0.0"
        and len(doc["fab-hash"]) == 8
    )
    assert doc["fab-filename"] == f"local.quickstart-app.1-0-0.{doc['fab-hash']}.fab"

    deadline = time.monotonic() + 30
    while True:
        code, doc, _ = shoal(federation, root, "ls", "--run-id", run_id)
        (run,) = doc["runs"]
        if run["status"] == "running":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert set(run) == LS_KEYS and run["run-id"] == run_id and run["finished-at"] == "N/A"
    assert run["created-at"].endswith("Z") and len(run["created-at"]) == len("2026-01-01 00:00:00Z")
    assert len(run["elapsed"].split(":")) == 3

    code, doc, _ = shoal(federation, root, "ls")
    assert code == 0 and run_id in [r["run-id"] for r in doc["runs"]]

    code, doc, _ = shoal(federation, root, "stop", run_id)
    assert code == 0 and doc == {"success": True, "run-id": run_id}
    code, doc, _ = shoal(federation, root, "ls", "--run-id", run_id)
    assert doc["runs"][0]["status"] == "finished:stopped" and doc["runs"][0]["finished-at"] != "N/A"

    code, doc, _ = shoal(federation, root, "stop", run_id)
    assert code != 0 and doc["success"] is False and "error-message" in doc


def test_run_stream_to_completion(federation: Federation, tmp_path: Path) -> None:
    root = app(tmp_path, federation)
    code, doc, stderr = shoal(federation, root, "run", "--stream")
    assert code == 0 and doc["status"] == "finished:completed", stderr
    assert "round 3/3" in stderr


def test_run_stream_shows_a_diverged_loss_as_n_a(federation: Federation, tmp_path: Path) -> None:
    """The server sends a NaN metric as null; --stream formatted it as a number and crashed."""
    root = app(tmp_path, federation)
    client = (
        (root / "client.py").read_text().replace('metrics={"loss": loss}', 'metrics={"loss": float("nan")}')
    )
    (root / "client.py").write_text(client)
    code, doc, stderr = shoal(federation, root, "run", "--stream")
    assert code == 0 and doc["status"] == "finished:completed", stderr
    assert "round 3/3 loss=n/a" in stderr, stderr


def test_plain_jobs_appear_with_fab_values(federation: Federation, tmp_path: Path) -> None:
    code, submitted = federation.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait")
    root = app(tmp_path, federation)
    code, doc, _ = shoal(federation, root, "ls", "--run-id", submitted["data"]["job_id"])
    (run,) = doc["runs"]
    assert run["fab-id"] == "job/hello-numpy" and run["fab-version"] == "0.0.0" and len(run["fab-hash"]) == 8


def test_ls_and_stop_work_outside_an_app_project(federation: Federation, tmp_path: Path) -> None:
    """A folder with no app project (or a library's own pyproject.toml) uses the active kit;
    naming a federation there still needs the project."""
    code, submitted = federation.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait")
    run_id = submitted["data"]["job_id"]
    library = tmp_path / "library"
    library.mkdir()
    (library / "pyproject.toml").write_text('[project]\nname = "lib"\nversion = "1"\n')
    for cwd in (tmp_path, library):
        code, doc, _ = shoal(federation, cwd, "ls", "--run-id", run_id)
        assert code == 0 and [r["run-id"] for r in doc["runs"]] == [int(run_id)], doc
    code, doc, _ = shoal(federation, library, "stop", run_id)
    assert code == 1 and doc["success"] is False  # it already finished: a clear refusal, still JSON
    code, doc, _ = shoal(federation, library, "ls", ".", "prod")
    assert code == 1 and "pyproject.toml" in doc["error-message"]


def test_failures_are_json_with_non_zero_exit(federation: Federation, tmp_path: Path) -> None:
    root = app(tmp_path, federation)
    code, doc, _ = shoal(federation, root, "run", ".", "missing")
    assert (
        code == 1
        and "There is no `[missing]` federation" in doc["error-message"]
        and "local" in doc["error-message"]
    )
    code, doc, _ = shoal(federation, root, "ls", "--run-id", "123")
    assert code == 1 and "123" in doc["error-message"]
    code, doc, _ = shoal(federation, tmp_path, "run", tmp_path / "nowhere")
    assert code == 1 and "pyproject.toml" in doc["error-message"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pyproject.toml").write_text("[project\n")
    code, doc, _ = shoal(federation, bad, "run")
    assert code == 1 and "not valid" in doc["error-message"]
    dead = root / "pyproject.toml"
    dead.write_text(
        dead.read_text().replace(
            f'startup-kit = "{federation.kits / "admin@example.com"}"',
            f'startup-kit = "{_dead_kit(federation, tmp_path)}"',
        )
    )
    code, doc, _ = shoal(federation, root, "ls")
    assert code == 2 and "connect" in doc["error-message"].lower()


def _dead_kit(federation: Federation, tmp_path: Path) -> Path:
    import socket

    kit = tmp_path / "dead-kit"
    shutil.copytree(federation.kits / "admin@example.com", kit)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = kit / "startup" / "fed_admin.json"
    data = json.loads(cfg.read_text())
    data["server"]["port"] = port
    cfg.write_text(json.dumps(data))
    return kit


def test_new_scaffolds_a_project_that_builds(tmp_path: Path, federation: Federation) -> None:
    code, doc, _ = shoal(federation, tmp_path, "new", "myapp")
    assert code == 0 and (tmp_path / "myapp" / "pyproject.toml").exists()
    code, doc, _ = shoal(federation, tmp_path, "build", "myapp")
    assert code == 0 and (tmp_path / doc["fab-filename"]).exists() and doc["fab-id"] == "local/myapp"


@pytest.mark.parametrize("name", ["..", ".", "...", ".hidden", "-x", "trailing-", "a/b", "", "my.app"])
def test_new_refuses_what_is_not_a_project_name(tmp_path: Path, federation: Federation, name: str) -> None:
    """Names packaging would refuse (PEP 508) are refused before anything is created."""
    code, doc, _ = shoal(federation, tmp_path, "new", "--", name)
    assert code == 4 and doc["success"] is False and "not a project name" in str(doc["error-message"]), doc
    assert list(tmp_path.iterdir()) == []


def _runs(federation: Federation) -> int:
    code, doc = federation.cli.json("job", "list")
    assert code == 0, doc
    return len(doc["data"])


def test_run_config_takes_flowers_forms(federation: Federation, tmp_path: Path) -> None:
    """Flower's documented forms: several space-separated pairs in one argument, -c, a .toml
    file. The space-separated form became one key holding "2 min-clients=2": success, then
    a run that failed."""
    root = app(tmp_path, federation)
    code, doc, stderr = shoal(federation, root, "run", "-c", "num-rounds=2 min-clients=2", "--stream")
    assert code == 0 and doc["status"] == "finished:completed", (doc, stderr)
    assert "round 2/2" in stderr and "round 3/" not in stderr
    settings = tmp_path / "settings.toml"
    settings.write_text("num-rounds = 1\n")
    code, doc, stderr = shoal(federation, root, "run", "--run-config", settings, "--stream")
    assert code == 0 and "round 1/1" in stderr and "round 2/" not in stderr, (doc, stderr)
    # a quoted TOML string may hold spaces: one value, checked as the key's setting
    code, doc, _ = shoal(federation, root, "run", "-c", "num-rounds=1 min-clients='two sites'")
    assert code == 4 and "got a string ('two sites')" in doc["error-message"], doc


@pytest.mark.parametrize(
    "config", ["num-rounds", "num-rounds=2 oops", "num-rounds=2 min-clients", "=2", "missing.toml"]
)
def test_a_run_config_that_is_not_pairs_is_refused_before_anything_is_sent(
    federation: Federation, tmp_path: Path, config: str
) -> None:
    root = app(tmp_path, federation)
    before = _runs(federation)
    code, doc, _ = shoal(federation, root, "run", "-c", config)
    assert code == 4 and doc["success"] is False and "--run-config" in doc["error-message"], doc
    assert _runs(federation) == before


def test_format_default_and_upper_case_json(federation: Federation, tmp_path: Path) -> None:
    """Flower calls the human view --format default, and reads JSON in any case."""
    root = app(tmp_path, federation)
    env = federation.cli.env()
    code, doc, _ = shoal(federation, root, "run")  # a run of its own to list, whatever ran before
    assert code == 0, doc

    def ls(fmt: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shoal", "ls", "--format", fmt],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    for fmt in ("default", "DEFAULT"):
        human = ls(fmt)
        assert human.returncode == 0 and "RUN ID" in human.stdout, human.stderr
    for fmt in ("JSON", "Json"):
        proc = ls(fmt)
        assert proc.returncode == 0 and json.loads(proc.stdout)["success"] is True, proc.stderr
    code, doc = federation.cli.json("job", "list")  # the job surface takes the same names
    proc = federation.cli.run("job", "list", "--format", "JSON")
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "ok"


def test_a_streamed_run_that_fails_keeps_its_id_and_status(federation: Federation, tmp_path: Path) -> None:
    """The command worked but the run failed: the one document has the run id and its final
    status, so a script can tell it from a command that failed (no run-id)."""
    root = app(tmp_path, federation)
    (root / "client.py").write_text("raise RuntimeError('no data here')\n")
    code, doc, stderr = shoal(federation, root, "run", "--stream")
    assert code == 1 and doc["success"] is False, (doc, stderr)
    assert isinstance(doc["run-id"], int) and doc["status"] == "finished:failed", doc
    assert "no data here" in doc["status-details"] and doc["fab-id"] == "local/quickstart-app"
    code, listed, _ = shoal(federation, root, "ls", "--run-id", str(doc["run-id"]))
    assert code == 0 and listed["runs"][0]["status"] == "finished:failed"
    code, doc, _ = shoal(federation, root, "run", ".", "missing")  # the command failed: no run
    assert code == 1 and "run-id" not in doc


def test_a_streamed_run_that_is_stopped_keeps_its_id_and_status(
    federation: Federation, tmp_path: Path
) -> None:
    root = app(tmp_path, federation, slow=True)
    streamed = subprocess.Popen(
        [sys.executable, "-m", "shoal", "run", "-c", "num-rounds=100000", "--stream", "--format", "json"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=federation.cli.env(),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            code, doc, _ = shoal(federation, root, "ls")
            running = [
                r for r in doc["runs"] if r["status"] == "running" and r["fab-id"] == "local/quickstart-app"
            ]
            if running:
                break
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        code, _, _ = shoal(federation, root, "stop", str(running[-1]["run-id"]))
        assert code == 0
        out, err = streamed.communicate(timeout=60)
    finally:
        streamed.kill()
    doc = json.loads(out)
    assert streamed.returncode == 1 and doc["success"] is False, (doc, err)
    assert doc["run-id"] == running[-1]["run-id"] and doc["status"] == "finished:stopped"


def test_ls_and_stop_speak_of_runs_and_take_no_study_hints(federation: Federation, tmp_path: Path) -> None:
    """They answered with the job family's words (FINISHED_OK, 'Job ... does not exist in
    study') and sent users to --study, which ls and stop refuse."""
    code, submitted = federation.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait")
    run_id = submitted["data"]["job_id"]
    code, doc, _ = shoal(federation, tmp_path, "stop", run_id)
    assert code == 1 and doc["error-message"].startswith(f"Run {run_id} is already finished.")
    assert "finished:completed" in doc["error-message"] and "FINISHED_OK" not in doc["error-message"]
    unknown = str(int(run_id) + 1)
    for argv in [("stop", unknown), ("ls", "--run-id", unknown)]:
        code, doc, _ = shoal(federation, tmp_path, *argv)
        assert code == 1 and doc["error-message"].startswith(f"Run {unknown} not found."), doc
        assert "--study" not in doc["error-message"]
    missing: list[tuple[object, ...]] = [("ls", tmp_path / "nowhere"), ("stop", run_id, tmp_path / "nowhere")]
    for words in missing:
        code, doc, _ = shoal(federation, tmp_path, *words)  # as 'shoal run nowhere' fails
        assert code == 1 and "no pyproject.toml" in doc["error-message"], doc


def test_a_bundle_lists_its_files_as_flower_does(federation: Federation, tmp_path: Path) -> None:
    """.info/CONTENT, the last entry: path,sha256,size in bits for every file, pyproject.toml
    as shipped included, joined with newlines (Flower 1.41's layout)."""
    import hashlib
    import zipfile

    root = app(tmp_path, federation)
    code, doc, _ = shoal(federation, tmp_path, "build", root)
    assert code == 0, doc
    with zipfile.ZipFile(tmp_path / doc["fab-filename"]) as fab:
        names = fab.namelist()
        assert names[-1] == ".info/CONTENT"
        listing = fab.read(".info/CONTENT").decode()
        files = [n for n in names if n not in (".info/CONTENT", "MANIFEST.json")]
        lines = listing.split("\n")
        assert not listing.endswith("\n") and [line.split(",")[0] for line in lines] == files
        for line in lines:
            path, digest, bits = line.split(",")
            data = fab.read(path)
            assert digest == hashlib.sha256(data).hexdigest() and int(bits) == 8 * len(data)


@pytest.mark.parametrize("key", ["name", "publisher"])
def test_a_dotted_app_name_is_refused(federation: Federation, tmp_path: Path, key: str) -> None:
    """publisher.name.1-0-0.hash8.fab: a dot in a name makes the file name ambiguous."""
    root = app(tmp_path, federation)
    text = (root / "pyproject.toml").read_text()
    old = 'name = "quickstart-app"' if key == "name" else 'publisher = "local"'
    (root / "pyproject.toml").write_text(text.replace(old, old.replace('"', '"my.', 1)))
    for command in ("build", "run"):
        code, doc, _ = shoal(federation, tmp_path, command, root)
        assert code == 1 and "no '.'" in doc["error-message"], doc
