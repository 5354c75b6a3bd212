"""``/v1/health`` counts, HEAD on every read-only route, and a gateway whose schema was never
created: 503 with the fix on every ``/v1`` route that needs the database (liveness stays 200
and names the fix), and working again once the schema exists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from flask_aigateway import AIGateway
from flask_aigateway.models import RequestLog
from flask_aigateway.services import keys as key_service
from flask_aigateway.services import models as model_service
from flask_aigateway.services import providers as provider_service

MESSAGES = [{"role": "user", "content": "hi"}]
FIX = "aigateway db upgrade"


def test_health_counts_enabled_providers_and_servable_models(client, state) -> None:
    assert client.get("/v1/health").json == {
        "status": "ok",
        "providers_configured": 0,
        "models_available": 0,
    }
    provider_service.create_provider(state, name="Main (EU)", format="openai", api_key="sk-x")
    provider_service.create_provider(state, name="spare", format="ollama")
    for alias in ("smart", "fast"):
        model_service.create_model(
            state, alias=alias, provider="Main (EU)", model="m", pricing_input=1, pricing_output=2
        )
    model_service.create_model(
        state, alias="local", provider="spare", model="llama", pricing_input=0, pricing_output=0
    )
    model_service.update_model(state, "fast", enabled=False)
    body = client.get("/v1/health").json
    assert body == {"status": "ok", "providers_configured": 2, "models_available": 2}

    provider_service.update_provider(state, "spare", enabled=False)
    body = client.get("/v1/health").json
    assert body == {"status": "ok", "providers_configured": 1, "models_available": 1}
    assert "Main" not in json.dumps(body) and "smart" not in json.dumps(body)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/health",
        "/v1/health/ready",
        "/v1/metrics",
        "/v1/stats",
        "/v1/models",
        "/v1/models/smart",
        "/v1/openapi.json",
        "/v1/responses/resp_missing",
        "/v1/responses/resp_missing/input_items",
    ],
)
def test_head_answers_like_get_without_a_body(client, state, api_key, path) -> None:
    """Load balancers and uptime checkers probe with HEAD; Flask adds it to every GET route,
    so each read-only route answers it as GET does (a 404 stays a 404), never 405."""
    provider_service.create_provider(state, name="main", format="openai", api_key="sk-x")
    model_service.create_model(
        state, alias="smart", provider="main", model="m", pricing_input=1, pricing_output=2
    )
    auth = {"Authorization": f"Bearer {api_key}"}
    got = client.get(path, headers=auth)
    head = client.head(path, headers=auth)
    assert (head.status_code, head.content_type) == (got.status_code, got.content_type)
    assert head.status_code != 405 and head.get_data() == b""


class TestPrivateHealth:
    @pytest.fixture
    def app_config(self, app_config: dict[str, Any]) -> dict[str, Any]:
        return {**app_config, "AIGATEWAY_HEALTH_PUBLIC": False}

    def test_it_needs_a_key_then_counts(self, client, state) -> None:
        assert client.get("/v1/health").status_code == 401
        _key, secret = key_service.create_key(state, name="probe")
        response = client.get("/v1/health", headers={"Authorization": f"Bearer {secret}"})
        assert response.json == {
            "status": "ok",
            "providers_configured": 0,
            "models_available": 0,
        }


def test_ready_says_an_unreachable_database_is_unreachable(tmp_path: Path) -> None:
    """Not "unreachable or schema missing … run db upgrade": the check knows which it is."""
    app = Flask("down_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        # Nothing listens on port 1: every connection is refused.
        AIGATEWAY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/gateway",
        AIGATEWAY_SECRET_KEY="k" * 44,
    )
    AIGateway(app)
    try:
        ready = app.test_client().get("/v1/health/ready")
    finally:
        AIGateway.get_state(app).close()
    assert ready.status_code == 503
    assert ready.json["checks"]["database"] == "down"
    message = ready.json["error"]["message"]
    assert "the database is unreachable (OperationalError)" in message
    assert "AIGATEWAY_DATABASE_URI" in message
    assert "schema" not in message and FIX not in message


# --- no schema ----------------------------------------------------------------------------------


@pytest.fixture
def bare_app(empty_database_uri: str, tmp_path: Path) -> Iterator[Flask]:
    """An app on a database where nobody ran the migrations (no AIGATEWAY_CREATE_TABLES)."""
    app = Flask("bare_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        AIGATEWAY_DATABASE_URI=empty_database_uri,
        AIGATEWAY_SECRET_KEY="k" * 44,
        AIGATEWAY_LOG_SYNC=True,
    )
    AIGateway(app)
    yield app
    AIGateway.get_state(app).close()


def assert_schema_503(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["type"] == "service_unavailable_error"
    assert FIX in error["message"] and "flask db upgrade" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "empty_database_uri",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_missing_schema_is_503_on_every_v1_route_until_upgraded(
    bare_app: Flask, fake_openai: Any
) -> None:
    client = bare_app.test_client()
    auth = {"Authorization": "Bearer aigw_" + "x" * 43}
    chat = {"model": "gpt", "messages": MESSAGES}
    responses = {
        "chat": client.post("/v1/chat/completions", json=chat, headers=auth),
        "stream": client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=auth),
        "models": client.get("/v1/models", headers=auth),
        "model": client.get("/v1/models/gpt", headers=auth),
        "stats": client.get("/v1/stats", headers=auth),
    }
    for name, response in responses.items():
        assert_schema_503(response)
        assert response.json["error"]["code"] == "schema_missing", name
    # Liveness stays 200 (a restart cannot create the schema) but names the fix.
    alive = client.get("/v1/health")
    assert alive.status_code == 200
    assert alive.json["providers_configured"] is None and alive.json["models_available"] is None
    assert FIX in alive.json["problem"]
    ready = client.get("/v1/health/ready")
    assert_schema_503(ready)
    assert ready.json["error"]["code"] == "not_ready"
    assert ready.json["checks"]["database"] == "schema missing"
    assert client.get("/v1/nope").status_code == 404

    # The message's own fix, run as the operator would, and the next request just works.
    upgraded = bare_app.test_cli_runner().invoke(args=["aigateway", "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    state = AIGateway.get_state(bare_app)
    provider_service.create_provider(
        state, name="Up", format="openai", base_url=fake_openai.base_url, api_key="sk-x"
    )
    model_service.create_model(
        state, alias="gpt", provider="Up", model="m", pricing_input=1, pricing_output=2
    )
    _key, secret = key_service.create_key(state, name="k")
    fake_openai.reply(text="hello", prompt_tokens=4, completion_tokens=2)
    ok = client.post(
        "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {secret}"}
    )
    assert ok.status_code == 200, ok.json
    assert client.get("/v1/health/ready").status_code == 200
    assert client.get("/v1/health").json == {
        "status": "ok",
        "providers_configured": 1,
        "models_available": 1,
    }
    with state.transaction() as session:
        statuses = list(session.scalars(select(RequestLog.status_code)))
    assert statuses == [200]
