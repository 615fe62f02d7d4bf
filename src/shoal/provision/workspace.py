"""A provisioning workspace: the project's CA, one kit per participant, and what was issued.

<ws>/ca/rootCA.{pem,key}      the CA; its key (0600) never enters a kit
<ws>/kits/<name>/  <name>.zip one startup kit per participant, and the zip that is sent
<ws>/provision.json           the project as provisioned and every certificate issued
                              (serial, lifetime, revoked), written last

Provisioning is incremental: a participant already issued keeps its kit byte for byte
unless it is re-issued by name (``--force NAME``, ``renew``), and a re-issue puts the
predecessor's serial in the server kit's ``local/revoked.json``, so the old key stops working
on the running server (which re-reads that file) while the new kit works at once. Everything
is checked before anything is written: a bad request changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography import x509

from shoal.errors import ShoalError
from shoal.provision.ca import CertificateAuthority, create_ca, load_ca, save_ca
from shoal.provision.kits import write_admin_kit, write_json, write_server_kit, write_site_kit
from shoal.provision.project import Participant, Project
from shoal.provision.zipkit import zip_kit
from shoal.security.localfiles import read_operator_json

STATE = "provision.json"
_HINT_NEW_WS = "Give this project its own --workspace (a new or empty folder)."


def _state_path(ws: Path) -> Path:
    return ws / STATE


def load_state(ws: Path) -> dict[str, Any]:
    """provision.json; PROVISION_WORKSPACE_INVALID when there is none or it is damaged."""
    path = _state_path(ws)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            f"{ws} is not a provisioning workspace (no {STATE})",
            hint="Provision the project first: shoal provision -p project.yml -w WORKSPACE.",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShoalError("PROVISION_WORKSPACE_INVALID", f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("participants"), dict):
        raise ShoalError("PROVISION_WORKSPACE_INVALID", f"{path} is not a provisioning record")
    return data


def _check_new_workspace(ws: Path) -> None:
    if ws.exists() and not ws.is_dir():
        raise ShoalError("PROVISION_WORKSPACE_INVALID", f"{ws} exists and is not a folder", hint=_HINT_NEW_WS)
    if ws.is_dir() and any(ws.iterdir()):
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            f"{ws} holds files but no {STATE}: it is not this project's workspace",
            hint=_HINT_NEW_WS,
        )


def _load_ca(ws: Path, project: str) -> CertificateAuthority:
    try:
        ca = load_ca(ws / "ca")
    except ShoalError as err:
        raise ShoalError("PROVISION_WORKSPACE_INVALID", err.detail, hint=_HINT_NEW_WS) from err
    names = [str(a.value) for a in ca.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if names != [project]:
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            f"the CA in {ws / 'ca'} is project '{', '.join(names)}''s, not '{project}''s",
            hint=_HINT_NEW_WS,
        )
    return ca


def _serial(cert_path: Path) -> tuple[str, str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return format(cert.serial_number, "X"), cert.not_valid_after_utc.isoformat(timespec="seconds")


def _project_json(project: Project) -> dict[str, Any]:
    return {
        "name": project.name,
        "description": project.description,
        "certificate_days": project.certificate_days,
        "server": project.server.to_json(),
        "studies": project.studies,
    }


def _changes(old: Participant, new: Participant) -> list[str]:
    fields = ("kind", "org", "role", "hosts", "port", "listen")
    return [
        f"{f} {getattr(old, f)!r} -> {getattr(new, f)!r}"
        for f in fields
        if getattr(old, f) != getattr(new, f)
    ]


class Provisioner:
    """One workspace's state, the plan of a change, and the code that carries it out."""

    def __init__(self, ws: Path, state: dict[str, Any], ca: CertificateAuthority) -> None:
        self.ws = ws
        self.state = state
        self.ca = ca
        self._batch: list[Participant] = []  # being issued now (the server kit lists the sites)

    @property
    def kits(self) -> Path:
        return self.ws / "kits"

    @property
    def project(self) -> dict[str, Any]:
        project: dict[str, Any] = self.state["project"]
        return project

    @property
    def server(self) -> Participant:
        return Participant.from_json(self.project["server"])

    def issued(self, name: str) -> Participant | None:
        record = self.state["participants"].get(name)
        return Participant.from_json(record) if record else None

    def record(self, name: str) -> dict[str, Any]:
        record = self.state["participants"].get(name)
        if record is None:
            raise ShoalError("PARTICIPANT_NOT_FOUND", name=name)
        return dict(record)

    @classmethod
    def open(cls, ws: Path) -> Provisioner:
        ws = Path(ws).expanduser().resolve()
        state = load_state(ws)
        return cls(ws, state, _load_ca(ws, str(state["project"]["name"])))

    # --- writing ---

    def _write_kit(self, who: Participant) -> dict[str, Any]:
        """Issue ``who``'s certificate and write its kit (over an existing one's startup/)."""
        server = self.server
        common: dict[str, Any] = {
            "project": self.project["name"],
            "org": who.org,
            "port": server.port,
            "host": server.hosts[0],
            "days": int(self.project["certificate_days"]),
            "description": self.project.get("description", ""),
        }
        if who.kind == "server":
            sites = [n for n, r in self.state["participants"].items() if r["kind"] == "site"]
            sites += [p.name for p in self._batch if p.kind == "site" and p.name not in sites]
            kit = write_server_kit(
                self.kits,
                self.ca,
                name=who.name,
                hosts=who.hosts[1:],
                listen=who.listen,
                sites=sites,
                studies=self.project.get("studies", {}),
                **common,
            )
            cert = kit / "startup" / "server.crt"
        elif who.kind == "site":
            kit = write_site_kit(self.kits, self.ca, name=who.name, **common)
            cert = kit / "startup" / "client.crt"
        else:
            assert who.role is not None
            kit = write_admin_kit(self.kits, self.ca, name=who.name, role=who.role, **common)
            cert = kit / "startup" / "client.crt"
        serial, not_after = _serial(cert)
        previous = self.state["participants"].get(who.name, {}).get("serials", [])
        record = {
            **who.to_json(),
            "serial": serial,
            "not_after": not_after,
            "issued": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "revoked": False,
            "serials": [*previous, serial],
        }
        self.state["participants"][who.name] = record
        return record

    @property
    def server_kit(self) -> Path:
        return self.kits / self.server.name

    def _revoked_file(self) -> Path:
        return self.server_kit / "local" / "revoked.json"

    def _revoke(self, serials: Iterable[str] = (), names: Iterable[str] = ()) -> bool:
        """Add to the server kit's revocation list, keeping what the operator put there."""
        serials, names = list(serials), list(names)
        if not serials and not names:
            return False
        path = self._revoked_file()
        data = read_operator_json(path) or {}
        if not isinstance(data, dict):
            raise ShoalError("LOCAL_FILE_ERROR", f"{path} is not a JSON object", path=str(path))
        for key, new in (("serials", serials), ("names", names)):
            have = list(data.get(key, []))
            data[key] = have + [v for v in new if v not in have]
        write_json(path, data)
        return True

    def _save(self) -> None:
        write_json(_state_path(self.ws), self.state)

    def _apply(
        self, issue: list[Participant], revoke_serials: list[str], revoke_names: list[str], studies: bool
    ) -> dict[str, Any]:
        """Write the planned change: kits, the server's policy files, zips, then the record."""
        touched: set[str] = set()
        self._batch = issue
        report: dict[str, Any] = {"issued": [], "revoked_serials": revoke_serials, "revoked": revoke_names}
        # the server kit first: it holds revoked.json
        for who in sorted(issue, key=lambda p: p.kind != "server"):
            record = self._write_kit(who)
            report["issued"].append({"name": who.name, "kind": who.kind, "serial": record["serial"]})
            touched.add(who.name)
        if studies and self.server.name not in touched:
            studies_file = self.server_kit / "local" / "studies.json"
            write_json(studies_file, {"studies": self.project.get("studies", {})})
            touched.add(self.server.name)
        if self._revoke(revoke_serials, revoke_names):
            touched.add(self.server.name)
        for name in sorted(touched):
            zip_kit(self.kits / name)
        report["updated_kits"] = sorted(touched)
        self._save()
        return report

    # --- operations ---

    def reissue(self, names: Iterable[str], changed: dict[str, Participant] | None = None) -> dict[str, Any]:
        """New key and certificate for each name (its identity from ``changed`` or the record);
        each predecessor's serial is revoked on the server."""
        people = [(changed or {}).get(n) or self.issued(n) for n in names]
        for name, who in zip(names, people, strict=True):
            if who is None:
                raise ShoalError("PARTICIPANT_NOT_FOUND", name=name)
        live = [p for p in people if p is not None]
        # the server's own serial is not checked by anyone it could be listed with
        olds = [self.state["participants"][p.name]["serial"] for p in live if p.kind != "server"]
        return self._apply(live, olds, [], studies=False) | {"renewed": list(names)}

    def add(self, who: Participant) -> dict[str, Any]:
        if who.name.casefold() in (n.casefold() for n in self.state["participants"]):
            raise ShoalError(
                "INVALID_ARGS",
                f"'{who.name}' is already a participant of project '{self.project['name']}'",
                hint=f"Re-issue its kit with 'shoal provision renew {who.name}', or choose another name.",
            )
        self._check_free_folder(who.name)
        return self._apply([who], [], [], studies=False)

    def _check_free_folder(self, name: str) -> None:
        if (self.kits / name).exists() or (self.kits / f"{name}.zip").exists():
            raise ShoalError(
                "PROVISION_WORKSPACE_INVALID",
                f"{self.kits / name} exists but provisioning did not make it",
                hint="Move that folder away, or choose another name.",
            )

    def revoke(self, name: str) -> dict[str, Any]:
        record = self.record(name)
        if record["kind"] == "server":
            raise ShoalError(
                "INVALID_ARGS",
                "the server cannot be revoked from its own list",
                hint="Re-issue the server kit with 'shoal provision renew' to replace its key.",
            )
        record["revoked"] = True
        self.state["participants"][name] = record
        report = self._apply([], [], [name], studies=False)
        report["revoked_file"] = str(self._revoked_file())
        return report


