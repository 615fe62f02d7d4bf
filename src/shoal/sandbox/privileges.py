"""What a job's process gives up when the host runs as root.

Landlock binds root too, but root keeps powers that are not about files: capabilities to
reconfigure the network, load kernel modules, trace or signal any process, override file
permissions. So a job started by a root host either becomes a separate unprivileged user
(``SHOAL_JOB_USER``), which also puts the host's files behind ordinary permissions, or, where
no such user can run the job (its interpreter is in a folder only root may enter, as under
``/root``), stays uid 0 without a single capability, for good: every capability set, the
bounding set and the ambient set emptied, and the securebits that would give them back on
``exec`` locked off.
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (off), NO_CAP_AMBIENT_RAISE, each with its lock bit.
_SECUREBITS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def drop_capabilities() -> None:
    """Leave this process (uid 0) with no capability, now and after any ``exec``."""
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap} from the bounding set")
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "locking the securebits")
    header = _CapHeader(version=_CAP_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def become_user(uid: int, gid: int) -> None:
    """Switch this process to ``uid``/``gid`` with no supplementary groups (caps go with root)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def effective_capabilities() -> int:
    """This process's effective capability mask, from /proc (for checks and tests)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def reachable_by(path: str, uid: int, gid: int, *, write: bool = False) -> bool:
    """Whether ``uid``/``gid`` may reach ``path`` by ordinary permissions: search rights on every
    folder on the way (each symlink followed), and read (or write) on the end itself."""
    try:
        real = os.path.realpath(path)
        parts = Path(real).parts
        for depth in range(1, len(parts)):
            if not _allows(os.stat(Path(*parts[:depth])), uid, gid, stat.S_IXUSR):
                return False
        end = os.stat(real)
    except OSError:
        return False
    bit = stat.S_IWUSR if write else stat.S_IRUSR
    if stat.S_ISDIR(end.st_mode):
        bit |= stat.S_IXUSR
    return _allows(end, uid, gid, bit)


def _allows(st: os.stat_result, uid: int, gid: int, owner_bits: int) -> bool:
    if st.st_uid == uid:
        shift = 0
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 6
    wanted = owner_bits >> shift
    return st.st_mode & wanted == wanted
