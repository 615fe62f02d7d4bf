"""Many light site agents in one process: real TLS connections, real protocol, trivial training.

``python -m bench.light_sites KITS_DIR site-1 site-2 ...`` runs one SiteAgent per named kit on
one event loop. It builds every agent first (reading its kit and loading its TLS context,
~25 ms each, which real sites pay on their own machines), prints ``built``, and waits for a
line on stdin before they all dial at once: the bench times the connect storm the server sees,
not 500 kits read in a row. Each agent's jobs run in-process instead of starting a training
process, so 200 sites fit on a 2-core machine and the benchmark measures the server, not 200
Python start-ups: a small model (one that rides the task, INLINE_BYTES) is read from the task,
added one to and sent back inline in memory, as the server sees a real site do it; a larger one
is fetched and its result delivered the way a real site's job does, by file. The light sites
stand for machines of their own: the disk writes a real agent makes for its training process
are theirs to pay, not the server's, and on a 2-core machine they took ~half the light sites'
CPU (docs/performance.md, many sites).
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from pathlib import Path

from shoal.errors import ShoalError
from shoal.security.tls import client_ssl_context
from shoal.site import agent as agent_module
from shoal.site.agent import SiteAgent
from shoal.site.job import SiteJob
from shoal.wire.models import LazyParams, load_params, params_bytes, save_params
from shoal.wire.results import ResultInfo
from shoal.wire.site import Ended, Ready, TaskForSite


class LightJob(SiteJob):
    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._started.set()
        await self.agent.send(Ready(job_id=self.job_id))

    async def on_task(self, task: TaskForSite) -> None:
        import numpy as np

        info = ResultInfo(num_examples=1, metrics={"loss": 0.0})
        if task.model is not None:  # small: in memory, the answer inline (a file if refused)
            params = dict(LazyParams(base64.b64decode(task.model))) or {"w": np.zeros(4, dtype=np.float32)}
            data = params_bytes({k: v + 1 for k, v in params.items()})
            if await self.agent.send_result_inline(self.job_id, task.task_id, data, info):
                self.agent.counters.results_sent += 1
                return
        model = self.dir / f"{task.task_id}.safetensors"
        await self.fetch_model(task, model)
        params = load_params(model) or {"w": np.zeros(4, dtype=np.float32)}
        result = self.dir / f"{task.task_id}-result.safetensors"
        save_params({k: v + 1 for k, v in params.items()}, result)
        try:
            await self.deliver_result(task.task_id, result, info)
        except ShoalError as exc:  # as a real site's job does (SiteJob): the round went on without it,
            if exc.code != "TASK_NOT_OPEN":  # or it took the inline copy whose answer came too late
                raise
        finally:
            model.unlink(missing_ok=True)
            result.unlink(missing_ok=True)

    async def end(self, reason: str, kill: bool = False) -> None:
        await self.agent.send(Ended(job_id=self.job_id))

    async def stop_process(self, polite: bool = False) -> None:
        return None


class LightAgent(SiteAgent):
    job_class = LightJob
    warm_processes = False  # jobs run in-process here: 200 agents need no fork servers


def _stop_all(agents: list[LightAgent]) -> None:
    for agent in agents:
        agent.stop()


async def run(kits: Path, names: list[str]) -> None:
    agents = [LightAgent(kits / name) for name in names]
    contexts = {agent.kit_dir: client_ssl_context(agent.kit_dir) for agent in agents}
    # One TLS context per kit, built once: the agents' _run asks the agent module for it by kit.
    setattr(agent_module, "client_ssl_context", contexts.__getitem__)  # noqa: B010 (typed module attribute)
    print("built", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_all, agents)
    await asyncio.gather(*(a.run() for a in agents))


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1]), sys.argv[2:]))