def provision(project: Project, ws: Path, force: Iterable[str] = ()) -> dict[str, Any]:
    """Make or extend the workspace for ``project``: new participants get kits, ``force``
    names are re-issued (predecessors revoked), the others are left as they are."""
    ws = Path(ws).expanduser().resolve()
    force = list(dict.fromkeys(force))
    names = {p.name for p in project.participants()}
    missing = [n for n in force if n not in names]
    if missing:
        raise ShoalError("PARTICIPANT_NOT_FOUND", f"--force names {missing[0]}", name=missing[0])
    if not _state_path(ws).exists():
        _check_new_workspace(ws)
        return _first_provision(project, ws)
    prov = Provisioner.open(ws)
    if prov.project["name"] != project.name:
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            f"{ws} holds project '{prov.project['name']}', not '{project.name}'",
            hint=_HINT_NEW_WS,
        )
    old_server = prov.server
    if (old_server.name, old_server.port) != (project.server.name, project.server.port):
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            f"the server was provisioned as {old_server.name}:{old_server.port} and every kit dials that; "
            f"the project file says {project.server.name}:{project.server.port}",
            hint="Keep the server's name and port (add names under host_names and --force the server), "
            "or provision the changed project into a new workspace.",
        )
    new, changed, conflicts = [], {}, []
    for who in project.participants():
        old = prov.issued(who.name)
        if old is None:
            clash = [n for n in prov.state["participants"] if n.casefold() == who.name.casefold()]
            if clash:
                conflicts.append(f"'{who.name}' differs from the issued '{clash[0]}' only in case")
                continue
            prov._check_free_folder(who.name)
            new.append(who)
        elif _changes(old, who) and who.name not in force:
            conflicts.append(f"{who.name}: {'; '.join(_changes(old, who))}")
        elif who.name in force:
            changed[who.name] = who
    if conflicts:
        raise ShoalError(
            "PROVISION_WORKSPACE_INVALID",
            "participants changed since their kits were issued: " + " | ".join(conflicts),
            hint="Re-issue each changed participant with --force NAME (its old certificate is revoked), "
            "or undo the change in the project file.",
        )
    gone = sorted(set(prov.state["participants"]) - names)
    studies = project.studies != prov.project.get("studies", {})
    prov.state["project"] = {**_project_json(project), "server": project.server.to_json()}
    serials = [prov.state["participants"][n]["serial"] for n in changed if n != project.server.name]
    report = prov._apply([*new, *changed.values()], serials, [], studies=studies)
    report["notices"] = list(project.notices) + [
        f"'{n}' is no longer in the project file; its kit stays valid until 'shoal provision revoke {n}'"
        for n in gone
        if not prov.state["participants"][n].get("revoked")
    ]
    report["unchanged"] = sorted(names - {p.name for p in new} - set(changed))
    return {"workspace": str(ws), "project": project.name, **report}


