"""Would several worker processes on one SQLite file use the machine better? The write lock
they would share, measured.

The embedded default serves one process (README, "Why one process on SQLite"). Sharing rate
windows and counters between processes through SQLite would make each request take SQLite's
database-wide write lock twice (admit: windows + budget reservation; finish: settle), and a
writer that finds it taken waits in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms.
This script measures that cost without the rest of the gateway: ``--procs`` processes each
loop "a request" — ``--cpu-ms`` of Python work (the gateway's own CPU per request), then the
two write transactions the shared state would need, each a ``BEGIN IMMEDIATE``, two
``UPDATE``s of a counter row and a ``COMMIT`` — for ``--seconds``, and report requests per
second and how long the transactions waited for the lock::

    .venv-bench/bin/python -m bench.sqlite_workers --procs 1
    .venv-bench/bin/python -m bench.sqlite_workers --procs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=2, help="worker processes sharing the file")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cpu-ms", type=float, default=1.0, help="Python work per request, ms")
    p.add_argument("--keys", type=int, default=1, help="counter rows the requests spread over")
    return p.parse_args(argv)


def _setup(path: Path, keys: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, used INTEGER, reserved INTEGER)")
    conn.executemany("INSERT INTO counters VALUES (?, 0, 0)", [(k,) for k in range(keys)])
    conn.commit()
    conn.close()


def _worker(path: str, seconds: float, cpu_ms: float, keys: int, out: Any) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    waits: list[float] = []
    done = 0
    spin = cpu_ms / 1000.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        while time.perf_counter() - started < spin:
            pass
        key = done % keys
        for _phase in range(2):
            asked = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            waits.append(time.perf_counter() - asked)
            conn.execute("UPDATE counters SET reserved = reserved + 1 WHERE id = ?", (key,))
            conn.execute("UPDATE counters SET used = used + 1 WHERE id = ?", (key,))
            conn.execute("COMMIT")
        done += 1
    out.put({"requests": done, "waits": waits})


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "counters.db"
        _setup(path, args.keys)
        queue: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(
                target=_worker, args=(str(path), args.seconds, args.cpu_ms, args.keys, queue)
            )
            for _ in range(args.procs)
        ]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
    waits = sorted(w for r in results for w in r["waits"])
    requests = sum(r["requests"] for r in results)
    report = {
        "procs": args.procs,
        "cpu_ms": args.cpu_ms,
        "requests_per_s": round(requests / args.seconds),
        "lock_wait_ms": {
            "p50": round(_percentile(waits, 50), 3),
            "p90": round(_percentile(waits, 90), 3),
            "p99": round(_percentile(waits, 99), 3),
            "max": round(waits[-1] * 1000, 3),
        },
        "waited_over_1ms": round(sum(w > 0.001 for w in waits) / len(waits), 4),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
