"""``POST /v1/embeddings`` as a user sees it: the official ``openai`` SDK against a live gateway
(float and base64, batches, token arrays), the OpenAI-shaped errors, the gateway headers and
log row, and budgets, rate limits, cache and fallbacks behaving as on chat completions."""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from typing import Any

import openai
import pytest
from fakes import Reply
from fakes.openai_fake import fake_vector
from sqlalchemy import select

from flask_aigateway.models import RequestLog, UsageCounter
from flask_aigateway.pipeline import get_pipeline
from flask_aigateway.services.keys import create_key
from flask_aigateway.services.models import create_model
from flask_aigateway.services.providers import create_provider

MODEL = "text-embedding-3-small"


@pytest.fixture
def embed(state: Any, upstreams: dict[str, Any]) -> Any:
    """Alias ``embed`` (kind embedding) on the OpenAI-format fake as ``text-embedding-3-small``,
    $1 per million input tokens, beside the chat aliases ``gpt`` and ``claude``; the fake."""
    create_model(
        state,
        alias="embed",
        provider="fake-openai",
        model=MODEL,
        pricing_input="1",
        pricing_output="0",
        kind="embedding",
    )
    return upstreams["gpt"]


def post(client: Any, key: str | None, body: dict[str, Any], **headers: str) -> Any:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.post(
        "/v1/embeddings", data=json.dumps(body), headers=headers, content_type="application/json"
    )


def decode(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def log_rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


# -- the SDK against a live gateway -----------------------------------------------------------


def test_sdk_float_embedding_of_one_text(sdk: openai.OpenAI, embed: Any) -> None:
    result = sdk.embeddings.create(model="embed", input="hello world", encoding_format="float")
    assert result.object == "list" and result.model == "embed"
    [item] = result.data
    assert (item.object, item.index) == ("embedding", 0)
    assert item.embedding == fake_vector(MODEL, "hello world", 1536)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (2, 2)
    sent = embed.last
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": MODEL, "input": "hello world", "encoding_format": "float"}


def test_sdk_default_base64_batch_round_trips(sdk: openai.OpenAI, embed: Any) -> None:
    """The SDK asks for base64 by default and decodes it itself: the vectors it hands back
    are exactly the upstream's."""
    texts = ["first text", "second, longer text", "third"]
    result = sdk.embeddings.create(model="embed", input=texts)
    assert embed.last.json["encoding_format"] == "base64"
    assert [d.index for d in result.data] == [0, 1, 2]
    assert [d.embedding for d in result.data] == [fake_vector(MODEL, t, 1536) for t in texts]


def test_sdk_token_arrays_and_dimensions(sdk: openai.OpenAI, embed: Any) -> None:
    one = sdk.embeddings.create(model="embed", input=[1, 2, 3, 4], dimensions=8)
    assert one.data[0].embedding == fake_vector(MODEL, [1, 2, 3, 4], 8)
    assert one.usage.prompt_tokens == 4
    many = sdk.embeddings.create(
        model="embed", input=[[5, 6], [7, 8, 9]], encoding_format="float", dimensions=4
    )
    assert [d.embedding for d in many.data] == [
        fake_vector(MODEL, [5, 6], 4),
        fake_vector(MODEL, [7, 8, 9], 4),
    ]
    assert many.usage.prompt_tokens == 5
    assert embed.last.json["input"] == [[5, 6], [7, 8, 9]]
    assert embed.last.json["dimensions"] == 4


def test_sdk_errors_raise_the_sdk_exceptions(sdk: openai.OpenAI, embed: Any) -> None:
    with pytest.raises(openai.BadRequestError) as chat_alias:
        sdk.embeddings.create(model="gpt", input="x")
    assert chat_alias.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="nope", input="x")
    assert embed.requests == []


# -- the raw HTTP answer ------------------------------------------------------------------------


def test_base64_is_passed_through_when_the_upstream_honours_it(client, api_key, embed):
    response = post(
        client, api_key, {"model": "embed", "input": "abc", "encoding_format": "base64"}
    )
    assert response.status_code == 200
    text = response.json["data"][0]["embedding"]
    assert isinstance(text, str)
    assert decode(text) == fake_vector(MODEL, "abc", 1536)


