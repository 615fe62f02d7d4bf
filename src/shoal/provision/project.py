"""The project file: who takes part in a federation, read and checked before anything is written.

The file is the participant part of an NVIDIA FLARE ``project.yml`` (decisions/0021), so a FLARE
user brings theirs as it is: ``name``, ``participants`` (each with ``name``, ``type``: server,
client or admin, ``org``; admins a ``role``; the server its ports and ``host_names``), plus
shoal's own keys: ``studies`` and ``certificate_days``. Keys shoal does not use (``builders``,
``description``, a participant's ``connection_security``, ...) come back as notices, never
silently dropped and never an error. Every error names the file, the line and the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.provision.yamlfile import Path_, YamlDoc, load_yaml_file, parse_yaml
from shoal.security.identity import ADMIN_ROLES
from shoal.wire.jobdef import PLAIN_NAME_RE

DEFAULT_PORT = 8002  # FLARE's fed_learn_port in its examples: a FLARE file without one means this
DEFAULT_LISTEN = "0.0.0.0"
DEFAULT_CERT_DAYS = 365
MAX_CERT_DAYS = 3650  # the CA's own lifetime: no leaf may outlive it
API_VERSIONS = (2, 3)  # FLARE's; both have the same participants
PROJECT_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_LABEL_RE = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_EMAIL_LOCAL_RE = re.compile(r"\A[A-Za-z0-9._%+-]{1,64}\Z")
_TEXT_MAX = 64  # X.509 caps CN and O at 64 characters
STUDY_KEYS = ("sites", "admins", "orgs")

TOP_KEYS = ("api_version", "name", "description", "participants", "studies", "certificate_days")
COMMON_KEYS = ("name", "type", "org")
KIND_KEYS = {
    "server": ("host_names", "fed_learn_port", "port", "admin_port", "listen"),
    "site": (),
    "admin": ("role",),
}
TYPES = {"server": "server", "client": "site", "site": "site", "admin": "admin"}
UNSUPPORTED_TYPES = ("relay", "overseer")


@dataclass(frozen=True)
class Participant:
    """One server, site or admin. ``hosts``, ``port`` and ``listen`` are the server's only."""

    name: str
    kind: str  # server | site | admin
    org: str
    role: str | None = None
    hosts: tuple[str, ...] = ()
    port: int = 0
    listen: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "org": self.org}
        if self.role is not None:
            out["role"] = self.role
        if self.kind == "server":
            out.update(hosts=list(self.hosts), port=self.port, listen=self.listen)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Participant:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            org=str(data["org"]),
            role=data.get("role"),
            hosts=tuple(data.get("hosts", ())),
            port=int(data.get("port", 0)),
            listen=str(data.get("listen", "")),
        )


@dataclass(frozen=True)
class Project:
    name: str
    server: Participant
    sites: tuple[Participant, ...]
    admins: tuple[Participant, ...]
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # as studies.json has them
    certificate_days: int = DEFAULT_CERT_DAYS
    notices: tuple[str, ...] = ()
    description: str = ""  # shown in each kit's README

    def participants(self) -> tuple[Participant, ...]:
        return (self.server, *self.sites, *self.admins)


