"""sample_app/memtrim.py: after a burst, a worker gives the freed part of its heap back.

Run in a fresh interpreter each, so the heap holds only what the test put there: many blocks
of 1.5 KB (glibc's, not CPython's small-object arenas), then all but one in twenty freed, which
leaves the heap's pages free but pinned below the survivors, as a thousand ended streams do.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="malloc_trim and mallinfo2 are glibc's (Linux)",
)

BURST = """
import json, sys
from sample_app import memtrim

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

trimmer = memtrim.Trimmer()
quiet = trimmer.check()
blocks = [bytes(1500) + i.to_bytes(4, "little") for i in range(60_000)]
kept = blocks[::20]
del blocks
before, free = rss_mb(), trimmer.free_bytes()
trimmed = trimmer.check()
print(json.dumps({"available": trimmer.available, "quiet": quiet, "trimmed": trimmed,
                  "before": before, "after": rss_mb(), "free_mb": free / 2**20}))
"""


def run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_freed_heap_goes_back_to_the_system_and_a_quiet_heap_is_left_alone() -> None:
    result = run(BURST)
    assert result["available"] is True
    assert result["quiet"] is False  # a fresh interpreter's heap is under the slack
    # 57,000 freed blocks of ~1.5 KB: ~85 MB free, pinned by the survivors between them.
    assert float(result["free_mb"]) > 60  # type: ignore[arg-type]
    assert result["trimmed"] is True
    released = float(result["before"]) - float(result["after"])  # type: ignore[arg-type]
    assert released > 40, result


TIMER = """
import json, sys, time
PATCH
from sample_app import memtrim

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

blocks = [bytes(1500) + i.to_bytes(4, "little") for i in range(60_000)]
kept = blocks[::20]
del blocks
before = rss_mb()
trimmer = memtrim.start(0.05)
deadline = time.monotonic() + 10
while trimmer.trims == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"trims": trimmer.trims, "released": before - rss_mb()}))
"""


@pytest.mark.parametrize("worker", ["gevent", "threads"])
def test_the_worker_trims_on_its_own_timer(worker: str) -> None:
    """gunicorn.conf.py starts it in each worker: a timer on the gevent hub, or a thread."""
    patch = "from gevent import monkey; monkey.patch_all()" if worker == "gevent" else ""
    result = run(TIMER.replace("PATCH", patch))
    assert result["trims"] >= 1
    assert float(result["released"]) > 40, result  # type: ignore[arg-type]
