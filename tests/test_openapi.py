"""``GET /v1/openapi.json`` stays true: it documents exactly the routes of the ``/v1``
blueprint, and real answers of the gateway (successes and errors, both error shapes) match the
schemas it documents for them."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client

from flask_aigateway.services.models import create_model

#: The catch-all routes that answer 404 ``unknown_url`` in OpenAI's shape; not operations.
CATCH_ALL = {"/", "/{rest}"}


def spec(client: Any) -> dict[str, Any]:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.get_json()


def blueprint_paths(app: Flask, prefix: str = "/v1") -> set[str]:
    """The ``/v1`` blueprint's rules as OpenAPI paths (``<path:model>`` → ``{model}``)."""
    paths = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("aigateway_api."):
            assert rule.rule.startswith(prefix)
            paths.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len(prefix) :]))
    return paths


def test_the_document_is_openapi_3_1_and_public(client):
    document = spec(client)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/v1"}]
    assert client.post("/v1/openapi.json").status_code == 405


def test_every_blueprint_route_is_documented_and_nothing_else(app, client):
    documented = set(spec(client)["paths"])
    routes = {normalise(p) for p in blueprint_paths(app) - CATCH_ALL}
    assert routes == {normalise(p) for p in documented}
    for path, item in spec(client)["paths"].items():
        assert {"get", "post", "delete"} & set(item), path


def normalise(path: str) -> str:
    """Path parameters are named differently in routes and document (<response_id>, {id})."""
    return re.sub(r"\{\w+\}", "{}", path)


def test_servers_and_paths_follow_the_route_prefix(database_uri, tmp_path):
    from flask_aigateway import AIGateway

    app = Flask("prefixed", instance_path=str(tmp_path / "instance"))
    app.config.update(
        AIGATEWAY_DATABASE_URI=database_uri,
        AIGATEWAY_SECRET_KEY="s" * 40,
        AIGATEWAY_CREATE_TABLES=True,
        AIGATEWAY_ROUTE_PREFIX="/ai",
    )
    gateway = AIGateway(app)
    try:
        document = app.test_client().get("/ai/v1/openapi.json").get_json()
        assert document["servers"] == [{"url": "/ai/v1"}]
        # Mounted under a WSGI path (DispatcherMiddleware, ProxyFix x_prefix): it is included.
        mounted = DispatcherMiddleware(Flask("host"), {"/host": app})
        client = Client(mounted)
        response = client.get("/host/ai/v1/openapi.json")
        assert response.status_code == 200
        assert response.json["servers"] == [{"url": "/host/ai/v1"}]
        proxied = ProxyFix(app, x_prefix=1)
        response = Client(proxied).get("/ai/v1/openapi.json", headers={"X-Forwarded-Prefix": "/p"})
        assert response.json["servers"] == [{"url": "/p/ai/v1"}]
        routes = {normalise(p) for p in blueprint_paths(app, "/ai/v1") - CATCH_ALL}
        assert routes == {normalise(p) for p in document["paths"]}
    finally:
        gateway.get_state(app).close()


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE body as field → value (``data`` lines joined), as a client reads
    them."""
    events = []
    for block in text.split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = event[field] + "\n" + value if field in event else value
        if event:
            events.append(event)
    return events


class Documented:
    """Validates an answer against what the document promises for its operation."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def check(self, response: Any, path: str, method: str) -> None:
        operation = self.document["paths"][path][method]
        responses = operation["responses"]
        entry = responses.get(str(response.status_code)) or responses["default"]
        media_type = response.mimetype
        assert media_type in entry["content"], (path, response.status_code, media_type)
        schema = entry["content"][media_type]["schema"]
        if media_type == "application/json":
            validator = jsonschema_rs.Draft202012Validator(
                {**schema, "components": self.document["components"]}
            )
            errors = [str(e) for e in validator.iter_errors(response.get_json())]
            assert not errors, (path, method, response.status_code, errors)
        if media_type == "text/event-stream":
            validator = jsonschema_rs.Draft202012Validator(
                {**schema, "components": self.document["components"]}
            )
            events = sse_events(response.get_data(as_text=True))
            assert events
            for event in events:
                assert validator.is_valid(event), (path, event)
        for name, header in entry.get("headers", {}).items():
            assert not header.get("required") or name in response.headers, (path, name)