def is_host_name(value: str) -> bool:
    """An IP address, or a DNS name of letter-digit-hyphen labels (RFC 1123), not all digits."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # "10.0.0.300" is a bad address, not a name


def check_site_name(name: str) -> str | None:
    """Why ``name`` cannot name a site, or None."""
    if "@" in name:
        return "a site name cannot hold '@': names with '@' are admins' (e-mail addresses)"
    if not PLAIN_NAME_RE.fullmatch(name) or len(name) > _TEXT_MAX:
        return "a site name is letters, digits, '.', '_' and '-', at most 64, not starting with '.' or '-'"
    return None


def check_admin_name(name: str) -> str | None:
    """Why ``name`` cannot name an admin (an e-mail address), or None."""
    local, at, domain = name.partition("@")
    if not at or not _EMAIL_LOCAL_RE.fullmatch(local) or not is_host_name(domain) or len(name) > _TEXT_MAX:
        return "an admin is named by an e-mail address (user@example.org), at most 64 characters"
    return None


def check_org(org: str) -> str | None:
    if not org.strip() or len(org) > _TEXT_MAX or any(ord(c) < 32 or c in "/\\\x7f" for c in org):
        return "an org is a name of 1 to 64 characters without control characters or slashes"
    return None


def load_project(path: Path) -> Project:
    """Read and check the project file at ``path`` (PROJECT_FILE_INVALID naming line and key)."""
    return _Reader(load_yaml_file(path)).project()


def parse_project(text: str, source: str = "project.yml") -> Project:
    return _Reader(parse_yaml(text, source)).project()


class _Reader:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.notices: list[str] = []

    def fail(self, path: Path_, detail: str, hint: str | None = None) -> ShoalError:
        return self.doc.error(path, detail, hint)

    def text(self, value: Any, path: Path_) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string, not {value!r}", hint='Quote it: "...".')
        return value

    def mapping(self, value: Any, path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of keys to values, not {type(value).__name__}")
        return value

    def string_list(self, value: Any, path: Path_) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(path, "must be a list of strings (a single name is [name])")
        return [self.text(v, (*path, i)) for i, v in enumerate(value)]

    def whole(self, value: Any, path: Path_, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    def unused(self, keys: list[str], where: str) -> None:
        if keys:
            self.notices.append(f"{self.doc.source}: {where}: shoal does not use {', '.join(keys)}")

    def project(self) -> Project:
        data = self.mapping(self.doc.data, ())
        self.unused([k for k in data if k not in TOP_KEYS], "top level")
        if "api_version" in data and data["api_version"] not in API_VERSIONS:
            raise self.fail(
                ("api_version",), f"api_version {data['api_version']!r} is not one of {API_VERSIONS}"
            )
        if "name" not in data:
            raise self.fail((), "the project has no 'name'")
        name = self.text(data["name"], ("name",))
        if not PROJECT_NAME_RE.fullmatch(name):
            raise self.fail(("name",), "a project name is letters, digits, '.', '_' and '-', at most 64")
        days = DEFAULT_CERT_DAYS
        if "certificate_days" in data:
            days = self.whole(data["certificate_days"], ("certificate_days",), 1, MAX_CERT_DAYS)
        if "participants" not in data:
            raise self.fail((), "the project has no 'participants'")
        raw = data["participants"]
        if not isinstance(raw, list) or not raw:
            raise self.fail(("participants",), "must be a list of participants (server, clients, admins)")
        people = [self.participant(p, ("participants", i)) for i, p in enumerate(raw)]
        self.unique(people)
        servers = [(i, p) for i, p in enumerate(people) if p.kind == "server"]
        if not servers:
            raise self.fail(("participants",), "the project has no participant of type 'server'")
        if len(servers) > 1:
            raise self.fail(
                ("participants", servers[1][0]),
                f"a second server '{servers[1][1].name}' (the first is '{servers[0][1].name}'): "
                "shoal runs one server per project",
            )
        sites = tuple(p for p in people if p.kind == "site")
        admins = tuple(p for p in people if p.kind == "admin")
        studies = self.studies(data.get("studies", {}), sites, admins)
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail(("description",), "must be a string")
        return Project(name, servers[0][1], sites, admins, studies, days, tuple(self.notices), description)

    def participant(self, raw: Any, path: Path_) -> Participant:
        data = self.mapping(raw, path)
        for key in COMMON_KEYS:
            if key not in data:
                raise self.fail(path, f"the participant has no '{key}'")
        name = self.text(data["name"], (*path, "name"))
        kind_word = self.text(data["type"], (*path, "type"))
        if kind_word in UNSUPPORTED_TYPES:
            raise self.fail(
                (*path, "type"),
                f"participant type '{kind_word}' is not supported by shoal (one server, clients and admins)",
                hint="Remove it from the project file; shoal's sites dial the server directly.",
            )
        if kind_word not in TYPES:
            raise self.fail((*path, "type"), f"unknown type '{kind_word}'; use server, client or admin")
        kind = TYPES[kind_word]
        org = self.text(data["org"], (*path, "org"))
        problem = check_org(org)
        if problem:
            raise self.fail((*path, "org"), problem)
        self.unused(
            [k for k in data if k not in COMMON_KEYS and k not in KIND_KEYS[kind]], f"participant '{name}'"
        )
        if kind == "server":
            return self.server(data, path, name, org)
        if kind == "site":
            problem = check_site_name(name)
            if problem:
                raise self.fail((*path, "name"), f"'{name}': {problem}")
            return Participant(name, "site", org)
        problem = check_admin_name(name)
        if problem:
            raise self.fail((*path, "name"), f"'{name}': {problem}")
        if "role" not in data:
            raise self.fail(path, f"admin '{name}' has no 'role' (one of {', '.join(ADMIN_ROLES)})")
        role = self.text(data["role"], (*path, "role"))
        if role not in ADMIN_ROLES:
            raise self.fail((*path, "role"), f"unknown role '{role}'; use one of {', '.join(ADMIN_ROLES)}")
        return Participant(name, "admin", org, role=role)

    def server(self, data: dict[str, Any], path: Path_, name: str, org: str) -> Participant:
        if not is_host_name(name) or len(name) > _TEXT_MAX:
            raise self.fail(
                (*path, "name"),
                f"the server's name '{name}' is not a host name: it is what sites dial and what its "
                "certificate names (letters, digits, '-' between dots, or an IP address)",
            )
        hosts = [name]
        for i, host in enumerate(self.string_list(data.get("host_names", []), (*path, "host_names"))):
            if not is_host_name(host):
                raise self.fail((*path, "host_names", i), f"'{host}' is not a host name or an IP address")
            if host not in hosts:
                hosts.append(host)
        if "port" in data and "fed_learn_port" in data and data["port"] != data["fed_learn_port"]:
            raise self.fail((*path, "port"), "'port' and 'fed_learn_port' disagree; give one")
        port_key = "port" if "port" in data else "fed_learn_port"
        port = self.whole(data.get(port_key, DEFAULT_PORT), (*path, port_key), 1, 65535)
        if "admin_port" in data:
            admin_port = self.whole(data["admin_port"], (*path, "admin_port"), 1, 65535)
            if admin_port != port:
                self.notices.append(
                    f"{self.doc.source}: server '{name}': admin_port {admin_port} is not used; shoal "
                    f"serves admins and sites on one port ({port})"
                )
        listen = self.text(data.get("listen", DEFAULT_LISTEN), (*path, "listen"))
        if not is_host_name(listen):
            raise self.fail((*path, "listen"), f"'{listen}' is not an address to listen on")
        return Participant(name, "server", org, hosts=tuple(hosts), port=port, listen=listen)

    def unique(self, people: list[Participant]) -> None:
        """Names are unique across the project, ignoring case: each is a kit folder, and a
        folder named ``Site-1`` is ``site-1`` on a case-insensitive disk."""
        seen: dict[str, int] = {}
        for i, person in enumerate(people):
            key = person.name.casefold()
            if key in seen:
                first = self.doc.line(("participants", seen[key]))
                raise self.fail(
                    ("participants", i, "name"),
                    f"participant '{person.name}' is named twice (first on line {first})",
                )
            seen[key] = i

    def studies(
        self, raw: Any, sites: tuple[Participant, ...], admins: tuple[Participant, ...]
    ) -> dict[str, dict[str, Any]]:
        """The studies, as the server's studies.json has them: an admin listed by name here
        (unique in the project) is written with the org of its certificate, so a same-named
        admin of another org is never a member; ``default`` may only allow custom code."""
        data = self.mapping(raw, ("studies",))
        known = {"sites": {s.name for s in sites}, "admins": {a.name for a in admins}}
        org_of = {a.name: a.org for a in admins}
        out: dict[str, dict[str, Any]] = {}
        for study, spec_raw in data.items():
            path: Path_ = ("studies", study)
            if not PLAIN_NAME_RE.fullmatch(study):
                raise self.fail(path, f"'{study}' cannot name a study (letters, digits, '.', '_', '-')")
            spec = self.mapping(spec_raw, path)
            allowed = ("allow_custom_code",) if study == "default" else (*STUDY_KEYS, "allow_custom_code")
            unknown = [k for k in spec if k not in allowed]
            if unknown:
                raise self.fail(
                    (*path, unknown[0]),
                    f"unknown key; study '{study}' may have {', '.join(allowed)}"
                    + (" ('default' has every site and admin)" if study == "default" else ""),
                )
            out[study] = {}
            for key in STUDY_KEYS:
                if key not in spec:
                    continue
                names = self.string_list(spec[key], (*path, key))
                for i, member in enumerate(names):
                    if key in known and member not in known[key]:
                        raise self.fail((*path, key, i), f"'{member}' is not one of the project's {key}")
                out[study][key] = [{"name": n, "org": org_of[n]} for n in names] if key == "admins" else names
            if "allow_custom_code" in spec:
                if not isinstance(spec["allow_custom_code"], bool):
                    raise self.fail((*path, "allow_custom_code"), "must be true or false")
                out[study]["allow_custom_code"] = spec["allow_custom_code"]
        return out