def test_floats_from_an_upstream_that_ignores_base64_are_encoded(client, api_key, embed):
    embed.honours_base64 = False
    response = post(
        client, api_key, {"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}
    )
    assert response.status_code == 200
    assert [decode(d["embedding"]) for d in response.json["data"]] == [
        fake_vector(MODEL, "a", 1536),
        fake_vector(MODEL, "b", 1536),
    ]


def test_an_upstream_base64_the_client_did_not_ask_for_is_decoded(client, api_key, embed):
    vector = [0.5, -0.25, 1.0]
    packed = base64.b64encode(struct.pack("<3f", *vector)).decode()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": packed}],
        "model": MODEL,
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    embed.reply(raw_body=json.dumps(body).encode())
    response = post(client, api_key, {"model": "embed", "input": "abc"})
    assert response.json["data"][0]["embedding"] == vector
    assert "encoding_format" not in embed.last.json


def test_headers_cost_and_log_row(client, state, api_key, embed):
    response = post(client, api_key, {"model": "embed", "input": "x" * 40, "user": "u-1"})
    assert response.status_code == 200
    assert response.json["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    headers = response.headers
    assert Decimal(headers["x-aigateway-cost-usd"]) == Decimal("0.00001")
    assert headers["x-aigateway-provider"] == "fake-openai"
    assert headers["x-aigateway-deployment"].startswith("dep_")
    assert headers["x-aigateway-attempts"] == "1"
    assert headers["x-aigateway-cache"] == "BYPASS"
    assert headers["x-request-id"]
    assert embed.last.json["user"] == "u-1"
    [row] = log_rows(state)
    assert (row.route, row.alias, row.status_code) == ("embeddings", "embed", 200)
    assert (row.prompt_tokens, row.completion_tokens) == (10, 0)
    assert row.cost == Decimal("0.00001")
    assert row.provider_model == MODEL
    assert row.request_id == headers["x-request-id"]


def test_missing_upstream_usage_is_estimated(client, state, api_key, embed):
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0]}]}
    embed.reply(raw_body=json.dumps(body).encode())
    response = post(client, api_key, {"model": "embed", "input": "x" * 40})
    assert response.json["usage"] == {"prompt_tokens": 10, "total_tokens": 10}
    [row] = log_rows(state)
    assert row.usage_estimated is True


def test_ollama_preset_is_asked_for_floats_and_the_gateway_encodes(client, state, api_key, embed):
    create_provider(state, name="local", format="ollama", base_url=embed.origin)
    create_model(
        state,
        alias="nomic",
        provider="local",
        model="nomic-embed-text",
        pricing_input="0",
        pricing_output="0",
        kind="embedding",
    )
    response = post(client, api_key, {"model": "nomic", "input": "hi", "encoding_format": "base64"})
    assert response.status_code == 200
    assert embed.last.path == "/v1/embeddings"
    assert "encoding_format" not in embed.last.json
    assert decode(response.json["data"][0]["embedding"]) == fake_vector(
        "nomic-embed-text", "hi", 16
    )


def listing(*items: dict[str, Any]) -> bytes:
    """An upstream answer holding these ``data`` items."""
    body = {"object": "list", "data": list(items), "model": MODEL, "usage": {"prompt_tokens": 3}}
    return json.dumps(body).encode()


def item(index: Any, embedding: Any = (0.5,)) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": list(embedding)}


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([item(0)], "1 embedding for 3 inputs"),
        ([item(0), item(1), item(2), item(3)], "4 embeddings for 3 inputs"),
        ([item(0), item(1), item(1)], "index 1 twice"),
        ([item(0), item(1), item(3)], "index 3 for 3 inputs"),
        ([item(0), item(-1), item(2)], "index -1 for 3 inputs"),
        ([item(0), item("1"), item(2)], "not an integer ('1')"),
        ([item(1), {"object": "embedding", "embedding": [0.5]}, item(2)], "index 1 twice"),
    ],
)
def test_an_answer_without_one_embedding_per_input_is_a_retried_upstream_error(
    client, state, api_key, embed, items, problem
):
    """Clients zip their inputs with ``data``: a short, long or misnumbered list would pair
    texts with the wrong vectors or drop rows, so it is a 502, retried like any other
    malformed answer."""
    embed.queue(*[Reply(raw_body=listing(*items))] * 3)
    response = post(client, api_key, {"model": "embed", "input": ["a", "b", "c"]})
    assert response.status_code == 502, response.json
    error = response.json["error"]
    assert error["type"] == "upstream_error"
    assert "answered 200 with a body that is not one embedding per input" in error["message"]
    assert problem in error["message"]
    assert len(embed.requests) == 3
    assert [row.status_code for row in log_rows(state)] == [502]