@pytest.fixture
def documented(client: Any) -> Documented:
    return Documented(spec(client))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def test_real_answers_match_their_documented_schemas(client, state, upstreams, api_key, documented):
    create_model(
        state,
        alias="embed",
        provider="fake-openai",
        model="text-embedding-3-small",
        pricing_input="1",
        pricing_output="0",
        kind="embedding",
    )
    auth = bearer(api_key)
    check = documented.check

    check(client.post("/v1/chat/completions", json=CHAT, headers=auth), "/chat/completions", "post")
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth)
    assert streamed.status_code == 200
    check(streamed, "/chat/completions", "post")
    check(
        client.post("/v1/embeddings", json={"model": "embed", "input": "hi"}, headers=auth),
        "/embeddings",
        "post",
    )
    check(client.post("/v1/messages", json=MESSAGES, headers=auth), "/messages", "post")
    check(
        client.post(
            "/v1/messages/count_tokens",
            json={"model": "claude", "messages": MESSAGES["messages"]},
            headers={"x-api-key": api_key},
        ),
        "/messages/count_tokens",
        "post",
    )
    created = client.post(
        "/v1/responses", json={"model": "gpt", "input": "hi", "store": True}, headers=auth
    )
    assert created.status_code == 200
    check(created, "/responses", "post")
    rid = created.get_json()["id"]
    check(client.get(f"/v1/responses/{rid}", headers=auth), "/responses/{id}", "get")
    items = client.get(f"/v1/responses/{rid}/input_items?limit=5", headers=auth)
    assert items.status_code == 200
    check(items, "/responses/{id}/input_items", "get")
    check(client.delete(f"/v1/responses/{rid}", headers=auth), "/responses/{id}", "delete")
    check(client.get("/v1/models", headers=auth), "/models", "get")
    check(client.get("/v1/models/gpt", headers=auth), "/models/{model}", "get")
    # In Anthropic's shapes when the request says anthropic-version (the Anthropic SDK).
    anthropic = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    check(client.get("/v1/models?limit=1", headers=anthropic), "/models", "get")
    check(client.get("/v1/models/gpt", headers=anthropic), "/models/{model}", "get")
    check(client.get("/v1/health"), "/health", "get")
    check(client.get("/v1/health/ready"), "/health/ready", "get")
    check(client.get("/v1/stats?by=model", headers=auth), "/stats", "get")
    metrics = client.get("/v1/metrics")
    assert metrics.status_code == 200
    check(metrics, "/metrics", "get")
    check(client.get("/v1/openapi.json"), "/openapi.json", "get")


def test_error_answers_match_their_documented_shapes(client, upstreams, api_key, documented):
    check = documented.check
    auth = bearer(api_key)
    for response, path, method in [
        (client.post("/v1/chat/completions", json=CHAT), "/chat/completions", "post"),
        (
            client.post("/v1/chat/completions", data="{", headers=auth),
            "/chat/completions",
            "post",
        ),
        (
            client.post("/v1/chat/completions", json={"model": "gpt"}, headers=auth),
            "/chat/completions",
            "post",
        ),
        (client.get("/v1/models/nope", headers=auth), "/models/{model}", "get"),
        (
            client.get("/v1/models/nope", headers={**auth, "anthropic-version": "2023-06-01"}),
            "/models/{model}",
            "get",
        ),
        (
            client.get("/v1/models?limit=0", headers={**auth, "anthropic-version": "2023-06-01"}),
            "/models",
            "get",
        ),
        (client.get("/v1/responses/resp_nope", headers=auth), "/responses/{id}", "get"),
        (client.get("/v1/stats?by=nope", headers=auth), "/stats", "get"),
        (client.post("/v1/messages", json=MESSAGES), "/messages", "post"),
        (client.post("/v1/messages", json={"model": "claude"}, headers=auth), "/messages", "post"),
    ]:
        assert 400 <= response.status_code < 500, (path, response.status_code)
        check(response, path, method)


def test_the_checker_catches_an_undocumented_shape(client, upstreams, api_key, documented):
    """The validation above can fail: an OpenAI error is not an Anthropic one."""
    response = client.post("/v1/chat/completions", json=CHAT)
    with pytest.raises(AssertionError):
        documented.check(response, "/messages", "post")


@pytest.mark.parametrize("path", ["/v1/models/a%0Ab", "/v1/responses/x%0Ay", "/v1/nope%0A"])
def test_a_newline_in_the_path_is_an_openai_404_not_the_host_apps_html(client, api_key, path):
    """Found by the fuzz: Werkzeug's ``path`` converter does not match a newline."""
    response = client.get(path, headers=bearer(api_key))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in (
        "unknown_url",
        "model_not_found",
        "response_not_found",
    )
    assert response.headers["x-request-id"]
