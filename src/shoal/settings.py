"""Every environment variable and configuration key shoal reads, and the one way to read them.

Each setting is declared once below with its type, default, meaning and who reads it (the
server, a site agent, the CLI, a job's process, ...). Code reads a setting only through the
accessors here (``text``, ``choice``, ``whole_number``, ``seconds``, ``flag``, ``names``,
``take``); a test scans ``src/`` so that nothing else reads ``os.environ`` (code that *builds* a
child's environment is named there, with why). The README's table is generated from
``SETTINGS`` by ``scripts/gen_docs.py``.

A value of the wrong type stops the reader at start with the catalogue's ``INVALID_ARGS``,
naming the variable. A secret setting (a URL that may carry a password, a cloud key) never has
its value in an error, a log line or the docs: only its name.

Standard library only and cheap to import: the CLI reads its settings here on every call
(plain classes with ``__slots__``, no dataclasses or typing at run time; decisions/0004).
"""

from __future__ import annotations

import os

from shoal.errors import ShoalError

#: Where a setting comes from: the process's environment, or a file of a server kit's local/.
ENV = "environment"
STORAGE_JSON = "local/storage.json"
#: Read by the server's own parsers (``shoal.server.app``, ``shoal.server.gate``,
#: ``shoal.workflows.update_checks``), which check each value; declared here for the docs, and
#: a test holds these defaults to theirs.
LIMITS_JSON = "local/limits.json"


