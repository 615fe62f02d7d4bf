"""Who may do what: the role → right table, read from the server's policy file.

Roles come from the admin certificate (``title``). Each right maps to a condition:
``any`` (allowed), ``org`` (the job's submitter is in the caller's org), ``own`` (the caller
submitted the job), ``none`` (denied). The file ``<server kit>/local/authorization.json`` is
the single source of truth; DEFAULT_POLICY is what provisioning writes there.

A submitter is its certificate's name AND organisation: two orgs may each have a
``lead@example.org``, and neither owns the other's jobs. A job stored with an empty org (its
submitter's certificate named none) is nobody's own and no org's: only ``any`` reaches it.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.security.localfiles import json_object, operator_file_error, read_operator_json

#: ``operate``: remove a site, restart or stop a site's agent (``shoal system``).
RIGHTS = ("submit_job", "view", "manage_job", "download_job", "clone_job", "view_logs", "operate")
CONDITIONS = ("any", "org", "own", "none")

DEFAULT_POLICY: dict[str, dict[str, str]] = {
    "project_admin": {r: "any" for r in RIGHTS},
    "org_admin": {
        "submit_job": "none",
        "view": "any",
        "manage_job": "org",
        "download_job": "org",
        "clone_job": "none",
        "view_logs": "org",
    },
    "lead": {
        "submit_job": "any",
        "view": "any",
        "manage_job": "own",
        "download_job": "own",
        "clone_job": "own",
        "view_logs": "own",
    },
    "member": {"view": "any"},
}


class Policy:
    def __init__(self, table: dict[str, dict[str, str]]) -> None:
        for role, rights in table.items():
            for right, cond in rights.items():
                if right not in RIGHTS or not isinstance(cond, str) or cond not in CONDITIONS:
                    raise ValueError(
                        f"policy: role {role!r} has an unknown right or condition: {right}={cond}"
                    )
        self.table = table

    @classmethod
    def load(cls, path: Path) -> Policy:
        """The policy file if present, else the default (a missing file must not open everything).
        A damaged one is LOCAL_FILE_ERROR naming it, not a server that starts with a guess."""
        data = read_operator_json(path)
        if data is None:
            return cls(DEFAULT_POLICY)
        data = json_object(data, path)
        roles = json_object(data.get("roles", data), path, "roles")
        table: dict[str, dict[str, str]] = {}
        for role, rights in roles.items():
            table[role] = json_object(rights, path, f"roles.{role}")
        try:
            return cls(table)
        except ValueError as exc:
            raise operator_file_error(path, str(exc)) from exc

    def condition(self, role: str | None, right: str) -> str:
        return self.table.get(role or "", {}).get(right, "none")

    def check(self, who: Identity, right: str, owner: tuple[str, str] | None = None) -> None:
        """Raise NOT_AUTHORIZED unless ``who`` holds ``right``; ``owner`` is the job's (name, org)."""
        cond = self.condition(who.role, right)
        if cond == "any":
            return
        if owner is not None and cond == "own" and is_submitter(who, owner):
            return
        if owner is not None and cond == "org" and owner[1] and owner[1] == who.org:
            return
        raise _denied(who, right, cond)

    def listing_scope(self, who: Identity, right: str) -> tuple[str | None, str | None]:
        """Which jobs a listing shows ``who``: the (submitter name, submitter org) they must
        have, None meaning any. ``own`` is the caller's name and org, ``org`` its org; the same
        rule as ``check``, so a listing never shows a job its rows could not be opened on.
        NOT_AUTHORIZED when the right reaches no job."""
        cond = self.condition(who.role, right)
        if cond == "any":
            return None, None
        if cond == "own" and who.org:
            return who.name, who.org
        if cond == "org" and who.org:
            return None, who.org
        raise _denied(who, right, cond)


def _denied(who: Identity, right: str, cond: str) -> ShoalError:
    scope = {"own": "jobs it submitted", "org": "jobs of its org", "none": "no job"}.get(cond, "no job")
    return ShoalError("NOT_AUTHORIZED", f"role '{who.role}' may use {right} on {scope}")


def is_submitter(who: Identity, owner: tuple[str, str]) -> bool:
    """Whether ``who`` is the submitter ``owner`` = (name, org): both must match, and an owner
    without an org (a record no certificate of this project could have made) matches nobody."""
    name, org = owner
    return bool(org) and (name, org) == (who.name, who.org)


def write_default_policy(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"roles": DEFAULT_POLICY}, indent=2) + "\n")
