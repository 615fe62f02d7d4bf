"""Warm spares: a job run in a spare sees what ``python -u <argv>`` would give it, and spares
never outlive their parent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from shoal.wire import warm
from shoal.wire.warm import SparePool

SCRIPT = """
import json, os, sys
from shoal.wire.channel import SyncChannel
import helper
channel = SyncChannel.from_env()
channel.send({"argv": sys.argv, "cwd": os.getcwd(), "site": os.environ.get("SHOAL_SITE_NAME"),
              "path0": sys.path[0], "main": __name__, "helper": helper.VALUE})
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
reply = channel.receive(10)
sys.exit(reply["code"])
"""


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _read_all(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await stream.read()).decode()


def test_a_script_runs_as_python_would_run_it(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "client.py").write_text(SCRIPT)
    (custom / "helper.py").write_text("VALUE = 42\n")
    work = tmp_path / "work"
    work.mkdir()

    async def scenario() -> tuple[dict[str, object], int, str, bool]:
        pool = SparePool(("json",), pipe_stdout=True)
        pool.warm_up()
        proc, sock = await pool.launch(
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
        await asyncio.sleep(warm.REPLACE_DELAY + 0.2)  # the next spare starts once this one is gone
        replaced = pool._ready is not None
        await pool.close()
        writer.close()
        return seen, code, output, replaced

    seen, code, output, replaced = run(scenario())  # type: ignore[misc]
    assert seen == {
        "argv": [str(custom / "client.py"), "--lr", "0.1"],
        "cwd": str(work),
        "site": "site-7",
        "path0": str(custom),
        "main": "__main__",
        "helper": 42,
    }
    assert code == 3
    assert "to stdout" in output and "to stderr" in output
    assert replaced


def test_modules_exceptions_and_log_files(tmp_path: Path) -> None:
    (tmp_path / "mod_ok.py").write_text("import sys\nprint('module', sys.argv[1:])\n")
    (tmp_path / "mod_bad.py").write_text("raise RuntimeError('boom')\n")
    log = tmp_path / "log.txt"

    async def scenario() -> tuple[int, int]:
        pool = SparePool((), pipe_stdout=False)
        ok, sock1 = await pool.launch(
            ["-m", "mod_ok", "x"], cwd=str(tmp_path), env={}, sys_path=[], output_file=str(log)
        )
        first = await ok.wait()
        bad, sock2 = await pool.launch(
            ["-m", "mod_bad"], cwd=str(tmp_path), env={}, sys_path=[], output_file=str(log)
        )
        second = await bad.wait()
        await pool.close()
        sock1.close()
        sock2.close()
        return first, second

    first, second = run(scenario())  # type: ignore[misc]
    assert (first, second) == (0, 1)
    text = log.read_text()
    assert "module ['x']" in text and "RuntimeError: boom" in text


def test_a_spare_exits_when_its_parent_lets_go(tmp_path: Path) -> None:
    async def scenario() -> int | None:
        pool = SparePool(("json",), pipe_stdout=False)
        pool.warm_up()
        assert pool._ready is not None
        spare = await pool._ready
        await pool.close()
        return await asyncio.wait_for(spare.proc.wait(), 10)

    assert run(scenario()) == 0


def test_a_dead_spare_is_replaced_at_launch(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("pass\n")

    async def scenario() -> int:
        pool = SparePool((), pipe_stdout=False)
        pool.warm_up()
        assert pool._ready is not None
        spare = await pool._ready
        spare.proc.kill()
        await spare.proc.wait()
        proc, sock = await pool.launch([str(tmp_path / "s.py")], cwd=str(tmp_path), env={})
        code = await proc.wait()
        await pool.close()
        sock.close()
        return code

    assert run(scenario()) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_spare_has_its_own_session(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        pool = SparePool((), pipe_stdout=False)
        pool.warm_up()
        assert pool._ready is not None
        spare = await pool._ready
        sid = os.getsid(spare.proc.pid)
        await pool.close()
        return sid, spare.proc.pid

    sid, pid = run(scenario())  # type: ignore[misc]
    assert sid == pid  # abort and shutdown kill the job's whole process group
