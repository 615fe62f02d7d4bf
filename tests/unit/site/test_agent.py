"""The site agent runs a deployed job with its ``job_class`` (the light benchmark sites rely on
it to run jobs in-process instead of starting 200 training interpreters)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.provision.poc import prepare_poc
from shoal.site.agent import SiteAgent
from shoal.site.job import SiteJob


class RecordingJob(SiteJob):
    started: list[str] = []

    async def start(self) -> None:
        RecordingJob.started.append(self.job_id)


def test_a_deploy_builds_the_agents_job_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    prepare_poc(tmp_path / "poc", n_sites=1)

    class Agent(SiteAgent):
        job_class = RecordingJob
        warm_processes = False

    async def deploy() -> SiteJob:
        agent = Agent(tmp_path / "poc" / "kits" / "site-1")
        found = agent._dispatch.handler({"type": "deploy", "job_id": "42", "app": "app", "study": "default"})
        assert found is not None
        message, handle = found
        handle(message)
        await asyncio.sleep(0)  # let the job's start() run
        return agent.jobs["42"]

    job = asyncio.run(deploy())
    assert type(job) is RecordingJob
    assert RecordingJob.started == ["42"]
    assert job.study == "default"
