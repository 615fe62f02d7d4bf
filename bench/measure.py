"""Peak memory of process trees, read from /proc while a workload runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(root: int, tree: dict[int, list[int]] | None = None) -> int:
    """RSS of ``root`` and all its descendants (job processes run in their own sessions but
    are still children of the server or site that started them)."""
    tree = tree if tree is not None else _children()
    seen, stack, total = set(), [root], 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        stack.extend(tree.get(pid, []))
    return total


class PeakSampler:
    """Samples the RSS of several process trees every ``interval`` seconds; keeps the peaks."""

    def __init__(self, roots: dict[str, int], interval: float = 0.05) -> None:
        self.roots = roots
        self.interval = interval
        self.peaks = {name: 0 for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = _children()
            for name, pid in self.roots.items():
                self.peaks[name] = max(self.peaks[name], tree_rss(pid, tree))
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_schedule(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main thread so far
    (``/proc/PID/schedstat``). For the server that thread is its event loop: a request that waits
    while the loop waits for a CPU is the machine's load, not the server's doing."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def tree_pids(root: int) -> list[int]:
    """``root`` and every process below it now."""
    tree, seen, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.append(pid)
            stack.extend(tree.get(pid, []))
    return seen


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (``sched_setaffinity`` sets one thread; the
    threads and processes it starts later inherit it)."""
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return  # gone meanwhile
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # a thread or process that ended meanwhile


def pin_tree(root: int, cpus: set[int]) -> None:
    for pid in tree_pids(root):
        pin(pid, cpus)


class TreeCpu:
    """CPU seconds (user + system) used by several process trees while a workload runs, read
    from /proc every ``interval`` seconds. Job processes come and go (a job's controller and
    training scripts exit with it), so each process's last reading is kept: what a process
    used after its last sample is missed (at most ``interval`` of its time)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.05) -> None:
        self.roots = roots
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool) -> None:
        tree = _children()
        for name, root in self.roots.items():
            seen, stack = set(), [root]
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                stack.extend(tree.get(pid, []))
                try:
                    used = cpu_seconds(pid)
                except (OSError, IndexError, ValueError):
                    continue
                if pid not in self._first:  # a process started meanwhile counts from 0
                    self._first[pid] = used if initial else 0.0
                self._last[pid] = (name, used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample(initial=False)
            time.sleep(self.interval)

    def __enter__(self) -> TreeCpu:
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)

    def seconds(self) -> dict[str, float]:
        """CPU seconds each tree used between ``__enter__`` and ``__exit__``."""
        out = dict.fromkeys(self.roots, 0.0)
        for pid, (name, used) in self._last.items():
            out[name] += used - self._first[pid]
        return out

    def root_seconds(self) -> dict[str, float]:
        """Of ``seconds``, what each tree's root process used itself (a server's or an agent's
        event loop and its threads); the rest is its children's (its fork server and the job
        processes forked from it: a controller, a training script)."""
        by_pid = {root: name for name, root in self.roots.items()}
        out = dict.fromkeys(self.roots, 0.0)
        for pid, (_, used) in self._last.items():
            if pid in by_pid:
                out[by_pid[pid]] += used - self._first[pid]
        return out