def _first_provision(project: Project, ws: Path) -> dict[str, Any]:
    ws.mkdir(parents=True, exist_ok=True)
    ca = create_ca(project.name)
    save_ca(ca, ws / "ca")
    prov = Provisioner(ws, {"project": _project_json(project), "participants": {}}, ca)
    try:
        report = prov._apply(list(project.participants()), [], [], studies=False)
    except BaseException:
        for sub in ("ca", "kits"):
            _rmtree(ws / sub)
        _state_path(ws).unlink(missing_ok=True)
        raise
    report["notices"] = list(project.notices)
    report["unchanged"] = []
    return {"workspace": str(ws), "project": project.name, **report}


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def add_participant(ws: Path, who: Participant) -> dict[str, Any]:
    """``add-site`` / ``add-user``: one more participant, without editing the project file."""
    prov = Provisioner.open(ws)
    return {"workspace": str(prov.ws), **prov.add(replace(who))}


def renew(ws: Path, names: Iterable[str]) -> dict[str, Any]:
    prov = Provisioner.open(ws)
    names = list(dict.fromkeys(names))
    for name in names:
        prov.record(name)
    return {"workspace": str(prov.ws), **prov.reissue(names)}


def revoke(ws: Path, name: str) -> dict[str, Any]:
    prov = Provisioner.open(ws)
    return {"workspace": str(prov.ws), **prov.revoke(name)}


def participants(ws: Path) -> dict[str, Any]:
    """Every participant issued in ``ws``, with its certificate's serial, end and days left."""
    prov = Provisioner.open(ws)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for name, record in sorted(prov.state["participants"].items()):
        end = dt.datetime.fromisoformat(record["not_after"])
        rows.append(
            {
                "name": name,
                "kind": record["kind"],
                "org": record["org"],
                "role": record.get("role"),
                "serial": record["serial"],
                "not_after": record["not_after"],
                "days_left": (end - now).days,
                "revoked": bool(record.get("revoked")),
                "kit": str(prov.kits / name),
            }
        )
    return {"workspace": str(prov.ws), "project": prov.project["name"], "participants": rows}
