"""Where a worker's memory goes over time: a diagnostic for soak runs.

The soak (``make soak``) sees the resident size of the whole worker from outside. That tells
that memory grows, not which allocator holds it or what allocated it. This probe, enabled by
``MEMORY_PROBE`` (a file path) in the worker (``sample_app/gunicorn.conf.py`` starts it in
``post_worker_init``), appends one JSON line every :data:`INTERVAL` seconds:

* ``rss_kb`` split as the kernel maps it: ``heap_kb`` (glibc's main heap), ``anon_kb``
  (other anonymous mappings: CPython's 1 MiB object arenas, glibc's thread arenas, large
  buffers), ``file_kb``;
* CPython's side: ``blocks`` (objects and buffers alive in its small-object allocator),
  ``arenas`` (its arenas in use, each 1 MiB; from ``sys._debugmallocstats``), the collector's
  counts and collections per generation;
* ``gc_ms``: per generation, the longest collection since the previous sample (ms);
* with ``MEMORY_PROBE_GARBAGE=1``: ``garbage``, what the collector freed since the previous
  sample (only it can free reference cycles), counted by type (``gc.DEBUG_SAVEALL``: the
  collected objects are kept until the sample counts them, then dropped);
* with ``MEMORY_PROBE_TRACE=1``: tracemalloc traces from the probe's start (the app already
  loaded), and ``grown``: the allocation sites that grew most since the first sample taken
  after ``MEMORY_PROBE_BASELINE`` seconds (default 120), each with its size and count.

Tracing costs CPU and memory of its own (each live allocation carries its trace), so it is
for finding a site, not for measuring the level. Off by default.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
import types
from typing import Any

from .periodic import every

#: Seconds between two samples.
INTERVAL = 30.0
#: Frames kept per traced allocation (enough to see the caller of a library's allocation).
FRAMES = 6


def start(path: str) -> bool:
    """Start the probe in this worker, writing to ``path``."""
    trace = os.environ.get("MEMORY_PROBE_TRACE", "").strip() == "1"
    baseline = float(os.environ.get("MEMORY_PROBE_BASELINE", "120"))
    if trace and not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    probe = _Probe(path, trace, baseline)
    if os.environ.get("MEMORY_PROBE_GARBAGE", "").strip() == "1":
        gc.set_debug(gc.DEBUG_SAVEALL)
        probe.garbage = True
    # Under gevent on the hub: the probe reads the interpreter's state while nothing else runs.
    probe.keep = every(INTERVAL, probe.sample, "memprobe")
    _RUNNING.append(probe)
    return True


_RUNNING: list[_Probe] = []


class _Probe:
    def __init__(self, path: str, trace: bool, baseline: float) -> None:
        self.path = path
        self.trace = trace
        self.baseline_after = baseline
        self.t0 = time.time()
        self.base: tracemalloc.Snapshot | None = None
        self.keep: object = None
        self.garbage = False
        self._gc_started = 0.0
        self._gc_longest = [0.0, 0.0, 0.0]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = (time.perf_counter() - self._gc_started) * 1000
            gen = info["generation"]
            self._gc_longest[gen] = max(self._gc_longest[gen], took)

    def sample(self) -> None:
        try:
            line = self._measure()
        except Exception as error:  # noqa: BLE001  (a diagnostic never takes the worker down)
            line = {"error": repr(error)}
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    def _measure(self) -> dict[str, Any]:
        now = time.time()
        line: dict[str, Any] = {"t": round(now - self.t0, 1), "pid": os.getpid()}
        line.update(_maps())
        line["blocks"] = sys.getallocatedblocks()
        line["arenas"] = _arenas()
        line["gc_count"] = gc.get_count()
        line["gc_collections"] = [s["collections"] for s in gc.get_stats()]
        line["gc_objects"] = len(gc.get_objects())
        if self.garbage:
            kinds: dict[str, int] = {}
            for obj in gc.garbage:
                kind = type(obj)
                name = f"{kind.__module__}.{kind.__qualname__}"
                if callable(obj) and hasattr(obj, "__qualname__"):
                    name += f" {getattr(obj, '__module__', '')}.{obj.__qualname__}"
                elif isinstance(obj, types.FrameType):
                    name += f" {_where(obj.f_code)}"
                elif isinstance(obj, types.TracebackType):
                    name += f" {_where(obj.tb_frame.f_code)}"
                elif isinstance(obj, BaseException):
                    name = f"exception {name}"
                kinds[name] = kinds.get(name, 0) + 1
            line["garbage"] = sorted(kinds.items(), key=lambda kv: -kv[1])[:40]
            line["garbage_total"] = len(gc.garbage)
            gc.garbage.clear()
        line["gc_ms"] = [round(ms, 2) for ms in self._gc_longest]
        self._gc_longest = [0.0, 0.0, 0.0]
        if self.trace:
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            current, _peak = tracemalloc.get_traced_memory()
            line["traced_kb"] = current // 1024
            if self.base is None and now - self.t0 >= self.baseline_after:
                self.base = snap
            elif self.base is not None:
                stats = snap.compare_to(self.base, "traceback")[:15]
                line["grown"] = [
                    {
                        "kb": round(s.size_diff / 1024, 1),
                        "count": s.count_diff,
                        "where": [f"{f.filename}:{f.lineno}" for f in s.traceback][-FRAMES:],
                    }
                    for s in stats
                    if s.size_diff > 0
                ]
        return line


def _where(code: types.CodeType) -> str:
    path = code.co_filename.rsplit("site-packages/", 1)[-1]
    return f"{code.co_name} ({path}:{code.co_firstlineno})"


def _maps() -> dict[str, int]:
    """Resident kB of this process by kind of mapping (``/proc/self/smaps``)."""
    kinds = {"heap_kb": 0, "anon_kb": 0, "file_kb": 0}
    kind = "anon_kb"
    try:
        with open("/proc/self/smaps", encoding="utf-8") as f:
            for row in f:
                head = row.split(None, 5)
                if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                    name = head[5].strip() if len(head) > 5 else ""
                    kind = (
                        "heap_kb"
                        if name == "[heap]"
                        else "anon_kb"
                        if not name or name.startswith("[anon")
                        else "file_kb"
                    )
                elif row.startswith("Rss:"):
                    kinds[kind] += int(row.split()[1])
    except OSError:
        pass
    kinds["rss_kb"] = sum(kinds.values())
    return kinds


def _flush_c_streams() -> None:
    """``fflush(NULL)``: C's stderr may be buffered when it is not a terminal."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().fflush(None)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


_ARENAS = re.compile(r"^# arenas allocated current\s*=\s*([\d,]+)", re.M)


def _arenas() -> int | None:
    """CPython's small-object arenas in use, from ``sys._debugmallocstats`` (written to the C
    stderr, so fd 2 is pointed at a scratch file meanwhile)."""
    debug = getattr(sys, "_debugmallocstats", None)
    if debug is None:
        return None
    with tempfile.TemporaryFile("w+") as scratch:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(scratch.fileno(), 2)
            debug()
            _flush_c_streams()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        scratch.seek(0)
        found = _ARENAS.search(scratch.read())
    return int(found.group(1).replace(",", "")) if found else None
