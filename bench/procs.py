"""Process bookkeeping for the benchmark: child services, and a process tree's CPU and memory.

Memory and CPU are read from ``/proc`` for a whole process tree (gunicorn master + workers,
uvicorn manager + workers), so every gateway is measured the same way whatever its shape.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once ``url`` answers below 500; False after ``timeout`` s or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status < 500:
                    return True
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


class Service:
    """A child process in its own session (so stopping it stops its whole group), with its
    output in a log file. Stopped by :meth:`stop`: SIGTERM, then SIGKILL after ``grace`` s."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


# -- /proc readings --------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
            ppid = int(raw[raw.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kids.get(current, ()))
    return found


def rss_mb(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    return total / 1024


def rss_parts_mb(pids: Sequence[int]) -> dict[str, float]:
    """RSS split as the kernel counts it: ``anon`` (heaps, stacks: what a leak grows), ``file``
    (mapped files: code, shared libraries) and ``shmem`` (shared memory, e.g. SQLite's WAL
    index)."""
    parts = {"anon": 0, "file": 0, "shmem": 0}
    names = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    name = names.get(line.split(maxsplit=1)[0]) if line.strip() else None
                    if name is not None:
                        parts[name] += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return {name: kb / 1024 for name, kb in parts.items()}


def pss_mb(pids: Sequence[int]) -> float:
    """Proportional set size: shared pages split between the processes sharing them."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total / 1024


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (threads included)."""
    ticks = 0
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
            fields = raw[raw.rindex(b")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle since boot (all cores)."""
    with open("/proc/stat") as stat:
        values = [int(x) for x in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (the load generator runs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class Memory:
    rss_mb: float
    pss_mb: float
    procs: int
    #: The largest RSS of one worker: a child of the tree's root (gunicorn's master), or the
    #: root itself when it has none (the mock). Issue 18's memory goal is per worker.
    worker_rss_mb: float

    @classmethod
    def of(cls, pid: int) -> Memory:
        tree = process_tree(pid)
        workers = tree[1:] or tree
        worker = max((rss_mb([p]) for p in workers), default=0.0)
        return cls(rss_mb(tree), pss_mb(tree), len(tree), worker)

    def as_dict(self) -> dict[str, float]:
        return {
            "rss_mb": round(self.rss_mb, 1),
            "pss_mb": round(self.pss_mb, 1),
            "procs": self.procs,
            "worker_rss_mb": round(self.worker_rss_mb, 1),
        }


class PeakRSS:
    """Samples a process tree's RSS every ``interval`` s in a thread; ``peak_mb`` is the max."""

    def __init__(self, pid: int | None, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        if self.pid:
            self.peak_mb = rss_mb(process_tree(self.pid))
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self.pid is not None
        tree = process_tree(self.pid)
        rounds = 0
        while not self._stop.wait(self.interval):
            rounds += 1
            if rounds % 8 == 0:
                tree = process_tree(self.pid)
            self.peak_mb = max(self.peak_mb, rss_mb(tree))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
