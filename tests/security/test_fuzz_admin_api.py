"""Fuzz the admin API with generated requests: no 500, no crash, every error a catalogued code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api.http import Connection
from shoal.api.tls import client_context
from shoal.errors import CATALOGUE
from tests.e2e.conftest import Federation

pytestmark = pytest.mark.e2e

ROUTES = [
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("DELETE", "/api/v1/jobs/{id}"),
    ("GET", "/api/v1/jobs/{id}/wait"),
    ("GET", "/api/v1/jobs/{id}/events"),
    ("GET", "/api/v1/jobs/{id}/result"),
    ("GET", "/api/v1/jobs/{id}/stats"),
    ("GET", "/api/v1/jobs/{id}/series"),
    ("GET", "/api/v1/jobs/{id}/rights"),
    ("GET", "/api/v1/jobs/{id}/logs"),
    ("POST", "/api/v1/jobs/{id}/abort"),
    ("POST", "/api/v1/jobs/{id}/clone"),
    ("POST", "/api/v1/jobs/{id}/log-config"),
    ("GET", "/api/v1/system/status"),
    ("PUT", "/api/v1/nowhere"),
]
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # not encodable as UTF-8: no client can send them
text = st.text(st.characters(blacklist_categories=SURROGATES), max_size=40)
ids = st.one_of(st.integers(min_value=-5, max_value=2**60).map(str), text, st.just("0"))
queries = st.dictionaries(
    st.sampled_from(["study", "timeout", "since", "site", "max", "name", "id", "submit_token", "reverse"]),
    st.one_of(text, st.integers(-10, 10**6).map(str), st.just("0.01")),
    max_size=4,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.dictionaries(text, st.one_of(text, st.integers()), max_size=3).map(lambda d: json.dumps(d).encode()),
)


def connection(fed: Federation) -> Connection:
    ctx = client_context(str(fed.kits / "admin@example.com"))
    poc = json.loads((fed.workspace / "poc.json").read_text())
    return Connection(poc["server"]["host"], int(poc["server"]["port"]), ctx, timeout=10)


@pytest.fixture(scope="module")
def conn(federation: Federation) -> Iterator[Connection]:
    opened = connection(federation)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def real_job(federation: Federation) -> str:
    """A job that exists, so generated requests also reach the handlers' own parsing."""
    from tests.conftest import EXAMPLES

    code, doc = federation.cli.json(
        "job", "submit", "-j", EXAMPLES / "hello-numpy", "--wait", "--timeout", "120"
    )
    assert code == 0, doc
    return str(doc["data"]["job_id"])


@pytest.mark.parametrize("job_id", ["\u00b9", "\u0663", "1" * 40, "-1", "0x10", " 7"])
def test_ids_that_are_digits_but_not_numbers(conn: Connection, job_id: str) -> None:
    """Found by the fuzzer: '¹' is a digit to str.isdigit() but not a number to int()."""
    import urllib.parse

    for template in ("/api/v1/jobs/{id}", "/api/v1/jobs/{id}/events", "/api/v1/jobs/{id}/stats"):
        resp = conn.request("GET", template.replace("{id}", urllib.parse.quote(job_id, safe="")))
        raw = resp.read()
        assert resp.status < 500, (template, job_id, raw[:300])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_admin_api_never_fails_with_500(conn: Connection, real_job: str, data: st.DataObject) -> None:
    import urllib.parse

    method, template = data.draw(st.sampled_from(ROUTES))
    job_id = data.draw(st.one_of(ids, st.just(real_job)))
    query = data.draw(queries)
    body = data.draw(bodies)
    if "timeout" in query:
        query["timeout"] = "0.01"  # keep long polls short
    path = template.replace("{id}", urllib.parse.quote(job_id, safe=""))
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        resp = conn.request(method, target, body=body if method != "GET" else None)
        raw = resp.read()
    except (ConnectionError, OSError):
        conn.close()
        resp = conn.request(method, target, body=body if method != "GET" else None)
        raw = resp.read()
    assert resp.status < 500, (method, target, raw[:300])
    if resp.status >= 400:
        doc = json.loads(raw)
        assert doc["error_code"] in CATALOGUE, doc


def test_fuzz_left_the_store_consistent(federation: Federation, tmp_path: Path) -> None:
    code, doc = federation.cli.json("job", "list")
    assert code == 0 and isinstance(doc["data"], list)


def test_a_real_jobs_id_in_other_digits_is_not_that_job(conn: Connection, real_job: str) -> None:
    """Arabic-Indic digits are decimal to str.isdecimal() and int() alike: the id they spell
    must not name the job (ids are ASCII digits everywhere else)."""
    import urllib.parse

    other = real_job.translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    resp = conn.request("GET", "/api/v1/jobs/" + urllib.parse.quote(other, safe=""))
    assert resp.status == 404 and json.loads(resp.read())["error_code"] == "JOB_NOT_FOUND"
