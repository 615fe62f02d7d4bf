"""Roles and studies: every role × command against the policy file, and study isolation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.provision.ca import load_ca
from shoal.provision.kits import write_admin_kit
from shoal.security.policy import DEFAULT_POLICY
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Federation, start_federation, stop_federation
from tests.e2e.jobs import copy_hello, slow_job
from tests.federation import own_federation

pytestmark = pytest.mark.e2e

USERS = {
    "org_admin": ("orgadmin@example.org", "example.org"),
    "lead": ("lead@example.org", "example.org"),
    "member": ("member@example.org", "example.org"),
    "other_lead": ("lead@other.org", "other.org"),
}
#: A lead of another org that chose the same name as ``lead``: its kit is issued from the POC's
#: CA into a folder of its own (a POC keeps one kit folder per name).
TWIN = ("lead@example.org", "other.org")
STUDIES = {
    "cancer": {
        "sites": ["site-1"],
        "admins": [{"name": "lead@example.org", "org": "example.org"}],
        "orgs": [],
    },
    "other": {"sites": ["site-2"], "admins": [], "orgs": []},
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(tmp_path_factory.mktemp("authz"), studies=STUDIES)
    add_users(federation)
    try:
        yield federation
    finally:
        stop_federation(federation)


def add_users(federation: Federation) -> None:
    """USERS through ``poc add-user``, and TWIN issued from the POC's CA."""
    for key, (email, org) in USERS.items():
        role = "lead" if key == "other_lead" else key
        proc = federation.cli.run(
            "poc", "add-user", role, email, "--org", org, "--workspace", federation.workspace
        )
        assert proc.returncode == 0, proc.stderr
    admin = json.loads((federation.kits / "admin@example.com" / "startup" / "fed_admin.json").read_text())
    write_admin_kit(
        federation.workspace / "twin",
        load_ca(federation.workspace / "ca"),
        name=TWIN[0],
        org=TWIN[1],
        role="lead",
        project=admin["project"],
        port=admin["server"]["port"],
    )


def kit(fed: Federation, who: str) -> Path:
    if who == "twin":
        return fed.workspace / "twin" / TWIN[0]
    email = "admin@example.com" if who == "project_admin" else USERS[who][0]
    return fed.kits / email


def as_user(fed: Federation, who: str, *args: str | Path) -> tuple[int, Any]:
    """``shoal ARGS --format json`` with ``who``'s admin kit: (exit code, JSON envelope)."""
    return fed.cli.json(*args, "--startup-kit", kit(fed, who))


def submit_as(
    fed: Federation, who: str, folder: Path = EXAMPLES / "hello-numpy", study: str = "default"
) -> str:
    code, doc = as_user(fed, who, "job", "submit", "-j", folder, "--study", study)
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    code, doc = as_user(fed, "project_admin", "job", "wait", job_id, "--study", study, "--timeout", "120")
    assert code == 0, doc
    return job_id


def expected(
    policy: dict[str, dict[str, str]], role: str, right: str, owner: tuple[str, str], me: tuple[str, str]
) -> bool:
    """What the policy file allows; the submitter is name AND org (a same-named user of another
    org is someone else)."""
    cond = policy.get(role, {}).get(right, "none")
    return cond == "any" or (cond == "own" and owner == me) or (cond == "org" and owner[1] == me[1])


# command -> (right, arguments after the job id); allowed commands on a finished job answer with
# these codes (0 or a state error), denied ones with NOT_AUTHORIZED.
JOB_COMMANDS = {
    "meta": ("view", ()),
    "download": ("download_job", ("-o", "{tmp}", "--force")),
    "clone": ("clone_job", ()),
    "logs": ("view_logs", ()),
    "abort": ("manage_job", ("--force",)),
    "log-config": ("manage_job", ("DEBUG",)),
}


def test_role_by_command_matrix_follows_the_policy_file(fed: Federation, tmp_path: Path) -> None:
    policy = json.loads((fed.kits / "server" / "local" / "authorization.json").read_text())["roles"]
    owners = {
        "project_admin": ("admin@example.com", "example.org"),
        "lead": USERS["lead"],
        "other_lead": USERS["other_lead"],
    }
    jobs = {who: submit_as(fed, who) for who in owners}
    checked = 0
    for who in ("project_admin", "org_admin", "lead", "member", "other_lead", "twin"):
        role = "lead" if who in ("other_lead", "twin") else who
        me = TWIN if who == "twin" else owners.get(who) or USERS[who]
        for owner_key, job_id in jobs.items():
            for command, (right, extra) in JOB_COMMANDS.items():
                args = [a.format(tmp=tmp_path / f"{who}-{owner_key}") for a in extra]
                code, doc = as_user(fed, who, "job", command, job_id, *args)
                allowed = expected(policy, role, right, owners[owner_key], me)
                if allowed:
                    assert code in (0, 1) and doc.get("error_code") != "NOT_AUTHORIZED", (who, command, doc)
                else:
                    assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED", (who, command, owner_key, doc)
                checked += 1
        assert_listing_follows_the_policy(
            fed, policy, who, role, me, {job_id: owners[k] for k, job_id in jobs.items()}
        )
        code, doc = as_user(fed, who, "job", "submit", "-j", EXAMPLES / "hello-numpy")
        assert (code == 0) == expected(policy, role, "submit_job", ("", ""), me), (who, doc)
        if code != 0:
            assert doc["error_code"] == "NOT_AUTHORIZED" and code == 2
    assert checked == 6 * 3 * len(JOB_COMMANDS)


