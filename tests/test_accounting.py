"""Cost to the last decimal place for JSON, streamed, cut and cached requests on both wire
formats, and the documented local estimate when an upstream reports no usage."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from fakes import Reply, completion_json
from sqlalchemy import select

from flask_aigateway.accounting.record import RequestRecord, cost_of, upstream_error_kind
from flask_aigateway.enums import ProviderFormat
from flask_aigateway.errors import (
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from flask_aigateway.models import RequestLog
from flask_aigateway.providers.base import Target
from flask_aigateway.schemas import ChatRequest, Usage
from flask_aigateway.tokens import estimate_prompt_tokens, estimate_text_tokens

MESSAGES = [{"role": "user", "content": "What does this cost, exactly?"}]
ALIASES = ["gpt", "claude"]
M = Decimal(1_000_000)


def price(prompt: int, completion: int, cached: int = 0) -> Decimal:
    """The fixture's prices: $1 in, $0.5 cached in, $2 out, per million tokens."""
    return ((prompt - cached) * Decimal(1) + cached * Decimal("0.5") + completion * 2) / M


def post(client: Any, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers}
    )


def sse(response: Any) -> list[Any]:
    out = []
    for line in response.get_data().split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def rows(state: Any) -> list[RequestLog]:
    with state.transaction() as session:
        return list(session.scalars(select(RequestLog).order_by(RequestLog.id)))


def reply_usage(alias: str, prompt: int, completion: int, cached: int = 0, **fields: Any) -> Reply:
    """The same usage from either fake: OpenAI counts cache reads inside prompt tokens,
    Anthropic reports uncached input tokens and cache reads apart."""
    uncached = prompt - cached if alias == "claude" else prompt
    return Reply(
        prompt_tokens=uncached, completion_tokens=completion, cache_read_tokens=cached, **fields
    )


def test_cost_of_is_exact_decimal_arithmetic() -> None:
    target = Target(
        "dep",
        "a",
        "prov",
        "p",
        ProviderFormat.OPENAI,
        "http://x",
        "m",
        input_price=Decimal("0.15"),
        output_price=Decimal("0.60"),
        cached_input_price=Decimal("0.075"),
    )
    usage = Usage(prompt_tokens=1_234_567, completion_tokens=89_101, cached_tokens=1_000_003)
    expected = (
        Decimal(234_564) * Decimal("0.15")
        + Decimal(1_000_003) * Decimal("0.075")
        + Decimal(89_101) * Decimal("0.60")
    ) / M
    assert cost_of(usage, target) == expected.quantize(Decimal("1e-10"))
    assert cost_of(usage, target) == Decimal("0.163645425")
    no_cached_price = Target(
        "dep",
        "a",
        "prov",
        "p",
        ProviderFormat.OPENAI,
        "http://x",
        "m",
        input_price=Decimal(3),
        output_price=Decimal(15),
    )
    assert cost_of(
        Usage(prompt_tokens=7, completion_tokens=3, cached_tokens=5), no_cached_price
    ) == Decimal("0.000066")


@pytest.mark.parametrize("alias", ALIASES)
def test_json_request_cost(client, state, api_key, upstreams, alias) -> None:
    upstreams[alias].queue(reply_usage(alias, 1234, 567, cached=200))
    response = post(client, api_key, {"model": alias, "messages": MESSAGES})
    assert response.status_code == 200, response.json
    expected = price(1234, 567, cached=200)
    assert expected == Decimal("0.002268")
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == expected
    (row,) = rows(state)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (1234, 567, 200)
    assert row.cost == expected and row.usage_estimated is False


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_request_cost(client, state, api_key, upstreams, alias, include_usage) -> None:
    upstreams[alias].queue(reply_usage(alias, 3001, 7, cached=1000, text="a b c d e f g"))
    body: dict[str, Any] = {"model": alias, "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events = sse(post(client, api_key, body))
    assert events[-1] == "[DONE]"
    expected = price(3001, 7, cached=1000)
    assert Decimal(events[-2]["aigateway"]["cost_usd"]) == expected
    if include_usage:
        assert events[-2]["usage"]["prompt_tokens"] == 3001
        assert events[-2]["usage"]["completion_tokens"] == 7
    if alias == "gpt":
        assert upstreams[alias].last.json["stream_options"] == {"include_usage": True}
    (row,) = rows(state)
    assert row.stream and row.status_code == 200
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (3001, 7, 1000)
    assert row.cost == expected and row.usage_estimated is False
    assert row.ttft_ms is not None and row.ttft_ms <= row.latency_ms


@pytest.mark.parametrize("alias", ALIASES)
def test_cut_stream_is_charged_for_what_was_received(
    client, state, api_key, upstreams, alias
) -> None:
    """A stream cut mid-way: the prompt as the upstream counted it when it said (Anthropic's
    message_start), else the estimate; the completion as at least the estimate of the text
    that arrived. Marked estimated, priced exactly."""
    text = "alpha beta gamma delta epsilon zeta eta theta"
    cut = 5 if alias == "claude" else 4
    upstreams[alias].queue(Reply(text=text, prompt_tokens=500, completion_tokens=8, cut_after=cut))
    body = {"model": alias, "messages": MESSAGES, "stream": True}
    events = sse(post(client, api_key, body))
    received = "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )
    assert received and received != text
    assert events[-1]["error"]["type"] in ("upstream_error", "api_error")
    prompt = 500 if alias == "claude" else estimate_prompt_tokens(ChatRequest.from_body(body))
    completion = estimate_text_tokens(received)
    (row,) = rows(state)
    assert row.status_code == 502 and row.usage_estimated is True
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion)
    assert row.cost == price(prompt, completion)
    assert row.cost > 0


