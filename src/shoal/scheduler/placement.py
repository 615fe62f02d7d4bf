"""Where a job runs: which reachable sites run which of its apps, what it holds of their declared
resources, and its folder unpacked on this server. Plain functions of what each site said in its
hello (``HelloOf``: ``RemoteSiteReach.hello_of``, for a site here or on another replica) and of
the resource book, used by the scheduler's dispatch pass and by a job's resume alike.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

from shoal.scheduler.jobpaths import JobPaths
from shoal.scheduler.resources import ResourceBook
from shoal.store.base import JobRecord
from shoal.store.blobs import Blobs
from shoal.wire.archive import extract_archive
from shoal.wire.jobdef import ALL_SITES, load_job_definition
from shoal.wire.resources import Need, ResourceError, check_spec

log = logging.getLogger("shoal.scheduler")

#: What a site said in its hello: the studies it serves (None: every one) and the resources it
#: declared.
HelloOf = Callable[[str], tuple[frozenset[str] | None, dict[str, Any]]]


def target_sites(
    deploy_map: dict[str, list[str]], connected: list[str], allowed: set[str] | None = None
) -> dict[str, str]:
    """Which connected site runs which app. ``@ALL`` means every connected site (of the study)."""
    if allowed is not None:
        connected = [s for s in connected if s in allowed]
    out: dict[str, str] = {}
    for app, targets in deploy_map.items():
        for target in targets:
            if target == ALL_SITES:
                for site in connected:
                    out.setdefault(site, app)
            elif target != "server" and target in connected:
                out.setdefault(target, app)
    return out


def server_app_of(deploy_map: dict[str, list[str]]) -> str | None:
    for app, targets in deploy_map.items():
        if "server" in targets or ALL_SITES in targets:
            return app
    return None


def serving(hello_of: HelloOf, connected: list[str], study: str) -> list[str]:
    """The connected sites that serve ``study``. A site that cannot be judged (a bug) is
    left out and logged: it never costs the other sites their jobs."""
    found = []
    for site in connected:
        try:
            if serves(hello_of, site, study):
                found.append(site)
        except Exception:
            log.exception("site %s: judging whether it serves study %s failed; left out", site, study)
    return found


def serves(hello_of: HelloOf, site: str, study: str) -> bool:
    """A site's own policy may limit the studies it serves (``studies`` in site_policy.json)."""
    studies = hello_of(site)[0]
    return studies is None or study in studies


def take_resources(
    hello_of: HelloOf, resources: ResourceBook, job: JobRecord, targets: dict[str, str]
) -> tuple[dict[str, list[str]] | None, list[str]]:
    """Hold what the job needs on every target site (all or nothing): the GPU ids per site,
    or None and which site waits for what."""
    try:
        needs = check_spec(job.meta.get("resource_spec") or {})
    except ResourceError:
        needs = {}  # checked at submit; a record from before that check asks for nothing
    waits = []
    for site in sorted(targets):
        declared = hello_of(site)[1]
        short = resources.shortfall(site, declared, needs.get(site, Need()))
        if short:
            waits.append(f"{site} {short}")
    if waits:
        return None, waits
    gpus = {}
    for site in targets:
        declared = hello_of(site)[1]
        taken = resources.take(job.job_id, site, declared, needs.get(site, Need()))
        if "gpus" in declared:  # a site that declares none keeps its host's own GPU settings
            gpus[site] = taken
    return gpus, []


def materialise(blobs: Blobs, job: JobRecord, paths: JobPaths) -> None:
    """Extract the stored job archive into the job's folder (fresh each time)."""
    if paths.job.exists():
        shutil.rmtree(paths.job)
    with blobs.local_file(job.content_sha256) as archive:
        extract_archive(archive, paths.job)
    load_job_definition(paths.job)
