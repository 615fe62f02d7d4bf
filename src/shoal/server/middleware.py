"""Who is calling (from the TLS peer certificate) and how errors leave the server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from shoal.errors import ShoalError
from shoal.security.identity import Identity, identity_from_peercert

log = logging.getLogger("shoal.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDENTITY_KEY = "identity"

# Which kind of certificate may call which part of the API.
_KIND_FOR_PREFIX = (("/api/", "admin"), ("/site/", "site"))


def error_response(err: ShoalError) -> web.Response:
    return web.json_response(err.to_wire(), status=err.http_status)


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


def identity_of(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY_KEY]
    return identity