def assert_listing_follows_the_policy(
    fed: Federation,
    policy: dict[str, dict[str, str]],
    who: str,
    role: str,
    me: tuple[str, str],
    owners: dict[str, tuple[str, str]],
) -> None:
    """``job list`` is refused where ``view`` reaches no job; otherwise it shows exactly the
    jobs (of ``owners``: job id -> submitter) the caller may view."""
    code, doc = as_user(fed, who, "job", "list")
    assert (code == 0) == (policy.get(role, {}).get("view", "none") != "none"), (who, doc)
    if code == 0:
        listed = {row["job_id"] for row in doc["data"]}
        for job_id, owner in owners.items():
            assert (job_id in listed) == expected(policy, role, "view", owner, me), (who, job_id, owner)


def test_a_listing_shows_the_jobs_the_policy_lets_the_caller_view(tmp_path: Path) -> None:
    """With ``view`` set to ``own`` or ``org`` a listing is filtered (it was refused outright):
    a lead sees the jobs it submitted, not its same-named twin's of another org; a member sees
    its org's jobs."""
    policy = {**DEFAULT_POLICY, "lead": {**DEFAULT_POLICY["lead"], "view": "own"}, "member": {"view": "org"}}
    with own_federation(
        tmp_path / "fed", server_local={"authorization.json": {"roles": policy}}
    ) as federation:
        add_users(federation)
        owners: dict[str, tuple[str, str]] = {}
        for who, owner in (
            ("lead", USERS["lead"]),
            ("twin", TWIN),
            ("project_admin", ("admin@example.com", "example.org")),
        ):
            code, doc = as_user(federation, who, "job", "submit", "-j", EXAMPLES / "hello-numpy")
            assert code == 0, doc
            owners[str(doc["data"]["job_id"])] = owner
        for who, role, me in (
            ("lead", "lead", USERS["lead"]),
            ("twin", "lead", TWIN),
            ("member", "member", USERS["member"]),
            ("other_lead", "lead", USERS["other_lead"]),
        ):
            assert_listing_follows_the_policy(federation, policy, who, role, me, owners)
        code, doc = as_user(federation, "lead", "job", "list")
        assert [row["job_id"] for row in doc["data"]] == [
            job_id for job_id, owner in owners.items() if owner == USERS["lead"]
        ]
        for job_id in owners:
            as_user(federation, "project_admin", "job", "abort", job_id, "--force")


def test_a_same_named_user_of_another_org_shares_no_submit_token(fed: Federation) -> None:
    """Submit tokens are scoped by the submitter's name AND org: the twin neither finds the
    lead's job by its token nor is refused with SUBMIT_TOKEN_CONFLICT for other content."""
    one_site = copy_hello(fed.workspace / "twin-token-job")
    code, doc = as_user(fed, "lead", "job", "submit", "-j", EXAMPLES / "hello-numpy", "--submit-token", "t-1")
    assert code == 0, doc
    leads = str(doc["data"]["job_id"])
    code, doc = as_user(fed, "twin", "job", "list", "--submit-token", "t-1")
    assert code == 0 and doc["data"] == [], doc
    meta = json.loads((one_site / "meta.json").read_text())
    (one_site / "meta.json").write_text(json.dumps({**meta, "x": 1}))
    code, doc = as_user(fed, "twin", "job", "submit", "-j", one_site, "--submit-token", "t-1")
    assert code == 0 and str(doc["data"]["job_id"]) != leads, doc
    twins = str(doc["data"]["job_id"])
    for job_id in (leads, twins):
        code, doc = as_user(fed, "project_admin", "job", "wait", job_id, "--timeout", "120")
        assert code == 0, doc
    code, doc = as_user(fed, "lead", "job", "meta", twins)
    assert (doc["data"]["submitter_name"], doc["data"]["submitter_org"]) == TWIN


