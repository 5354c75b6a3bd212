"""Fault injection: Redis goes away mid-run, with requests in flight, and comes back.

Two faults, as a client sees them:

* **restarted**: the server dies (SIGKILL) and a fresh one starts on the same port with
  nothing in it — a cache node restarted without persistence. The test runs a private
  ``redis-server`` of its own (never the machine's shared one); without the binary, a
  :class:`~fakes.proxy.TcpProxy` in front of the test Redis is cut and this test's keys are
  deleted meanwhile, which the client cannot tell apart.
* **cut**: every connection is reset for a while and the data stays (a network blip, a
  failover of the connection path).

What the README promises: with ``AIGATEWAY_REDIS_FAILURE_MODE=closed`` (the default) requests
that must be counted are refused with 503 ``shared_state_unavailable`` while Redis is away;
with ``open`` they are served unchecked and their spend recorded in the database; either way
a request in flight is served, every request is logged, and once Redis is back the live
counters agree with the database rows (a lost counter is reloaded from them) with nothing
left reserved.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from conftest import REDIS_URL, unavailable
from fakes import Reply
from fakes.proxy import TcpProxy
from faults import (
    COST,
    USAGE,
    error_of,
    log_rows,
    post,
    settle_all,
    usage_cli,
    usage_live,
    usage_rows,
    wait_for,
)
from processes import free_port

from flask_aigateway.services.keys import create_key

pytestmark = pytest.mark.redis


class PrivateRedis:
    """A Redis only this test uses, which it can kill and restart (empty) on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self._workdir / "redis.log", "ab")  # noqa: SIM115  (the child holds it)
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: self._pings(client), what="redis-server to start")
        client.close()

    @staticmethod
    def _pings(client: Any) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=10)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.kill()


class Restartable:
    """The Redis a test gateway uses, and how to take it down and bring it back.

    ``down(lose_data)``: a private server is killed (it comes back empty, whatever
    ``lose_data`` says, so it is only asked with ``lose_data=True``); through the proxy,
    connections are cut and, if asked, this test's keys deleted.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.server: PrivateRedis | None = None
        self.proxy: TcpProxy | None = None
        if shutil.which("redis-server"):
            self.server = PrivateRedis(tmp_path)
            self.url = self.server.url
        else:
            target = urlsplit(REDIS_URL)
            try:
                redis.Redis.from_url(REDIS_URL).ping()
            except redis.ConnectionError:
                unavailable(f"neither redis-server nor Redis at {REDIS_URL}")
            self.proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
            self.url = f"redis://127.0.0.1:{self.proxy.port}{target.path}"

    def cut(self) -> TcpProxy:
        """A proxy in front of this Redis whose connections the test can cut (data kept)."""
        if self.proxy is None:
            assert self.server is not None
            self.proxy = TcpProxy("127.0.0.1", self.server.port)
            self.url = f"redis://127.0.0.1:{self.proxy.port}/0"
        return self.proxy

    def kill(self, prefix: str) -> None:
        """Take Redis down losing every counter of this test (the keys under ``prefix``)."""
        if self.server is not None:
            self.server.kill()
            return
        assert self.proxy is not None
        self.proxy.cut()
        direct = redis.Redis.from_url(REDIS_URL)
        for key in direct.scan_iter(match=prefix + "*"):
            direct.delete(key)
        direct.close()

    def restart(self) -> None:
        if self.server is not None:
            self.server.start()
        else:
            assert self.proxy is not None
            self.proxy.restore()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
def restartable(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Restartable]:
    """The test's Redis; indirect parameter ``"cut"``: reached through a proxy from the start."""
    redis_ = Restartable(tmp_path)
    if getattr(request, "param", None) == "cut":
        redis_.cut()
    yield redis_
    redis_.close()


@pytest.fixture(params=["closed", "open"])
def failure_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config(
    app_config: dict[str, Any], restartable: Restartable, failure_mode: str
) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_REDIS_URL": restartable.url,
        "AIGATEWAY_REDIS_FAILURE_MODE": failure_mode,
        "AIGATEWAY_LOG_SYNC": False,
    }


def start_in_flight(url: str, key: str, gpt: Any) -> tuple[threading.Thread, list[Any]]:
    """A request the upstream holds for a second: admitted now, settled a second later."""
    gpt.queue(Reply(latency=1.0, **USAGE))
    seen = len(gpt.requests)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(post(url, key)))
    thread.start()
    wait_for(lambda: len(gpt.requests) > seen, what="the in-flight request upstream")
    return thread, result