@pytest.mark.parametrize("alias", ALIASES)
def test_cache_hits_cost_nothing_json_and_streamed(
    client, state, api_key, upstreams, alias
) -> None:
    state.settings["AIGATEWAY_CACHE_ENABLED"] = True
    upstreams[alias].queue(reply_usage(alias, 1000, 500))
    body = {"model": alias, "messages": MESSAGES}
    first = post(client, api_key, body)
    assert first.headers["x-aigateway-cache"] == "MISS"
    assert Decimal(first.headers["x-aigateway-cost-usd"]) == Decimal("0.002")
    hit = post(client, api_key, body)
    assert hit.headers["x-aigateway-cache"] == "HIT"
    assert Decimal(hit.headers["x-aigateway-cost-usd"]) == 0
    events = sse(
        post(client, api_key, {**body, "stream": True, "stream_options": {"include_usage": True}})
    )
    assert events[-2]["aigateway"]["cost_usd"] == "0"
    assert events[-2]["aigateway"]["cache_hit"] is True
    assert len(upstreams[alias].requests) == 1
    miss, json_hit, stream_hit = rows(state)
    assert (miss.cost, miss.cache_hit) == (Decimal("0.002"), False)
    for row in (json_hit, stream_hit):
        assert row.cache_hit and row.cost == 0 and row.status_code == 200
        assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
        assert row.provider == miss.provider and row.deployment_id == miss.deployment_id
    assert stream_hit.stream is True


def test_missing_upstream_usage_is_estimated_and_marked(client, state, api_key, upstreams) -> None:
    upstreams["gpt"].queue(Reply(raw_body=completion_json("Forty-two, give or take.")))
    body = {"model": "gpt", "messages": MESSAGES}
    response = post(client, api_key, body)
    assert response.status_code == 200
    prompt = estimate_prompt_tokens(ChatRequest.from_body(body))
    completion_tokens = estimate_text_tokens("Forty-two, give or take.")
    assert completion_tokens == 6
    (row,) = rows(state)
    assert row.usage_estimated is True
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion_tokens)
    assert row.cost == price(prompt, completion_tokens)
    assert Decimal(response.headers["x-aigateway-cost-usd"]) == row.cost


def test_refused_requests_cost_nothing_and_carry_their_status(
    client, state, api_key, upstreams
) -> None:
    assert post(client, "aigw_wrong", {"model": "gpt", "messages": MESSAGES}).status_code == 401
    assert post(client, api_key, {"model": "nope", "messages": MESSAGES}).status_code == 404
    upstreams["gpt"].fail(400, "bad things")
    assert post(client, api_key, {"model": "gpt", "messages": MESSAGES}).status_code == 400
    statuses = [(r.status_code, r.cost, r.alias) for r in rows(state)]
    # An unauthenticated request's body is never read, so its row names no model.
    assert statuses == [(401, 0, None), (404, 0, "nope"), (400, 0, "gpt")]


