"""What a job's process may reach, decided by its host and applied in the process itself.

The host (the server for a job's controller, a site agent for a training script) builds a
``Sandbox`` once at start: which kernel layers it has, which system and Python folders every
job needs to read, and which of the host's own paths must stay out of reach (its kit, its
workspace, the admin's ``~/.shoal``). For each job it adds that job's folders
(``Sandbox.spec``); the job's process applies the result (``apply``) before any of the job's
code runs:

1. every inherited descriptor but its own is closed, and its environment is rebuilt from a
   short list (the host's environment can hold credentials: a store URL, cloud keys);
2. as root, it becomes the job user (``SHOAL_JOB_USER``) or drops every capability;
3. Landlock: read (and execute) the system, the Python installation and the job's own inputs,
   write only the job's own folders, signal and reach by abstract socket no process outside
   the job, and (a server's controller) open no TCP connection.

A kernel without Landlock is said loudly at start; ``SHOAL_SANDBOX=required`` refuses to run
there instead, and ``off`` turns the kernel layers off (the environment is rebuilt anyway).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import settings
from shoal.errors import ShoalError
from shoal.sandbox import landlock, privileges
from shoal.sandbox.priority import yield_session

log = logging.getLogger("shoal.sandbox")

# The host's settings (shoal.settings declares their types and defaults). Job processes yield
# the CPU to their host (SHOAL_JOB_NICE, 10 by default): a server's answers and a site's
# transfers must not queue behind aggregation or training on the same cores.
ENV_MODE = settings.SANDBOX
ENV_MAX_ABI = settings.LANDLOCK_MAX_ABI
ENV_JOB_USER = settings.JOB_USER
#: What a job inherits of its host's environment (locale, time zone, thread and device
#: settings); everything else, credentials included, stays with the host.
PASSED_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "PYTHONDONTWRITEBYTECODE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
)
#: System folders any Python program may need to read; each is allowed around the host's own
#: paths should one of those sit beneath it.
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/proc", "/sys")
#: Of /etc, what a program reads to run (libraries, names, time, certificates), not all of it.
ETC_READ = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "zoneinfo",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "passwd",
    "group",
    "services",
    "protocols",
    "mime.types",
    "os-release",
    "alternatives",
    "ssl/certs",
    "ca-certificates",
    "ca-certificates.conf",
    "locale.alias",
    "fonts",
    "matplotlibrc",
)
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm")
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri")
SANDBOX_HINT = (
    "Run on a Linux kernel with Landlock (5.13 or newer, 'landlock' in the lsm= boot list), "
    "or set SHOAL_SANDBOX=auto to run jobs without it (not recommended: job code can then read "
    "this host's keys)"
)


@dataclass(frozen=True)
class JobUser:
    uid: int
    gid: int
    name: str


class Sandbox:
    """One host's confinement of its jobs: its layers, and the folders every job may read."""

    def __init__(self, protected: list[Path]) -> None:
        self.mode = settings.choice(ENV_MODE)
        # The host user's home too: its keys (~/.ssh, cloud credentials) are nobody's job's.
        self.protected = [p.resolve() for p in (*protected, Path.home())]
        self.abi = 0 if self.mode == "off" else _usable_abi()
        self.job_user = _job_user() if os.geteuid() == 0 and self.mode != "off" else None
        if self.mode == "required" and self.abi < 1:
            raise ShoalError("SANDBOX_UNAVAILABLE", "this kernel offers no Landlock", hint=SANDBOX_HINT)
        self.read_paths = self._system_paths()
        self.nice = _nice()

    def check_readable(self, paths: list[str], what: str) -> None:
        """Refuse (LOCAL_FILE_ERROR) to give jobs ``paths`` if one holds a protected path: a
        data folder of ``/`` or ``/home`` would hand them the kit."""
        for text in paths:
            real = Path(text).resolve()
            held = next((p for p in self.protected if _holds(real, p)), None)
            if held is not None:
                raise ShoalError(
                    "LOCAL_FILE_ERROR",
                    f"{what}: {text} holds {held}, which job code must not read",
                    hint="Name the data folders themselves, not one that also holds the kit or workspace.",
                )

    def notice(self) -> str:
        """One line for the host's log at start: what confines its jobs (loud when it is weak)."""
        if self.mode == "off":
            return f"job sandbox OFF ({ENV_MODE}=off): job code can read everything this host can"
        if self.abi < 1:
            return (
                "job sandbox WEAK: this kernel offers no Landlock, so job code can read what this "
                f"host's user can (its keys, its store); set {ENV_MODE}=required to refuse to run like this"
            )
        who = ""
        if os.geteuid() == 0:
            who = (
                f"; jobs run as {self.job_user.name}"
                if self.job_user
                else "; jobs run as uid 0 without capabilities"
            )
        return f"job sandbox: Landlock ABI {self.abi}{who}"

    def spec(self, *, read: list[Path], write: list[Path], home: Path, network: bool) -> dict[str, Any]:
        """The confinement of one job's process, as the fork server passes it on (JSON)."""
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        if self.job_user is not None:
            for folder in write:
                _give(folder, self.job_user)
        return {
            "mode": self.mode,
            "abi": self.abi,
            "read": [*self.read_paths, *map(str, read)],
            "write": [str(p) for p in write],
            "devices": _devices(),
            "home": str(home),
            "network": network,
            "user": [self.job_user.uid, self.job_user.gid] if self.job_user else None,
            "passed_env": [*PASSED_ENV, *settings.names(settings.JOB_ENV)],
            "nice": self.nice,
        }

    def _system_paths(self) -> list[str]:
        """System folders, /etc's needed part, and the Python installation this host runs
        (which a job's process is forked from), minus anything that holds a protected path."""
        paths: list[str] = []
        for root in SYSTEM_READ:
            paths += _around(Path(root), self.protected)
        paths += [str(Path("/etc") / name) for name in ETC_READ if (Path("/etc") / name).exists()]
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        python = {
            *prefixes,
            *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")),
            str(Path(__file__).resolve().parents[1]),  # shoal itself, wherever it is installed
            *(p for p in sys.path if not _is_working_folder(p, prefixes)),
        }
        for entry in sorted(p for p in python if p and os.path.exists(p)):
            real = Path(entry).resolve()
            if any(_holds(real, p) for p in self.protected):
                log.info("job sandbox: %s holds a protected path; not readable by jobs", real)
                continue
            paths.append(str(real))
        return paths