def test_a_short_answer_is_retried_and_the_next_one_served(client, api_key, embed):
    embed.reply(raw_body=listing(item(0)))
    response = post(client, api_key, {"model": "embed", "input": ["a", "b"]})
    assert response.status_code == 200
    assert response.headers["x-aigateway-attempts"] == "2"
    assert len(response.json["data"]) == 2


def test_items_come_back_ordered_by_index(client, api_key, embed):
    embed.reply(raw_body=listing(item(2, [0.3]), item(0, [0.1]), item(1, [0.2])))
    response = post(
        client, api_key, {"model": "embed", "input": ["a", "b", "c"], "encoding_format": "float"}
    )
    assert response.status_code == 200
    assert [(d["index"], d["embedding"]) for d in response.json["data"]] == [
        (0, [0.1]),
        (1, [0.2]),
        (2, [0.3]),
    ]


def nan_base64() -> str:
    return base64.b64encode(struct.pack("<2f", 0.5, float("nan"))).decode()


@pytest.mark.parametrize(
    ("raw", "encoding", "holding"),
    [
        (b"[0.5, NaN]", "float", "a NaN or infinite value"),
        (b"[Infinity, 0.5]", "float", "a NaN or infinite value"),
        (b"[0.5, -1e400]", "float", "a NaN or infinite value"),
        (b"[NaN]", "base64", "a NaN or infinite value"),
        (b"[1e39]", "base64", "a value beyond float32's range"),
        (b"[1" + b"0" * 400 + b"]", "float", "a number beyond float range"),
        (json.dumps(nan_base64()).encode(), "float", "a NaN or infinite float32 value"),
    ],
)
def test_a_vector_that_is_not_finite_floats_is_a_retried_upstream_error(
    client, api_key, embed, raw, encoding, holding
):
    """NaN and Infinity were written as ``null``: not a float to the SDKs or the schema."""
    body = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":%s}]}' % raw
    embed.queue(*[Reply(raw_body=body)] * 3)
    response = post(client, api_key, {"model": "embed", "input": "a", "encoding_format": encoding})
    assert response.status_code == 502, response.json
    error = response.json["error"]
    assert error["type"] == "upstream_error"
    assert f"answered 200 with an embedding holding {holding}" in error["message"]
    assert len(embed.requests) == 3


# -- refusals -------------------------------------------------------------------------------------


def test_anthropic_alias_is_refused_naming_model(client, state, api_key, embed):
    response = post(client, api_key, {"model": "claude", "input": "x"})
    assert response.status_code == 400
    error = response.json["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "model")
    assert "Anthropic-format" in error["message"]
    [row] = log_rows(state)
    assert (row.route, row.status_code) == ("embeddings", 400)


def test_chat_alias_is_refused_on_embeddings_and_embedding_alias_on_chat(client, api_key, embed):
    response = post(client, api_key, {"model": "gpt", "input": "x"})
    assert response.status_code == 400
    assert response.json["error"]["param"] == "model"
    assert response.json["error"]["code"] == "model_not_embedding"
    assert "--kind embedding" in response.json["error"]["message"]
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "embed", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert chat.status_code == 400
    assert chat.json["error"]["param"] == "model"
    assert chat.json["error"]["code"] == "model_not_chat"
    assert embed.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embed"}, "input"),
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": []}, "input"),
        ({"model": "embed", "input": ["a", ""]}, "input"),
        ({"model": "embed", "input": ["a", 1]}, "input"),
        ({"model": "embed", "input": [[1], []]}, "input"),
        ({"model": "embed", "input": [[1, -2]]}, "input"),
        ({"model": "embed", "input": {"text": "a"}}, "input"),
        ({"model": "embed", "input": ["a"] * 2049}, "input"),
        ({"input": "a"}, "model"),
        ({"model": "embed", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "embed", "input": "a", "dimensions": "8"}, "dimensions"),
        ({"model": "embed", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "embed", "input": "a", "user": 7}, "user"),
        ({"model": "embed", "input": "a", "truncate": True}, "truncate"),
        ({"model": "embed", "input": "a", "temperature": 0}, "temperature"),
    ],
)
def test_invalid_bodies_are_400_naming_the_param(client, api_key, embed, body, param):
    response = post(client, api_key, body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["type"] == "invalid_request_error"
    assert response.json["error"]["param"] == param
    assert embed.requests == []


def test_auth_method_and_unknown_model(client, api_key, embed):
    assert post(client, None, {"model": "embed", "input": "a"}).status_code == 401
    assert client.get("/v1/embeddings").status_code == 405
    missing = post(client, api_key, {"model": "nope", "input": "a"})
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "model_not_found")


