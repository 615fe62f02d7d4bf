"""The messages between server replicas about a site one holds and a job another runs.

With replicas sharing PostgreSQL and a bucket (decisions/0041), a job's controller runs on the
replica holding its lease, and each site's control channel ends on whichever replica the load
balancer chose. The job's replica reaches a site held by another through a row of the shared
store's ``site_mail`` addressed to that replica (``ForSite``); the site's replica passes back
what the site says about the job (``FromSite``), its results (``ResultFromSite``) and its final
logs (``LogFromSite``) the same way. Bytes (a task's model, a result, a log) travel through the
blob store as relay blobs (``shoal.store.relayblobs``), never in a row (decisions/0048).

Every replica runs the same code from the same server kit: a message here is checked as any
other (``shoal.wire.messages``), and what it carries for or from a site is decoded again with
the site channel's rules by its receiver, which judges it as it judges a site's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.wire.messages import REPLICA, SERVER, Message, register


@register(REPLICA, "for_site", sender=SERVER, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class ForSite(Message):
    """A message of the site channel (``message``) for a site held by the addressee, about job
    ``job_id`` that replica ``holder`` runs. A task whose model does not ride along names the
    relay blob holding it (``model_blob``, ``model_bytes``): the site's replica serves the
    site's download from there and bounds its result by the model's size."""

    holder: str
    job_id: str
    message: dict[str, Any] = field(default_factory=dict)
    model_blob: str | None = None
    model_bytes: int | None = None


@register(REPLICA, "from_site", sender=SERVER, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class FromSite(Message):
    """A report a site made on its channel about job ``job_id`` (``report``, a site-channel
    message), passed to the replica running the job."""

    job_id: str
    report: dict[str, Any] = field(default_factory=dict)


@register(REPLICA, "result_from_site", sender=SERVER, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class ResultFromSite(Message):
    """A site's complete, checked result for task ``task_id`` of job ``job_id``, in relay blob
    ``blob`` (``size`` bytes), with what the site said about it (``header``, its result header)."""

    job_id: str
    task_id: str
    blob: str
    size: int
    header: dict[str, Any] = field(default_factory=dict)


@register(REPLICA, "log_from_site", sender=SERVER, receiver=SERVER)
@dataclass(frozen=True, slots=True)
class LogFromSite(Message):
    """A site's full log file of job ``job_id`` (``file``: log.txt or log.json), uploaded at the
    job's end, in relay blob ``blob``."""

    job_id: str
    file: str
    blob: str
