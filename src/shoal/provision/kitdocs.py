"""What a kit tells its owner: a README, a start script and (server and sites) a systemd unit.

The texts are generated from the kit's own facts (its name, kind, project, where the server
is), so a site's administrator who received only the kit knows how to check it, start it and
run it as a service without reading shoal's documentation first.
"""

from __future__ import annotations

INSTALL_ROOT = "/opt/shoal"  # where the systemd unit expects the kit; the README says how to move it

_START = """#!/bin/sh
# Start {what} from this kit, in the foreground (a terminal or systemd keeps it running).
# SHOAL names the shoal command when it is not on PATH (e.g. /opt/shoal/venv/bin/shoal).
set -eu
KIT=$(cd "$(dirname "$0")/.." && pwd)
exec "${{SHOAL:-shoal}}" {kind} start -k "$KIT" "$@"
"""

_ADMIN_START = """#!/bin/sh
# Register this admin kit with the shoal CLI and make it the active one (run once per machine).
set -eu
KIT=$(cd "$(dirname "$0")/.." && pwd)
"${{SHOAL:-shoal}}" config add {name} "$KIT" --force
exec "${{SHOAL:-shoal}}" config use {name}
"""

_UNIT = """[Unit]
Description=shoal {kind} {name} (project {project})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=shoal
Group=shoal
WorkingDirectory={root}
Environment=SHOAL=/opt/shoal/venv/bin/shoal
ExecStart={root}/startup/start.sh
Restart=on-failure
RestartSec=5
# SIGTERM to shoal first: it stops its jobs' processes itself; whatever is left is killed after.
KillMode=mixed
TimeoutStopSec=30
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def start_script(kind: str, name: str) -> str:
    if kind == "admin":
        return _ADMIN_START.format(name=_sh_word(name))
    what = "the shoal server" if kind == "server" else f"the shoal site agent of {name}"
    return _START.format(what=what, kind=kind)


def unit_name(kind: str) -> str:
    return f"shoal-{kind}.service"


def systemd_unit(kind: str, name: str, project: str) -> str:
    return _UNIT.format(kind=kind, name=name, project=project, root=f"{INSTALL_ROOT}/{name}")


def _sh_word(text: str) -> str:
    """Quoted for sh: names are checked to be plain, this is belt and braces."""
    return "'" + text.replace("'", "'\\''") + "'"


def readme(kind: str, name: str, project: str, server: str, port: int, description: str = "") -> str:
    """The kit's README.md, for the person who received it."""
    head = [f"# shoal startup kit: {kind} `{name}` of project `{project}`", ""]
    if description:
        head += [description, ""]
    check = [
        "## Check it",
        "",
        "```sh",
        f"shoal preflight --startup-kit {INSTALL_ROOT}/{name}",
        "```",
        "",
        "One line per check (files and permissions, the certificate chain and its lifetime,",
        "the server's name, port and a mutual-TLS handshake, the clock); exit 0 when all pass.",
        "",
    ]
    files = [
        "## What is in it",
        "",
        "- `startup/rootCA.pem`: the project's CA; only certificates it signed are trusted.",
        f"- `startup/{'server' if kind == 'server' else 'client'}.crt` and `.key`: this participant's "
        "identity. The key is secret: keep it mode 0600, readable by the service's user only.",
        f"- `startup/fed_{kind}.json`: {'where to listen' if kind == 'server' else 'where the server is'}.",
        "- `startup/start.sh`: the start script.",
    ]
    if kind == "admin":
        body = [
            "## Use it",
            "",
            "```sh",
            f"sh startup/start.sh          # registers the kit with the CLI as '{name}' and makes it active",
            "shoal system status           # the server and its sites",
            "shoal job submit -j JOB_FOLDER",
            "```",
            "",
            f"Commands go to https://{server}:{port}; your role comes from your certificate.",
            "",
        ]
    else:
        service = unit_name(kind)
        body = [
            "## Start it",
            "",
            f"Copy the kit to `{INSTALL_ROOT}/{name}` on its host, owned by the user `shoal`, then:",
            "",
            "```sh",
            f"{INSTALL_ROOT}/{name}/startup/start.sh        # in the foreground, or as a service:",
            f"sudo cp {INSTALL_ROOT}/{name}/startup/{service} /etc/systemd/system/",
            f"sudo systemctl daemon-reload && sudo systemctl enable --now {service}",
            "```",
            "",
            f"The unit runs `{INSTALL_ROOT}/venv/bin/shoal`; edit its paths if shoal or the kit live",
            "elsewhere.",
            "",
        ]
        if kind == "server":
            body += [
                f"The server listens on port {port} (TCP); sites and admins dial `{server}`, which must",
                "resolve to this host for them. `--host ADDRESS` (after start.sh) binds another address.",
                "Its policy files are in `local/`: `authorization.json`, `studies.json`, `revoked.json`.",
                "",
            ]
            files.append(f"- `startup/{service}`: a systemd unit.")
        else:
            body += [
                f"The site dials `{server}:{port}` (outbound TCP only; nothing needs to reach the site).",
                "It refuses a server whose certificate does not name that host.",
                "Its policy is `local/site_policy.json` (custom code, log streaming, studies).",
                "",
            ]
            files.append(f"- `startup/{service}`: a systemd unit.")
    return "\n".join([*head, *check, *body, *files, ""])
