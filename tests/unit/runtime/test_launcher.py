"""Warm job processes: a job forked from the fork server sees what ``python -u <argv>`` would
give it (and so does one started cold), and the fork server never outlives its parent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.runtime import launcher as warm
from shoal.runtime.launcher import ForkedProcess, ForkServer
from shoal.sandbox.priority import session_nice

SCRIPT = """
import json, os, sys
from shoal.wire.channel import SyncChannel
import helper
channel = SyncChannel.from_env()
channel.send({"argv": sys.argv, "cwd": os.getcwd(), "site": os.environ.get("SHOAL_SITE_NAME"),
              "path0": sys.path[0], "main": __name__, "helper": helper.VALUE,
              "pgid_is_pid": os.getpgid(0) == os.getpid()})
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
reply = channel.receive(10)
sys.exit(reply["code"])
"""

T = TypeVar("T")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork server and /proc: Linux")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _read_all(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await stream.read()).decode()


@pytest.mark.parametrize("warm_processes", ["1", "0"], ids=["forked", "cold"])
def test_a_script_runs_as_python_would_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_processes: str
) -> None:
    monkeypatch.setenv("SHOAL_WARM_SPARES", warm_processes)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "client.py").write_text(SCRIPT)
    (custom / "helper.py").write_text("VALUE = 42\n")
    work = tmp_path / "work"
    work.mkdir()

    async def scenario() -> tuple[dict[str, object], int, str, bool]:
        launcher = ForkServer(("json",), pipe_stdout=True)
        launcher.warm_up()
        proc, sock = await launcher.launch(
            [str(custom / "client.py"), "--lr", "0.1"],
            cwd=str(work),
            env={"SHOAL_SITE_NAME": "site-7"},
            sys_path=[str(custom)],
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        seen = json.loads(await reader.readline())
        writer.write(b'{"code": 3}\n')
        await writer.drain()
        output = await _read_all(proc.stdout)
        code = await proc.wait()
        await launcher.close()
        writer.close()
        return seen, code, output, isinstance(proc, ForkedProcess)

    seen, code, output, forked = run(scenario())
    assert seen == {
        "argv": [str(custom / "client.py"), "--lr", "0.1"],
        "cwd": str(work),
        "site": "site-7",
        "path0": str(custom),
        "main": "__main__",
        "helper": 42,
        "pgid_is_pid": True,  # its own process group: abort and shutdown kill the whole group
    }
    assert code == 3
    assert "to stdout" in output and "to stderr" in output
    assert forked == (warm_processes == "1")


PRIORITY_SCRIPT = """
import os
from shoal.sandbox.priority import session_nice
from shoal.wire.channel import SyncChannel
SyncChannel.from_env().send({"nice": os.getpriority(os.PRIO_PROCESS, 0), "group": session_nice()})
"""


@pytest.mark.parametrize("warm_processes", ["1", "0"], ids=["forked", "cold"])
def test_a_job_process_yields_the_cpu_to_its_host_also_by_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_processes: str
) -> None:
    """Issue 19: with the kernel's autogroups a nice value counts only within a session, and a
    job process in a session of its own ran at its host's weight however niced. Its session's
    group must be niced too (the fork server's, or a cold process's own)."""
    monkeypatch.setenv("SHOAL_WARM_SPARES", warm_processes)
    monkeypatch.setenv("SHOAL_JOB_NICE", "7")
    (tmp_path / "prio.py").write_text(PRIORITY_SCRIPT)

    async def scenario() -> dict[str, Any]:
        launcher = ForkServer((), pipe_stdout=False)
        proc, sock = await launcher.launch(
            [str(tmp_path / "prio.py")], cwd=str(tmp_path), env={}, confinement={"mode": "off", "nice": 7}
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        seen: dict[str, Any] = json.loads(await reader.readline())
        assert await proc.wait() == 0
        writer.close()
        await launcher.close()
        return seen

    mine, my_group = os.getpriority(os.PRIO_PROCESS, 0), session_nice()
    seen = run(scenario())
    assert seen["nice"] == min(19, mine + 7), seen
    if my_group is None:  # no autogroups in this kernel: the nice value is all that counts
        assert seen["group"] is None
    else:
        assert seen["group"] == min(19, my_group + 7), seen


def test_modules_exceptions_signals_and_log_files(tmp_path: Path) -> None:
    (tmp_path / "mod_ok.py").write_text("import sys\nprint('module', sys.argv[1:])\n")
    (tmp_path / "mod_bad.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "mod_sleep.py").write_text("import time\ntime.sleep(60)\n")
    log = tmp_path / "log.txt"

    async def scenario() -> list[int]:
        launcher = ForkServer((), pipe_stdout=False)
        codes = []
        for argv in (["-m", "mod_ok", "x"], ["-m", "mod_bad"], ["-m", "mod_sleep"]):
            proc, sock = await launcher.launch(
                argv, cwd=str(tmp_path), env={}, sys_path=[], output_file=str(log)
            )
            if argv[1] == "mod_sleep":
                os.killpg(proc.pid, signal.SIGKILL)
            codes.append(await asyncio.wait_for(proc.wait(), 30))
            sock.close()
        await launcher.close()
        return codes

    assert run(scenario()) == [0, 1, -signal.SIGKILL]
    text = log.read_text()
    assert "module ['x']" in text and "RuntimeError: boom" in text


EXIT_SCRIPT = """
import atexit, sys, threading, time
import kept_open
left_open = open("main.txt", "w")
left_open.write("written by __main__, never closed")
kept_open.text.write("written to a module's global file, never closed")
def late() -> None:
    time.sleep(0.3)
    with open("thread.txt", "w") as f:
        f.write("a thread joined at exit")
