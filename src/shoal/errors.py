"""The one error catalogue: every failure shoal reports has a stable code here.

A code maps to a CLI exit code, an HTTP status, a message template and a hint. Code
anywhere in shoal raises ``ShoalError(code, detail=..., **context)``; the server's error
middleware turns it into JSON, the SDK rebuilds it from ``error_code``, and the CLI renders
it. Nothing ever matches on message text. Standard library only: the CLI imports this.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing and dataclasses cost CLI start-up time; see decisions/0004
if TYPE_CHECKING:
    from typing import Any


class ErrorSpec:
    """How one error code looks to the outside world."""

    __slots__ = ("exit_code", "http_status", "message", "hint")

    def __init__(self, exit_code: int, http_status: int, message: str, hint: str) -> None:
        self.exit_code = exit_code
        self.http_status = http_status
        self.message = message
        self.hint = hint


_JOB_LIST_HINT = "Run 'shoal job list' to see the jobs of this study."

CATALOGUE: dict[str, ErrorSpec] = {
    # --- arguments and local state (exit 4) ---
    "INVALID_ARGS": ErrorSpec(4, 400, "Invalid arguments.", "Run the command with -h or --help for usage."),
    "LOCAL_FILE_ERROR": ErrorSpec(
        4,
        400,
        "A local file or folder could not be used.",
        "Check the path named: a folder you can write to (or a file you can read), on a disk with space.",
    ),
    "CONFIRMATION_REQUIRED": ErrorSpec(
        4, 400, "This command asks for confirmation.", "Pass --force to run it without a terminal."
    ),
    "DOWNLOAD_EXISTS": ErrorSpec(
        4,
        400,
        "The download destination already exists.",
        "Use --force to replace it, remove the directory, or choose another --output-dir.",
    ),
    "JOB_NOT_DONE": ErrorSpec(
        4, 409, "Job '{job_id}' has not finished.", "Run 'shoal job wait {job_id}' first, then retry."
    ),
    "SUBMIT_TOKEN_CONFLICT": ErrorSpec(
        4,
        409,
        "A job with this submit token already exists with different content.",
        "Use a new submit token when submitting different job content.",
    ),
    "SUBMIT_TOKEN_JOB_DELETED": ErrorSpec(
        4,
        410,
        "This submit token refers to a deleted job.",
        "Use a new submit token to submit the job again.",
    ),
    "POC_WORKSPACE_EXISTS": ErrorSpec(
        4, 400, "The POC workspace already exists.", "Pass --force to replace it, or choose --workspace DIR."
    ),
    "POC_NOT_PREPARED": ErrorSpec(
        4, 400, "No POC workspace was found.", "Run 'shoal poc prepare' first, or pass --workspace DIR."
    ),
    "POC_ALREADY_RUNNING": ErrorSpec(
        4, 409, "The POC system is already running.", "Run 'shoal poc stop' first."
    ),
    "STORE_CONFIG": ErrorSpec(
        4,
        500,
        "The server's job store setting cannot be used.",
        "Set SHOAL_STORE_URL to postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or unset it for the "
        "embedded SQLite file); PostgreSQL needs the 'postgres' extra (pip install 'shoal[postgres]'). "
        "See docs/deployment.md.",
    ),
    "STORE_NOT_EMPTY": ErrorSpec(
        4,
        409,
        "The job store to copy into already holds jobs or submit records.",
        "Copy into a new, empty database; or pass --merge to add only the rows it lacks (running "
        "the copy again is then safe).",
    ),
    "RAY_UNAVAILABLE": ErrorSpec(
        2,
        503,
        "The Ray cluster for the simulation could not be used.",
        "Check the address (host:port of the cluster's head, or auto on one of its machines), that "
        "the head runs and this machine has the same Ray and Python versions; Ray is the 'ray' extra: "
        "pip install 'shoal[ray]'.",
    ),
    "SANDBOX_UNAVAILABLE": ErrorSpec(
        4,
        500,
        "Job code cannot be confined on this host as configured.",
        "Run on a Linux kernel with Landlock, or see docs/security.md for SHOAL_SANDBOX and SHOAL_JOB_USER.",
    ),
    "PROJECT_FILE_INVALID": ErrorSpec(
        4,
        400,
        "The project file cannot be used.",
        "Fix the key at the line named; 'shoal provision init' writes a commented example project file.",
    ),
    "PROVISION_WORKSPACE_INVALID": ErrorSpec(
        4,
        400,
        "The provisioning workspace cannot be used for this project.",
        "Give each project its own --workspace; re-issue a changed participant with --force NAME.",
    ),
    "PARTICIPANT_NOT_FOUND": ErrorSpec(
        4,
        404,
        "No participant '{name}' was provisioned in this workspace.",
        "Run 'shoal provision list' to see the participants, or add it first.",
    ),
    # --- job definition problems (exit 1) ---
    "JOB_FOLDER_NOT_FOUND": ErrorSpec(
        1, 400, "Job folder not found: {path}", "Pass -j with the folder that holds meta.json."
    ),
    "JOB_META_MISSING": ErrorSpec(
        1, 400, "The job has no meta.json.", "A job folder holds meta.json plus one folder per app."
    ),
    "JOB_META_INVALID": ErrorSpec(
        1,
        400,
        "meta.json is not valid.",
        "meta.json must be a JSON object with 'name', 'min_clients' and 'deploy_map'.",
    ),
    "JOB_APP_MISSING": ErrorSpec(
        1,
        400,
        "deploy_map names an app folder that does not exist.",
        "Every key of deploy_map must be a folder beside meta.json.",
    ),
    "JOB_CONFIG_INVALID": ErrorSpec(
        1,
        400,
        "An app's configuration is not valid.",
        "Check config/config_fed_server.json and config/config_fed_client.json in the app folders.",
    ),
    "RESOURCES_UNSATISFIABLE": ErrorSpec(
        1,
        400,
        "No site could ever give this job the resources it asks for.",
        "Lower the job's resource_spec, or name a site that declares enough in its local/resources.json "
        "('shoal system status --format json' shows what connected sites declare).",
    ),
    "MIN_CLIENTS_UNSATISFIABLE": ErrorSpec(
        1,
        400,
        "min_clients is larger than the sites the job can run on.",
        "Lower min_clients in meta.json, or deploy the job to more sites.",
    ),
    "ARCHIVE_UNSAFE": ErrorSpec(
        1,
        400,
        "The job archive holds an entry that is not allowed.",
        "Job archives hold regular files under relative paths only: no '..', absolute paths or "
        "links; and names every site's system can hold: no Windows device names (CON, aux.py), "
        "no trailing dot or space, no ':', '?', '*' or other character Windows refuses, no "
        "control characters, no two names that "
        "differ only in case or Unicode form. Rename the entry the message names.",
    ),
    "CUSTOM_CODE_NOT_ALLOWED": ErrorSpec(
        1,
        403,
        "The job's server app runs custom code, which this study does not allow.",
        "Use a built-in workflow (fedavg, cyclic, cross_site_eval, fedstats), or ask the project admin to "
        "allow custom code for the study (allow_custom_code in the server's local/studies.json).",
    ),
    "UPLOAD_TOO_LARGE": ErrorSpec(
        1, 413, "The upload is larger than the server accepts.", "Keep data out of the job folder."
    ),
    # --- lookups and state (exit 1) ---
    "JOB_NOT_FOUND": ErrorSpec(
        1,
        404,
        "Job '{job_id}' does not exist in study '{study}'.",
        "Run 'shoal job list --study <name>' to find the job, then retry with --study <name>.",
    ),
    # The run surface (shoal ls/stop, Flower's words): runs, no --study (a federation has it).
    "RUN_NOT_FOUND": ErrorSpec(
        1,
        404,
        "Run {run_id} not found.",
        "Run 'shoal ls' to see the runs of this federation (its study is set in pyproject.toml).",
    ),
    "RUN_FINISHED": ErrorSpec(
        1,
        409,
        "Run {run_id} is already finished.",
        "Nothing to stop: 'shoal ls --run-id {run_id}' shows how it ended.",
    ),
    "RUN_ENDED_UNSUCCESSFULLY": ErrorSpec(
        1,
        200,
        "Run {run_id} ended {status}.",
        "'shoal job logs {run_id} --site all' says why.",
    ),
    "JOB_ID_AMBIGUOUS": ErrorSpec(
        4,
        400,
        "More than one job id starts with '{job_id}'.",
        "Type more digits of the id (or the whole id), as 'shoal job list' shows it.",
    ),
    "JOB_NOT_RUNNING": ErrorSpec(1, 409, "Job '{job_id}' is not currently running.", _JOB_LIST_HINT),
    "TASK_NOT_OPEN": ErrorSpec(
        1,
        409,
        "Task '{task_id}' of job '{job_id}' takes no result from this site.",
        "A site answers only the task the server sent it last, once, while its round is open; "
        "a round that ended takes no more results (nothing was counted or kept).",
    ),
    "RESULT_TOO_LARGE": ErrorSpec(
        1,
        413,
        "The result is larger than its task allows.",
        "A result may be {factor} times the size of its task's model, or {floor} bytes if that is more; "
        "nothing of it was kept. Give the job an initial_model, or ask the operator to raise "
        "result_floor_bytes in the server's local/limits.json.",
    ),
    "JOB_FAILED": ErrorSpec(
        1,
        200,
        "Job '{job_id}' reached terminal state {status}.",
        "Run 'shoal job meta {job_id}' and 'shoal job logs {job_id}' to see why.",
    ),
    "JOB_FINISHED_EXCEPTION": ErrorSpec(
        1,
        200,
        "Job '{job_id}' reached terminal state FINISHED_EXCEPTION.",
        "Run 'shoal job meta {job_id}' and 'shoal job logs {job_id}' to see why.",
    ),
    "JOB_ABORTED": ErrorSpec(
        1, 200, "Job '{job_id}' was aborted.", "Run 'shoal job meta {job_id}' to see who aborted it and why."
    ),
    "JOB_ABANDONED": ErrorSpec(
        1, 200, "Job '{job_id}' was abandoned.", "Run 'shoal job meta {job_id}' to see why."
    ),
    "RESULT_NOT_AVAILABLE": ErrorSpec(
        1, 404, "Job '{job_id}' has no stored result.", "Run 'shoal job meta {job_id}' to see how it ended."
    ),
    "STUDY_NOT_FOUND": ErrorSpec(
        1, 404, "Study '{study}' does not exist.", "Ask the project admin which studies exist."
    ),
    "SITE_NOT_FOUND": ErrorSpec(
        1, 404, "Site '{site}' is not connected.", "Run 'shoal system status' to list connected sites."
    ),
    "OUTPUT_DIR_NOT_WRITABLE": ErrorSpec(
        1, 500, "Cannot write to {path}.", "Check permissions or choose another --output-dir."
    ),
    "MODEL_INVALID": ErrorSpec(
        1, 400, "The model is not a valid safetensors file.", "Send weights saved with safetensors."
    ),
    "LOG_NOT_FOUND": ErrorSpec(
        1,
        404,
        "Job logs are not available for site '{site}'.",
        'Site logs reach the server while the job runs (unless its meta.json says "log_streaming": false '
        "or the site's policy refuses) and when it ends.",
    ),
    "LOG_CONFIG_INVALID": ErrorSpec(
        4,
        400,
        "Not a log level or mode.",
        "Use one of DEBUG, INFO, WARNING, ERROR, CRITICAL, concise, msg_only, full, verbose, reload.",
    ),
    "STORE_FULL": ErrorSpec(
        1,
        507,
        "The server's store has no room for this job.",
        "Delete finished jobs ('shoal job delete'), or ask the operator to free space or raise the quota.",
    ),
    "APP_PROJECT_MISSING": ErrorSpec(
        1,
        400,
        "No app project here.",
        "Run it in an app folder (pyproject.toml), or create one: 'shoal new NAME'.",
    ),
    "APP_PROJECT_INVALID": ErrorSpec(
        1,
        400,
        "The app project's pyproject.toml is not valid.",
        "It needs [project] name and version and [tool.shoal.app] with clientapp; see docs/run-surface.md.",
    ),
    "RECIPE_NOT_FOUND": ErrorSpec(
        1,
        404,
        "There is no recipe '{recipe}'.",
        "Run 'shoal recipe list' to see the built-in recipes.",
    ),
    "FEDERATION_NOT_FOUND": ErrorSpec(
        1,
        404,
        "Federation '{federation}' is not declared.",
        "Declare it under [tool.shoal.federations] in pyproject.toml, or name one that exists.",
    ),
    "BUNDLE_TOO_LARGE": ErrorSpec(
        1,
        413,
        "The app bundle is too large.",
        "Keep data and models out of the app folder, or list them in .gitignore.",
    ),
    "KIT_EXISTS": ErrorSpec(
        4, 400, "Startup kit id '{kit_id}' is already registered.", "Use --force to replace the registration."
    ),
    "KIT_NOT_REGISTERED": ErrorSpec(
        1, 404, "Startup kit id '{kit_id}' is not registered.", "Run 'shoal config list'."
    ),
    # --- connection, identity, authorization (exit 2) ---
    "STARTUP_KIT_MISSING": ErrorSpec(
        2,
        400,
        "Startup kit not found.",
        "Run 'shoal poc prepare', or 'shoal config add <id> <kit-dir>' then 'shoal config use <id>', "
        "or pass --kit-id / --startup-kit, or set SHOAL_STARTUP_KIT_DIR.",
    ),
    "BLOB_STORE_CONFIG": ErrorSpec(
        4,
        500,
        "The server's blob store setting cannot be used.",
        "Set SHOAL_BLOBS_URL to s3://bucket/prefix (or unset it for the folder beside the job "
        "database); a bucket needs the 's3' extra (pip install 'shoal[s3]'). See docs/deployment.md.",
    ),
    "STORE_UNAVAILABLE": ErrorSpec(
        2,
        503,
        "The server's job store (PostgreSQL) could not be reached or refused the server.",
        "Check that the database server runs and is reachable from the server, and that the user, "
        "password and database in SHOAL_STORE_URL are right; then retry.",
    ),
    "BLOB_STORE_UNAVAILABLE": ErrorSpec(
        2,
        503,
        "The server's blob store (an S3-compatible bucket) did not answer as expected.",
        "Check that the bucket exists and that AWS_ENDPOINT_URL, AWS_REGION and the AWS credentials "
        "the server runs with may read and write it; then retry.",
    ),
    "CONNECTION_FAILED": ErrorSpec(
        2,
        503,
        "Could not connect to the shoal server.",
        "Is the server running? For a local POC: 'shoal poc start'. Otherwise check the host and port "
        "in the startup kit's startup/fed_admin.json, and that the network lets you reach them.",
    ),
    "AUTH_FAILED": ErrorSpec(
        2,
        401,
        "Authentication failed.",
        "Check that the startup kit's certificate, key and rootCA.pem belong to this project.",
    ),
    "NOT_AUTHORIZED": ErrorSpec(
        2, 403, "Not authorized.", "Use a startup kit whose role may run this command."
    ),
    "DASHBOARD_SESSION_REQUIRED": ErrorSpec(
        2,
        401,
        "This dashboard answers only the browser that opened its address with the token.",
        "Open the address 'shoal dashboard' printed (with ?token=...) in your browser; a token works "
        "once: restart 'shoal dashboard' for a new one.",
    ),
    "DASHBOARD_CROSS_SITE_REFUSED": ErrorSpec(
        2,
        403,
        "The dashboard refused a request that did not come from its own page.",
        "Use the dashboard's buttons; a page of another origin may not act in its name.",
    ),
    "METRICS_UNAVAILABLE": ErrorSpec(
        1,
        501,
        "This server cannot serve Prometheus metrics: prometheus-client is not installed.",
        "Install the server with its metrics extra (pip install 'shoal[metrics]') and restart it.",
    ),
    "SERVICE_FAILED": ErrorSpec(
        2, 503, "A POC service failed.", "Read the service log files (shoal poc start lists them) to see why."
    ),
    # --- time (exit 3) ---
    "TIMEOUT": ErrorSpec(3, 504, "Operation timed out.", "Increase --timeout or check server load."),
    # --- bugs (exit 5) ---
    "INTERNAL_ERROR": ErrorSpec(
        5,
        500,
        "An unexpected error occurred.",
        "This is a bug. Re-run with SHOAL_DEBUG=1 for a traceback and report it.",
    ),
    # --- the caller stopped the command (exit 130, 128 + SIGINT; never sent by the server) ---
    "INTERRUPTED": ErrorSpec(
        130,
        499,
        "Interrupted before the command finished.",
        "What it had already done on the server stands; check with 'shoal job list' or 'shoal job meta'.",
    ),
    # --- simulator (exit 1) ---
    "SIMULATION_FAILED": ErrorSpec(
        1,
        200,
        "The simulated job ended with {status}.",
        "Read server/log.txt and the sites' log.txt files under {workspace} to see why.",
    ),
}


class _Defaults(dict[str, object]):
    """Leaves unknown placeholders visible instead of raising KeyError."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class ShoalError(Exception):
    """An error with a catalogue code; the edges translate it, nobody parses its text."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        hint: str | None = None,
        data: dict[str, Any] | None = None,
        **context: Any,
    ) -> None:
        if code not in CATALOGUE:
            raise KeyError(f"unknown error code {code!r}")
        self.code = code
        self.detail = detail
        self.context = context
        self.data = data
        spec = CATALOGUE[code]
        self._hint = hint if hint is not None else spec.hint.format_map(_Defaults(context))
        super().__init__(self.message)

    @property
    def spec(self) -> ErrorSpec:
        return CATALOGUE[self.code]

    @property
    def exit_code(self) -> int:
        return self.spec.exit_code

    @property
    def http_status(self) -> int:
        return self.spec.http_status

    @property
    def message(self) -> str:
        if self._wire_message is not None:
            return self._wire_message
        base = self.spec.message.format_map(_Defaults(self.context))
        return f"{base} — {self.detail}" if self.detail else base

    @property
    def hint(self) -> str:
        return self._hint

    def to_wire(self) -> dict[str, Any]:
        """The JSON body the server sends and the SDK reads back."""
        body: dict[str, Any] = {
            "error_code": self.code,
            "message": self.message,
            "hint": self.hint,
        }
        if self.data is not None:
            body["data"] = self.data
        return body

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ShoalError:
        """Rebuild an error the server sent; unknown codes become INTERNAL_ERROR."""
        code = str(body.get("error_code", "INTERNAL_ERROR"))
        if code not in CATALOGUE:
            return cls("INTERNAL_ERROR", f"server answered with unknown code {code}: {body.get('message')}")
        err = cls(code, hint=str(body.get("hint", "")), data=body.get("data"))
        err._wire_message = str(body.get("message", err.message))
        return err

    _wire_message: str | None = None

    def __str__(self) -> str:
        return self.message
