"""POST /v1/chat/completions over the Flask test client: shapes, headers, errors, log rows."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from decimal import Decimal
from typing import Any

import pytest
from fakes import Reply
from sqlalchemy import select

from flask_aigateway.db import utcnow
from flask_aigateway.models import ApiKey, RequestLog

MESSAGES = [{"role": "user", "content": "Say hello"}]


def post(client, body, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(
        "/v1/chat/completions",
        data=data,
        headers=headers,
        content_type="application/json",
        **kwargs,
    )


def log_rows(state):
    with state.transaction() as session:
        return session.scalars(select(RequestLog).order_by(RequestLog.id)).all()


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_chat_returns_openai_completion_with_gateway_headers(
    client, state, api_key, upstreams, alias
):
    upstreams[alias].reply(text="Hello there!", prompt_tokens=1000, completion_tokens=500)
    response = post(client, {"model": alias, "messages": MESSAGES}, api_key)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["object"] == "chat.completion"
    assert abs(body["created"] - time.time()) < 60
    assert body["model"] == alias
    assert body["choices"][0]["message"] == {
        **body["choices"][0]["message"],
        "role": "assistant",
        "content": "Hello there!",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 1000
    assert body["usage"]["completion_tokens"] == 500
    # $1/M in, $2/M out: 1000 * 1e-6 + 500 * 2e-6
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == Decimal("0.002")
    provider = "fake-openai" if alias == "gpt" else "fake-anthropic"
    assert response.headers["x-aigateway-provider"] == provider
    assert response.headers["x-aigateway-deployment"].startswith("dep_")
    assert response.headers["x-aigateway-attempts"] == "1"
    assert response.headers["x-aigateway-cache"] in {"MISS", "BYPASS"}
    rid = response.headers["x-request-id"]
    [row] = log_rows(state)
    assert row.request_id == rid
    assert row.status_code == 200
    assert row.alias == alias
    assert (row.prompt_tokens, row.completion_tokens) == (1000, 500)
    assert row.cost == Decimal("0.002")
    assert row.stream is False
    assert row.usage_estimated is False


def test_upstream_receives_provider_model_and_credentials(client, api_key, upstreams):
    fake = upstreams["gpt"]
    post(
        client,
        {"model": "gpt", "messages": MESSAGES, "seed": 7, "x_future_field": {"a": 1}},
        api_key,
    )
    sent = fake.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-fake-openai-0123456789"
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["seed"] == 7
    assert sent.json["x_future_field"] == {"a": 1}
    assert api_key not in json.dumps(sent.headers)


def test_cached_prompt_tokens_are_priced_at_the_cached_price(client, api_key, upstreams):
    upstreams["gpt"].reply(prompt_tokens=1000, completion_tokens=0, cache_read_tokens=600)
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    # 400 uncached at $1/M + 600 cached at $0.5/M
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == Decimal("0.0007")
    assert response.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 600


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        ({"messages": MESSAGES}, "model"),
        ({"model": "", "messages": MESSAGES}, "model"),
        ({"model": "gpt"}, "messages"),
        ({"model": "gpt", "messages": []}, "messages"),
        ({"model": "gpt", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "gpt", "messages": MESSAGES, "temperature": "hot"}, "temperature"),
        ({"model": "gpt", "messages": MESSAGES, "temperature": 3}, "temperature"),
        ({"model": "gpt", "messages": MESSAGES, "n": 0}, "n"),
        ({"model": "gpt", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "gpt", "messages": MESSAGES, "stop": [1]}, "stop"),
        (
            {"model": "gpt", "messages": MESSAGES, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        (
            {"model": "gpt", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
    ],
)
def test_malformed_requests_get_400_in_openai_shape(client, api_key, upstreams, body, param):
    response = post(client, body, api_key)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert upstreams["gpt"].requests == []


def test_body_over_the_limit_is_413(app, client, api_key, upstreams, state):
    state.settings["AIGATEWAY_MAX_BODY_BYTES"] = 1000
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 2000}]}
    response = post(client, body, api_key)
    assert response.status_code == 413
    assert response.json["error"]["type"] == "invalid_request_error"
    assert upstreams["gpt"].requests == []


def test_a_small_body_is_read_without_setting_the_body_limit_aside(client, api_key, upstreams):
    """The body was read in one read of ``AIGATEWAY_MAX_BODY_BYTES`` + 1, and a read of n
    bytes sets n aside first under Werkzeug's ``LimitedStream`` (the test client, Werkzeug's
    server, waitress): 32 MiB mapped and unmapped for every request."""
    import tracemalloc

    assert post(client, {"model": "gpt", "messages": MESSAGES}, api_key).status_code == 200
    tracemalloc.start()
    try:
        response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    assert peak < 4 * 1024 * 1024


def test_a_body_without_a_length_is_read_to_its_end_in_steps(app, api_key, upstreams):
    """A chunked body (no ``Content-Length``, the server ends the input: gunicorn) larger
    than one read step arrives whole, however little each read returns."""
    import io

    from werkzeug.test import EnvironBuilder

    class Trickle(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(size if size is not None and size >= 0 else 1 << 30, 70_000))

    text = "x" * (3 * 1024 * 1024)
    data = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": text}]}).encode()
    environ = EnvironBuilder(
        path="/v1/chat/completions",
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = Trickle(data)
    environ["wsgi.input_terminated"] = True
    statuses: list[str] = []
    b"".join(app.wsgi_app(environ, lambda status, headers, *_: statuses.append(status)))
    assert statuses[0].startswith("200"), statuses
    (sent,) = upstreams["gpt"].requests
    assert sent.json["messages"][-1]["content"] == text


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer aigw_nope"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "missing_api_key"),
    ],
)
def test_authentication_errors_are_401_and_never_echo_the_key(
    client, upstreams, headers, code, state
):
    response = client.post(
        "/v1/chat/completions", json={"model": "gpt", "messages": MESSAGES}, headers=headers
    )
    assert response.status_code == 401
    assert response.json["error"]["type"] == "authentication_error"
    assert response.json["error"]["code"] == code
    assert "aigw_nope" not in response.get_data(as_text=True)
    assert response.headers["x-request-id"]
    [row] = log_rows(state)
    assert row.status_code == 401


def test_revoked_and_expired_keys_are_refused(client, state, upstreams):
    from flask_aigateway.services.keys import create_key, revoke_key

    key, secret = create_key(state, name="soon-revoked")
    assert post(client, {"model": "gpt", "messages": MESSAGES}, secret).status_code == 200
    revoke_key(state, key.id)
    response = post(client, {"model": "gpt", "messages": MESSAGES}, secret)
    assert response.status_code == 401
    assert "revoked" in response.json["error"]["message"]
    key, expiring = create_key(state, name="old", expires_at="2099-01-01")
    assert post(client, {"model": "gpt", "messages": MESSAGES}, expiring).status_code == 200
    with state.transaction() as session:
        session.get(ApiKey, key.id).expires_at = utcnow() - dt.timedelta(seconds=1)
    state.invalidate()
    response = post(client, {"model": "gpt", "messages": MESSAGES}, expiring)
    assert response.status_code == 401
    assert "expired" in response.json["error"]["message"]


def test_model_whitelist_gives_403_and_unknown_model_404(client, state, upstreams):
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="gpt-only", models="gpt")
    response = post(client, {"model": "claude", "messages": MESSAGES}, secret)
    assert response.status_code == 403
    assert response.json["error"]["type"] == "permission_error"
    assert response.json["error"]["code"] == "model_not_allowed"
    response = post(client, {"model": "nope", "messages": MESSAGES}, secret)
    assert response.status_code in (403, 404)
    _key, open_secret = create_key(state, name="open")
    response = post(client, {"model": "nope", "messages": MESSAGES}, open_secret)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "model_not_found"
    assert response.json["error"]["param"] == "model"


def test_upstream_client_error_passes_through_without_retry(client, api_key, upstreams, state):
    upstreams["gpt"].fail(400, "Invalid 'messages[0].content': too long.")
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    assert response.status_code == 400
    assert "too long" in response.json["error"]["message"]
    assert len(upstreams["gpt"].requests) == 1
    row = log_rows(state)[-1]
    assert row.status_code == 400
    assert row.provider == "fake-openai"
    assert row.deployment_id.startswith("dep_")


def test_retryable_upstream_error_is_retried_then_succeeds(client, api_key, upstreams):
    upstreams["gpt"].fail(500)
    upstreams["gpt"].reply(text="second time lucky")
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    assert response.status_code == 200
    assert response.json["choices"][0]["message"]["content"] == "second time lucky"
    assert response.headers["x-aigateway-attempts"] == "2"


def test_persistent_upstream_failure_is_502(client, api_key, upstreams, state):
    fake = upstreams["claude"]
    fake.default = Reply(status=500, error_message="boom")
    response = post(client, {"model": "claude", "messages": MESSAGES}, api_key)
    assert response.status_code == 502
    assert response.json["error"]["type"] == "upstream_error"
    assert len(fake.requests) == state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"]
    row = log_rows(state)[-1]
    assert row.status_code == 502
    # The failing upstream is named to the client as in the log (README: "on responses and
    # errors").
    assert response.headers["x-aigateway-deployment"] == row.deployment_id
    assert response.headers["x-aigateway-provider"] == "fake-anthropic"
    assert response.headers["x-aigateway-attempts"] == str(len(fake.requests))


def test_an_upstream_client_error_names_its_deployment(client, api_key, upstreams, state):
    upstreams["gpt"].fail(400, "Invalid 'messages[0].content': too long.")
    response = post(client, {"model": "gpt", "messages": MESSAGES, "stream": True}, api_key)
    assert response.status_code == 400
    assert response.headers["x-aigateway-deployment"] == log_rows(state)[-1].deployment_id
    assert response.headers["x-aigateway-provider"] == "fake-openai"


def test_upstream_timeout_is_504(client, api_key, upstreams, state):
    state.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 0.5
    upstreams["gpt"].default = Reply(latency=3)
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    assert response.status_code == 504
    assert response.json["error"]["type"] == "timeout_error"
    # A new request has a deadline of its own: the SDKs may retry this one.
    assert "x-should-retry" not in response.headers


def test_alias_without_deployment_is_503(client, api_key, upstreams, state):
    from flask_aigateway.services.providers import update_provider

    update_provider(state, "fake-openai", enabled=False)
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "no_healthy_deployment"


def test_fallback_chain_serves_from_the_next_alias(client, api_key, upstreams, state):
    from flask_aigateway.services.models import update_model

    update_model(state, "gpt", fallbacks="claude")
    upstreams["gpt"].default = Reply(status=503)
    upstreams["claude"].reply(text="from claude")
    response = post(client, {"model": "gpt", "messages": MESSAGES}, api_key)
    assert response.status_code == 200
    assert response.json["choices"][0]["message"]["content"] == "from claude"
    assert response.json["model"] == "gpt"
    assert response.headers["x-aigateway-fallback"] == "gpt,claude"
    assert response.headers["x-aigateway-provider"] == "fake-anthropic"
    assert log_rows(state)[-1].fallback_path == ["gpt", "claude"]


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/", "/v1/audio/speech"])
def test_unknown_routes_under_v1_are_404_in_openai_shape(client, path):
    response = client.post(path, json={})
    assert response.status_code == 404
    assert response.json["error"]["type"] == "not_found_error"


def test_wrong_method_is_405_in_openai_shape(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert "POST" in response.json["error"]["message"]


#: Each /v1 path and the methods it answers (HEAD comes with GET), as ``Allow`` lists them.
ALLOW = {
    "/v1/chat/completions": "POST, OPTIONS",
    "/v1/embeddings": "POST, OPTIONS",
    "/v1/responses": "POST, OPTIONS",
    "/v1/responses/resp_1": "GET, HEAD, DELETE, OPTIONS",
    "/v1/models": "GET, HEAD, OPTIONS",
    "/v1/models/gpt": "GET, HEAD, OPTIONS",
    "/v1/health": "GET, HEAD, OPTIONS",
    "/v1/health/ready": "GET, HEAD, OPTIONS",
    "/v1/metrics": "GET, HEAD, OPTIONS",
    "/v1/stats": "GET, HEAD, OPTIONS",
    "/v1/openapi.json": "GET, HEAD, OPTIONS",
}


WRONG_METHODS = [
    (path, method)
    for path in sorted(ALLOW)
    for method in ("TRACE", "PROPFIND", "CONNECT", "FOO", "PUT", "POST", "GET")
    # POST /v1/responses/{id} is an OpenAI endpoint the gateway does not offer: 404.
    if method not in ALLOW[path] and (path, method) != ("/v1/responses/resp_1", "POST")
]


@pytest.mark.parametrize(("path", "method"), WRONG_METHODS)
def test_every_wrong_method_is_405_with_allow_in_openai_shape(client, path, method):
    """Any method a path does not answer, standard or not, is OpenAI's 405 with the path's
    real methods in ``Allow`` (RFC 9110) and an ``x-request-id``, never Werkzeug's HTML."""
    response = client.open(path, method=method)
    assert response.status_code == 405, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.headers["Allow"] == ALLOW[path]
    assert response.headers["x-request-id"]
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "method_not_allowed"
    assert f"Method {method} is not allowed on {path}" in error["message"]


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/gpt"])
def test_a_wrong_method_on_models_answers_in_the_shape_asked(client, path):
    """With ``anthropic-version`` (the Anthropic SDK), the models routes answer every error in
    Anthropic's shape, a wrong method's 405 too; without it, in OpenAI's."""
    anthropic = client.post(path, headers={"anthropic-version": "2023-06-01"})
    assert anthropic.status_code == 405
    assert anthropic.json["type"] == "error" and anthropic.json["error"]["type"]
    assert anthropic.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert client.post(path).json["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["TRACE", "FOO", "OPTIONS", "POST"])
def test_unknown_routes_are_404_whatever_the_method(client, method):
    response = client.open("/v1/nope", method=method)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_url"
    assert response.headers["x-request-id"] and "Allow" not in response.headers


@pytest.mark.parametrize("path", sorted(ALLOW))
def test_options_answers_the_paths_real_methods(client, path):
    """OPTIONS (a CORS preflight among others) is 204 with the path's real ``Allow``, not
    Flask's 200 advertising every method the catch-all takes."""
    response = client.options(
        path, headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["Allow"] == ALLOW[path]
    assert response.get_data() == b""


def test_models_lists_what_the_key_may_use(client, state, upstreams):
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="claude-only", models="claude*")
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert response.json["object"] == "list"
    assert [m["id"] for m in response.json["data"]] == ["claude"]
    model = response.json["data"][0]
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert model["owned_by"]
    assert client.get("/v1/models").status_code == 401


def test_models_list_only_aliases_that_can_serve(client, state, api_key, upstreams):
    """An enabled alias whose only deployment, or its provider, is disabled is a 503 on every
    request: it is not listed (nor found by id, in either shape) unless a fallback of its
    kind serves it; ``/v1/health`` counts the same aliases."""
    from flask_aigateway.services.models import create_model, get_model, update_deployment
    from flask_aigateway.services.providers import create_provider, update_provider

    create_provider(state, name="spare", format="openai", base_url=upstreams["gpt"].base_url)
    create_model(
        state,
        alias="dead-dep",
        provider="fake-openai",
        model="m",
        pricing_input=1,
        pricing_output=2,
    )
    for alias, fallbacks in (("dead-prov", None), ("via-fallback", "gpt"), ("chain", "dead-dep")):
        create_model(
            state,
            alias=alias,
            provider="spare",
            model="m",
            pricing_input="1",
            pricing_output="2",
            fallbacks=fallbacks,
        )
    update_provider(state, "spare", enabled=False)
    update_deployment(state, get_model(state, "dead-dep").deployments[0].id, enabled=False)
    listed = ["claude", "gpt", "via-fallback"]
    auth = {"Authorization": f"Bearer {api_key}"}
    anthropic = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}

    assert [m["id"] for m in client.get("/v1/models", headers=auth).json["data"]] == listed
    page = client.get("/v1/models", headers=anthropic).json
    assert [m["id"] for m in page["data"]] == listed
    for alias in ("dead-prov", "dead-dep", "chain"):
        one = client.get(f"/v1/models/{alias}", headers=auth)
        assert (one.status_code, one.json["error"]["code"]) == (404, "model_not_found")
        other = client.get(f"/v1/models/{alias}", headers=anthropic)
        assert (other.status_code, other.json["error"]["type"]) == (404, "not_found_error")
        assert post(client, {"model": alias, "messages": MESSAGES}, api_key).status_code == 503
    assert client.get("/v1/models/via-fallback", headers=auth).json["id"] == "via-fallback"
    assert client.get("/v1/models/via-fallback", headers=anthropic).json["id"] == "via-fallback"
    assert post(client, {"model": "via-fallback", "messages": MESSAGES}, api_key).status_code == 200
    assert client.get("/v1/health").json["models_available"] == len(listed)