class Setting:
    """One setting: its name, where it is read from, its type, default and meaning."""

    __slots__ = (
        "name",
        "source",
        "kind",
        "default",
        "readers",
        "meaning",
        "secret",
        "choices",
        "low",
        "high",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        readers: str,
        meaning: str,
        *,
        default: str = "",
        source: str = ENV,
        secret: bool = False,
        choices: tuple[str, ...] = (),
        low: int = 0,
        high: int | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.kind = kind
        self.default = default
        self.readers = readers
        self.meaning = meaning
        self.secret = secret
        self.choices = choices
        self.low = low
        self.high = high


# Who reads a setting (the "readers" column): the long-running hosts and the processes they start.
SERVER = "server"
HOSTS = "server, sites"
CLI = "CLI"
JOB = "job process"

# --- names, for the modules that read or set them -----------------------------------------------

HOME = "SHOAL_HOME"
STARTUP_KIT_DIR = "SHOAL_STARTUP_KIT_DIR"
POC_WORKSPACE = "SHOAL_POC_WORKSPACE"
DEBUG = "SHOAL_DEBUG"
COLUMNS = "COLUMNS"
TERM = "TERM"
TRANSFER_IDLE_TIMEOUT = "SHOAL_TRANSFER_IDLE_TIMEOUT"
WARM_SPARES = "SHOAL_WARM_SPARES"
SANDBOX = "SHOAL_SANDBOX"
LANDLOCK_MAX_ABI = "SHOAL_LANDLOCK_MAX_ABI"
JOB_USER = "SHOAL_JOB_USER"
JOB_NICE = "SHOAL_JOB_NICE"
JOB_ENV = "SHOAL_JOB_ENV"
MAX_RUNNING_JOBS = "SHOAL_MAX_RUNNING_JOBS"
STORE_URL = "SHOAL_STORE_URL"
BLOBS_URL = "SHOAL_BLOBS_URL"
MLFLOW_TRACKING_URI = "SHOAL_MLFLOW_TRACKING_URI"
REPLICA_ID = "SHOAL_REPLICA_ID"
LEASE_TTL = "SHOAL_LEASE_TTL"
LEASE_RENEW = "SHOAL_LEASE_RENEW"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
SITE_NAME = "SHOAL_SITE_NAME"
JOB_ID = "SHOAL_JOB_ID"
APP_DIR = "SHOAL_APP_DIR"
CHANNEL_FD = "SHOAL_CHANNEL_FD"
JOB_SPEC = "SHOAL_JOB_SPEC"
FORK_SERVER_FD = "SHOAL_FORK_SERVER_FD"
#: The keys of a server kit's local/storage.json (the environment's STORE_URL/BLOBS_URL win).
STORAGE_STORE_URL = "store_url"
STORAGE_BLOBS_URL = "blobs_url"

#: Every setting, in the order the README lists them.
SETTINGS: tuple[Setting, ...] = (
    # --- the CLI ---
    Setting(
        HOME,
        "path",
        CLI,
        "where `config.toml` (registered startup kits) and the default POC live",
        default="~/.shoal",
    ),
    Setting(
        STARTUP_KIT_DIR,
        "path",
        CLI,
        "the admin startup kit for this command, after `--kit-id` and `--startup-kit`",
    ),
    Setting(
        POC_WORKSPACE,
        "path",
        "CLI (`shoal poc`)",
        "the POC workspace, before `[poc] workspace` in `config.toml` (default `<SHOAL_HOME>/poc`)",
    ),
    Setting(
        DEBUG,
        "flag",
        CLI,
        "print a traceback for an `INTERNAL_ERROR` of the CLI itself (the server's own are in the "
        "server's log)",
        default="0",
    ),
    Setting(COLUMNS, "whole number", CLI, "the width tables are fitted to (else the terminal's, else 80)"),
    Setting(
        TERM,
        "text",
        CLI,
        "`dumb`: no progress drawn in place (a redrawn line, a bar), even on a terminal",
    ),
    # --- the server and the sites ---
    Setting(
        TRANSFER_IDLE_TIMEOUT,
        "seconds",
        HOSTS,
        "seconds a model or result transfer may move no data before it is dropped and resumed "
        "(transfers have no wall-clock limit); a value that is not a positive number means the default",
        default="60",
    ),
    Setting(
        WARM_SPARES,
        "flag",
        HOSTS,
        "`0` starts every job process cold instead of forking it from the warm fork server (decisions/0013)",
        default="1",
    ),
    Setting(
        SANDBOX,
        "choice",
        HOSTS,
        "`auto`: confine job code with what the kernel offers, loudly when Landlock is missing; "
        "`required`: refuse to start without Landlock; `off`: debugging only (docs/security.md)",
        default="auto",
        choices=("auto", "required", "off"),
    ),
    Setting(
        LANDLOCK_MAX_ABI,
        "whole number",
        HOSTS,
        "use at most this Landlock ABI (`0`: none), to run as an older kernel would (default: the kernel's)",
    ),
    Setting(
        JOB_USER,
        "user name or uid",
        HOSTS,
        "the unprivileged user a root host runs job code as (default: uid 0 with no capabilities)",
    ),
    Setting(
        JOB_NICE,
        "whole number",
        HOSTS,
        "how much lower job processes' CPU priority is than the host's, 0-19",
        default="10",
        high=19,
    ),
    Setting(
        JOB_ENV,
        "names",
        HOSTS,
        "more environment variables job code may inherit, comma-separated (the rest of the host's "
        "environment stays with the host)",
    ),
    Setting(
        MAX_RUNNING_JOBS,
        "whole number",
        SERVER,
        "how many jobs run at once; the others wait in order of submission, their status_reason "
        "saying so (decisions/0038)",
        default="8",
        low=1,
    ),
    # --- the server's storage and trackers ---
    Setting(
        STORE_URL,
        "URL",
        SERVER,
        "the job store: `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (default: the embedded "
        "SQLite file in the workspace); before `store_url` in local/storage.json",
        secret=True,
    ),
    Setting(
        BLOBS_URL,
        "URL",
        SERVER,
        "where job archives and models are kept: `s3://bucket/prefix` (default: the workspace's "
        "`blobs/` folder); before `blobs_url` in local/storage.json",
        secret=True,
    ),
    Setting(
        REPLICA_ID,
        "text",
        SERVER,
        "this server process's name among the replicas sharing one PostgreSQL store (default: a "
        "random one at each start): the holder its jobs' leases name, and the replica a job taken "
        "over from it says stopped (decisions/0041)",
    ),
    Setting(
        LEASE_TTL,
        "seconds",
        SERVER,
        "seconds a job's lease lasts unless its replica renews it; past it another replica takes "
        "the job over from its last finished round (decisions/0041)",
        default="3",
    ),
    Setting(
        LEASE_RENEW,
        "seconds",
        SERVER,
        "seconds between a replica's renewals of its jobs' leases and its looks for jobs whose "
        "replica stopped (keep it well under SHOAL_LEASE_TTL)",
        default="1",
    ),
    Setting(
        MLFLOW_TRACKING_URI,
        "URL",
        SERVER,
        "the MLflow tracking server jobs with the `mlflow` tracker write to (default: a SQLite "
        "store in the workspace's `mlflow/`)",
        secret=True,
    ),
    Setting(AWS_ENDPOINT_URL, "URL", SERVER, "the S3-compatible endpoint of `SHOAL_BLOBS_URL`'s bucket"),
    Setting(AWS_REGION, "text", SERVER, "the bucket's region (else `AWS_DEFAULT_REGION`, else us-east-1)"),
    Setting(AWS_DEFAULT_REGION, "text", SERVER, "the bucket's region when `AWS_REGION` is unset"),
    Setting(
        AWS_ACCESS_KEY_ID,
        "text",
        SERVER,
        "the bucket's credentials (read by boto3; shoal blanks them out of every error it reports)",
        secret=True,
    ),
    Setting(AWS_SECRET_ACCESS_KEY, "text", SERVER, "as `AWS_ACCESS_KEY_ID`", secret=True),
    Setting(AWS_SESSION_TOKEN, "text", SERVER, "as `AWS_ACCESS_KEY_ID`", secret=True),
    Setting(
        STORAGE_STORE_URL,
        "URL",
        SERVER,
        "as `SHOAL_STORE_URL`, when that is unset (keep the file readable by the server's user only)",
        source=STORAGE_JSON,
        secret=True,
    ),
    Setting(
        STORAGE_BLOBS_URL,
        "URL",
        SERVER,
        "as `SHOAL_BLOBS_URL`, when that is unset",
        source=STORAGE_JSON,
        secret=True,
    ),
    # --- the server's limits (local/limits.json) ---
    Setting(
        "max_upload_bytes",
        "bytes",
        SERVER,
        "the largest job archive a submit may upload (256 MiB)",
        default="268435456",
        source=LIMITS_JSON,
    ),
    Setting(
        "max_store_bytes",
        "bytes",
        SERVER,
        "a quota on the stored job archives (`STORE_FULL` past it; default: none)",
        source=LIMITS_JSON,
    ),
    Setting(
        "min_free_bytes",
        "bytes",
        SERVER,
        "submits are refused before the disk has less free than this (64 MiB)",
        default="67108864",
        source=LIMITS_JSON,
    ),
    Setting(
        "result_floor_bytes",
        "bytes",
        SERVER,
        "the most a site's result may take when twice its task's model is less (metrics-only and "
        "statistics answers, round 0 without an initial model; 64 MiB)",
        default="67108864",
        source=LIMITS_JSON,
    ),
    Setting(
        "reject_non_finite_updates",
        "true or false",
        SERVER,
        "a site's update holding NaN or an infinity fails the job, naming the site",
        default="true",
        source=LIMITS_JSON,
    ),
    Setting(
        "max_num_examples",
        "whole number",
        SERVER,
        "the largest `num_examples` a site's update may claim",
        default="4000000000",
        source=LIMITS_JSON,
    ),
    Setting(
        "tls_handshake_timeout",
        "seconds",
        SERVER,
        "seconds from accepting a connection to a finished TLS handshake; a peer that is slower is closed",
        default="10",
        source=LIMITS_JSON,
    ),
    Setting(
        "request_head_timeout",
        "seconds",
        SERVER,
        "seconds a connection may go without sending a whole request head (after its handshake, or "
        "after the server's last answer on it); never applies while a request is handled, so long "
        "polls (`job wait`, `monitor`), site channels and transfers that move are not cut",
        default="30",
        source=LIMITS_JSON,
    ),
    Setting(
        "max_connections_per_ip",
        "whole number",
        SERVER,
        "open connections (handshaking or not) one peer address may hold; one past it is closed at "
        "once (peers behind one NAT share an address: raise it for many sites behind one)",
        default="256",
        source=LIMITS_JSON,
    ),
    # --- what shoal sets for the processes it starts ---
    Setting(
        SITE_NAME, "text", JOB, "the site a training script runs on (`flare.site_name()`); set by the site"
    ),
    Setting(JOB_ID, "text", JOB, "the job a training script belongs to (`flare.job_id()`); set by the site"),
    Setting(APP_DIR, "path", JOB, "the job's app folder (`flare.app_dir()`); set by the site"),
    Setting(
        CHANNEL_FD,
        "whole number",
        JOB,
        "the descriptor of the job process's channel to its host; set by the process launcher",
    ),
    Setting(
        JOB_SPEC,
        "JSON",
        JOB,
        "what a cold job process is to become (`SHOAL_WARM_SPARES=0`); set and removed by the launcher",
    ),
    Setting(
        FORK_SERVER_FD,
        "whole number",
        "fork server",
        "the fork server's control socket; set and removed by the launcher",
    ),
)

_BY_NAME: dict[tuple[str, str], Setting] = {(s.source, s.name): s for s in SETTINGS}


def declared(name: str, source: str = ENV) -> Setting:
    """The declaration of ``name`` (KeyError for one that is not declared: declare it first)."""
    return _BY_NAME[(source, name)]


def _raw(name: str) -> str:
    declared(name)
    return os.environ.get(name, "").strip()


def _invalid(setting: Setting, raw: str, expected: str) -> ShoalError:
    shown = "" if setting.secret else f", not {raw[:40]!r}"
    return ShoalError(
        "INVALID_ARGS",
        f"{setting.name} must be {expected}{shown}",
        hint=f"unset {setting.name} for the default" + (f" ({setting.default})" if setting.default else ""),
    )


def is_set(name: str) -> bool:
    """Whether the variable is set to something other than blanks."""
    return bool(_raw(name))


def text(name: str) -> str:
    """The value, stripped; the declared default when unset or blank."""
    return _raw(name) or declared(name).default


def choice(name: str) -> str:
    """One of the declared choices (INVALID_ARGS for anything else)."""
    setting = declared(name)
    value = _raw(name) or setting.default
    if value not in setting.choices:
        raise _invalid(setting, value, f"one of {', '.join(setting.choices)}")
    return value


def whole_number(name: str) -> int | None:
    """A whole number within the declared bounds (INVALID_ARGS otherwise); None when unset and
    without a default."""
    setting = declared(name)
    value = _raw(name) or setting.default
    if not value:
        return None
    high = setting.high
    bounds = f" from {setting.low} to {high}" if high is not None else ""
    if (
        not (value.isascii() and value.isdigit())
        or int(value) < setting.low
        or (high is not None and int(value) > high)
    ):
        raise _invalid(setting, value, f"a whole number{bounds}")
    return int(value)


def seconds(name: str) -> float:
    """A positive number of seconds; the default for anything else (read where a transfer
    starts, long after start-up: a bad value must not fail a transfer, so it is not an error)."""
    fallback = float(declared(name).default)
    try:
        value = float(_raw(name))
    except ValueError:
        return fallback
    return value if value > 0 else fallback


def flag(name: str) -> bool:
    """On unless the value (or else the default) is ``0``; unset without a default is off."""
    value = _raw(name) or declared(name).default
    return bool(value) and value != "0"


def names(name: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [part.strip() for part in _raw(name).split(",") if part.strip()]


def take(name: str) -> str | None:
    """The value, removed from this process's environment (what a launcher handed one process
    only: its children must not inherit it); None when it was not set."""
    declared(name)
    return os.environ.pop(name, None)


def storage_keys() -> tuple[str, ...]:
    """The keys local/storage.json may hold."""
    return tuple(s.name for s in SETTINGS if s.source == STORAGE_JSON)
