"""Landlock, the Linux security module any process may use on itself, without root.

A process builds a ruleset (which accesses it wants the kernel to police, and which file
hierarchies keep which of them), then restricts itself: from then on it, and everything it
starts, can only do what the rules allow, whatever its user may do. The restriction cannot be
lifted, and it stacks on the user's own permissions: it only ever takes rights away.

Python has no binding, so the three system calls are made through ``ctypes``. Which rights the
kernel knows depends on its Landlock ABI version; rights of a later ABI are left out on an
older kernel (so the sandbox is as strong as the kernel allows, and says which ABI it got).
"""

from __future__ import annotations

import ctypes
import os
import platform

# System call numbers: the same on every architecture (Landlock came after the unification).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38

# File system rights, with the ABI that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2: link or rename across folders
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

# Network rights (ABI 4) and scopes (ABI 6).
BIND_TCP = 1 << 0
CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

#: Rights that apply to a file itself; a rule on a file (not a folder) may hold only these.
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
WRITE_TREE = (
    READ
    | WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_SYM
    | REFER
    | TRUNCATE
    | IOCTL_DEV
)


class LandlockUnavailable(OSError):
    """The kernel has no Landlock (too old, not built in, or not enabled at boot)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or this is not Linux)."""
    if platform.system() != "Linux":
        return 0
    result = _libc().syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return int(result) if result > 0 else 0


def fs_rights(abi: int) -> int:
    """Every file system right the kernel of ``abi`` can police."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class Ruleset:
    """A ruleset being built: folders (or files) and what may be done beneath them."""

    def __init__(self, *, allow_network: bool) -> None:
        self.abi = abi_version()
        if self.abi < 1:
            raise LandlockUnavailable("this kernel offers no Landlock")
        self._libc = _libc()
        self.handled_fs = fs_rights(self.abi)
        attr = _RulesetAttr(
            handled_access_fs=self.handled_fs,
            handled_access_net=0 if allow_network or self.abi < 4 else BIND_TCP | CONNECT_TCP,
            # A job may not signal, nor reach by abstract socket, any process outside its domain
            # (the server, the agent, other jobs).
            scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0,
        )
        # The structure grew with the ABI: pass only the part this kernel knows.
        size = ctypes.sizeof(_RulesetAttr) if self.abi >= 6 else 16 if self.abi >= 4 else 8
        fd = self._libc.syscall(
            _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockUnavailable(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)

    def allow(self, path: str, rights: int) -> bool:
        """Allow ``rights`` beneath ``path``; False (and nothing allowed) if it does not exist."""
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            attr = _PathBeneathAttr(allowed_access=rights & self.handled_fs, parent_fd=target)
            result = self._libc.syscall(
                _SYS_ADD_RULE,
                ctypes.c_int(self.fd),
                ctypes.c_int(_RULE_PATH_BENEATH),
                ctypes.byref(attr),
                ctypes.c_uint32(0),
            )
            if result < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
        finally:
            os.close(target)
        return True

    def restrict_self(self) -> None:
        """Apply the rules to this process and all it will start; for good."""
        if self._libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        result = self._libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0))
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
        os.close(self.fd)
