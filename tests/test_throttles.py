"""The gateway's self-protection throttles (Flask-Limiter): failed /v1 authentications, the
admin and metrics tokens, per client address; the host's own Limiter reused, host routes never
limited; Redis storage, and one count across two gunicorn-served gateways sharing Redis."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import REDIS_RUN_PREFIX, TEST_SECRET
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from processes import GatewayProcess
from sqlalchemy import select

from flask_aigateway import AIGateway
from flask_aigateway.errors import ConfigError
from flask_aigateway.extension import get_state
from flask_aigateway.governance.throttles import API_AUTH, get_throttles
from flask_aigateway.models import RequestLog
from flask_aigateway.services.keys import create_key

ADMIN = "operator-token-0123456789"
SCRAPER = "scraper-token-0123456789"
ELSEWHERE = {"REMOTE_ADDR": "10.9.8.7"}
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "AIGATEWAY_THROTTLE_API_AUTH": "3/minute",
        "AIGATEWAY_THROTTLE_ADMIN_TOKEN": "2 per 10 minutes",
        "AIGATEWAY_THROTTLE_METRICS_TOKEN": "2/minute",
        "AIGATEWAY_ADMIN_TOKEN": ADMIN,
        "AIGATEWAY_METRICS_TOKEN": SCRAPER,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_throttled(response: Any, *, window: int) -> None:
    """429 in OpenAI's shape, with a Retry-After within the throttle's window."""
    assert response.status_code == 429
    error = response.json["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert "from your address" in error["message"]
    assert 0 < int(response.headers["Retry-After"]) <= window
    assert f"try again in {response.headers['Retry-After']} seconds" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"]


def test_failed_api_keys_are_throttled_per_address_and_valid_keys_still_pass(
    client: Any, api_key: str
) -> None:
    statuses = [
        client.post("/v1/chat/completions", json=CHAT, headers=bearer("aigw_wrong")).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 401]
    for attempt in (
        client.post("/v1/chat/completions", json=CHAT, headers=bearer("aigw_wrong")),
        client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
        client.get("/v1/models"),
    ):
        assert_throttled(attempt, window=60)
    assert client.get("/v1/models", headers=bearer(api_key)).status_code == 200
    other = client.get("/v1/models", headers=bearer("aigw_wrong"), environ_base=ELSEWHERE)
    assert other.status_code == 401
    assert other.json["error"]["code"] == "invalid_api_key"


def test_a_throttled_refusal_is_logged_and_counted_as_the_429_it_was(
    client: Any, state: Any
) -> None:
    """The request-log row, ``ai_gateway_requests_total`` and ``/v1/stats`` say what the
    client got: 401 up to the limit, then 429 ``rate_limit_exceeded`` (counted in
    ``rate_limited``), on the OpenAI doors and on ``/v1/messages`` alike."""
    wrong = bearer("aigw_wrong")
    got = [client.post("/v1/chat/completions", json=CHAT, headers=wrong) for _ in range(4)]
    got.append(client.post("/v1/embeddings", json={"model": "e", "input": "x"}, headers=wrong))
    got.append(client.post("/v1/messages", json=CHAT, headers={"x-api-key": "aigw_wrong"}))
    assert [r.status_code for r in got] == [401, 401, 401, 429, 429, 429]
    assert got[-1].json["error"]["type"] == "rate_limit_error"  # Anthropic's shape

    with state.engine.connect() as connection:
        rows = connection.execute(
            select(RequestLog.status_code, RequestLog.error_type).order_by(RequestLog.id)
        ).all()
    assert [tuple(row) for row in rows] == [(401, "invalid_api_key")] * 3 + [
        (429, "rate_limit_exceeded")
    ] * 3
    scrape = client.get("/v1/metrics", headers=bearer(SCRAPER)).get_data(as_text=True)
    assert 'ai_gateway_requests_total{model="",provider="",status="401"} 3.0' in scrape
    assert 'ai_gateway_requests_total{model="",provider="",status="429"} 3.0' in scrape
    assert 'ai_gateway_rate_limited_total{model=""} 3.0' in scrape
    stats = client.get("/v1/stats", headers=bearer(ADMIN)).json["data"][0]
    assert (stats["requests"], stats["errors"], stats["rate_limited"]) == (6, 6, 3)


def test_requests_that_authenticate_are_not_counted(client: Any, api_key: str) -> None:
    for _ in range(10):
        assert client.get("/v1/models", headers=bearer(api_key)).status_code == 200
    assert client.get("/v1/models").status_code == 401


def test_wrong_admin_tokens_lock_the_admin_token_out_but_not_api_keys(
    client: Any, api_key: str
) -> None:
    for _ in range(2):
        assert client.get("/v1/stats", headers=bearer("not-the-admin-token")).status_code == 401
    locked = client.get("/v1/stats", headers=bearer(ADMIN))
    assert_throttled(locked, window=600)
    assert "admin token" in locked.json["error"]["message"]
    own = client.get("/v1/stats", headers=bearer(api_key))
    assert (own.status_code, own.json["scope"]) == (200, "key")
    elsewhere = client.get("/v1/stats", headers=bearer(ADMIN), environ_base=ELSEWHERE)
    assert (elsewhere.status_code, elsewhere.json["scope"]) == (200, "all")


def test_wrong_metrics_tokens_lock_the_scrape_out(client: Any) -> None:
    assert client.get("/v1/metrics").status_code == 401  # no token: not a guess, not counted
    for _ in range(2):
        assert client.get("/v1/metrics", headers=bearer("guess")).status_code == 401
    locked = client.get("/v1/metrics", headers=bearer(SCRAPER))
    assert_throttled(locked, window=60)
    assert "metrics token" in locked.json["error"]["message"]
    assert (
        client.get("/v1/metrics", headers=bearer(SCRAPER), environ_base=ELSEWHERE).status_code
        == 200
    )


def test_metrics_and_api_key_failures_count_apart(client: Any, api_key: str) -> None:
    """A scraper without its token is not an API-key guess, and API-key guesses do not lock
    the scrape: each kind of failure counts only in its own throttle."""
    for _ in range(5):
        missing = client.get("/v1/metrics")
        assert missing.status_code == 401
        assert missing.json["error"]["code"] == "missing_metrics_token"
    wrong_key = client.post("/v1/chat/completions", json=CHAT, headers=bearer("aigw_wrong"))
    assert wrong_key.json["error"]["code"] == "invalid_api_key"  # api_auth: 1 of 3 used
    for _ in range(2):
        client.post("/v1/chat/completions", json=CHAT, headers=bearer("aigw_wrong"))
    assert_throttled(client.get("/v1/models", headers=bearer("aigw_wrong")), window=60)
    assert client.get("/v1/metrics", headers=bearer(SCRAPER)).status_code == 200
    assert client.get("/v1/metrics", headers=bearer("guess")).status_code == 401


def test_the_host_is_left_alone(app_config: dict[str, Any], tmp_path: Path) -> None:
    """No Limiter in the host's extensions, and its routes never limited nor given headers,
    even from an address every throttle has locked out."""
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)

    @app.get("/hello")
    def hello() -> str:
        return "host hello"

    AIGateway(app)
    client = app.test_client()
    for _ in range(4):
        client.get("/v1/models", headers=bearer("aigw_wrong"))
        client.get("/v1/stats", headers=bearer("wrong"))
        client.get("/v1/metrics", headers=bearer("wrong"))
    assert client.get("/v1/models").status_code == 429
    assert "limiter" not in app.extensions
    assert get_throttles(get_state(app)).limiter is not None
    for _ in range(50):
        response = client.get("/hello")
        assert (response.status_code, response.text) == (200, "host hello")
        assert not [k for k, _ in response.headers.items() if k.lower().startswith("x-ratelimit")]
        assert "Retry-After" not in response.headers
    assert client.get("/nowhere").status_code == 404
    get_state(app).close()


def test_the_hosts_limiter_is_reused_and_its_limits_spare_the_api(
    app_config: dict[str, Any], tmp_path: Path
) -> None:
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)
    host_limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["2/minute"],
        storage_uri="memory://",
        headers_enabled=True,
    )

    @app.get("/hello")
    def hello() -> str:
        return "host hello"

    AIGateway(app)
    assert app.extensions["limiter"] == {host_limiter}
    assert get_throttles(get_state(app)).limiter is host_limiter

    client = app.test_client()
    hello_statuses = [client.get("/hello").status_code for _ in range(3)]
    assert hello_statuses == [200, 200, 429]  # the host's own policy, unchanged
    for _ in range(5):
        health = client.get("/v1/health")
        assert health.status_code == 200
        assert "X-RateLimit-Limit" not in health.headers
    statuses = [client.get("/v1/models", headers=bearer("aigw_x")).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    get_state(app).close()


@pytest.mark.parametrize("setting", ["", None])
def test_a_throttle_can_be_turned_off(
    app_config: dict[str, Any], tmp_path: Path, setting: Any
) -> None:
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update({**app_config, "AIGATEWAY_THROTTLE_API_AUTH": setting})
    AIGateway(app)
    client = app.test_client()
    statuses = {client.get("/v1/models", headers=bearer("aigw_x")).status_code for _ in range(8)}
    assert statuses == {401}
    assert API_AUTH not in get_throttles(get_state(app)).limits
    get_state(app).close()


def test_with_every_throttle_off_no_limiter_is_created(
    app_config: dict[str, Any], tmp_path: Path
) -> None:
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)
    off = {name: "" for name in app_config if name.startswith("AIGATEWAY_THROTTLE_")}
    AIGateway(app, AIGATEWAY_THROTTLE_DASHBOARD_LOGIN="", **off)
    assert get_throttles(get_state(app)).limiter is None
    get_state(app).close()


@pytest.mark.parametrize("value", ["thirty a minute", "1/second;5/minute"])
def test_a_bad_limit_string_fails_at_start_naming_the_option(
    app_config: dict[str, Any], tmp_path: Path, value: str
) -> None:
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(app_config)
    with pytest.raises(ConfigError, match="AIGATEWAY_THROTTLE_METRICS_TOKEN"):
        AIGateway(app, AIGATEWAY_THROTTLE_METRICS_TOKEN=value)


def test_an_unreachable_storage_skips_the_throttle_and_keeps_the_401(
    app_config: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("redis")
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update({**app_config, "AIGATEWAY_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"})
    app.config.pop("AIGATEWAY_REDIS_URL", None)
    AIGateway(app)
    client = app.test_client()
    statuses = {client.get("/v1/models", headers=bearer("aigw_x")).status_code for _ in range(5)}
    assert statuses == {401}
    assert "throttle api_auth not applied" in caplog.text
    get_state(app).close()


@pytest.mark.redis
def test_throttles_count_in_redis_under_the_gateway_prefix(
    app_config: dict[str, Any], tmp_path: Path, redis_url: str
) -> None:
    import redis
    from limits.storage import RedisStorage

    prefix = f"{REDIS_RUN_PREFIX}{secrets.token_hex(4)}:"
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(
        {**app_config, "AIGATEWAY_REDIS_URL": redis_url, "AIGATEWAY_REDIS_PREFIX": prefix}
    )
    app.config.pop("AIGATEWAY_RATELIMIT_STORAGE_URI", None)
    AIGateway(app)
    limiter = get_throttles(get_state(app)).limiter
    assert limiter is not None and isinstance(limiter.storage, RedisStorage)
    client = app.test_client()
    assert client.get("/v1/models", headers=bearer("aigw_x")).status_code == 401
    server = redis.Redis.from_url(redis_url)
    assert [k.decode() for k in server.scan_iter(match=prefix + "*")] == [
        f"{prefix}throttles:LIMITER/aigateway/api_auth/127.0.0.1/3/1/minute"
    ]
    server.close()
    get_state(app).close()


@pytest.fixture
def two_gateways(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[GatewayProcess], str]]:
    """Two gunicorn-served sample apps (two workers each) on one SQLite file and one Redis,
    and the secret of a valid key."""
    root = tmp_path_factory.mktemp("throttled")
    env = {
        "AIGATEWAY_DATABASE_URI": f"sqlite:///{root / 'gateway.db'}",
        "AIGATEWAY_REDIS_URL": redis_url,
        "AIGATEWAY_REDIS_PREFIX": f"{REDIS_RUN_PREFIX}throttles-{secrets.token_hex(4)}:",
        "AIGATEWAY_SECRET_KEY": TEST_SECRET,
        "AIGATEWAY_ADMIN_TOKEN": ADMIN,
        "AIGATEWAY_THROTTLE_API_AUTH": "6/minute",
        "AIGATEWAY_THROTTLE_ADMIN_TOKEN": "4/minute",
        "AIGATEWAY_DASHBOARD_ENABLED": "false",
        "SECRET_KEY": "throttle-scale-test",
    }
    setup = Flask("setup", instance_path=str(root / "setup"))
    setup.config.update({**env, "AIGATEWAY_CREATE_TABLES": True})
    AIGateway(setup)
    _key, secret = create_key(get_state(setup), name="valid")
    get_state(setup).close()
    started: list[GatewayProcess] = []
    try:
        for i in range(2):
            started.append(GatewayProcess(env, root / f"gw{i}", workers=2))
        yield started, secret
    finally:
        for process in started:
            process.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_the_throttle_holds_across_gunicorn_processes_sharing_redis(
    two_gateways: tuple[list[GatewayProcess], str],
) -> None:
    """Counts shared through Redis: each gateway alone sees only half of the failures it
    takes to trip a throttle, yet the next attempt is refused on both."""
    gateways, secret = two_gateways

    def get(gateway: GatewayProcess, path: str, token: str) -> requests.Response:
        return requests.get(gateway.url + path, headers=bearer(token), timeout=10)

    # Admin token, 4 per minute: two wrong tokens on each gateway, then the right one is
    # refused on both (these four also count as failed /v1 authentications: 4 of 6).
    assert [get(gateways[i % 2], "/v1/stats", "wrong").status_code for i in range(4)] == [401] * 4
    for gateway in gateways:
        locked = get(gateway, "/v1/stats", ADMIN)
        assert locked.status_code == 429
        assert "admin token" in locked.json()["error"]["message"]

    # API keys, 6 per minute: one more failure on each gateway, then refused on both, while
    # the valid key is still served everywhere.
    assert [get(g, "/v1/models", "aigw_wrong").status_code for g in gateways] == [401, 401]
    for gateway in gateways:
        refused = get(gateway, "/v1/models", "aigw_wrong")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert get(gateway, "/v1/models", secret).status_code == 200