def test_models_list_costs_the_same_queries_for_any_number_of_aliases(
    client, state, api_key, upstreams
):
    from sqlalchemy import event

    from flask_aigateway.services.models import create_model

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def queries() -> int:
        client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"})  # warm caches
        statements.clear()
        event.listen(state.engine, "before_cursor_execute", count)
        try:
            response = client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"})
        finally:
            event.remove(state.engine, "before_cursor_execute", count)
        assert response.status_code == 200
        return len(statements)

    few = queries()
    for n in range(6):
        create_model(
            state,
            alias=f"more-{n}",
            provider="fake-openai",
            model="m",
            pricing_input=1,
            pricing_output=2,
            fallbacks="gpt" if n % 2 else None,
        )
    assert queries() == few


def test_health_is_public_and_ready_checks_the_database(client, state):
    assert client.get("/v1/health").json["status"] == "ok"
    ready = client.get("/v1/health/ready")
    assert ready.status_code == 200
    assert ready.json["checks"]["database"] == "ok"


def test_ready_is_503_when_the_schema_is_missing(tmp_path):
    from flask import Flask

    from flask_aigateway import AIGateway

    app = Flask("no_schema", instance_path=str(tmp_path))
    app.config["AIGATEWAY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'empty.db'}"
    AIGateway(app)
    response = app.test_client().get("/v1/health/ready")
    assert response.status_code == 503
    assert "aigateway db upgrade" in response.json["error"]["message"]
    AIGateway.get_state(app).close()


def test_a_unicode_provider_name_travels_percent_encoded_in_its_header(
    state, live_server, api_key, fake_openai
):
    """Header values are Latin-1 on the wire: a label like "OpenAI — Zürich" is sent as
    percent-encoded UTF-8 (``%`` encoded too), which ``unquote`` turns back into the name."""
    from urllib.parse import unquote

    import requests

    from flask_aigateway.services.models import create_model
    from flask_aigateway.services.providers import create_provider

    name = "OpenAI — Zürich 100%"
    create_provider(
        state, name=name, format="openai", base_url=fake_openai.base_url, api_key="sk-x"
    )
    create_model(state, alias="eu", provider=name, model="m", pricing_input="1", pricing_output="2")
    fake_openai.reply(text="hi", prompt_tokens=3, completion_tokens=2)
    response = requests.post(
        f"{live_server.url}/v1/chat/completions",
        json={"model": "eu", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    header = response.headers["x-aigateway-provider"]
    assert header == "OpenAI %E2%80%94 Z%C3%BCrich 100%25"
    assert unquote(header) == name
    (row,) = log_rows(state)
    assert row.provider == name


def test_a_tool_history_without_tools_reaches_anthropic(client, api_key, upstreams):
    """A conversation that called tools, continued without any (a summarising step, a
    handoff to an agent with no tools): chat completions takes it, the Messages API refuses
    tool blocks unless tools are defined (as the fake does): the tools named are declared,
    with ``tool_choice: none``."""
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "Find it."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": "Summarise."},
    ]
    upstreams["claude"].reply(text="It was found.")
    response = post(client, {"model": "claude", "messages": history}, api_key)
    assert response.status_code == 200, response.json
    assert response.json["choices"][0]["message"]["content"] == "It was found."
    sent = upstreams["claude"].last.json
    assert [tool["name"] for tool in sent["tools"]] == ["lookup"]
    assert sent["tool_choice"] == {"type": "none"}


def test_tool_call_ids_of_other_providers_reach_anthropic_valid(client, api_key, upstreams):
    """Kimi K2 on vLLM names its calls ``functions.get_weather:0``; the Messages API refuses any
    id outside ``^[a-zA-Z0-9_-]+$`` (as the fake does). Both ends of each call get the same
    valid id, two ids that differ only in such characters stay two, valid ids pass as sent."""
    ids = ["functions.get_weather:0", "functions.get_weather:1", "functions_get_weather_0"]
    ids.append("call_9")
    calls = [
        {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        for i in ids
    ]
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": i, "content": "sunny"} for i in ids),
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    upstreams["claude"].reply(text="Sunny.")
    response = post(client, {"model": "claude", "messages": history, "tools": tools}, api_key)
    assert response.status_code == 200, response.json
    sent = upstreams["claude"].last.json["messages"]
    used = [block["id"] for block in sent[1]["content"]]
    answered = [block["tool_use_id"] for block in sent[2]["content"]]
    assert used == answered and len(set(used)) == 4
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in used)
    assert used[0].startswith("functions_get_weather_0_") and used[2:] == ids[2:]


@pytest.mark.parametrize("alias", ["gpt", "claude"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/messages"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_lone_surrogate_from_upstream_is_passed_on_escaped(
    client, api_key, upstreams, state, alias, path, stream
):
    """``"\\ud800"`` is a valid JSON escape but no UTF-8 encodes it: an upstream answer holding
    one was a 500 on every door after the upstream was paid. It reaches the client escaped, as
    it came, and the request is logged and (Responses) stored like any other."""
    upstreams[alias].reply(text="broken \ud800 text")
    if path == "/v1/responses":
        body: dict[str, Any] = {"model": alias, "input": "hi", "stream": stream}
    else:
        body = {"model": alias, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        body["max_tokens"] = 50
    auth = {"Authorization": f"Bearer {api_key}"}
    response = client.post(path, json=body, headers=auth)
    assert response.status_code == 200, response.get_data()
    data = response.get_data()
    assert b"\\ud800" in data
    assert not re.search(rb"internal_error|api_error|server_error|response\.failed", data)
    with state.session() as session:
        assert [row.status_code for row in session.scalars(select(RequestLog))] == [200]
    if path == "/v1/responses":
        events = [json.loads(line[6:]) for line in data.splitlines() if line.startswith(b"data: ")]
        created = events[-1]["response"] if stream else json.loads(data)
        stored = client.get(f"/v1/responses/{created['id']}", headers=auth).get_json()
        assert stored["output"][0]["content"][0]["text"] == "broken \ud800 text"


@pytest.mark.parametrize(("alias", "status"), [("gpt", 200), ("claude", 400)])
def test_tool_call_arguments_nested_too_deep_are_refused_not_a_crash(
    client, api_key, upstreams, alias, status
):
    """An earlier tool call whose arguments (JSON in a string, which the body's depth limit
    does not look into) nest 2,000 levels deep: passed on as text to an OpenAI-format
    upstream; for an Anthropic-format one, where they must become an ``input`` object, a 400
    naming them (it was a RecursionError and a 500)."""
    deep = '{"a": ' + "[" * 2000 + "]" * 2000 + "}"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    upstreams[alias].reply(text="fine")
    response = client.post(
        "/v1/chat/completions",
        json={"model": alias, "messages": messages, "max_tokens": 20},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == status, response.get_json()
    if status == 400:
        error = response.get_json()["error"]
        assert error["param"] == "messages[1].tool_calls[0].function.arguments"


CUSTOM_CALL = {"id": "call_1", "type": "custom", "custom": {"name": "code_exec", "input": "6*7"}}


@pytest.mark.parametrize(("alias", "status"), [("gpt", 200), ("claude", 400)])
def test_a_custom_tool_call_can_be_sent_back(client, api_key, upstreams, alias, status):
    """The next turn of an agent loop with an OpenAI custom tool sends the model's call back
    as it came (``type: custom``, its ``custom`` name and input): an OpenAI-format upstream
    receives it untouched; for an Anthropic-format one, which has no custom tools (a custom
    tool is refused), a 400 naming the call. It was a 400 "must be an object with a
    'function'" for every upstream."""
    tools = [{"type": "custom", "custom": {"name": "code_exec"}}]
    messages = [
        {"role": "user", "content": "compute 6*7"},
        {"role": "assistant", "content": None, "tool_calls": [CUSTOM_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    upstreams[alias].reply(text="42")
    body = {"model": alias, "messages": messages, "max_tokens": 20}
    if alias == "gpt":
        body["tools"] = tools
    response = post(client, body, api_key)
    assert response.status_code == status, response.json
    if status == 200:
        assert response.json["choices"][0]["message"]["content"] == "42"
        assert upstreams["gpt"].last.json["messages"][1]["tool_calls"] == [CUSTOM_CALL]
        return
    error = response.json["error"]
    assert error["param"] == "messages[1].tool_calls[0].type"
    assert "'custom' tool call" in error["message"]
    assert upstreams["claude"].requests == []


@pytest.mark.parametrize("custom", [None, {"name": "code_exec"}, {"input": "6*7"}])
def test_a_custom_tool_call_needs_its_name_and_input(client, api_key, upstreams, custom):
    call = {"id": "call_1", "type": "custom", "custom": custom}
    messages = [
        {"role": "user", "content": "compute 6*7"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    response = post(client, {"model": "gpt", "messages": messages}, api_key)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["param"] == "messages[1].tool_calls[0].custom"
    assert "'name'" in error["message"] and "'input'" in error["message"]
    assert upstreams["gpt"].requests == []


def test_an_assistant_refusal_reaches_anthropic_as_its_text(client, api_key, upstreams):
    """A refusal turn as the SDK's ``message.model_dump()`` gives it (content null, the text
    in ``refusal``) is the assistant's text upstream, as a ``refusal`` content part is. It was
    dropped: the two user turns around it merged and the model never saw it had refused."""
    history = [
        {"role": "user", "content": "Tell me how to pick a lock"},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        {"role": "user", "content": "Then explain how locks work"},
    ]
    upstreams["claude"].reply(text="Pins and springs.")
    response = post(client, {"model": "claude", "messages": history}, api_key)
    assert response.status_code == 200, response.json
    assert upstreams["claude"].last.json["messages"] == [
        {"role": "user", "content": "Tell me how to pick a lock"},
        {"role": "assistant", "content": "I can't help with that."},
        {"role": "user", "content": "Then explain how locks work"},
    ]


def test_temperature_with_top_p_reaches_a_model_that_takes_one(client, api_key, upstreams, state):
    """OpenAI takes ``temperature`` and ``top_p`` together, so OpenAI-tuned clients (the
    Agents SDK's ModelSettings, LangChain's ChatOpenAI) send both; Sonnet 4.5 (the
    ``claude`` alias here) answers 400 to both. The gateway sends the request again without
    ``top_p`` — after an effort level the model also refused, if need be — and leaves it out
    for that deployment from then on. Through the Messages door the client chose both: its
    400 stands."""
    fake = upstreams["claude"]
    body = {"model": "claude", "messages": MESSAGES, "temperature": 0.2, "top_p": 0.9}
    first = post(client, {**body, "reasoning_effort": "high"}, api_key)
    assert first.status_code == 200, first.get_json()
    sent = [(r.json.get("output_config"), r.json.get("top_p")) for r in fake.requests]
    assert len(sent) == 3  # refused for one, then for the other (whichever it checks first)
    assert (sent[0], sent[-1]) == (({"effort": "high"}, 0.9), (None, None))
    assert fake.last.json["temperature"] == 0.2
    assert first.headers["x-aigateway-attempts"] == "1"
    streamed = post(client, {**body, "stream": True}, api_key)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.get_data(as_text=True)
    assert len(fake.requests) == 4 and "top_p" not in fake.last.json
    explicit = {"model": "claude", "max_tokens": 16, "temperature": 0.2, "top_p": 0.9}
    refused = client.post(
        "/v1/messages",
        json={**explicit, "messages": MESSAGES},
        headers={"x-api-key": api_key},
    )
    assert refused.status_code == 400
    assert "cannot both be specified" in refused.get_json()["error"]["message"]
    assert [row.status_code for row in log_rows(state)] == [200, 200, 400]


def test_reasoning_effort_to_a_model_that_does_not_reason_is_left_out(
    client, api_key, upstreams, state
):
    """Codex CLI and the Agents SDK send ``reasoning_effort`` to any model; gpt-4o-mini (the
    ``gpt`` alias here) answers 400 to it, as OpenAI does for models that do not reason. The
    gateway sends the request again without it and leaves it out for that deployment from
    then on, as it does for Anthropic models without effort levels. An effort level the
    model does not take (``Unsupported value``) is the client's to fix: its 400 stands."""
    fake = upstreams["gpt"]
    body = {"model": "gpt", "messages": MESSAGES, "reasoning_effort": "high"}
    first = post(client, body, api_key)
    assert first.status_code == 200, first.get_json()
    assert [r.json.get("reasoning_effort") for r in fake.requests] == ["high", None]
    streamed = post(client, {**body, "stream": True}, api_key)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.get_data(as_text=True)
    assert len(fake.requests) == 3 and "reasoning_effort" not in fake.last.json
    other = "Unsupported value: 'reasoning_effort' does not support 'none' with this model."
    fake.fail(400, other)
    refused = post(client, {**body, "model": "gpt", "reasoning_effort": "none"}, api_key)
    assert refused.status_code == 400 and "does not support 'none'" in str(refused.get_json())
    assert [row.status_code for row in log_rows(state)] == [200, 200, 400]


@pytest.mark.parametrize("door", ["chat", "chat-stream", "messages"])
def test_relaxed_tries_share_the_request_deadline(client, api_key, upstreams, state, door):
    """A try sent again without what the model refused gets the time left, not the whole
    deadline again: three slow refusals took three times AIGATEWAY_REQUEST_TIMEOUT (and
    answered 200 long after the client's deadline)."""
    state.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 2.0
    alias = "gpt" if door == "messages" else "claude"
    fake = upstreams[alias]
    fake.default = Reply(latency=1.2)  # each answer (each refusal) takes 1.2 s
    started = time.monotonic()
    if door == "messages":
        body = {"model": alias, "max_tokens": 4096, "messages": MESSAGES}
        thinking = {"type": "enabled", "budget_tokens": 2048}
        response = client.post(
            "/v1/messages",
            json={**body, "thinking": thinking},
            headers={"x-api-key": api_key},
        )
    else:
        body = {"model": alias, "messages": MESSAGES, "stream": door == "chat-stream"}
        sampling = {"reasoning_effort": "low", "temperature": 0.5, "top_p": 0.9}
        response = post(client, {**body, **sampling}, api_key)
    took = time.monotonic() - started
    assert response.status_code == 504, response.get_data(as_text=True)
    assert len(fake.requests) == 2, "the second try is cut at the deadline; no third"
    assert took < 2.0 + 1.4
