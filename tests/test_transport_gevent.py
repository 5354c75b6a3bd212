"""Under gevent (what ``make run`` serves), taking a pooled connection does not switch to the
hub: urllib3 (upstreams) and redis-py (the scale-out path's counters, windows and router state)
check that an idle connection is still usable with ``select.poll`` and a timeout of 0, which
gevent's patch turns into a trip through the event loop, so every upstream call and every Redis
command waited behind every other request ready to run (measured: +12 ms p50 with 16 concurrent
calls to a 50 ms upstream). The gateway's connections check with the native ``poll`` instead
(``flask_aigateway/idle_check.py``).

Run in a fresh interpreter: gevent's monkey patching is for the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("gevent")

CHECK = """
from gevent import monkey
monkey.patch_all()

import json, socket
import greenlet
from urllib3 import PoolManager
from flask_aigateway.providers.transport import connections

pools = connections._bounded_pool_classes(PoolManager().pool_classes_by_scheme)
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
        urllib3_idle = connections._URLLIB3_IS_CONNECTED(conn)
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


def in_fresh_interpreter(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` (which patches with gevent first) in a new interpreter; its last line of
    output, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_a_pooled_connection_is_checked_without_switching_to_the_hub() -> None:
    result = in_fresh_interpreter(CHECK)
    assert set(result) == {"http", "https"}
    for scheme, seen in result.items():
        # The same answers as urllib3's own check: open and quiet is usable; bytes nobody asked
        # for, or the peer gone, is not.
        assert (seen["idle"], seen["with_bytes"], seen["closed"]) == (True, False, False), scheme
        assert seen["urllib3_idle"] is False  # urllib3 agrees on the closed socket
        # Ours never left the greenlet; urllib3's went through the hub (why ours exists).
        assert seen["switches"] == 0, scheme
        assert seen["urllib3_switches"] > 0, scheme


REDIS_CHECK = """
from gevent import monkey
monkey.patch_all()

import json, sys, time
import greenlet
import redis
from flask_aigateway.redis_client import redis_client

url = sys.argv[1]


def switches_of(call):
    seen = []
    greenlet.settrace(lambda event, args: seen.append(event))
    try:
        answer = call()
    finally:
        greenlet.settrace(None)
    return answer, len(seen)


client = redis_client(url)
client.ping()
pool = client.connection_pool
conn = pool.get_connection()
idle, idle_switches = switches_of(conn.can_read)
conn.send_command("PING")  # a reply nobody reads: the connection is dirty
time.sleep(0.2)
dirty = conn.can_read()
conn.read_response()
conn.send_command("CLIENT", "ID")
conn_id = conn.read_response()
other = redis.Redis.from_url(url)
other.client_kill_filter(_id=conn_id)
time.sleep(0.2)
try:
    killed = conn.can_read()
except redis.ConnectionError:
    killed = "ConnectionError"
pool.release(conn)
# The pool notices the killed connection on its next checkout and connects again.
pong = client.ping()

theirs = redis.Redis.from_url(url)
theirs.ping()
their_conn = theirs.connection_pool.get_connection()
their_idle, their_switches = switches_of(their_conn.can_read)
theirs.connection_pool.release(their_conn)
print(json.dumps({
    "parser": type(conn._parser).__name__, "idle": idle, "idle_switches": idle_switches,
    "dirty": dirty, "killed": killed, "pong": pong,
    "their_idle": their_idle, "their_switches": their_switches,
}))
"""


@pytest.mark.redis
def test_a_pooled_redis_connection_is_checked_without_switching_to_the_hub(redis_url: str) -> None:
    seen = in_fresh_interpreter(REDIS_CHECK, redis_url)
    assert seen["parser"] == "GeventFriendlyHiredisParser"
    # The same answers as redis-py's own check: quiet is usable; a reply nobody read, or the
    # server gone, is not — and the pool then connects again.
    assert seen["idle"] is False and seen["their_idle"] is False
    assert seen["dirty"] is True
    assert seen["killed"] in (True, "ConnectionError")
    assert seen["pong"] is True
    # Ours never left the greenlet; redis-py's went through the hub (why ours exists).
    assert seen["idle_switches"] == 0
    assert seen["their_switches"] > 0
