"""``shoal dashboard`` in a real headless browser (Debian's chromium driven by Playwright),
against the session's real federation: the token, pushed curves, abort, roles, CSRF.

``SHOAL_DASHBOARD_SHOTS=DIR`` also saves the screenshots of docs/images/ there.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Federation
from tests.e2e.jobs import slow_job
from tests.e2e.test_job_family import submit, wait_for_status

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MEMBER = "dashboard-member@example.org"
SHOTS = os.environ.get("SHOAL_DASHBOARD_SHOTS")
#: A site script whose losses fall round by round, each site's on a curve of its own.
FALLING_CLIENT = """
import time
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
scale = 1.0 + 0.5 * int(flare.site_name().rsplit("-", 1)[-1])
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    r = model.current_round
    print("working on round", r, flush=True)
    time.sleep(DELAY)
    params = model.params or {"w": __import__("numpy").zeros(2)}
    flare.log_metric("step_loss", scale / (r + 1), step=r)
    flare.send(FLModel(params=params, metrics={"loss": 0.2 + scale / (r + 1)}, num_examples=1))
"""
#: A site script that writes markup where the page shows text: a log line and a metric name.
MARKUP_CLIENT = """
from shoal.fl import FLModel
from shoal.fl import client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if model is None:
        break
    print("<img src=x id=injected-log onerror=alert(1)>", flush=True)
    flare.log_metric("<b id=injected-metric>m</b>", 1.0, step=model.current_round)
    params = model.params or {"w": __import__("numpy").zeros(2)}
    flare.send(FLModel(params=params, metrics={"loss": 1.0}, num_examples=1))
"""


@dataclass
class Dashboard:
    url: str  # with its one-time token
    proc: subprocess.Popen[str]

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]


def start_dashboard(fed: Federation, kit: Path) -> Dashboard:
    """``shoal dashboard --port 0`` as a user starts it; its address from its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "dashboard", "--port", "0", "--startup-kit", str(kit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=fed.cli.env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:") and "/?token=" in line, (
        line,
        proc.stderr and proc.stderr.read(),
    )
    return Dashboard(line, proc)


def stop_dashboard(dash: Dashboard) -> None:
    dash.proc.send_signal(signal.SIGTERM)
    dash.proc.communicate(timeout=15)  # waits, and closes the pipes its address was read from
    assert dash.proc.returncode == 0


@pytest.fixture(scope="module")
def admin_dash(federation: Federation) -> Iterator[Dashboard]:
    dash = start_dashboard(federation, federation.kits / "admin@example.com")
    yield dash
    stop_dashboard(dash)


@pytest.fixture(scope="module")
def member_dash(federation: Federation) -> Iterator[Dashboard]:
    """A dashboard of a ``member`` (the view right only), a user added to the POC as
    ``poc add-user`` adds one."""
    added = federation.cli.run(
        "poc",
        "add-user",
        "member",
        MEMBER,
        "--org",
        "example.org",
        "--force",
        "--workspace",
        federation.workspace,
    )
    assert added.returncode == 0, added.stderr
    dash = start_dashboard(federation, federation.kits / MEMBER)
    yield dash
    stop_dashboard(dash)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def admin_session(browser: Any, admin_dash: Dashboard) -> Iterator[Any]:
    """The browser that opened the admin's dashboard with its token (it works once)."""
    page = logged_in(browser, admin_dash)
    yield page.context
    page.context.close()


@pytest.fixture(scope="module")
def member_session(browser: Any, member_dash: Dashboard) -> Iterator[Any]:
    page = logged_in(browser, member_dash)
    yield page.context
    page.context.close()


def open_page(session: Any, dash: Dashboard, where: str = "") -> Any:
    """A new tab of a logged-in browser, on ``where`` (a view's #/... address)."""
    page = session.new_page()
    page.goto(f"{dash.base}/{where}")
    return page


