"""Where the gateway's CPU goes per request: ``py-spy record --gil`` against the serving
worker while the load generator runs, then the collapsed stacks folded into a per-request cost
table.

``--gil`` samples the thread holding the GIL, i.e. the one running Python: py-spy's own idle
detection counts threads blocked in psycopg's or redis-py's socket waits as running (measured:
twice the worker's real CPU time), the GIL does not lie. A function's share of the samples is
then its share of the worker's Python CPU (syscalls, SQLite and libpq run without the GIL and
are spread over their Python callers). The table turns shares into milliseconds with the CPU
per request measured without the profiler attached (py-spy pauses the process to sample, which
inflates everything measured while it runs).

Three views: the request path's call tree (each step and what it calls, to a depth), the
threads (request handling, the background log writer, the server loop), and the hottest
functions by self time grouped by package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .measure import run_load, worker_pid
from .procs import process_tree
from .targets import Mock, Target

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
#: Frames at which the request path starts: the /v1 view function.
VIEW_MARKER = "flask_aigateway/api/views.py"
#: Leaf frames of a thread that is waiting, not working. py-spy's idle detection misses some
#: (a thread-pool thread blocked on its queue shows as running), so they are dropped here.
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py)",
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Thread.join (threading.py)",
    "Thread._wait_for_tstate_lock (threading.py)",
    "Selector.select (selectors.py)",
    "Hub.run (gevent/hub.py)",
)


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """``frame;frame;... count`` lines (outermost first) → (frames without line numbers, n)."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw)
            frames.append(f"{match['func']} ({match['file']})" if match else raw)
        stacks.append((frames, int(count)))
    return stacks


def _package(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match["file"] if match else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    if path.startswith("flask_aigateway/"):
        return path.removesuffix(".py")
    head = path.split("/", 1)[0].removesuffix(".py")
    return head if "/" in path or path.endswith(".py") else "<native>"


def thread_of(frames: list[str]) -> str:
    joined = ";".join(frames)
    if VIEW_MARKER in joined or "handle_request" in joined:
        return "request handling"
    if "logwriter" in joined:
        return "request-log writer (background)"
    return "server loop and other threads"


def call_tree(
    stacks: Iterable[tuple[list[str], int]], depth: int, min_share: float, total: int
) -> list[dict[str, Any]]:
    """The request path from the view down: each node's inclusive samples, ``depth`` levels,
    nodes under ``min_share`` of ``total`` left out."""
    tree: dict[tuple[str, ...], int] = Counter()
    for frames, count in stacks:
        start = next((i for i, f in enumerate(frames) if VIEW_MARKER in f), None)
        if start is None:
            continue
        path = frames[start : start + depth + 1]
        for end in range(1, len(path) + 1):
            tree[tuple(path[:end])] += count
    rows = [
        {"path": list(path), "samples": n} for path, n in tree.items() if n / total >= min_share
    ]
    rows.sort(key=lambda r: r["path"])
    ordered: list[dict[str, Any]] = []

    def children(prefix: tuple[str, ...]) -> None:
        kids = [
            r
            for r in rows
            if len(r["path"]) == len(prefix) + 1 and tuple(r["path"][: len(prefix)]) == prefix
        ]
        for row in sorted(kids, key=lambda r: -r["samples"]):
            ordered.append(row)
            children(tuple(row["path"]))

    for root in sorted((r for r in rows if len(r["path"]) == 1), key=lambda r: -r["samples"]):
        ordered.append(root)
        children(tuple(root["path"]))
    return ordered


def is_idle(frames: list[str]) -> bool:
    return bool(frames) and any(frames[-1].endswith(leaf) for leaf in IDLE_LEAVES)


def analyse(
    stacks: list[tuple[list[str], int]],
    cpu_ms_per_req: float | None,
    depth: int = 7,
    min_share: float = 0.02,
) -> dict[str, Any]:
    idle = sum(n for frames, n in stacks if is_idle(frames))
    stacks = [(frames, n) for frames, n in stacks if not is_idle(frames)]
    total = sum(n for _, n in stacks) or 1
    scale = (cpu_ms_per_req or 0.0) / total

    def cost(n: int) -> dict[str, float]:
        return {"samples": n, "share": n / total, "ms_per_req": n * scale}

    threads: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    self_packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        threads[thread_of(frames)] += n
        self_funcs[frames[-1]] += n
        self_packages[_package(frames[-1])] += n
        for frame in set(frames):
            if "flask_aigateway/" in frame:
                inclusive[frame] += n
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "cpu_ms_per_req": cpu_ms_per_req,
        "threads": [{"thread": k, **cost(v)} for k, v in threads.most_common()],
        "tree": [
            {"depth": len(r["path"]) - 1, "frame": r["path"][-1], **cost(r["samples"])}
            for r in call_tree(stacks, depth, min_share, total)
        ],
        "gateway_inclusive": [{"frame": k, **cost(v)} for k, v in inclusive.most_common(25)],
        "self_functions": [{"frame": k, **cost(v)} for k, v in self_funcs.most_common(25)],
        "self_packages": [{"package": k, **cost(v)} for k, v in self_packages.most_common(15)],
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (what the reports print)."""
    root = Path(__file__).resolve().parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile(
    target: Target,
    mock: Mock,
    *,
    stream: bool,
    seconds: float,
    rate: int,
    out_dir: Path,
    concurrency: int = 1,
    bystanders: Sequence[int] = (),
) -> dict[str, Any]:
    """Measure CPU per request without the profiler, then record ``seconds`` of py-spy
    samples of the serving worker under the same load, and analyse them."""
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    calibration = run_load(
        target,
        mock,
        stream=stream,
        concurrency=concurrency,
        duration=max(3.0, seconds / 2),
        warmup=1.0,
        bystanders=bystanders,
    )
    pid = worker_pid(target)
    assert target.pid is not None
    # Several workers (PostgreSQL + Redis: one per CPU): the load may land on any of them,
    # so sample the whole tree (the master only waits, and waiting holds no GIL).
    several = len([p for p in process_tree(target.pid) if p != target.pid]) > 1
    if several:
        pid = target.pid
    mode = "stream" if stream else "json"
    raw_path = out_dir / f"pyspy-{target.name}-{mode}.txt"
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--duration",
        str(int(seconds)),
        "--gil",
        *(["--subprocesses"] if several else []),
        "--format",
        "raw",
        "--output",
        str(raw_path),
    ]
    loaded: dict[str, Any] = {}

    def load() -> None:
        loaded.update(
            run_load(
                target,
                mock,
                stream=stream,
                concurrency=concurrency,
                duration=seconds + 2,
                warmup=0.0,
                bystanders=bystanders,
            )
        )

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        spy_run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        return {"error": f"py-spy did not finish within {seconds + 60:g} s"}
    finally:
        thread.join(seconds + 120)
    if spy_run.returncode != 0 or not raw_path.exists():
        return {"error": f"py-spy failed: {spy_run.stderr[-800:]}"}
    result = analyse(parse_collapsed(raw_path.read_text()), calibration["cpu_ms_per_req"])
    result.update(
        {
            "mode": mode,
            "concurrency": concurrency,
            "seconds": seconds,
            "rate": rate,
            "worker_pid": pid,
            "raw_file": _shown(raw_path),
            "calibration_rps": calibration["rps"],
            "profiled_rps": loaded.get("rps"),
            "command": " ".join(argv),
        }
    )
    return result
