"""Job processes yield the CPU to their host, also on kernels that schedule by session.

``os.nice`` alone did nothing on this project's machines: with the kernel's autogroup
scheduling on (``/proc/sys/kernel/sched_autogroup_enabled``, the default of most desktop and
many server kernels, this one's too) a nice value counts only against processes of the same
*session*, and every new session gets a group of its own that competes with every other group
as an equal. A job process started in a session of its own ran at full weight beside the
server, however niced: a server with 8 running jobs (a controller each, in their own sessions)
had one ninth of a busy core for its answers (issue 19).

So a host's fork server, which runs in a session of its own, gives its group the job processes'
nice value once at its start (``yield_session``), and the job processes it forks stay in that
session (a process group of their own, for the kills): they compete with the host as one group
at low weight, and with each other by their own nice values. A job process started cold in a
session of its own gives its own group the same value. Where the kernel has no autogroups the
file is absent and ``os.nice`` (``shoal.sandbox.confinement``) is what counts.
"""

from __future__ import annotations

import errno
import os
import time

AUTOGROUP = "/proc/{pid}/autogroup"  # "/autogroup-123 nice 0"
#: The kernel lets a process without CAP_SYS_ADMIN change a group's nice once per 100 ms, machine
#: wide (EAGAIN otherwise): a few tries when several hosts start together.
ATTEMPTS = 5
RETRY_PAUSE = 0.11


def session_nice(pid: int | str = "self") -> int | None:
    """The nice value of a process's scheduling group (its session), or None where the kernel
    has no autogroups (or the process is gone).

    A process in init's session (a container's or a CI runner's processes, often) is in the
    root group, which the kernel shows as an empty file: it weighs as nice 0, so that is 0."""
    try:
        with open(AUTOGROUP.format(pid=pid), encoding="ascii") as f:
            words = f.read().split()
    except OSError:
        return None
    try:
        return int(words[-1]) if words else 0
    except ValueError:
        return None


def yield_session(nice: int) -> int | None:
    """Give this process's session group a nice value ``nice`` above its parent's group (at most
    19): the session's processes then yield the CPU to the parent's. Returns the value set, or
    None when there are no autogroups or the kernel refused (the caller's ``os.nice`` still
    counts within the session)."""
    if nice <= 0:
        return None
    target = min(19, (session_nice(os.getppid()) or 0) + nice)
    for attempt in range(ATTEMPTS):
        try:
            with open(AUTOGROUP.format(pid="self"), "w", encoding="ascii") as f:
                f.write(str(target))
            return target
        except OSError as exc:
            if exc.errno != errno.EAGAIN or attempt == ATTEMPTS - 1:
                return None
            time.sleep(RETRY_PAUSE)
    return None