def logged_in(browser: Any, dash: Dashboard) -> Any:
    """A new browser context that opened the dashboard's address with its token: the page."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    response = page.goto(dash.url)
    assert response is not None and response.status == 200
    assert page.url == dash.base + "/", "the token is taken out of the address"
    page.wait_for_selector("#jobs")
    return page


def text_once_drawn(page: Any, selector: str) -> str:
    """The text of ``selector`` once the page's script has filled it: views are drawn after the
    page loads (from /api/session and the event streams), so an empty read means "not yet"."""
    page.wait_for_function(
        "sel => ((document.querySelector(sel) || {}).innerText || '').trim() !== ''",
        arg=selector,
        timeout=60_000,
    )
    text: str = page.inner_text(selector)
    return text


def token_of(dash: Dashboard) -> str:
    return dash.url.split("token=", 1)[1]


def session_csrf(page: Any) -> str:
    csrf: str = page.evaluate("fetch('/api/session').then(r => r.json()).then(s => s.csrf)")
    return csrf


def shot(page: Any, name: str) -> None:
    """The page as docs/images/ shows it (with SHOAL_DASHBOARD_SHOTS): as short as its content,
    in 64 colours, so the pictures stay small in the repository."""
    if not SHOTS:
        return
    from PIL import Image

    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 200})
    target = Path(SHOTS) / name
    page.screenshot(path=str(target), full_page=True)
    with Image.open(target) as image:
        image.convert("RGB").quantize(64).save(target, optimize=True)


def raw_request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_the_page_opens_with_its_token_once_and_nothing_opens_without(
    browser: Any, federation: Federation
) -> None:
    dash = start_dashboard(federation, federation.kits / "admin@example.com")
    try:
        stranger = browser.new_context()
        page = stranger.new_page()
        for path in ("/", "/api/session", "/events/jobs", "/static/dashboard.js", "/?token=wrong"):
            response = page.goto(dash.base + path)
            assert response is not None and response.status == 401, path
            assert response.json()["error_code"] == "DASHBOARD_SESSION_REQUIRED", path
        page = logged_in(browser, dash)
        cookie = next(c for c in page.context.cookies() if c["name"].startswith("shoal_dashboard_"))
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == "", "the page's script cannot read the session"
        assert "admin@example.com" in text_once_drawn(page, "#who")
        response = page.goto(dash.base + "/")
        assert response is not None and response.status == 200, "the session holds without the token"
        headers = response.headers
        assert (
            "script-src 'self'" in headers["content-security-policy"]
            and "unsafe" not in headers["content-security-policy"]
        )
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        again = stranger.new_page().goto(dash.url)
        assert again is not None and again.status == 401, "the token works once"
        assert again.json()["error_code"] == "DASHBOARD_SESSION_REQUIRED"
        headers = {"Cookie": f"{cookie['name']}={cookie['value']}", "Host": "attacker.example"}
        status, body = raw_request(dash.base + "/api/session", headers=headers)
        assert status == 403 and body["error_code"] == "DASHBOARD_CROSS_SITE_REFUSED", "a rebound DNS name"
        stranger.close()
        page.context.close()
    finally:
        stop_dashboard(dash)


def test_a_running_jobs_curves_gain_a_point_each_round_pushed_to_the_page(
    admin_session: Any, admin_dash: Dashboard, federation: Federation, tmp_path: Path
) -> None:
    rounds = 5
    folder = slow_job(tmp_path / "curves", rounds=rounds)
    (folder / "app" / "custom" / "client.py").write_text(FALLING_CLIENT.replace("DELAY", "1.5"))
    job_id = submit(federation, folder)
    page = open_page(admin_session, admin_dash)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(f"{r.resource_type} {r.url}"))
    page.goto(f"{admin_dash.base}/#/job/{job_id}")
    global_points = "svg.chart[data-metric='loss'] g[data-who='global']"
    seen = []
    for n in range(1, rounds + 1):
        page.wait_for_function(
            "([sel, n]) => Number((document.querySelector(sel) || {dataset: {}}).dataset.points || 0) >= n",
            arg=[global_points, n],
            timeout=60_000,
        )
        count = int(page.get_attribute(global_points, "data-points") or 0)
        status = page.get_attribute("#facts", "data-status")
        seen.append(count)
        assert count == n or status != "RUNNING", f"round {n}: {count} points while {status}"
    assert seen == sorted(seen) and seen[-1] == rounds, seen
    page.wait_for_selector("#facts[data-status='FINISHED_OK']", timeout=60_000)
    for site in ("site-1", "site-2"):  # each site's logged metric, a point a round too
        points = page.get_attribute(f"svg.chart[data-metric='step_loss'] g[data-who='{site}']", "data-points")
        assert points == str(rounds), (site, points)
    page.wait_for_selector("#logs pre[data-site='site-1']")
    assert "working on round" in page.inner_text("#logs pre[data-site='site-1']")
    assert page.is_visible("a.download"), "a finished job's artifacts, for an admin who may download"
    with page.expect_download() as download:
        page.click("a.download[href$='only=metrics']")
    assert download.value.suggested_filename == f"job-{job_id}-metrics.zip"
    # Pushed, not polled: after the page loaded, the only requests were event streams.
    later = [f for f in fetched if "/events/" not in f and "/static/" not in f and "/api/session" not in f]
    assert all("download" in f or f.startswith("document") for f in later), later
    shot(page, "dashboard-job.png")
    page.goto(f"{admin_dash.base}/#/jobs")
    page.wait_for_selector(f"#jobs tr[data-job='{job_id}']")
    shot(page, "dashboard-jobs.png")
    page.goto(f"{admin_dash.base}/#/sites")
    page.wait_for_selector("#sites tr[data-site='site-1'] .badge.online")
    assert "site-2" in page.inner_text("#sites")
    shot(page, "dashboard-sites.png")
    page.close()


def test_abort_from_the_page(
    admin_session: Any, admin_dash: Dashboard, federation: Federation, tmp_path: Path
) -> None:
    job_id = submit(federation, slow_job(tmp_path / "abort"))
    page = open_page(admin_session, admin_dash, f"#/job/{job_id}")
    page.wait_for_selector("#facts[data-status='RUNNING']", timeout=60_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#abort")
    page.wait_for_selector("#facts[data-status='ABORTED']", timeout=60_000)
    assert not page.is_visible("#abort"), "an ended job has no abort button"
    meta = wait_for_status(federation, job_id, "ABORTED")
    assert meta["status_reason"] == "aborted by admin@example.com"
    page.goto(f"{admin_dash.base}/#/job/99999999999")  # no such job: the server's word, shown
    page.wait_for_selector("#error[data-code='JOB_NOT_FOUND']")
    page.close()


def test_a_member_sees_no_abort_button_and_a_forged_abort_is_refused_by_the_server(
    member_session: Any, member_dash: Dashboard, federation: Federation, tmp_path: Path
) -> None:
    job_id = submit(federation, slow_job(tmp_path / "member"))
    try:
        page = open_page(member_session, member_dash, f"#/job/{job_id}")
        assert "member" in text_once_drawn(page, "#who")
        page.wait_for_selector("#facts[data-status='RUNNING']", timeout=60_000)
        page.wait_for_selector("svg.chart", timeout=60_000)  # the view right shows the curves
        for button in ("#abort", "#clone", "#delete", "a.download"):
            assert page.query_selector(button) is None, button
        assert "may not read this job's logs" in text_once_drawn(page, "#logs")  # a member has no view_logs
        page.on("dialog", lambda dialog: dialog.accept())
        page.evaluate(f"window.shoal.action('{job_id}', 'abort')")  # what the button would do
        page.wait_for_selector("#error[data-code='NOT_AUTHORIZED']")
        assert "Not authorized" in page.inner_text("#error")
        csrf = session_csrf(page)
        status = page.evaluate(
            f"fetch('/api/jobs/{job_id}/abort', {{method: 'POST', headers: {{'X-Shoal-CSRF': '{csrf}'}}}})"
            ".then(async r => [r.status, (await r.json()).error_code])"
        )
        assert status == [403, "NOT_AUTHORIZED"]
        assert wait_for_status(federation, job_id, "RUNNING")["status"] == "RUNNING"
        page.close()
    finally:
        federation.cli.json("job", "abort", job_id, "--force")


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another site on this machine (another port of 127.0.0.1: the same *site* to a browser,
    so a SameSite cookie alone would not stop it): a page that posts to the dashboard."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="POST" action="{self.target}"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_cross_site_requests_are_refused(
    admin_session: Any, admin_dash: Dashboard, federation: Federation, tmp_path: Path
) -> None:
    job_id = submit(federation, slow_job(tmp_path / "csrf"))
    target = f"{admin_dash.base}/api/jobs/{job_id}/abort"
    attacker = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Attack", (_AttackerPage,), {"target": target})
    )
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page = open_page(admin_session, admin_dash)
        wait_for_status(federation, job_id, "RUNNING")
        # A form on another origin: the cookie goes along (same site), the Origin gives it away.
        with page.expect_response(lambda r: r.url == target) as answer:
            page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        assert answer.value.status == 403
        assert answer.value.json()["error_code"] == "DASHBOARD_CROSS_SITE_REFUSED"
        # The same request by hand with the session's cookie: each lock alone refuses it.
        page.goto(admin_dash.base + "/")
        csrf = session_csrf(page)
        cookie = next(c for c in page.context.cookies() if c["name"].startswith("shoal_dashboard_"))
        jar = f"{cookie['name']}={cookie['value']}"
        own = admin_dash.base
        for headers in (
            {"Cookie": jar, "Origin": own},  # no CSRF token
            {"Cookie": jar, "Origin": own, "X-Shoal-CSRF": "guess"},  # a wrong one
            {"Cookie": jar, "X-Shoal-CSRF": csrf},  # no Origin
            {"Cookie": jar, "Origin": "http://127.0.0.1:1", "X-Shoal-CSRF": csrf},  # another origin
        ):
            status, body = raw_request(target, "POST", headers)
            assert (status, body["error_code"]) == (403, "DASHBOARD_CROSS_SITE_REFUSED"), headers
        status, body = raw_request(target, "POST", {"Origin": own, "X-Shoal-CSRF": csrf})
        assert (status, body["error_code"]) == (401, "DASHBOARD_SESSION_REQUIRED"), "no cookie"
        assert wait_for_status(federation, job_id, "RUNNING")["status"] == "RUNNING", "nothing was aborted"
        page.close()
    finally:
        attacker.shutdown()
        attacker.server_close()  # its listening socket (shutdown only stops its loop)
        federation.cli.json("job", "abort", job_id, "--force")


def test_clone_and_delete_from_the_page_and_markup_stays_text(
    admin_session: Any, admin_dash: Dashboard, federation: Federation, tmp_path: Path
) -> None:
    folder = slow_job(tmp_path / "markup", rounds=2)
    (folder / "app" / "custom" / "client.py").write_text(MARKUP_CLIENT)
    job_id = submit(federation, folder)
    page = open_page(admin_session, admin_dash, f"#/job/{job_id}")
    page.wait_for_selector("#facts[data-status='FINISHED_OK']", timeout=60_000)
    page.wait_for_selector("#logs pre[data-site='site-1']")
    assert "<img src=x id=injected-log" in page.inner_text("#logs pre[data-site='site-1']")
    assert (
        page.get_attribute("svg.chart:not([data-metric='loss'])", "data-metric")
        == "<b id=injected-metric>m</b>"
    )
    assert page.query_selector("#injected-log") is None and page.query_selector("#injected-metric") is None
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#clone")
    page.wait_for_url(lambda url: "#/job/" in url and not url.endswith(job_id))
    clone_id = page.url.rsplit("/", 1)[1]
    code, doc = federation.cli.json("job", "meta", clone_id)
    assert code == 0 and doc["data"]["cloned_from"] == job_id, doc
    federation.cli.json("job", "wait", clone_id, "--timeout", "60")
    page.goto(f"{admin_dash.base}/#/job/{job_id}")
    page.click("#delete")
    page.wait_for_selector(f"#jobs tr[data-job='{clone_id}']")  # back on the list
    assert page.query_selector(f"#jobs tr[data-job='{job_id}']") is None
    code, doc = federation.cli.json("job", "meta", job_id)
    assert code == 1 and doc["error_code"] == "JOB_NOT_FOUND", doc
    page.close()


def test_after_a_server_restart_a_finished_jobs_curves_come_from_its_summary(
    browser: Any, tmp_path: Path
) -> None:
    """The server keeps no curves of jobs that ended before it started: the page draws them
    from the job's metrics_summary.json, as ``job plot`` does; the dashboard reconnects."""
    from tests.faults.test_server_killed import kill_server, restart_server, stop_restarted
    from tests.federation import own_federation

    with own_federation(tmp_path / "home") as fed:
        folder = slow_job(tmp_path / "summary", rounds=3)
        (folder / "app" / "custom" / "client.py").write_text(FALLING_CLIENT.replace("DELAY", "0"))
        job_id = submit(fed, folder)
        wait_for_status(fed, job_id, "FINISHED_OK", timeout=60)
        dash = start_dashboard(fed, fed.kits / "admin@example.com")
        try:
            page = logged_in(browser, dash)
            kill_server(fed)
            restart_server(fed)
            code, doc = fed.cli.json("job", "stats", job_id)
            assert code == 1 and doc["error_code"] == "JOB_NOT_RUNNING", "the server kept nothing"
            page.goto(f"{dash.base}/#/job/{job_id}")
            page.wait_for_selector("#facts[data-status='FINISHED_OK']", timeout=60_000)
            page.wait_for_selector("svg.chart[data-metric='loss'] g[data-who='global']")
            for chart, who in (("loss", "global"), ("step_loss", "site-1"), ("step_loss", "site-2")):
                selector = f"svg.chart[data-metric='{chart}'] g[data-who='{who}']"
                assert page.get_attribute(selector, "data-points") == "3", (chart, who)
            page.context.close()
        finally:
            stop_dashboard(dash)
            stop_restarted(fed)


