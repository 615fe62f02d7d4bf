"""The dashboard's locks, request by request (shoal.dashboard.guard); the browser tests are in
tests/e2e/test_dashboard.py."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from shoal.dashboard.guard import Guard
from shoal.errors import ShoalError


def session_of(guard: Guard) -> tuple[str, str]:
    """(cookie header, CSRF token) of a session opened with the guard's token."""
    assert guard.token is not None
    session = guard.redeem(guard.token)
    assert session is not None
    cookie = f"{guard.cookie}={session}"
    csrf = guard.csrf_of(
        make_mocked_request("GET", "/", headers={"Host": "127.0.0.1:8750", "Cookie": cookie})
    )
    assert csrf is not None
    return cookie, csrf


def refusal(guard: Guard, method: str, headers: dict[str, str]) -> str | None:
    try:
        guard.check(make_mocked_request(method, "/api/jobs/1/abort", headers=headers))
    except ShoalError as err:
        return err.code
    return None


def test_the_token_opens_one_session_once_and_nothing_else_does() -> None:
    guard = Guard()
    assert guard.bind("127.0.0.1", 8750) == "http://127.0.0.1:8750"
    token = guard.token
    assert token is not None
    wrong = ("y" if token[0] == "x" else "x") + token[1:]  # one character off, never the token itself
    assert guard.redeem(wrong) is None
    assert guard.redeem(token) is not None
    assert guard.redeem(token) is None and guard.token is None
    assert refusal(guard, "GET", {"Host": "127.0.0.1:8750"}) == "DASHBOARD_SESSION_REQUIRED"
    forged = {"Host": "127.0.0.1:8750", "Cookie": f"{guard.cookie}=guessed"}
    assert refusal(guard, "GET", forged) == "DASHBOARD_SESSION_REQUIRED"


@pytest.mark.parametrize("host", ["127.0.0.1:8750", "localhost:8750", "[::1]:8750"])
def test_a_loopback_dashboard_answers_to_each_loopback_name_with_its_own_origin(host: str) -> None:
    guard = Guard()
    guard.bind("127.0.0.1", 8750)
    cookie, csrf = session_of(guard)
    good = {"Host": host, "Cookie": cookie, "Origin": f"http://{host}", "X-Shoal-CSRF": csrf}
    assert refusal(guard, "POST", good) is None
    assert (
        refusal(guard, "POST", {**good, "Origin": "http://127.0.0.1:9999"}) == "DASHBOARD_CROSS_SITE_REFUSED"
    )
    assert refusal(guard, "POST", {**good, "Host": "evil.example:8750"}) == "DASHBOARD_CROSS_SITE_REFUSED"
    assert refusal(guard, "DELETE", {**good, "X-Shoal-CSRF": csrf + "x"}) == "DASHBOARD_CROSS_SITE_REFUSED"
    assert refusal(guard, "GET", {"Host": host, "Cookie": cookie}) is None, "reading needs only the session"


def test_a_wildcard_bind_takes_any_name_but_still_the_session_and_the_requests_own_origin() -> None:
    guard = Guard()
    assert guard.bind("0.0.0.0", 8750).endswith(":8750")
    cookie, csrf = session_of(guard)
    host = "dashboard.lab.example:8750"
    good = {"Host": host, "Cookie": cookie, "Origin": f"http://{host}", "X-Shoal-CSRF": csrf}
    assert refusal(guard, "POST", good) is None
    assert (
        refusal(guard, "POST", {**good, "Origin": "http://other.example:8750"})
        == "DASHBOARD_CROSS_SITE_REFUSED"
    )
    assert refusal(guard, "POST", {"Host": host, "Origin": f"http://{host}"}) == "DASHBOARD_SESSION_REQUIRED"


def test_two_dashboards_on_one_machine_keep_their_sessions_apart() -> None:
    first, second = Guard(), Guard()
    first.bind("127.0.0.1", 8750)
    second.bind("127.0.0.1", 8751)
    assert first.cookie != second.cookie
