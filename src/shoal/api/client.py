"""The SDK's admin client: one mTLS connection, one typed method per admin route.

Standard library only (its own HTTP client, _ssl, json): ``shoal job list`` must start and answer in
well under 100 ms, and scripts call it in loops. Every failure becomes a ShoalError with a
catalogue code; callers never see a socket or ssl exception.
"""

from __future__ import annotations

import json
import time

from shoal.api import tls
from shoal.api.http import Connection, ProtocolError
from shoal.api.kits import AdminKit
from shoal.errors import CATALOGUE, ShoalError
from shoal.wire import routes
from shoal.wire.routes import quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import IO, Any

    from shoal.api import answers

    #: Told (bytes done, bytes in all if known) as a request's body goes or an answer comes.
    Progress = Callable[[int, int | None], None]

LONG_POLL = 25.0  # seconds one wait request is held open by the server
#: Seconds ``wait_job`` keeps asking again after its held poll was cut (a replica stopped).
WAIT_RECONNECT = 30.0
#: The server (aiohttp) reads at most 8190 bytes of request line, then answers a bare 400. A
#: request target past this is refused here, naming the value that made it long.
MAX_TARGET_BYTES = 8000
#: Errors the server itself reports carry a catalogue code; these statuses without one come from
#: the HTTP layer below shoal's handlers (or a proxy) and still say whose fault it was.
_CODELESS = {
    400: "INVALID_ARGS",
    413: "UPLOAD_TOO_LARGE",
    414: "INVALID_ARGS",
    431: "INVALID_ARGS",
    502: "CONNECTION_FAILED",
    503: "CONNECTION_FAILED",
    504: "CONNECTION_FAILED",
}
SERVER_BUG_HINT = (
    "This is a bug in the server: its log has the traceback (a POC's is logs/server.log in its "
    "workspace; otherwise ask the server's operator). Report it with that log."
)


