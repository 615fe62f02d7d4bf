"""Who is calling (from the TLS peer certificate) and how errors leave the server."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.security.identity import Identity, identity_from_peercert
from shoal.security.revocation import DenyList
from shoal.server.audit import AuditLog
from shoal.server.views import json_response

log = logging.getLogger("shoal.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDENTITY_KEY = "identity"
DENY_KEY: web.AppKey[DenyList] = web.AppKey("shoal_deny", DenyList)
AUDIT_KEY: web.AppKey[AuditLog] = web.AppKey("shoal_audit", AuditLog)
_AUDITED_GETS = ("/result",)

# Which kind of certificate may call which part of the API (/metrics: an operator's scraper).
_KIND_FOR_PREFIX = (("/api/", "admin"), ("/site/", "site"), ("/metrics", "admin"))


def error_response(err: ShoalError) -> web.Response:
    return json_response(err.to_wire(), status=err.http_status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate ShoalError (and anything unexpected) into the catalogue's JSON body."""
    try:
        return await handler(request)
    except ShoalError as err:
        return error_response(err)
    except web.HTTPNotFound:
        return error_response(ShoalError("INVALID_ARGS", f"no such route: {request.method} {request.path}"))
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ShoalError("INTERNAL_ERROR", type(exc).__name__))


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request carries a CA-signed certificate (TLS checked that); here we check its kind."""
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if not peercert:
        raise ShoalError("AUTH_FAILED", "no client certificate")
    identity = identity_from_peercert(peercert)
    denied = request.app[DENY_KEY].reason(identity)
    if denied:
        raise ShoalError("AUTH_FAILED", denied, hint="Ask the project admin; this identity was revoked.")
    for prefix, kind in _KIND_FOR_PREFIX:
        if request.path.startswith(prefix) and identity.kind != kind:
            raise ShoalError(
                "NOT_AUTHORIZED",
                f"a {identity.kind} certificate cannot call {prefix}",
                hint="Use an admin startup kit."
                if kind == "admin"
                else "Only site certificates may use the site API.",
            )
    request[IDENTITY_KEY] = identity
    return await handler(request)


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every admin action that changes something or takes a job's result out."""
    audited = request.path.startswith("/api/") and (
        request.method != "GET" or request.path.endswith(_AUDITED_GETS)
    )
    if not audited:
        return await handler(request)
    response = await handler(request)
    who = request.get(IDENTITY_KEY)
    target = {
        "method": request.method,
        "path": request.path,
        "job_id": request.match_info.get("job_id"),
        "study": request.query.get("study", "default"),
    }
    outcome: dict[str, object] = {"http_status": response.status}
    body = _json_body(response)
    if response.status >= 400:
        outcome["error_code"] = body.get("error_code")
    elif body.get("new_job_id") or body.get("job_id"):
        outcome["result_job_id"] = body.get("new_job_id") or body.get("job_id")
    resource = request.match_info.route.resource
    action = f"{request.method} {resource.canonical if resource is not None else request.path}"
    request.app[AUDIT_KEY].record(who, action, target, outcome)
    return response


def _json_body(response: web.StreamResponse) -> dict[str, Any]:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return {}
    try:
        body = json.loads(response.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def identity_of(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY_KEY]
    return identity
