"""Who may use the dashboard: the browser that opened the printed address, and only its own page.

The dashboard acts with an admin's certificate, so a request it takes is a request made in that
admin's name. Three locks, each covering what the others do not:

- A one-time token in the printed address (as Jupyter prints one): the first visit with it gets
  a random session id in an HttpOnly, SameSite=Strict cookie, and the token is spent. Any other
  request without that cookie is refused (DASHBOARD_SESSION_REQUIRED): another local user or a
  web page cannot read the terminal, so cannot get in.
- Every request that changes something (not GET/HEAD) must carry the session's CSRF token in a
  header, which only the dashboard's own page can read (``/api/session``; no CORS), and an
  ``Origin`` that is the dashboard's own; a browser sends the SameSite=Strict cookie on no
  cross-site request in the first place.
- The ``Host`` must be the dashboard's own address, so a DNS name rebound to 127.0.0.1 does not
  make another site's page "same origin" with it.

Every answer forbids framing and caching, and carries a Content-Security-Policy that lets the
page run only its own script (no inline code, nothing from another origin).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from shoal.errors import ShoalError

CSRF_HEADER = "X-Shoal-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guard:
    """The token, the sessions it opened, and the addresses the dashboard answers as."""

    def __init__(self) -> None:
        self.token: str | None = secrets.token_urlsafe(32)
        self._sessions: dict[str, str] = {}  # session id -> its CSRF token
        #: "host:port" values the Host header may take; None: any (a wildcard bind, whose
        #: names this process cannot know; the session cookie, bound to the name the browser
        #: used, and the Origin check still hold).
        self.hosts: set[str] | None = set()
        self.port = 0

    def bind(self, host: str, port: int) -> str:
        """Learn the address the server listens on (port 0 is known only once it listens);
        the address to print."""
        self.port = port
        if host in WILDCARDS:
            self.hosts = None
            import socket

            return f"http://{socket.gethostname()}:{port}"
        shown = f"[{host}]" if ":" in host else host
        names = LOOPBACK_NAMES if shown in LOOPBACK_NAMES else (shown,)
        self.hosts = {f"{name}:{port}" for name in names}
        return f"http://{shown}:{port}"

    def knows_host(self, request: web.Request) -> bool:
        return self.hosts is None or request.host in self.hosts

    @property
    def cookie(self) -> str:
        """The cookie's name carries the port: cookies are per host, not per port, and two
        dashboards on one machine must not overwrite each other's session."""
        return f"shoal_dashboard_{self.port}"

    def redeem(self, token: str) -> str | None:
        """A new session id for the right token, once; None for any other value."""
        if self.token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        self.token = None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = secrets.token_urlsafe(32)
        return session

    def csrf_of(self, request: web.Request) -> str | None:
        """The CSRF token of the request's session, or None when it has none."""
        session = request.cookies.get(self.cookie)
        return self._sessions.get(session) if session else None

    def check(self, request: web.Request) -> None:
        """Refuse a request from anyone but the session's own page (see the module's doc)."""
        if not self.knows_host(request):
            raise ShoalError(
                "DASHBOARD_CROSS_SITE_REFUSED", f"Host {request.host[:80]!r} is not this dashboard"
            )
        csrf = self.csrf_of(request)
        if csrf is None:
            raise ShoalError("DASHBOARD_SESSION_REQUIRED")
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin != f"http://{request.host}":  # the page's own origin is the address it was asked at
            raise ShoalError(
                "DASHBOARD_CROSS_SITE_REFUSED", f"Origin {str(origin)[:80]!r} is not this dashboard"
            )
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise ShoalError("DASHBOARD_CROSS_SITE_REFUSED", f"the {CSRF_HEADER} header is missing or wrong")


def error_response(err: ShoalError) -> web.Response:
    """A refusal as the catalogue's JSON error, with the catalogue's HTTP status."""
    return web.json_response(err.to_wire(), status=err.http_status)


def middleware(guard: Guard) -> Middleware:
    """The aiohttp middleware: the token exchange on ``/?token=``, then ``Guard.check`` on
    every request, and any ShoalError as the catalogue's JSON."""

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path == "/" and "token" in request.query and guard.knows_host(request):
                session = guard.redeem(request.query["token"])
                if session is None:
                    raise ShoalError("DASHBOARD_SESSION_REQUIRED", "that token is wrong or already used")
                answer: web.StreamResponse = web.HTTPSeeOther("/")  # the token leaves the address bar
                answer.set_cookie(guard.cookie, session, httponly=True, samesite="Strict", path="/")
            else:
                guard.check(request)
                answer = await handler(request)
        except web.HTTPException as exc:
            answer = exc
        except ShoalError as err:
            answer = error_response(err)
        return answer

    return guarded


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """HEADERS on every answer, streams included (aiohttp's on_response_prepare signal)."""
    response.headers.update(HEADERS)
