"""Prometheus at /v1/metrics: the issue's metric names and values, the optional token, one
registry per app (two apps in a process never clash), no app-wide hooks, and correct totals
over two gunicorn workers (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import requests
from fakes import Reply
from flask import Flask
from processes import GatewayProcess
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from flask_aigateway import AIGateway
from flask_aigateway.services import keys as key_service
from flask_aigateway.services.models import update_model

MESSAGES = [{"role": "user", "content": "Count me"}]
ISSUE_SAMPLES = {
    "ai_gateway_requests_total",
    "ai_gateway_request_duration_seconds_bucket",
    "ai_gateway_time_to_first_token_seconds_bucket",
    "ai_gateway_tokens_total",
    "ai_gateway_cost_dollars_total",
    "ai_gateway_cache_hits_total",
    "ai_gateway_cache_misses_total",
    "ai_gateway_rate_limited_total",
    "ai_gateway_budget_exceeded_total",
    "ai_gateway_fallbacks_total",
    "ai_gateway_upstream_errors_total",
    "ai_gateway_inflight_requests",
    "ai_gateway_overhead_seconds_bucket",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def scrape(client: Any, **headers: str) -> Samples:
    response = client.get("/v1/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def post(client: Any, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


def test_the_issue_metrics_count_a_mixed_run(client, state, api_key, upstreams) -> None:
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    update_model(state, "gpt", fallbacks=["claude"])
    _limited, limited = key_service.create_key(state, name="limited", rate_limit=1)
    _poor, poor = key_service.create_key(state, name="poor", budget_per_day="0.000001")
    gpt, claude = upstreams["gpt"], upstreams["claude"]
    gpt.queue(Reply(prompt_tokens=100, completion_tokens=50, cache_read_tokens=40))
    assert post(client, api_key, {"model": "gpt", "messages": MESSAGES}).status_code == 200
    assert post(client, api_key, {"model": "gpt", "messages": MESSAGES}).status_code == 200
    claude.queue(Reply(text="one two", prompt_tokens=10, completion_tokens=2))
    stream = post(client, api_key, {"model": "claude", "messages": MESSAGES, "stream": True})
    assert stream.get_data().endswith(b"data: [DONE]\n\n")
    gpt.queue(*[Reply(status=503)] * 3)
    claude.queue(Reply(prompt_tokens=5, completion_tokens=5))
    fallback = post(
        client, api_key, {"model": "gpt", "messages": [{"role": "user", "content": "other"}]}
    )
    assert fallback.status_code == 200 and fallback.headers["x-aigateway-fallback"]
    assert (
        post(client, "aigw_bogus", {"model": "nonsense", "messages": MESSAGES}).status_code == 401
    )
    assert post(client, limited, {"model": "claude", "messages": MESSAGES}).status_code == 200
    assert post(client, limited, {"model": "claude", "messages": MESSAGES}).status_code == 429
    assert post(client, poor, {"model": "claude", "messages": MESSAGES}).status_code == 429

    samples = scrape(client)
    assert {name for name, _labels in samples} >= ISSUE_SAMPLES
    assert total(samples, "ai_gateway_requests_total") == 8
    assert (
        total(
            samples, "ai_gateway_requests_total", model="gpt", provider="fake-openai", status="200"
        )
        == 2
    )
    assert total(samples, "ai_gateway_requests_total", model="", provider="", status="401") == 1
    assert total(samples, "ai_gateway_requests_total", status="429") == 2
    # The limited key's first claude request is served from the stream stored just before.
    assert total(samples, "ai_gateway_cache_hits_total", model="gpt") == 1
    assert total(samples, "ai_gateway_cache_hits_total", model="claude") == 1
    assert total(samples, "ai_gateway_cache_misses_total") == 3
    assert total(samples, "ai_gateway_rate_limited_total", model="claude") == 1
    assert total(samples, "ai_gateway_budget_exceeded_total", model="claude") == 1
    assert total(samples, "ai_gateway_fallbacks_total", model="gpt") == 1
    assert (
        total(
            samples, "ai_gateway_upstream_errors_total", provider="fake-openai", kind="server_error"
        )
        == 3
    )
    # The fallback's tokens count under the alias asked for (gpt), served by fake-anthropic.
    assert total(samples, "ai_gateway_tokens_total", model="gpt", type="prompt") == 105
    assert total(samples, "ai_gateway_tokens_total", model="gpt", type="cached") == 40
    assert total(samples, "ai_gateway_tokens_total", model="claude", type="completion") == 2
    assert total(
        samples, "ai_gateway_cost_dollars_total", model="gpt", provider="fake-anthropic"
    ) == pytest.approx(0.000015)
    assert total(
        samples, "ai_gateway_cost_dollars_total", model="gpt", provider="fake-openai"
    ) == pytest.approx(0.00018)
    assert total(samples, "ai_gateway_time_to_first_token_seconds_count") == 1
    assert total(samples, "ai_gateway_request_duration_seconds_count") == 8
    assert total(samples, "ai_gateway_overhead_seconds_count") == 8
    assert total(samples, "ai_gateway_inflight_requests") == 0
    overhead = total(samples, "ai_gateway_overhead_seconds_sum")
    assert 0 <= overhead < total(samples, "ai_gateway_request_duration_seconds_sum")


def test_the_metrics_token_is_required_when_set(client, state) -> None:
    state.settings["AIGATEWAY_METRICS_TOKEN"] = "s3cret-scraper"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = client.get("/v1/metrics", headers=headers)
        assert response.status_code == 401
        error = response.json["error"]
        assert error["type"] == "authentication_error"
        assert "AIGATEWAY_METRICS_TOKEN" in error["message"]
        assert "s3cret" not in response.get_data(as_text=True)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    samples = scrape(client, Authorization="Bearer s3cret-scraper")
    assert total(samples, "ai_gateway_requests_total") == 0
    assert client.post("/v1/metrics").status_code == 405


def test_open_by_default_and_openmetrics_on_request(tmp_path) -> None:
    app = Flask("open", instance_path=str(tmp_path))
    app.config.update(
        AIGATEWAY_DATABASE_URI=f"sqlite:///{tmp_path / 'db.sqlite'}",
        AIGATEWAY_DASHBOARD_ENABLED=False,
    )
    AIGateway(app)
    client = app.test_client()
    assert client.get("/v1/metrics").status_code == 200
    response = client.get("/v1/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")
    AIGateway.get_state(app).close()


def test_two_apps_in_one_process_keep_their_own_registry(
    app, client, tmp_path, upstreams, api_key
) -> None:
    """The fixture app serves a request; a second app in the same process counts nothing of
    it, and neither touches prometheus_client's global registry or adds app hooks."""
    other = Flask("other", instance_path=str(tmp_path / "other"))
    other.config.update(
        AIGATEWAY_DATABASE_URI=f"sqlite:///{tmp_path / 'other.db'}",
        AIGATEWAY_CREATE_TABLES=True,
        AIGATEWAY_DASHBOARD_ENABLED=False,
    )
    AIGateway(other)
    hooks = [
        (
            a.before_request_funcs.get(None),
            a.after_request_funcs.get(None),
            a.teardown_request_funcs.get(None),
        )
        for a in (app, other)
    ]
    try:
        assert post(client, api_key, {"model": "gpt", "messages": MESSAGES}).status_code == 200
        assert total(scrape(client), "ai_gateway_requests_total") == 1
        assert total(scrape(other.test_client()), "ai_gateway_requests_total") == 0
        global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
        assert not any(name.startswith("ai_gateway") for name in global_names)
        assert hooks == [
            (
                a.before_request_funcs.get(None),
                a.after_request_funcs.get(None),
                a.teardown_request_funcs.get(None),
            )
            for a in (app, other)
        ]
    finally:
        AIGateway.get_state(other).close()


