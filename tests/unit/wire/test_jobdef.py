"""Job-folder validation: each kind of bad job gets its own code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import ShoalError
from shoal.wire.jobdef import (
    JOB_NAME_RE,
    MAX_JSON_DEPTH,
    PLAIN_NAME_RE,
    SERVER_META_KEYS,
    check_min_clients,
    eligible_sites,
    load_job_definition,
)


def write_job(
    root: Path,
    meta: dict[str, Any] | None = None,
    *,
    apps: dict[str, tuple[bool, bool]] | None = None,
) -> Path:
    """A job folder; ``apps`` maps app -> (has server config, has client config)."""
    meta = meta if meta is not None else {"name": "hello", "min_clients": 2, "deploy_map": {"app": ["@ALL"]}}
    apps = apps if apps is not None else {"app": (True, True)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta))
    for app, (server, client) in apps.items():
        (root / app / "config").mkdir(parents=True)
        (root / app / "custom").mkdir()
        if server:
            (root / app / "config" / "config_fed_server.json").write_text('{"workflow": "fedavg"}')
        if client:
            (root / app / "config" / "config_fed_client.json").write_text('{"script": "train.py"}')
            (root / app / "custom" / "train.py").write_text("print('training')\n")
    return root


def code_of(root: Path) -> str:
    with pytest.raises(ShoalError) as err:
        load_job_definition(root)
    return str(err.value.code)


def test_all_sites_job(tmp_path: Path) -> None:
    job = load_job_definition(write_job(tmp_path / "j"))
    assert job.name == "hello" and job.min_clients == 2
    assert job.server_app == "app" and job.site_apps == {"app": "@ALL"}
    assert job.resource_spec == {} and job.deploy_map == {"app": ["@ALL"]}


def test_split_server_and_site_apps(tmp_path: Path) -> None:
    meta = {
        "name": "split job",
        "min_clients": 1,
        "deploy_map": {"srv": ["server"], "a": ["site-1", "site-2"], "b": ["site-3"]},
        "resource_spec": {"site-1": {"num_gpus": 1}},
        "submit_token": "must-go",
        "extra": True,
    }
    root = write_job(
        tmp_path / "j", meta, apps={"srv": (True, False), "a": (False, True), "b": (False, True)}
    )
    job = load_job_definition(root)
    assert job.server_app == "srv"
    assert job.site_apps == {"a": ["site-1", "site-2"], "b": ["site-3"]}
    assert job.resource_spec == {"site-1": {"num_gpus": 1}}
    assert "submit_token" not in job.meta and job.meta["extra"] is True


def test_missing_folder(tmp_path: Path) -> None:
    assert code_of(tmp_path / "nope") == "JOB_FOLDER_NOT_FOUND"


def test_missing_meta(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    assert code_of(tmp_path / "j") == "JOB_META_MISSING"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"str"', "\xff\xfe"])
def test_meta_not_an_object(tmp_path: Path, text: str) -> None:
    root = write_job(tmp_path / "j")
    (root / "meta.json").write_bytes(text.encode("latin-1"))
    assert code_of(root) == "JOB_META_INVALID"


def test_ten_megabyte_meta(tmp_path: Path) -> None:
    root = write_job(tmp_path / "j")
    (root / "meta.json").write_text(json.dumps({"name": "x", "pad": "a" * (10 * 2**20)}))
    with pytest.raises(ShoalError) as err:
        load_job_definition(root)
    assert err.value.code == "JOB_META_INVALID" and "limit" in str(err.value)


BASE: dict[str, Any] = {"name": "ok", "min_clients": 1, "deploy_map": {"app": ["@ALL"]}}


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"name": ""},
        {"name": "-starts-with-dash"},
        {"name": "a/b"},
        {"name": "x" * 129},
        {"name": 5},
        {"min_clients": 0},
        {"min_clients": "2"},
        {"min_clients": True},
        {"min_clients": 1.5},
        {"deploy_map": None},
        {"deploy_map": {}},
        {"deploy_map": []},
        {"deploy_map": {"app": "@ALL"}},
        {"deploy_map": {"app": []}},
        {"deploy_map": {"app": ["@ALL", "site-1"]}},
        {"deploy_map": {"../app": ["@ALL"]}},
        {"deploy_map": {"a/b": ["@ALL"]}},
        {"deploy_map": {"..": ["@ALL"]}},
        {"deploy_map": {"app": ["server", "site/1"]}},
        {"deploy_map": {"app": ["server", "site-1", "site-1"]}},
        {"deploy_map": {"app": ["site-1"]}},  # no server app
        {"deploy_map": {"app": ["server"]}},  # no site app
        {"deploy_map": {"app": ["server", "site-1"], "app2": ["server", "site-2"]}},  # two server apps
        {"deploy_map": {"app": ["server", "site-1"], "app2": ["site-1"]}},  # one site, two apps
        {"resource_spec": []},
    ],
)
def test_meta_invalid(tmp_path: Path, change: dict[str, Any]) -> None:
    meta = {**BASE, **change}
    if meta.get("name") is None:
        meta.pop("name")
    root = write_job(tmp_path / "j", meta, apps={"app": (True, True), "app2": (True, True)})
    assert code_of(root) == "JOB_META_INVALID"


def test_app_missing(tmp_path: Path) -> None:
    meta = {**BASE, "deploy_map": {"app": ["server"], "ghost": ["site-1"]}}
    assert code_of(write_job(tmp_path / "j", meta)) == "JOB_APP_MISSING"


def test_app_that_is_a_file(tmp_path: Path) -> None:
    root = write_job(tmp_path / "j", {**BASE, "deploy_map": {"app": ["server"], "f": ["site-1"]}})
    (root / "f").write_text("not a folder")
    assert code_of(root) == "JOB_APP_MISSING"


@pytest.mark.parametrize("apps", [{"app": (False, True)}, {"app": (True, False)}])
def test_config_missing(tmp_path: Path, apps: dict[str, tuple[bool, bool]]) -> None:
    assert code_of(write_job(tmp_path / "j", BASE, apps=apps)) == "JOB_CONFIG_INVALID"


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("config_fed_server.json", "{bad"),
        ("config_fed_server.json", "[]"),
        ("config_fed_server.json", '{"rounds": 3}'),
        ("config_fed_client.json", '{"script": ""}'),
        ("config_fed_client.json", '{"script": 7}'),
    ],
)
def test_config_invalid(tmp_path: Path, file: str, text: str) -> None:
    root = write_job(tmp_path / "j", BASE)
    (root / "app" / "config" / file).write_text(text)
    assert code_of(root) == "JOB_CONFIG_INVALID"


def test_min_clients_all_sites(tmp_path: Path) -> None:
    job = load_job_definition(write_job(tmp_path / "j", {**BASE, "min_clients": 3}))
    check_min_clients(job, ["site-1", "site-2", "site-3"])
    with pytest.raises(ShoalError) as err:
        check_min_clients(job, ["site-1", "site-2"])
    assert err.value.code == "MIN_CLIENTS_UNSATISFIABLE"


def test_min_clients_listed_sites_that_exist(tmp_path: Path) -> None:
    meta = {**BASE, "min_clients": 2, "deploy_map": {"app": ["server", "site-1", "site-9"]}}
    job = load_job_definition(write_job(tmp_path / "j", meta))
    assert eligible_sites(job, ["site-1", "site-2"]) == ["site-1"]
    with pytest.raises(ShoalError) as err:
        check_min_clients(job, ["site-1", "site-2", "site-3"])
    assert err.value.code == "MIN_CLIENTS_UNSATISFIABLE"
    check_min_clients(job, ["site-1", "site-9"])


@pytest.mark.parametrize(
    ("client_config", "says"),
    [
        ({"script": "missing.py"}, "no training script 'missing.py'"),
        ({"script": "../meta.json"}, "no training script '../meta.json'"),
        ({"module": "my_trainer"}, "'module' names a built-in client"),
        ({"script": "train.py", "args": "--name 'unclosed"}, "quotation"),
        ({"script": "train.py", "args": 5}, "'args' must be a string or a list"),
    ],
)
def test_a_site_app_that_could_not_start_is_refused_at_submit(
    tmp_path: Path, client_config: dict[str, object], says: str
) -> None:
    """Found before the job is stored, not after it is dispatched to the sites."""
    root = write_job(tmp_path / "j")
    (root / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client_config))
    with pytest.raises(ShoalError) as err:
        load_job_definition(root)
    assert err.value.code == "JOB_CONFIG_INVALID" and says in err.value.message, err.value.message


def message_of(root: Path, code: str) -> str:
    with pytest.raises(ShoalError) as err:
        load_job_definition(root)
    assert err.value.code == code, err.value.message
    return err.value.message


# meta.json and both configs are read by one strict reader; each bad value in each file
STRICT_JSON_FILES = [
    ("meta.json", "JOB_META_INVALID"),
    ("app/config/config_fed_server.json", "JOB_CONFIG_INVALID"),
    ("app/config/config_fed_client.json", "JOB_CONFIG_INVALID"),
]


def _with_value(root: Path, file: str, value_text: str) -> None:
    """Add ``"x": <value_text>`` to one of the job's JSON files, written as raw text."""
    path = root / file
    text = path.read_text().rstrip()
    assert text.endswith("}")
    path.write_text(text[:-1] + f', "x": {value_text}}}')