def test_study_isolation(fed: Federation, tmp_path: Path) -> None:
    one_site = copy_hello(tmp_path / "one-site")
    meta = json.loads((one_site / "meta.json").read_text())
    meta["min_clients"] = 1
    (one_site / "meta.json").write_text(json.dumps(meta))
    job_id = submit_as(fed, "lead", one_site, study="cancer")

    code, doc = as_user(fed, "lead", "job", "meta", job_id, "--study", "cancer")
    assert code == 0 and doc["data"]["study"] == "cancer"
    assert doc["data"]["progress"]["sites"] == {"site-1": "ended"}
    for study in ("default", "other"):
        code, doc = as_user(fed, "project_admin", "job", "meta", job_id, "--study", study)
        assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND" and study in doc["message"]
    code, doc = as_user(fed, "project_admin", "job", "list")
    default = {r["job_id"] for r in doc["data"]}
    assert job_id not in default
    # Other tests of this module run jobs in "cancer" too (in any order): the listing holds this
    # one, and nothing of the default study.
    code, doc = as_user(fed, "project_admin", "job", "list", "--study", "cancer")
    cancer = {r["job_id"] for r in doc["data"]}
    assert job_id in cancer and not cancer & default
    code, doc = as_user(fed, "member", "job", "list", "--study", "cancer")
    assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED"
    # the study lists lead@example.org of example.org: its same-named twin of other.org is not it
    code, doc = as_user(fed, "twin", "job", "list", "--study", "cancer")
    assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED", doc
    code, doc = as_user(fed, "project_admin", "job", "list", "--study", "nope")
    assert code == 1 and doc["error_code"] == "STUDY_NOT_FOUND"
    # a study with one site cannot take a job that needs two
    code, doc = as_user(fed, "lead", "job", "submit", "-j", EXAMPLES / "hello-numpy", "--study", "cancer")
    assert code == 1 and doc["error_code"] == "MIN_CLIENTS_UNSATISFIABLE"


def test_site_certificate_cannot_use_the_admin_api(fed: Federation, tmp_path: Path) -> None:
    site_kit = tmp_path / "site-as-admin"
    shutil.copytree(fed.kits / "site-1", site_kit)
    admin_json = json.loads((fed.kits / "admin@example.com" / "startup" / "fed_admin.json").read_text())
    (site_kit / "startup" / "fed_admin.json").write_text(json.dumps(admin_json))
    (site_kit / "startup" / "fed_site.json").unlink()
    code, doc = fed.cli.json("job", "list", "--startup-kit", site_kit)
    assert code == 2 and doc["error_code"] == "NOT_AUTHORIZED"


def test_pending_job_says_why_and_can_be_aborted_or_deleted(tmp_path: Path) -> None:
    """On a federation of its own: it stops site-2 for good (on the module's, every test after
    it would have depended on running first)."""
    with own_federation(tmp_path / "home") as fed:
        pids = json.loads((fed.workspace / "run" / "pids.json").read_text())
        os.killpg(pids["site-2"], signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:
            code, doc = fed.cli.json("system", "status")
            if [s["name"] for s in doc["data"]["sites"]] == ["site-1"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first = submit_pending(fed)
        code, doc = fed.cli.json("job", "meta", first)
        assert doc["data"]["status"] == "SUBMITTED"
        assert (
            "waiting for sites" in doc["data"]["status_reason"] and "site-1" in doc["data"]["status_reason"]
        )
        code, doc = fed.cli.json("job", "abort", first, "--force")
        assert (
            code == 0 and doc["data"]["status"] == "ABORTED" and "before it started" in doc["data"]["reason"]
        )
        second = submit_pending(fed)
        code, doc = fed.cli.json("job", "delete", second, "--force")
        assert code == 0
        code, doc = fed.cli.json("job", "meta", second)
        assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND"


def submit_pending(fed: Federation) -> str:
    code, doc = fed.cli.json("job", "submit", "-j", EXAMPLES / "hello-numpy")
    assert code == 0, doc
    return str(doc["data"]["job_id"])


def test_system_status_lists_only_the_running_jobs_of_the_callers_studies(
    fed: Federation, tmp_path: Path
) -> None:
    """It listed every running job of every study to any admin: now a study's running jobs
    show only to those who may use the study."""
    job = slow_job(tmp_path / "slow", rounds=2000, meta={"min_clients": 1})
    code, doc = as_user(fed, "lead", "job", "submit", "-j", job, "--study", "cancer")
    assert code == 0, doc
    job_id = str(doc["data"]["job_id"])
    try:
        deadline = time.monotonic() + 30
        while (
            as_user(fed, "lead", "job", "meta", job_id, "--study", "cancer")[1]["data"]["status"] != "RUNNING"
        ):
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.1)
        code, doc = as_user(fed, "lead", "system", "status")
        assert code == 0 and job_id in doc["data"]["server"]["running_jobs"], doc
        for outsider in ("other_lead", "twin", "member"):
            code, doc = as_user(fed, outsider, "system", "status")
            assert code == 0 and job_id not in doc["data"]["server"]["running_jobs"], (outsider, doc)
    finally:
        as_user(fed, "lead", "job", "abort", job_id, "--study", "cancer", "--force")