def test_key_model_whitelist_applies(client, state, embed):
    _key, secret = create_key(state, name="chat-only", models="gpt")
    response = post(client, secret, {"model": "embed", "input": "a"})
    assert response.status_code == 403


def test_upstream_caller_error_passes_through(client, api_key, embed):
    response = post(client, api_key, {"model": "embed", "input": "a", "dimensions": 4})
    assert response.status_code == 200
    embed.fail(400, "This model's maximum context length is 8192 tokens.")
    refused = post(client, api_key, {"model": "embed", "input": "a"})
    assert refused.status_code == 400
    assert "8192" in refused.json["error"]["message"]


# -- budgets, rate limits, cache, fallbacks: as on chat completions --------------------------------


def test_budget_reserves_input_tokens_and_settles_the_upstream_count(client, state, embed):
    key, secret = create_key(state, name="b", budget_per_day="0.0001")
    ok = post(client, secret, {"model": "embed", "input": "x" * 40})
    assert ok.status_code == 200
    assert Decimal(ok.headers["x-aigateway-budget-remaining-usd"]) == Decimal("0.00009")
    day = get_pipeline(state).budgets.usage("key", key.id)["day"]
    assert (day.spent, day.reserved) == (Decimal("0.00001"), 0)
    # 400 characters ≈ 100 tokens = $0.0001 worst case: over the 0.00009 left
    refused = post(client, secret, {"model": "embed", "input": "x" * 400})
    assert refused.status_code == 429
    error = refused.json["error"]
    assert error["code"] == "budget_exceeded"
    assert "100 prompt tokens at 1 USD/M + 0 output tokens" in error["message"]
    assert len(embed.requests) == 1
    with state.transaction() as session:
        assert [r.reserved for r in session.scalars(select(UsageCounter))] == [0, 0]
    assert get_pipeline(state).budgets.usage("key", key.id)["day"].reserved == 0


def test_upstream_failure_releases_the_reservation(client, state, embed):
    key, secret = create_key(state, name="b", budget_per_day="1")
    embed.fail(500)
    embed.fail(500)
    embed.fail(500)
    response = post(client, secret, {"model": "embed", "input": "abc"})
    assert response.status_code == 502
    day = get_pipeline(state).budgets.usage("key", key.id)["day"]
    assert (day.spent, day.reserved) == (0, 0)


def test_tokens_per_minute_count_input_tokens(client, state, embed):
    _key, secret = create_key(state, name="t", tokens_per_minute=10)
    first = post(client, secret, {"model": "embed", "input": list(range(6))})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "10"
    assert first.headers["x-ratelimit-remaining-tokens"] == "4"
    refused = post(client, secret, {"model": "embed", "input": list(range(6))})
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limit_exceeded"
    assert "Retry-After" in refused.headers
    assert post(client, secret, {"model": "embed", "input": [1, 2, 3, 4]}).status_code == 200
    assert len(embed.requests) == 2


def test_an_input_over_the_tokens_per_minute_limit_is_told_to_shrink_the_input(
    client, state, embed
):
    """Embeddings have no max_tokens: the refusal names input tokens, not output ones."""
    _key, secret = create_key(state, name="t", tokens_per_minute=10)
    refused = post(client, secret, {"model": "embed", "input": "a" * 100})
    assert refused.status_code == 429
    message = refused.json["error"]["message"]
    assert "estimated input tokens" in message and "fewer or shorter inputs" in message
    assert "max_tokens" not in message and "output" not in message
    assert embed.requests == []


def test_requests_per_minute_apply(client, state, embed):
    _key, secret = create_key(state, name="r", rate_limit=1)
    assert post(client, secret, {"model": "embed", "input": "a"}).status_code == 200
    assert post(client, secret, {"model": "embed", "input": "a"}).status_code == 429