@pytest.mark.parametrize(("file", "code"), STRICT_JSON_FILES)
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_numbers_strict_json_cannot_carry_are_refused(
    tmp_path: Path, file: str, code: str, value: str
) -> None:
    """They used to pass, then fail inside the store (ValueError: out of range float values)."""
    root = write_job(tmp_path / "j")
    _with_value(root, file, value)
    assert value.lstrip("-") in message_of(root, code)


@pytest.mark.parametrize(("file", "code"), STRICT_JSON_FILES)
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, file: str, code: str) -> None:
    root = write_job(tmp_path / "j")
    _with_value(root, file, "[" * 100_000 + "]" * 100_000)  # past the parser's own recursion limit
    assert f"{MAX_JSON_DEPTH} levels deep" in message_of(root, code)


def test_nesting_up_to_the_limit_is_accepted(tmp_path: Path) -> None:
    root = write_job(tmp_path / "j")
    inner = MAX_JSON_DEPTH - 1  # meta.json's own object is the first level
    _with_value(root, "meta.json", "[" * inner + "]" * inner)
    assert load_job_definition(root).name == "hello"
    _with_value(root, "meta.json", "[" * (inner + 1) + "]" * (inner + 1))
    assert "levels deep" in message_of(root, "JOB_META_INVALID")


