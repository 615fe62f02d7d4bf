"""The directory of sites held by other replicas: what a refresh of ``site_sessions`` finds."""

from __future__ import annotations

import time

from shoal.scheduler.remote import RemoteSites
from shoal.store.sessions import SiteSession


def session(site: str, replica: str, since: float = 1.0, jobs: tuple[str, ...] = ()) -> SiteSession:
    return SiteSession(site, replica, since, "acme", "1", jobs=jobs)


def test_only_other_replicas_sites_are_listed_and_arrivals_are_new_channels() -> None:
    directory = RemoteSites()
    first = directory.refresh(
        [session("s1", "a"), session("s2", "b"), session("s3", "b")], here="a", local={"s1", "s3"}
    )
    assert directory.names() == ["s2"]  # its own sites and ones connected here are not remote
    assert [(s.site, again) for s, again in first.came] == [("s2", False)] and first.gone == []
    same = directory.refresh([session("s2", "b")], here="a", local=set())
    assert same.came == [] and same.gone == []
    moved = directory.refresh([session("s2", "c", since=2.0)], here="a", local=set())
    assert [(s.site, s.replica, again) for s, again in moved.came] == [("s2", "c", True)]


def test_a_site_that_left_and_came_back_within_its_grace_is_a_reconnection() -> None:
    directory = RemoteSites()
    directory.refresh([session("s2", "b")], here="a", local=set())
    left = directory.refresh([], here="a", local=set())
    assert left.gone == ["s2"] and "s2" not in directory
    back = directory.refresh([session("s2", "b", since=5.0, jobs=("7",))], here="a", local=set())
    assert [(s.site, s.jobs, again) for s, again in back.came] == [("s2", ("7",), True)]
    assert not directory.settled("s2")  # its grace ends with it back: nothing to lose
    directory.refresh([], here="a", local=set())
    assert directory.settled("s2")  # gone past its grace: its jobs go on without it
    fresh = directory.refresh([session("s2", "b", since=9.0)], here="a", local=set())
    assert [again for _, again in fresh.came] == [False]


def test_a_site_that_moved_here_is_not_gone() -> None:
    directory = RemoteSites()
    directory.refresh([session("s2", "b")], here="a", local=set())
    moved = directory.refresh([session("s2", "a", since=3.0)], here="a", local={"s2"})
    assert moved.gone == [] and moved.came == [] and directory.names() == []


def test_jobs_deployed_on_a_sites_new_channel_are_not_taken_for_lost() -> None:
    """A site reconnected elsewhere and was deployed a job there before this replica read its
    new channel: its hello's job list cannot name that job, yet its agent did not lose it."""
    directory = RemoteSites()
    directory.deployed("s2", "7")
    opened = time.time()
    time.sleep(0.01)
    directory.deployed("s2", "8")
    directory.deployed("s3", "8")
    assert directory.deployed_since("s2", opened) == {"8"}
    assert directory.deployed_since("s2", opened - 60) == {"7", "8"}
