"""A loopback port nobody listens on, for a test's own service (PostgreSQL, Ray, HAProxy, ...).

The OS picks it; it is free when asked, and the service binding it right after takes it.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
