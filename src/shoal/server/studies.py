"""Studies: separate job namespaces on one server, each with its sites and its people.

Declared in ``<server kit>/local/studies.json``:
``{"studies": {"cancer": {"sites": ["site-1"], "admins": ["lead@x.org"], "orgs": ["x.org"]}}}``.
``default`` always exists, has every site, and every admin may use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.security.identity import Identity

DEFAULT_STUDY = "default"


class Studies:
    def __init__(self, studies: dict[str, dict[str, Any]]) -> None:
        self.studies = studies

    @classmethod
    def load(cls, path: Path) -> Studies:
        if not path.exists():
            return cls({})
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(dict(data.get("studies", {})))

    def names(self) -> list[str]:
        return sorted({DEFAULT_STUDY, *self.studies})

    def require(self, study: str, who: Identity) -> str:
        """The study, if it exists and ``who`` may use it (project admins may use every study)."""
        if study == DEFAULT_STUDY:
            return study
        spec = self.studies.get(study)
        if spec is None:
            raise ShoalError("STUDY_NOT_FOUND", f"known studies: {', '.join(self.names())}", study=study)
        if (
            who.role == "project_admin"
            or who.name in spec.get("admins", [])
            or who.org in spec.get("orgs", [])
        ):
            return study
        raise ShoalError("NOT_AUTHORIZED", f"{who.name} is not a member of study '{study}'")

    def sites(self, study: str) -> set[str] | None:
        """The sites a study's jobs may run on; None means any site."""
        if study == DEFAULT_STUDY or study not in self.studies:
            return None
        return set(self.studies[study].get("sites", []))