threading.Thread(target=late).start()
atexit.register(lambda: open("atexit.txt", "w").write("atexit ran"))
print("buffered to stdout, never flushed", end="")
if sys.argv[1:] == ["message"]:
    sys.exit("stopped: a message")
if sys.argv[1:] == ["code"]:
    sys.exit(4)
"""


@pytest.mark.parametrize("warm_processes", ["1", "0"], ids=["forked", "cold"])
@pytest.mark.parametrize(("ending", "code"), [("return", 0), ("code", 4), ("message", 1)])
def test_a_job_process_ends_as_pythons_exit_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_processes: str, ending: str, code: int
) -> None:
    """The job process skips the interpreter's teardown (shoal.runtime.job_exit) but keeps
    what a script counts on at exit: threads joined, atexit, files it left open flushed (its
    own and a module's), stdout flushed, sys.exit's code and message."""
    monkeypatch.setenv("SHOAL_WARM_SPARES", warm_processes)
    (tmp_path / "ending.py").write_text(EXIT_SCRIPT)
    (tmp_path / "kept_open.py").write_text("text = open('module.txt', 'w')\n")
    log = tmp_path / "log.txt"

    async def scenario() -> int:
        launcher = ForkServer(("numpy",), pipe_stdout=False)
        proc, sock = await launcher.launch(
            [str(tmp_path / "ending.py"), ending],
            cwd=str(tmp_path),
            env={},
            sys_path=[str(tmp_path)],
            output_file=str(log),
        )
        returned = await asyncio.wait_for(proc.wait(), 30)
        sock.close()
        await launcher.close()
        return returned

    assert run(scenario()) == code
    assert (tmp_path / "main.txt").read_text() == "written by __main__, never closed"
    assert (tmp_path / "module.txt").read_text() == "written to a module's global file, never closed"
    assert (tmp_path / "thread.txt").read_text() == "a thread joined at exit"
    assert (tmp_path / "atexit.txt").read_text() == "atexit ran"
    output = log.read_text()
    assert "buffered to stdout, never flushed" in output
    assert ("stopped: a message" in output) == (ending == "message")


def test_jobs_forked_from_one_server_draw_different_random_numbers(tmp_path: Path) -> None:
    """The fork server's numpy state is shared by every child unless reseeded."""
    (tmp_path / "draw.py").write_text(
        "import numpy as np\nfrom shoal.wire.channel import SyncChannel\n"
        "SyncChannel.from_env().send({'draw': float(np.random.rand())})\n"
    )

    async def scenario() -> list[float]:
        launcher = ForkServer(("numpy", "numpy.random"), pipe_stdout=False)
        draws = []
        for _ in range(2):
            proc, sock = await launcher.launch([str(tmp_path / "draw.py")], cwd=str(tmp_path), env={})
            reader, writer = await asyncio.open_connection(sock=sock)
            draws.append(json.loads(await reader.readline())["draw"])
            assert await proc.wait() == 0
            writer.close()
        await launcher.close()
        return draws

    first, second = run(scenario())
    assert first != second


def test_the_fork_server_exits_when_its_parent_lets_go() -> None:
    async def scenario() -> int | None:
        launcher = ForkServer(("json",), pipe_stdout=False)
        launcher.warm_up()
        assert launcher._server is not None
        connection = await launcher._server
        await launcher.close()
        return connection.proc.returncode

    assert run(scenario()) == 0


def test_a_dead_fork_server_is_replaced_and_its_orphans_still_end(tmp_path: Path) -> None:
    """Killed under a running job: that job's end is still noticed (its code is lost with the
    server); the next launch starts a new fork server."""
    (tmp_path / "s.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]))\n")

    async def scenario() -> tuple[int, int, bool]:
        launcher = ForkServer((), pipe_stdout=False)
        orphan, sock1 = await launcher.launch([str(tmp_path / "s.py"), "1"], cwd=str(tmp_path), env={})
        assert launcher._server is not None
        first = await launcher._server
        first.proc.kill()
        await first.proc.wait()
        orphan_code = await asyncio.wait_for(orphan.wait(), 30)
        proc, sock2 = await launcher.launch([str(tmp_path / "s.py"), "0"], cwd=str(tmp_path), env={})
        code = await asyncio.wait_for(proc.wait(), 30)
        second = await launcher._server
        await launcher.close()
        sock1.close()
        sock2.close()
        return orphan_code, code, second is not first and first.sock.fileno() == -1

    orphan_code, code, replaced = run(scenario())
    # replaced, and the dead one's socket closed (the host kept one open per death)
    assert orphan_code == warm.EXIT_UNKNOWN and code == 0 and replaced
