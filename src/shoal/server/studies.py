"""Studies: separate job namespaces on one server, each with its sites and its people.

Declared in ``<server kit>/local/studies.json``:
``{"studies": {"cancer": {"sites": ["site-1"], "orgs": ["x.org"],
"admins": [{"name": "lead@y.org", "org": "y.org"}]}}}``.
``default`` always exists, has every site, and every admin may use it.

An admin is named by certificate name AND organisation: two orgs may each have a
``lead@y.org``, and listing one must not admit the other. A bare name (``"admins":
["lead@y.org"]``, the format before) is refused at start with the form to write instead,
rather than read as "this name in any org".

A study's jobs run custom server code (a workflow class or a ``custom/`` folder of the server
app) only if the study says ``"allow_custom_code": true``; ``default`` may say so too
(``{"studies": {"default": {"allow_custom_code": true}}}``). That code runs confined
(``shoal.sandbox``), but it still runs on the server, so it is off unless the operator turns it on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.security.identity import Identity
from shoal.security.localfiles import json_object, operator_file_error, read_operator_json, string_list

DEFAULT_STUDY = "default"
#: What a study may say; each is a list of strings (a lone string would be matched as a substring).
STUDY_KEYS = ("sites", "orgs")
#: The study's admins: a list of ``{"name": ..., "org": ...}``, kept as (name, org) pairs.
ADMINS_KEY = "admins"
#: What a study may say that is true or false (absent: false).
STUDY_FLAGS = ("allow_custom_code",)


class Studies:
    def __init__(self, studies: dict[str, dict[str, Any]]) -> None:
        self.studies = studies

    @classmethod
    def load(cls, path: Path) -> Studies:
        """The studies file, checked: LOCAL_FILE_ERROR naming the key that is wrong. An unknown
        key is refused too, since a misspelt ``admins`` would silently leave a study closed."""
        data = read_operator_json(path)
        if data is None:
            return cls({})
        declared = json_object(json_object(data, path).get("studies", {}), path, "studies")
        studies: dict[str, dict[str, Any]] = {}
        for name, raw in declared.items():
            spec = json_object(raw, path, f"studies.{name}")
            known = (*STUDY_KEYS, ADMINS_KEY, *STUDY_FLAGS)
            unknown = sorted(set(spec) - set(known))
            if unknown:
                raise operator_file_error(
                    path, f"study '{name}' has unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
                )
            studies[name] = {
                key: string_list(spec[key], path, f"studies.{name}.{key}")
                for key in STUDY_KEYS
                if key in spec
            }
            if ADMINS_KEY in spec:
                studies[name][ADMINS_KEY] = _admins(spec[ADMINS_KEY], path, f"studies.{name}.{ADMINS_KEY}")
            for flag in STUDY_FLAGS:
                if flag in spec and not isinstance(spec[flag], bool):
                    raise operator_file_error(
                        path, f"'studies.{name}.{flag}' must be true or false, not {spec[flag]!r:.80}"
                    )
                studies[name][flag] = spec.get(flag, False)
        return cls(studies)

    def allows_custom_code(self, study: str) -> bool:
        """Whether the study's jobs may run custom code on the server (off unless declared)."""
        return bool(self.studies.get(study, {}).get("allow_custom_code", False))

    def names(self) -> list[str]:
        return sorted({DEFAULT_STUDY, *self.studies})

    def may_use(self, study: str, who: Identity) -> bool:
        """Project admins may use every study; others the ones naming them or their org."""
        spec = self.studies.get(study)
        if study == DEFAULT_STUDY or who.role == "project_admin":
            return True
        if spec is None:
            return False
        return (who.name, who.org) in spec.get(ADMINS_KEY, []) or who.org in spec.get("orgs", [])

    def require(self, study: str, who: Identity) -> str:
        """The study, if it exists and ``who`` may use it (project admins may use every study)."""
        if study == DEFAULT_STUDY:
            return study
        if study not in self.studies:
            # Only the studies the caller may use: the others' names are not theirs to learn.
            usable = [name for name in self.names() if self.may_use(name, who)]
            raise ShoalError("STUDY_NOT_FOUND", f"studies you may use: {', '.join(usable)}", study=study)
        if self.may_use(study, who):
            return study
        raise ShoalError("NOT_AUTHORIZED", f"{who.name} is not a member of study '{study}'")

    def sites(self, study: str) -> set[str] | None:
        """The sites a study's jobs may run on; None means any site."""
        if study == DEFAULT_STUDY or study not in self.studies:
            return None
        return set(self.studies[study].get("sites", []))


def _admins(value: Any, path: Path, key: str) -> list[tuple[str, str]]:
    """``[{"name": ..., "org": ...}, ...]`` as (name, org) pairs; LOCAL_FILE_ERROR naming the
    entry otherwise. A bare name is refused, not read as "this name in any org"."""
    if not isinstance(value, list):
        raise operator_file_error(path, f'\'{key}\' must be a list of {{"name", "org"}} objects')
    pairs: list[tuple[str, str]] = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            instead = json.dumps({"name": entry[:80], "org": "<its org>"})
            raise operator_file_error(
                path,
                f"'{key}[{index}]' is a bare name, {entry!r:.80}, which would admit that name from any "
                f"org; write {instead}",
            )
        if (
            not isinstance(entry, dict)
            or set(entry) != {"name", "org"}
            or not all(isinstance(v, str) and v.strip() for v in entry.values())
        ):
            raise operator_file_error(
                path, f'\'{key}[{index}]\' must be {{"name": ..., "org": ...}} with two non-empty strings'
            )
        pairs.append((entry["name"], entry["org"]))
    return pairs
