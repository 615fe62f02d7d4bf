"""Loading a kit's CA, certificate and key into a TLS context, with errors that say which file.

Shared by ``shoal.security.tls`` (server and sites, on ``ssl``) and ``shoal.api.tls`` (the CLI,
on ``_ssl``; decisions/0011), so it imports neither: it works on any context object with
``load_verify_locations`` and ``load_cert_chain``, which ``ssl.SSLContext`` inherits from
``_ssl._SSLContext``, and catches ``_ssl.SSLError``, which is ``ssl.SSLError``.
"""

from __future__ import annotations

import os

from shoal.errors import ShoalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    Context = TypeVar("Context")

KIT_HINT = "Pass the startup kit folder that provisioning made (it holds startup/fed_*.json)."


def load_identity(ctx: Context, startup: str, cert_name: str) -> Context:
    """Trust only the kit's ``rootCA.pem`` and present ``<cert_name>.crt``/``.key``; a missing or
    broken file is a STARTUP_KIT_MISSING ShoalError, not a traceback."""
    import _ssl

    context: Any = ctx
    ca, cert, key = (os.path.join(startup, n) for n in ("rootCA.pem", f"{cert_name}.crt", f"{cert_name}.key"))
    for path in (ca, cert, key):
        if not os.path.isfile(path):
            raise ShoalError("STARTUP_KIT_MISSING", f"the startup kit has no {path}", hint=KIT_HINT)
    try:
        context.load_verify_locations(ca)
        context.load_cert_chain(cert, key)
    except (_ssl.SSLError, OSError) as exc:
        raise ShoalError(
            "STARTUP_KIT_MISSING",
            f"cannot load the certificate, key or rootCA.pem in {startup}: {exc}",
            hint="The kit's files are damaged or do not belong together; use a freshly provisioned kit.",
        ) from exc
    return ctx