class AdminClient:
    def __init__(self, kit: AdminKit, connect_timeout: float = 5.0) -> None:
        self.kit = kit
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._polled = False  # a long poll was answered: a later one cut is asked again (_held_poll)
        self._interrupted = False  # interrupt() was called: a cut poll is the caller stopping, not a replica

    @property
    def address(self) -> str:
        return f"{self.kit.host}:{self.kit.port}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def interrupt(self) -> None:
        """Make the request another thread is waiting in (a long poll) fail at once, as a
        CONNECTION_FAILED there: for a process that stops while its threads wait (the dashboard)."""
        self._interrupted = True
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self, timeout: float | None) -> Connection:
        if self._conn is None:
            ctx = tls.client_context(str(self.kit.path))
            conn = Connection(self.kit.host, self.kit.port, ctx, timeout=self.connect_timeout)
            conn.connect()
            self._conn = conn
        self._conn.settimeout(timeout)
        return self._conn

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = 60.0,
        sink: IO[bytes] | None = None,
        on_progress: Progress | None = None,
    ) -> Any:
        """Send one request; return parsed JSON (or stream into ``sink``); map every failure.
        ``on_progress`` follows the body sent (its Content-Length the total) or, with ``sink``,
        the answer received (the answer's Content-Length)."""
        q = {k: quote(str(v)) for k, v in (query or {}).items() if v is not None}
        url = path + ("?" + "&".join(f"{quote(k)}={v}" for k, v in q.items()) if q else "")
        if len(url) > MAX_TARGET_BYTES:
            raise _target_too_long(path, q, len(url))
        try:
            conn = self._connection(timeout)
            sent = None
            if on_progress is not None and body is not None and not isinstance(body, bytes):
                sent = _body_progress(on_progress, (headers or {}).get("Content-Length"))
            resp = conn.request(method, url, body=body, headers=headers or {}, sent=sent)
            if resp.status >= 400:
                err, from_shoal = _error_from_response(resp.status, resp.read())
                if not from_shoal or resp.headers.get("connection", "").lower() == "close":
                    # The HTTP layer's refusals (a 400 for a request line too long) end the
                    # connection without saying so: the next call must open a new one.
                    self.close()
                raise err
            if sink is not None:
                length = resp.headers.get("content-length")
                expected = int(length) if length is not None and length.isdecimal() else None
                received = 0
                if on_progress is not None:
                    on_progress(0, expected)
                for piece in resp.iter_body():
                    received += len(piece)
                    if on_progress is not None:
                        on_progress(received, expected)
                    try:
                        sink.write(piece)
                    except OSError as exc:  # our disk, not the link (a full disk was CONNECTION_FAILED)
                        self.close()  # the rest of the answer is unread: the connection is spent
                        where = getattr(sink, "name", "the download")
                        raise ShoalError("LOCAL_FILE_ERROR", f"{exc.strerror or exc}: {where}") from exc
                result = None
            else:
                result = json.loads(resp.read() or b"null")
            if resp.headers.get("connection", "").lower() == "close":
                self.close()
            return result
        except ShoalError:
            raise
        except tls.SSLCertVerificationError as exc:
            self.close()
            raise ShoalError(
                "AUTH_FAILED",
                f"the server at {self.address} is not trusted by this kit's CA ({exc.verify_message})",
            ) from exc
        except (tls.SSLEOFError, tls.SSLZeroReturnError) as exc:
            self.close()
            raise ShoalError("CONNECTION_FAILED", f"{self.address}: the connection was cut") from exc
        except tls.SSLError as exc:
            self.close()
            raise ShoalError(
                "AUTH_FAILED", f"the server at {self.address} refused this kit's certificate"
            ) from exc
        except TimeoutError as exc:
            self.close()
            raise ShoalError("TIMEOUT", f"no answer from {self.address}") from exc
        except (
            ConnectionRefusedError,
            ConnectionResetError,
            BrokenPipeError,
            ProtocolError,
        ) as exc:
            self.close()
            raise ShoalError("CONNECTION_FAILED", f"{self.address}: {exc.__class__.__name__}") from exc
        except OSError as exc:
            self.close()
            raise ShoalError("CONNECTION_FAILED", f"{self.address}: {exc.strerror or exc}") from exc

    # --- one method per route ---

    def health(self) -> answers.Health:
        result: answers.Health = self._request("GET", routes.HEALTH, timeout=5.0)
        return result

    def submit_job(
        self,
        archive: Path,
        study: str,
        submit_token: str | None = None,
        on_progress: Progress | None = None,
    ) -> answers.Submitted:
        with archive.open("rb") as f:
            result: answers.Submitted = self._request(
                "POST",
                routes.JOBS,
                {"study": study, "submit_token": submit_token},
                body=f,
                headers={"Content-Type": "application/zip", "Content-Length": str(archive.stat().st_size)},
                timeout=300.0,
                on_progress=on_progress,
            )
        return result

    def list_jobs(
        self,
        study: str,
        *,
        name: str | None = None,
        id_prefix: str | None = None,
        reverse: bool = False,
        max_results: int | None = None,
        submit_token: str | None = None,
    ) -> list[answers.JobRow]:
        query = {
            "study": study,
            "name": name,
            "id": id_prefix,
            "reverse": "1" if reverse else None,
            "max": max_results,
            "submit_token": submit_token,
        }
        jobs: list[answers.JobRow] = self._request("GET", routes.JOBS, query)["jobs"]
        return jobs

    def get_job(self, job_id: str, study: str) -> answers.JobMeta:
        meta: answers.JobMeta = self._request("GET", routes.fill(routes.JOB, job_id=job_id), {"study": study})
        return meta

    def wait_job(
        self, job_id: str, study: str, timeout: float = 0.0, interval: float = 2.0
    ) -> tuple[bool, answers.JobMeta]:
        """Hold long polls until the job is terminal; (False, last meta) if ``timeout`` passes first.

        The server answers the moment the job ends. ``interval`` is only the pause before
        retrying after a poll returned without news.
        """
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while True:
            hold = LONG_POLL if deadline is None else max(0.0, min(LONG_POLL, deadline - time.monotonic()))
            asked = time.monotonic()
            answer: answers.Waited = self._held_poll(
                routes.fill(routes.JOB_WAIT, job_id=job_id), {"study": study, "timeout": f"{hold:.3f}"}, hold
            )
            if answer["terminal"]:
                return True, answer["job"]
            if deadline is not None and time.monotonic() >= deadline:
                return False, answer["job"]
            if time.monotonic() - asked < hold / 2:
                # answered early without news (a proxy that cannot hold requests): don't spin
                time.sleep(interval)

    def _held_poll(self, path: str, query: dict[str, Any], hold: float) -> Any:
        """One long poll (``job wait``, ``monitor``). A poll is only a read: one cut after the
        server had held it a while, or after an earlier poll was answered (its replica stopped
        behind a load balancer; decisions/0041)
        is asked again, of whichever server answers now, for up to WAIT_RECONNECT seconds. One
        refused at once (no server at all) fails at once, as any request does, and so does one
        cut by ``interrupt`` (the caller is stopping: the dashboard's relay)."""
        asked = time.monotonic()
        cut_since: float | None = None
        while True:
            try:
                answer = self._request("GET", path, query, timeout=hold + 30)
                self._polled = True
                return answer
            except ShoalError as exc:
                now = time.monotonic()
                held = self._polled or cut_since is not None or now - asked >= 1.0
                cut_since = cut_since if cut_since is not None else now
                if (
                    self._interrupted
                    or exc.code != "CONNECTION_FAILED"
                    or not held
                    or now - cut_since > WAIT_RECONNECT
                ):
                    raise
                time.sleep(0.2)

    def download_result(
        self,
        job_id: str,
        study: str,
        dest: Path,
        only: list[str] | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        """The job's result zip into ``dest``; ``only`` names the parts wanted (model, metrics,
        logs, job), all of them when None."""
        query = {"study": study, "only": ",".join(only) if only else None}
        with dest.open("wb") as sink:
            self._request(
                "GET",
                routes.fill(routes.JOB_RESULT, job_id=job_id),
                query,
                timeout=600.0,
                sink=sink,
                on_progress=on_progress,
            )

    def abort_job(self, job_id: str, study: str) -> answers.Aborted:
        """Returns once the job is ABORTED (sites confirmed, or the stragglers are named)."""
        result: answers.Aborted = self._request(
            "POST", routes.fill(routes.JOB_ABORT, job_id=job_id), {"study": study}, timeout=120.0
        )
        return result

    def delete_job(self, job_id: str, study: str) -> answers.Deleted:
        result: answers.Deleted = self._request(
            "DELETE", routes.fill(routes.JOB, job_id=job_id), {"study": study}
        )
        return result

    def clone_job(self, job_id: str, study: str) -> answers.Cloned:
        result: answers.Cloned = self._request(
            "POST", routes.fill(routes.JOB_CLONE, job_id=job_id), {"study": study}
        )
        return result

    def job_events(self, job_id: str, study: str, since: int, hold: float) -> answers.JobEvents:
        """The job as soon as it changed after version ``since`` (or after ``hold`` seconds)."""
        result: answers.JobEvents = self._held_poll(
            routes.fill(routes.JOB_EVENTS, job_id=job_id),
            {"study": study, "since": since, "timeout": f"{hold:.3f}"},
            hold,
        )
        return result

    def job_stats(self, job_id: str, study: str, site: str = "all") -> answers.JobStats:
        result: answers.JobStats = self._request(
            "GET", routes.fill(routes.JOB_STATS, job_id=job_id), {"study": study, "site": site}
        )
        return result

    def job_series(self, job_id: str, study: str) -> dict[str, Any]:
        """The job's per-round curves: ``{"global": {metric: [[round, value]]}, "sites": {site:
        {metric: [[round, value]]}}}``, rounds from 0."""
        result: dict[str, Any] = self._request(
            "GET", routes.fill(routes.JOB_SERIES, job_id=job_id), {"study": study}
        )
        return result

    def job_rights(self, job_id: str, study: str) -> dict[str, bool]:
        """Which rights (view, manage_job, download_job, clone_job, view_logs) the caller holds
        on the job: for showing only the actions the server would allow."""
        rights: dict[str, bool] = self._request(
            "GET", routes.fill(routes.JOB_RIGHTS, job_id=job_id), {"study": study}
        )["rights"]
        return rights

    def job_logs(
        self, job_id: str, study: str, site: str = "server", file: str = "log.txt"
    ) -> answers.JobLogs:
        result: answers.JobLogs = self._request(
            "GET",
            routes.fill(routes.JOB_LOGS, job_id=job_id),
            {"study": study, "site": site, "file": file},
            timeout=120.0,
        )
        return result

    def log_config(
        self, job_id: str, study: str, setting: str, site: str = "all"
    ) -> answers.LogConfigApplied:
        body = json.dumps({"setting": setting, "site": site}).encode()
        result: answers.LogConfigApplied = self._request(
            "POST",
            routes.fill(routes.JOB_LOG_CONFIG, job_id=job_id),
            {"study": study},
            body=body,
            headers={"Content-Type": "application/json"},
        )
        return result

    def system_status(self) -> answers.SystemStatus:
        status: answers.SystemStatus = self._request("GET", routes.SYSTEM_STATUS)
        return status

    def system_sites(self) -> answers.Sites:
        sites: answers.Sites = self._request("GET", routes.SYSTEM_SITES)
        return sites

    def site_action(self, site: str, action: str) -> answers.SiteActed:
        """``remove``, ``restart`` or ``shutdown`` a site (the server relays the last two to its agent)."""
        result: answers.SiteActed = self._request(
            "POST", routes.fill(routes.SITE_ACTION, site=site, action=action)
        )
        return result


def _body_progress(on_progress: Progress, length: str | None) -> Callable[[int], None]:
    """What ``Connection.request`` calls per piece of a body sent: ``on_progress`` with the
    body's Content-Length as the total (told once at 0 before the first piece)."""
    total = int(length) if length is not None and length.isdecimal() else None
    on_progress(0, total)

    def sent(done: int) -> None:
        on_progress(done, total)

    return sent


def _target_too_long(path: str, query: dict[str, str], size: int) -> ShoalError:
    """INVALID_ARGS naming the longest part of a request the server would refuse unread."""
    parts = {f"the {key} value": len(value) for key, value in query.items()}
    parts["the job id"] = len(path)  # only a job's routes take a caller's value in the path
    culprit = max(parts, key=lambda part: parts[part])
    return ShoalError(
        "INVALID_ARGS",
        f"{culprit} is too long: the request would be {size} bytes, over the {MAX_TARGET_BYTES} "
        "the server reads",
        hint="Check that value: study, site and job names and ids are short words.",
    )


def _error_from_response(status: int, raw: bytes) -> tuple[ShoalError, bool]:
    """The error an answer of ``status`` means, and whether shoal's handlers sent it (a body
    with a catalogue code) rather than the HTTP layer below them or a proxy."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_code" in body:
        return _shoal_error(body), True
    text = raw[:200].decode(errors="replace").strip()
    code = _CODELESS.get(status)
    if code is None:
        return ShoalError("INTERNAL_ERROR", f"HTTP {status}: {text}", hint=SERVER_BUG_HINT), False
    return ShoalError(code, f"the server answered HTTP {status}: {text}"), False


def _shoal_error(body: dict[str, Any]) -> ShoalError:
    wire_code = body["error_code"]
    if wire_code == "INTERNAL_ERROR":  # the server's bug: its log knows, not SHOAL_DEBUG here
        return ShoalError.from_wire({**body, "hint": SERVER_BUG_HINT})
    if wire_code not in CATALOGUE:
        return ShoalError(
            "INTERNAL_ERROR",
            f"the server answered with a code this CLI does not know, {wire_code}: {body.get('message')}",
            hint="The server and this CLI may be different shoal versions: compare 'shoal --version'.",
        )
    return ShoalError.from_wire(body)