def test_the_dashboard_stops_at_once_while_a_page_follows_a_quiet_job(
    browser: Any, federation: Federation, tmp_path: Path
) -> None:
    """SIGTERM ends the dashboard in seconds even while its relay threads wait in the server's
    long poll for a job that does not change (they are interrupted, not waited for)."""
    job_id = submit(federation, slow_job(tmp_path / "quiet", rounds=2, delay=60))
    dash = start_dashboard(federation, federation.kits / "admin@example.com")
    try:
        page = logged_in(browser, dash)
        page.goto(f"{dash.base}/#/job/{job_id}")
        page.wait_for_selector("#facts[data-status='RUNNING']", timeout=60_000)
        time.sleep(1)  # the relay is in its next long poll now: nothing changes for a minute
        asked = time.monotonic()
        dash.proc.send_signal(signal.SIGTERM)
        assert dash.proc.wait(timeout=30) == 0
        assert time.monotonic() - asked < 5
        page.context.close()
    finally:
        stop_dashboard(dash)  # signals it only if it still runs; closes its pipes either way
        federation.cli.json("job", "abort", job_id, "--force")


def test_the_dashboard_command_fails_at_once_without_a_server(federation: Federation, tmp_path: Path) -> None:
    """A kit that cannot reach its server: CONNECTION_FAILED before anything listens."""
    kit = tmp_path / "kit"
    shutil.copytree(federation.kits / "admin@example.com", kit)
    conf = kit / "startup" / "fed_admin.json"
    data = json.loads(conf.read_text())
    data["server"]["port"] = 1
    conf.write_text(json.dumps(data))
    started = time.monotonic()
    code, doc = federation.cli.json("dashboard", "--port", "0", "--startup-kit", kit, timeout=60)
    assert code == 2 and doc["error_code"] == "CONNECTION_FAILED", doc
    assert time.monotonic() - started < 30