def test_redis_restarted_mid_run(live_server, state, runner, upstreams, restartable, failure_mode):
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    key, secret = create_key(state, name="k", budget_per_day="1", rate_limit=600)
    assert post(live_server.url, secret).status_code == 200  # counters loaded into Redis

    thread, in_flight = start_in_flight(live_server.url, secret, gpt)
    restartable.kill(state.settings["AIGATEWAY_REDIS_PREFIX"])
    during = [post(live_server.url, secret) for _ in range(2)]
    thread.join(timeout=30)
    restartable.restart()
    after = [post(live_server.url, secret) for _ in range(2)]

    assert [r.status_code for r in [*in_flight, *after]] == [200, 200, 200]
    if failure_mode == "closed":
        for response in during:
            assert response.status_code == 503
            error = error_of(response)
            assert (error["type"], error["code"]) == (
                "service_unavailable_error",
                "shared_state_unavailable",
            )
            assert "Redis" in error["message"]
        served = 4
    else:
        assert [r.status_code for r in during] == [200, 200]
        assert "x-aigateway-budget-remaining-usd" not in during[0].headers
        served = 6
    settle_all(state)
    rows = log_rows(state)
    assert sorted(r.status_code for r in rows) == sorted([200] * served + [503] * (6 - served))
    # The restarted Redis reloaded the counter from the rows, which every served request's
    # cost reached (the in-flight one's too, though its Redis settlement failed).
    assert usage_cli(runner, key.id) == {"spent": COST * served, "reserved": 0}
    assert usage_rows(state, key.id) == {"spent": COST * served, "reserved": 0}
    assert usage_live(state, key.id) == {"spent": COST * served, "reserved": 0}


@pytest.mark.parametrize("restartable", ["cut"], indirect=True)
@pytest.mark.parametrize("failure_mode", ["closed"], indirect=True)
def test_redis_connection_cut_with_data_kept(
    live_server, state, runner, upstreams, restartable, failure_mode
):
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    key, secret = create_key(state, name="k", budget_per_day="1")
    assert post(live_server.url, secret).status_code == 200

    proxy = restartable.cut()
    thread, in_flight = start_in_flight(live_server.url, secret, gpt)
    with proxy.outage():
        refused = post(live_server.url, secret)
        thread.join(timeout=30)
        time.sleep(0.2)
    after = post(live_server.url, secret)

    assert [in_flight[0].status_code, refused.status_code, after.status_code] == [200, 503, 200]
    assert error_of(refused)["code"] == "shared_state_unavailable"
    settle_all(state)
    assert len(log_rows(state)) == 4
    assert usage_cli(runner, key.id) == {"spent": COST * 3, "reserved": 0}
    assert usage_rows(state, key.id) == {"spent": COST * 3, "reserved": 0}
    assert usage_live(state, key.id) == {"spent": COST * 3, "reserved": 0}


@pytest.mark.parametrize("restartable", ["cut"], indirect=True)
@pytest.mark.parametrize("failure_mode", ["open"], indirect=True)
def test_the_redis_cache_leaves_an_unreachable_redis_alone_for_a_while(
    live_server, state, upstreams, restartable, failure_mode, caplog
):
    """With the cache in Redis, each request during an outage used to try Redis three times
    (read, lock, write) and log three warnings with their tracebacks. Now the first failure
    logs one warning and the cache leaves Redis alone for 5 s (requests go to the upstream),
    then tries it again."""
    state.settings.update({"AIGATEWAY_CACHE_ENABLED": True, "AIGATEWAY_CACHE_BACKEND": "redis"})
    gpt = upstreams["gpt"]
    gpt.default = Reply(**USAGE)
    _key, secret = create_key(state, name="k")

    def cache_status(**headers: str) -> str:
        response = requests.post(
            live_server.url + "/v1/chat/completions",
            json={"model": "gpt", "messages": [{"role": "user", "content": "Cached?"}]},
            headers={"Authorization": f"Bearer {secret}", **headers},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.headers["x-aigateway-cache"])

    def redis_connections(**headers: str) -> int:
        """Connections to Redis made by three requests (budgets count each one)."""
        before = proxy.accepted
        for _ in range(3):
            cache_status(**headers)
        return proxy.accepted - before

    assert [cache_status(), cache_status()] == ["MISS", "HIT"]
    proxy = restartable.cut()
    caplog.clear()
    with proxy.outage():
        assert cache_status() == "MISS"  # finds Redis down
        # Meanwhile a request using the cache asks Redis no more than one bypassing it.
        assert redis_connections() == redis_connections(**{"Cache-Control": "no-store"})
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "cache" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].exc_info is None
    assert "tried again in 5 s" in warnings[0].getMessage()
    assert len(gpt.requests) == 8

    wait_for(lambda: cache_status() == "HIT", timeout=30, what="the cache back on Redis")
