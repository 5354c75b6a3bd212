"""Under gevent (what ``make run`` serves), taking a pooled upstream connection does not switch
to the hub: urllib3 checks that an idle connection is still open with ``select.poll`` and a
timeout of 0, which gevent's patch turns into a trip through the event loop, so every upstream
call waited behind every other request ready to run (measured: +12 ms p50 with 16 concurrent
calls to a 50 ms upstream). The gateway's connections check with the native ``poll`` instead.

Run in a fresh interpreter: gevent's monkey patching is for the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("gevent")

CHECK = """
from gevent import monkey
monkey.patch_all()

import json, socket
import greenlet
from urllib3 import PoolManager
from flask_aigateway.providers import transport

pools = transport._bounded_pool_classes(PoolManager().pool_classes_by_scheme)
result = {}
for scheme, pool in sorted(pools.items()):
    ours, theirs = socket.socketpair()
    conn = pool.ConnectionCls("127.0.0.1", 1)
    conn.sock = ours
    switches = []
    greenlet.settrace(lambda event, args: switches.append(event))
    try:
        idle = conn.is_connected
        after_idle = len(switches)
        theirs.sendall(b"unexpected")
        with_bytes = conn.is_connected
        theirs.close()
        closed = conn.is_connected
        ours_switches = len(switches)
        urllib3_idle = transport._URLLIB3_IS_CONNECTED(conn)
        urllib3_switches = len(switches) - ours_switches
    finally:
        greenlet.settrace(None)
    conn.sock = None
    ours.close()
    result[scheme] = {
        "idle": idle, "with_bytes": with_bytes, "closed": closed,
        "switches": ours_switches, "after_idle": after_idle,
        "urllib3_switches": urllib3_switches, "urllib3_idle": urllib3_idle,
    }
print(json.dumps(result))
"""


def test_a_pooled_connection_is_checked_without_switching_to_the_hub() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert set(result) == {"http", "https"}
    for scheme, seen in result.items():
        # The same answers as urllib3's own check: open and quiet is usable; bytes nobody asked
        # for, or the peer gone, is not.
        assert (seen["idle"], seen["with_bytes"], seen["closed"]) == (True, False, False), scheme
        assert seen["urllib3_idle"] is False  # urllib3 agrees on the closed socket
        # Ours never left the greenlet; urllib3's went through the hub (why ours exists).
        assert seen["switches"] == 0, scheme
        assert seen["urllib3_switches"] > 0, scheme