def test_upstream_time_is_separated_from_the_gateway_overhead(
    state, api_key, upstreams, client
) -> None:
    from flask_aigateway.pipeline import get_pipeline

    seen: list[RequestRecord] = []
    writer = get_pipeline(state).log_writer
    original = writer.write
    writer.write = lambda record: (seen.append(record), original(record))  # type: ignore[method-assign]
    upstreams["gpt"].queue(Reply(latency=0.3))
    post(client, api_key, {"model": "gpt", "messages": MESSAGES})
    (record,) = seen
    assert record.upstream_seconds >= 0.3
    assert record.overhead_seconds < record.latency_ms / 1000 - 0.29
    assert record.overhead_seconds >= 0


def test_upstream_error_kinds() -> None:
    assert upstream_error_kind(UpstreamTimeoutError("t")) == "timeout"
    assert upstream_error_kind(UpstreamRateLimitError("r", upstream_status=429)) == "rate_limited"
    assert upstream_error_kind(UpstreamClientError("c", upstream_status=400)) == "client_error"
    assert upstream_error_kind(UpstreamError("s", upstream_status=503)) == "server_error"
    assert upstream_error_kind(UpstreamError("n")) == "network"
    assert (
        upstream_error_kind(UpstreamError("a", upstream_status=401, code="upstream_auth_failed"))
        == "auth"
    )
    assert upstream_error_kind(UpstreamError("h", upstream_status=404)) == "http_error"


def test_documents_and_audio_are_estimated_from_their_content_not_their_base64() -> None:
    """A PDF counts 3,000 tokens a page when its pages can be read (a 50-page text PDF of
    60 KB was 2,500 tokens by its size, a twentieth of its bill), else 12 decoded bytes a
    token (1 MB: 83,333, not the 333,000 of its base64 text); a text document counts its
    text; 160 KB of audio (10 s at 128 kbit/s) about 100 tokens."""
    pages = b"".join(b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n" % i for i in range(50))
    text_pdf = base64.b64encode(b"%PDF-1.4\n2 0 obj << /Type /Pages >> endobj\n" + pages)
    opaque = "JVBERi0x" + "A" * (1_333_336 - 8)
    audio = "SUQz" + "A" * (213_332 - 4)

    def estimate(*parts: dict[str, Any]) -> int:
        body = {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}
        return estimate_prompt_tokens(ChatRequest.from_body(body)) - 7  # framing

    def as_file(data: str) -> dict[str, Any]:
        return {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}"}}

    def as_document(data: str) -> dict[str, Any]:
        source = {"type": "base64", "media_type": "application/pdf", "data": data}
        return {"type": "document", "source": source}

    for wrap in (as_file, as_document):
        assert estimate(wrap(text_pdf.decode())) == 150_000
        assert estimate(wrap(opaque)) == 83_333
    text = {"type": "document", "source": {"type": "text", "data": "x" * 400}}
    assert estimate(text) == 100
    assert estimate({"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}}) == 99


def test_odd_parts_are_estimated_as_their_text() -> None:
    """A part whose ``type`` is not a string (or that is not an object) is counted as its
    JSON text: the estimate never fails a request the upstream should judge."""
    parts = [{"type": {"nested": 1}, "x": "y" * 40}, {"type": ["a"]}, "loose", 7]
    # As the /v1/messages carrier holds an Anthropic body's blocks, unchecked.
    request = ChatRequest(model="m", messages=[{"role": "user", "content": parts}])
    assert estimate_prompt_tokens(request) > 10


def test_costs_under_a_millionth_are_plain_decimals(client, state, upstreams) -> None:
    """A nano-class price: 13 tokens at $0.02 per million cost $0.00000026, which the cost
    header and the stream's ``aigateway.cost_usd`` gave as ``2.600E-7`` (and a budget with
    nothing left as ``0E-10``); clients and log pipelines read plain decimals everywhere
    else."""
    from flask_aigateway.services.keys import create_key
    from flask_aigateway.services.models import create_model

    create_model(
        state,
        alias="nano",
        provider="fake-openai",
        model="gpt-nano",
        pricing_input="0.02",
        pricing_output="0.02",
    )
    _, key = create_key(state, name="tiny budget", budget_per_day="0.000001")
    upstreams["gpt"].reply(prompt_tokens=8, completion_tokens=5)
    body = {"model": "nano", "messages": MESSAGES, "max_tokens": 5}
    response = post(client, key, body)
    assert response.headers["x-aigateway-cost-usd"] == "0.0000002600"
    assert response.headers["x-aigateway-budget-remaining-usd"] == "0.0000007400"
    upstreams["gpt"].reply(prompt_tokens=8, completion_tokens=5)
    events = sse(post(client, key, {**body, "stream": True}))
    assert events[-2]["aigateway"]["cost_usd"] == "0.0000002600"