def test_cache_exact_match_on_alias_input_dimensions_and_encoding(client, state, api_key, embed):
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    body = {"model": "embed", "input": ["a", "b"], "dimensions": 8}
    first = post(client, api_key, body)
    assert first.headers["x-aigateway-cache"] == "MISS"
    again = post(client, api_key, {**body, "user": "someone-else"})
    assert again.headers["x-aigateway-cache"] == "HIT"
    assert again.json == first.json
    assert again.headers["x-aigateway-cost-usd"] == "0"
    assert len(embed.requests) == 1
    for changed in ({"dimensions": 4}, {"encoding_format": "base64"}, {"input": ["a"]}):
        assert post(client, api_key, {**body, **changed}).headers["x-aigateway-cache"] == "MISS"
    fresh = post(client, api_key, body, **{"Cache-Control": "no-store"})
    assert fresh.headers["x-aigateway-cache"] == "BYPASS"
    assert len(embed.requests) == 5
    rows = log_rows(state)
    assert [r.cache_hit for r in rows] == [False, True, False, False, False, False]
    assert {r.route for r in rows} == {"embeddings"}


def test_fallback_goes_to_embedding_aliases_only(client, state, api_key, embed):
    create_model(
        state,
        alias="embed-b",
        provider="fake-openai",
        model="text-embedding-3-large",
        pricing_input="1",
        pricing_output="0",
        kind="embedding",
    )
    from flask_aigateway.errors import ValidationError
    from flask_aigateway.models import ModelAlias
    from flask_aigateway.services.models import update_model

    with pytest.raises(ValidationError, match="own kind"):
        update_model(state, "embed", fallbacks=["gpt", "embed-b"])
    # A chain set before that check (written straight to the row): the chat alias is skipped.
    with state.transaction() as session:
        session.scalars(select(ModelAlias).where(ModelAlias.alias == "embed")).one().fallbacks = [
            "gpt",
            "embed-b",
        ]
    state.invalidate()
    embed.queue(*[Reply(status=500)] * 3)
    response = post(client, api_key, {"model": "embed", "input": "a"})
    assert response.status_code == 200
    assert response.headers["x-aigateway-fallback"] == "embed,embed-b"
    assert embed.last.json["model"] == "text-embedding-3-large"
    assert len(response.json["data"][0]["embedding"]) == 3072


# -- /v1/models -----------------------------------------------------------------------------------


def test_models_list_each_kind(client, api_key, embed):
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"})
    kinds = {m["id"]: m["aigateway"]["kind"] for m in response.json["data"]}
    assert kinds == {"claude": "chat", "embed": "embedding", "gpt": "chat"}
    one = client.get("/v1/models/embed", headers={"Authorization": f"Bearer {api_key}"})
    assert one.json["aigateway"] == {"kind": "embedding"}


def test_sdk_models_keep_the_kind(sdk: openai.OpenAI, embed: Any) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert models["embed"].model_extra == {"aigateway": {"kind": "embedding"}}


# -- metrics and the Python API -------------------------------------------------------------------


def test_metrics_count_embeddings_requests_and_tokens(client, api_key, embed):
    from test_metrics import scrape, total

    assert post(client, api_key, {"model": "embed", "input": [1, 2, 3, 4, 5]}).status_code == 200
    assert post(client, api_key, {"model": "gpt", "input": "x"}).status_code == 400
    samples = scrape(client)
    ok = total(samples, "ai_gateway_requests_total", model="embed", status="200")
    assert ok == 1
    assert total(samples, "ai_gateway_requests_total", status="400") == 1
    assert total(samples, "ai_gateway_tokens_total", model="embed", type="prompt") == 5
    assert total(samples, "ai_gateway_tokens_total", model="embed", type="completion") == 0


def test_python_api_embeddings(app, state, gateway, embed):
    from flask_aigateway import EmbeddingsRequest

    request = EmbeddingsRequest.from_body({"model": "embed", "input": ["a", "b"]})
    with app.app_context():
        result = gateway.embeddings(request)
    assert [d["embedding"] for d in result.body["data"]] == [
        fake_vector(MODEL, "a", 1536),
        fake_vector(MODEL, "b", 1536),
    ]
    assert result.usage.prompt_tokens == 2 and result.cost == Decimal("0.000002")
    [row] = log_rows(state)
    assert (row.route, row.key_id) == ("embeddings", None)


def test_content_is_logged_only_when_the_operator_opts_in(client, state, api_key, embed):
    assert post(client, api_key, {"model": "embed", "input": ["secret a"]}).status_code == 200
    state.settings["AIGATEWAY_LOG_CONTENT"] = True
    assert post(client, api_key, {"model": "embed", "input": ["é a", "b"]}).status_code == 200
    first, second = log_rows(state)
    assert (first.prompt_text, first.completion_text) == (None, None)
    assert json.loads(second.prompt_text) == ["é a", "b"]
    assert second.completion_text == "2 embeddings"