def _is_working_folder(entry: str, prefixes: set[str]) -> bool:
    """Whether a ``sys.path`` entry is only there because the host was started from that folder
    (``python -m`` puts the working folder first): the operator's home, say, which job code has
    no business reading. Jobs get their own first entry (``shoal.runtime.launcher``)."""
    if entry in ("", "."):
        return True
    try:
        real = Path(entry).resolve()
        here = Path.cwd().resolve()
    except OSError:
        return False
    return real == here and not any(real.is_relative_to(Path(p).resolve()) for p in prefixes)


def _usable_abi() -> int:
    abi = landlock.abi_version()
    cap = settings.whole_number(ENV_MAX_ABI)
    return abi if cap is None else min(abi, cap)


def _job_user() -> JobUser | None:
    name = settings.text(ENV_JOB_USER)
    if not name:
        return None
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError) as exc:
        raise ShoalError("INVALID_ARGS", f"{ENV_JOB_USER}: no user {name!r} on this host") from exc
    if entry.pw_uid == 0:
        raise ShoalError("INVALID_ARGS", f"{ENV_JOB_USER} must name an unprivileged user, not {name!r}")
    unreachable = [
        p
        for p in (sys.executable, str(Path(__file__).resolve().parents[1]), sysconfig.get_paths()["stdlib"])
        if not privileges.reachable_by(p, entry.pw_uid, entry.pw_gid)
    ]
    if unreachable:
        raise ShoalError(
            "SANDBOX_UNAVAILABLE",
            f"{ENV_JOB_USER}={name} cannot read {unreachable[0]}",
            hint="install shoal and its Python where that user may read them, or unset SHOAL_JOB_USER",
        )
    return JobUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _nice() -> int:
    return settings.whole_number(settings.JOB_NICE) or 0


def _holds(folder: Path, path: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _around(root: Path, protected: list[Path]) -> list[str]:
    """``root``, or where a protected path lies beneath it, each of its entries around that."""
    if not root.exists():
        return []
    real = root.resolve()
    inside = [p for p in protected if _holds(real, p)]
    if not inside:
        return [str(real)]
    if real in inside or not real.is_dir():
        return []
    out: list[str] = []
    for entry in sorted(real.iterdir()):
        out += _around(entry, protected)
    return out


def _devices() -> list[str]:
    found = [d for d in DEVICES_RW if os.path.exists(d)]
    for pattern in DEVICE_GLOBS:
        found += glob.glob(pattern)
    return found


def _give(folder: Path, user: JobUser) -> None:
    """The job user owns its writable folders (created by the root host)."""
    os.chown(folder, user.uid, user.gid)
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), user.uid, user.gid, follow_symlinks=False)


# --- in the job's process, before its code runs ------------------------------------------------


def apply(spec: dict[str, Any], keep_fds: set[int]) -> None:
    """Confine this process (a fresh fork or interpreter, before the job's code) to ``spec``.

    Raises OSError when a layer the spec asks for cannot be had: the caller must then not run
    the job's code."""
    _close_other_descriptors(keep_fds)
    _rebuild_environment(spec)
    if int(spec.get("nice", 0)) > 0:
        os.nice(int(spec["nice"]))
        if os.getsid(0) == os.getpid():  # started cold, in a session (a scheduling group) of its own
            yield_session(int(spec["nice"]))
    ruleset = None
    if spec.get("mode") != "off" and int(spec.get("abi", 0)) >= 1:
        ruleset = landlock.Ruleset(allow_network=bool(spec.get("network", True)))
        for path in spec.get("read", []):
            ruleset.allow(path, landlock.READ)
        for path in spec.get("devices", []):
            ruleset.allow(path, landlock.WRITE_TREE)
        for path in spec.get("write", []):
            ruleset.allow(path, landlock.WRITE_TREE)
    if os.geteuid() == 0 and spec.get("mode") != "off":
        user = spec.get("user")
        if user:
            privileges.become_user(int(user[0]), int(user[1]))
        else:
            privileges.drop_capabilities()
    if ruleset is not None:
        ruleset.restrict_self()


def _close_other_descriptors(keep: set[int]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)


def _rebuild_environment(spec: dict[str, Any]) -> None:
    passed = set(spec.get("passed_env", PASSED_ENV))
    kept = {k: v for k, v in os.environ.items() if k in passed or k.startswith("LC_")}
    home = spec.get("home")
    os.environ.clear()
    os.environ.update(kept)
    if home:
        os.environ.update({"HOME": home, "TMPDIR": os.path.join(home, "tmp")})
    tempfile = sys.modules.get("tempfile")  # imported by the fork server: it chose a folder already
    if tempfile is not None:
        tempfile.tempdir = None  # type: ignore[attr-defined]  # chosen again from TMPDIR on first use
