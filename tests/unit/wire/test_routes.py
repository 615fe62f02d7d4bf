"""Routes and the rules both sides check are defined once (shoal.wire.routes, shoal.wire.rules):
the server registers exactly the paths the module lists, and no other module spells a path or
a rule of its own."""

from __future__ import annotations

import ast

import pytest
from tests.conftest import REPO

from shoal.server import admin_manage, admin_observe, admin_routes, admin_system, metrics, site_routes
from shoal.wire import routes, rules

ROUTE_TABLES = (admin_routes, admin_manage, admin_observe, admin_system, site_routes, metrics)


def _templates() -> set[str]:
    return {v for k, v in vars(routes).items() if k.isupper() and isinstance(v, str) and v.startswith("/")}


def test_the_server_serves_exactly_the_paths_shoal_wire_routes_lists() -> None:
    served = {route.path for table in ROUTE_TABLES for route in table.routes()}
    assert served == _templates()


def test_no_other_module_spells_a_path_of_the_api() -> None:
    """A literal "/api/v1..." or "/site/v1..." outside shoal.wire.routes is a second definition."""
    spelled = []
    for path in (REPO / "src" / "shoal").rglob("*.py"):
        if path.name == "routes.py" and path.parent.name == "wire":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith(("/api/v1/", "/site/v1/")):
                    spelled.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value}")
    assert spelled == []


def test_a_filled_path_quotes_every_value() -> None:
    assert routes.fill(routes.JOB_WAIT, job_id="12") == "/api/v1/jobs/12/wait"
    assert routes.fill(routes.SITE_ACTION, site="a/b c", action="restart") == (
        "/api/v1/system/sites/a%2Fb%20c/restart"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        ("0123", 123),
        ("9" * 16, int("9" * 16)),
        ("9" * 17, None),
        ("", None),
        ("١٢", None),
        ("1\n", None),
    ],
)
def test_a_job_id_is_one_to_sixteen_ascii_digits(raw: str, expected: int | None) -> None:
    assert rules.job_id_number(raw) == expected


@pytest.mark.parametrize(
    ("token", "ok"),
    [("retry-1:a.b_c", True), ("x" * 128, True), ("x" * 129, False), ("a\n", False), ("a b", False)],
)
def test_the_submit_token_rule(token: str, ok: bool) -> None:
    assert (rules.SUBMIT_TOKEN_RE.fullmatch(token) is not None) is ok