@pytest.mark.parametrize("key", sorted(SERVER_META_KEYS))
def test_fields_the_server_sets_are_refused_in_meta(tmp_path: Path, key: str) -> None:
    """``"progress": "oops"`` made ``job meta``, ``wait`` and ``monitor`` fail inside the server."""
    root = write_job(tmp_path / "j", {**BASE, key: "oops"})
    assert repr(key) in message_of(root, "JOB_META_INVALID")


def test_fab_must_be_what_shoal_run_writes(tmp_path: Path) -> None:
    fab = {"id": "x/app", "name": "app", "version": "1.0.0", "hash": "abcd1234", "filename": "a.fab"}
    assert load_job_definition(write_job(tmp_path / "ok", {**BASE, "fab": fab})).meta["fab"] == fab
    for bad in ("oops", ["x"], {"id": 3}, {**fab, "version": None}):
        assert "'fab'" in message_of(
            write_job(tmp_path / f"bad{len(str(bad))}", {**BASE, "fab": bad}), "JOB_META_INVALID"
        )


@pytest.mark.parametrize("pattern", [JOB_NAME_RE, PLAIN_NAME_RE])
def test_name_patterns_do_not_let_a_final_newline_through(pattern: Any) -> None:
    """``$`` matches before a final "\\n": the patterns must hold however they are called."""
    assert pattern.match("site-1") and pattern.fullmatch("site-1")
    assert pattern.match("site-1\n") is None and pattern.fullmatch("site-1\n") is None


@pytest.mark.parametrize(
    "change",
    [
        {"name": "hello\n"},
        {"deploy_map": {"app\n": ["@ALL"]}},
        {"deploy_map": {"app": ["server", "site-1\n"]}},
    ],
)
def test_a_trailing_newline_in_a_name_is_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    assert code_of(write_job(tmp_path / "j", {**BASE, **change})) == "JOB_META_INVALID"