# -- two gunicorn workers ------------------------------------------------------------------------


def _per_process_requests(directory: Path, scratch: Path) -> dict[str, float]:
    """ai_gateway_requests_total written by each process into the multiprocess directory."""
    found: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.split("_")[-1]
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        found[pid] = sum(
            s.value
            for m in registry.collect()
            for s in m.samples
            if s.name == "ai_gateway_requests_total"
        )
    return found


@pytest.mark.slow
def test_totals_span_two_gunicorn_workers(state, app_config, api_key, upstreams, tmp_path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_SECRET_KEY": app_config["AIGATEWAY_SECRET_KEY"],
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    for name in ("AIGATEWAY_REDIS_URL", "AIGATEWAY_REDIS_PREFIX"):
        if app_config.get(name):
            env[name] = app_config[name]
    upstreams["gpt"].default = Reply(prompt_tokens=10, completion_tokens=5, latency=0.05)
    gateway = GatewayProcess(env, tmp_path / "instance", threads=2, workers=2)
    sent = 0
    lock = threading.Lock()

    def fire(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            response = requests.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "gpt", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=20,
            )
            assert response.status_code == 200
            with lock:
                sent += 1

    try:
        per_process: dict[str, float] = {}
        for _round in range(10):
            threads = [threading.Thread(target=fire, args=(3,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            per_process = _per_process_requests(multiproc, tmp_path / "split")
            if len([v for v in per_process.values() if v]) >= 2:
                break
        assert len([v for v in per_process.values() if v]) == 2, per_process
        assert sum(per_process.values()) == sent
        for _ in range(4):
            response = requests.get(gateway.url + "/v1/metrics", timeout=10)
            samples = parse(response.text)
            assert (
                total(
                    samples,
                    "ai_gateway_requests_total",
                    model="gpt",
                    provider="fake-openai",
                    status="200",
                )
                == sent
            )
            assert total(samples, "ai_gateway_tokens_total", type="prompt") == 10 * sent
            assert total(samples, "ai_gateway_cost_dollars_total") == pytest.approx(0.00002 * sent)
            assert total(samples, "ai_gateway_request_duration_seconds_count") == sent
            assert total(samples, "ai_gateway_inflight_requests") == 0
    finally:
        gateway.stop()
    by_status: dict[str, float] = defaultdict(float)
    for (name, labels), value in samples.items():
        if name == "ai_gateway_requests_total":
            by_status[dict(labels)["status"]] += value
    assert dict(by_status) == {"200": sent}


@pytest.mark.slow
def test_make_run_with_two_workers_counts_every_workers_requests(
    state, app_config, api_key, upstreams, tmp_path, request
) -> None:
    """gunicorn with sample_app/gunicorn.conf.py and WORKERS=2, as ``make run`` starts it with
    Redis: the config creates the multiprocess directory itself (nothing set by the test), and
    every scrape, whichever worker answers it, counts the requests of both."""
    import os
    import subprocess
    import sys
    import time

    from processes import ROOT, free_port

    redis_url = app_config.get("AIGATEWAY_REDIS_URL") or request.getfixturevalue("redis_url")
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIGATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
        },
        "PYTHONPATH": str(ROOT),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "TMPDIR": str(temp),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "2",
        "AIGATEWAY_DATABASE_URI": app_config["AIGATEWAY_DATABASE_URI"],
        "AIGATEWAY_SECRET_KEY": app_config["AIGATEWAY_SECRET_KEY"],
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "AIGATEWAY_REDIS_URL": redis_url,
        "AIGATEWAY_REDIS_PREFIX": app_config.get("AIGATEWAY_REDIS_PREFIX")
        or f"aigw-test:{os.getpid()}-workers:",
    }
    upstreams["gpt"].default = Reply(prompt_tokens=10, completion_tokens=5, latency=0.05)
    log_path = tmp_path / "gunicorn.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "sample_app/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    sent = 0
    lock = threading.Lock()

    def fire(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            with requests.Session() as session:  # a new connection each time: any worker
                response = session.post(
                    url + "/v1/chat/completions",
                    json={"model": "gpt", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=20,
                )
            assert response.status_code == 200
            with lock:
                sent += 1

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert server.poll() is None, log_path.read_text()
            try:
                if requests.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        [metrics_dir] = list(temp.glob("aigateway-metrics-*"))
        per_process: dict[str, float] = {}
        for _round in range(10):
            threads = [threading.Thread(target=fire, args=(3,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            per_process = _per_process_requests(metrics_dir, tmp_path / "split")
            if len([v for v in per_process.values() if v]) >= 2:
                break
        assert len([v for v in per_process.values() if v]) == 2, per_process

        def scrape() -> Any:
            with requests.Session() as session:
                return parse(session.get(url + "/v1/metrics", timeout=10).text)

        # make run ends each request once its answer is written (AIGATEWAY_FINISH_AFTER_
        # RESPONSE): the last answers' metrics may land a moment after the client has them.
        deadline = time.monotonic() + 10
        samples = scrape()
        while total(samples, "ai_gateway_requests_total", status="200") < sent:
            assert time.monotonic() < deadline, "the last requests never reached the metrics"
            time.sleep(0.05)
            samples = scrape()
        for _ in range(6):  # then every scrape, whichever worker answers it, sees them all
            samples = scrape()
            assert total(samples, "ai_gateway_requests_total", status="200") == sent
            assert total(samples, "ai_gateway_inflight_requests") == 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert not metrics_dir.exists(), "the directory the config created is removed on exit"
