"""One measurement: run the load generator against a target and account for the CPU and
memory of the target's process tree (and of everything else, to flag a noisy machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .procs import (
    Memory,
    PeakRSS,
    children_cpu_seconds,
    cpu_seconds,
    machine_busy_seconds,
    process_tree,
)
from .targets import MODEL, ROOT, Mock, Target


def _load(argv: list[str], budget_s: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=budget_s,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("LOAD_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"the load generator failed (exit {done.returncode}):\n"
            f"{done.stdout[-800:]}{done.stderr[-1500:]}"
        )
    return dict(json.loads(line[len("LOAD_JSON ") :]))


def run_load(
    target: Target,
    mock: Mock,
    *,
    stream: bool,
    concurrency: int = 1,
    duration: float = 4.0,
    warmup: float = 1.0,
    timeout: float = 60.0,
    open_streams: int = 0,
    ramp: float = 0.5,
    bystanders: Sequence[int] = (),
) -> dict[str, Any]:
    """Load ``target`` once and return the load generator's result plus, for its process tree:
    CPU ms per request (warm-up requests included, as their CPU is), peak RSS and end PSS;
    upstream calls per client request; and the CPU cores used by the client, the mock, the
    target, the ``bystanders`` (the other systems under test, idle meanwhile) and anything
    else (``other``: noise from outside the benchmark)."""
    argv = [
        "--url",
        target.url,
        "--api-key",
        target.api_key,
        "--model",
        MODEL,
        "-c",
        str(concurrency),
        "-d",
        str(duration),
        "--warmup",
        str(warmup),
        "--ramp",
        str(ramp),
        "--timeout",
        str(timeout),
    ]
    if stream:
        argv.append("--stream")
    if open_streams:
        argv += ["--open-streams", str(open_streams)]
    pid = target.pid
    is_mock = target.service is mock.service
    tree = process_tree(pid) if pid else []
    mock_tree = process_tree(mock.service.pid)
    cpu0 = cpu_seconds(tree)
    mock0 = cpu_seconds(mock_tree)
    idle_trees = [process_tree(p) for p in bystanders if p not in (pid, mock.service.pid)]
    idle0 = sum(cpu_seconds(t) for t in idle_trees)
    client0 = children_cpu_seconds()
    self0 = time.process_time()
    busy0 = machine_busy_seconds()
    served0 = mock.requests_served()
    wall0 = time.perf_counter()
    started = time.time()
    budget = warmup + duration + timeout + 60 + (ramp if open_streams else 0)
    with PeakRSS(pid) as peak:
        result = _load(argv, budget)
    wall = time.perf_counter() - wall0
    served = mock.requests_served() - served0
    tree = process_tree(pid) if pid else []
    cpu = cpu_seconds(tree) - cpu0
    mock_cpu = cpu_seconds(process_tree(mock.service.pid)) - mock0
    idle = sum(cpu_seconds(t) for t in idle_trees) - idle0
    client = children_cpu_seconds() - client0
    own = time.process_time() - self0
    busy = machine_busy_seconds() - busy0
    done = result["requests_ok"] + result["requests_err"] + result["requests_warmup"]
    target_cpu = 0.0 if is_mock else cpu
    result["cores"] = {
        "machine": busy / wall,
        "client": client / wall,
        "mock": mock_cpu / wall,
        "target": cpu / wall,
        "bystanders": idle / wall,
        "other": max(0.0, busy - client - mock_cpu - target_cpu - idle - own) / wall,
    }
    result["cpu_ms_per_req"] = 1000 * cpu / done if done else None
    probe = target.settings.get("loop_probe")
    if probe:
        result["loop_block_ms"] = longest_loop_block(Path(probe), started, time.time())
    result["upstream_calls_per_req"] = served / done if done and not is_mock else None
    if pid:
        result["peak_rss_mb"] = peak.peak_mb
        result["end_memory"] = Memory.of(pid).as_dict()
    return result


def longest_loop_block(path: Path, start: float, end: float) -> float:
    """The longest the gateway's gevent hub was blocked between ``start`` and ``end`` (unix
    seconds), in ms, from the file ``sample_app/loopwatch.py`` writes: one line per second in
    which a wake-up of its probe came late by 1 ms or more (0 when none did)."""
    worst = 0.0
    if not path.exists():
        return worst
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written
            if start - 1 <= entry["t"] <= end:
                worst = max(worst, float(entry["max_ms"]))
    return worst


def idle_state(target: Target, seconds: float = 2.0) -> dict[str, Any]:
    """Memory of the idle target's process tree and the CPU it burns doing nothing."""
    assert target.pid is not None
    memory = Memory.of(target.pid).as_dict()
    before = cpu_seconds(process_tree(target.pid))
    time.sleep(seconds)
    used = cpu_seconds(process_tree(target.pid)) - before
    return {**memory, "idle_cpu_pct": round(100 * used / seconds, 2)}


def worker_pid(target: Target) -> int:
    """The process that serves requests: the busiest child of a server's master, or the
    target's own process when it has no children."""
    assert target.pid is not None
    children = [p for p in process_tree(target.pid) if p != target.pid]
    if not children:
        return target.pid
    return max(children, key=lambda p: cpu_seconds([p]))


def versions(python: str | None = None) -> dict[str, str]:
    """Versions of what the measured gateway runs on (from the interpreter ``python``)."""
    names = [
        "flask-aigateway",
        "flask",
        "werkzeug",
        "sqlalchemy",
        "gunicorn",
        "gevent",
        "requests",
        "urllib3",
        "psycopg",
        "redis",
        "flask-limiter",
        "aiohttp",
        "uvloop",
        "py-spy",
    ]
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        f"for n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "out['python'] = sys.version.split()[0]\n"
        # Where the interpreter comes from and whether it runs from a shared libpython (as
        # pyenv's default builds do): the same code costs 10-20 % more CPU on such a build
        # than on a distribution's static, profile-optimised one (bench/RESULTS.md).
        "import sysconfig\n"
        "lib = sysconfig.get_config_var('LDLIBRARY') or '?'\n"
        "try: shared = lib in open('/proc/self/maps').read()\n"
        "except OSError: shared = bool(sysconfig.get_config_var('Py_ENABLE_SHARED'))\n"
        "link = f'shared {lib}' if shared else 'static'\n"
        "out['python build'] = f'{sys.base_prefix} ({link})'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [python or sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    with open("/proc/meminfo") as info:
        total_kb = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    kernel = os.uname()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(total_kb / 2**20, 1),
        "kernel": f"{kernel.sysname} {kernel.release}",
        "loadavg": os.getloadavg(),
    }
