"""sample_app/memprobe.py: the soak's view from inside a worker (memory by allocator, the
collector's work and, on request, what it had to free by type).

Run in a fresh interpreter (the probe changes the collector's debug flags and starts a thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, sys, time
from sample_app import memprobe

memprobe.INTERVAL = 0.2

class Knot:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector frees it

memprobe.start(sys.argv[1])
for _ in range(250):
    Knot()
gc.collect()
time.sleep(0.5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_the_probe_reports_memory_by_allocator_and_the_cycles_the_collector_freed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "probe.jsonl"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MEMORY_PROBE_GARBAGE": "1"},
        timeout=60,
        check=True,
    )
    lines = [json.loads(row) for row in out.read_text().splitlines()]
    assert lines and all("error" not in line for line in lines), lines
    first = lines[0]
    assert first["rss_kb"] == first["heap_kb"] + first["anon_kb"] + first["file_kb"] > 0
    assert first["arenas"] > 0 and first["blocks"] > 0
    assert len(first["gc_collections"]) == 3 and first["gc_ms"][2] > 0  # the gc.collect()
    freed = dict(first["garbage"])
    assert freed["__main__.Knot"] == 250
    assert first["garbage_total"] >= 250
    # Counted once: the next sample starts from nothing.
    assert all("__main__.Knot" not in dict(line.get("garbage", [])) for line in lines[1:])
