"""The OpenAI-format embeddings adapter, pure: one test per row of its parameters table and
provider preset, the endpoint URLs per preset, the encodings, and the docs generated from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from flask_aigateway.embeddings import EmbeddingsRequest
from flask_aigateway.enums import ProviderFormat
from flask_aigateway.errors import InvalidRequestError, UpstreamError
from flask_aigateway.providers.base import Target
from flask_aigateway.providers.openai_embeddings import (
    PARAMETERS,
    OpenAIEmbeddingsAdapter,
    decode_base64,
    encode_base64,
    render_markdown,
)
from flask_aigateway.providers.parameters import OTHER_FIELDS
from flask_aigateway.providers.urls import openai_chat_url, openai_embeddings_url

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = OpenAIEmbeddingsAdapter()
INPUTS: list[Any] = ["one text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]]


def target(fmt: str = "openai", base_url: str = "https://up.example/v1", **fields: Any) -> Target:
    return Target(
        deployment_id="dep_1",
        alias="embed",
        provider_id="prv_1",
        provider_name="up",
        provider_format=ProviderFormat(fmt),
        base_url=base_url,
        provider_model="text-embedding-3-small",
        api_key="sk-test",
        **fields,
    )


def sent(fmt: str, **body: Any) -> dict[str, Any]:
    request = EmbeddingsRequest.from_body({"model": "embed", "input": "hi", **body})
    upstream = ADAPTER.build_request(request, target(fmt))
    result: dict[str, Any] = json.loads(upstream.body)
    return result


ROWS = [(fmt, name) for fmt, table in PARAMETERS.items() for name in table]


@pytest.mark.parametrize(("fmt", "name"), ROWS)
def test_each_row_of_the_table_holds(fmt: str, name: str) -> None:
    handling = PARAMETERS[fmt][name]
    if name == OTHER_FIELDS:
        assert handling.decision == "refused"
        with pytest.raises(InvalidRequestError) as refused:
            sent(fmt, encoding="float")
        assert refused.value.param == "encoding"
    elif name == "model":
        assert handling.decision == "translated"
        assert sent(fmt)["model"] == "text-embedding-3-small"
    elif name == "input":
        assert handling.decision == "passed"
        for value in INPUTS:
            assert sent(fmt, input=value)["input"] == value
    elif name == "encoding_format":
        body = sent(fmt, encoding_format="base64")
        if handling.decision == "passed":
            assert body["encoding_format"] == "base64"
        else:
            assert handling.decision == "translated"
            assert "encoding_format" not in body
    else:
        assert handling.decision == "passed"
        value = 256 if name == "dimensions" else "user-42"
        assert sent(fmt, **{name: value})[name] == value


def test_the_table_covers_every_openai_preset_and_parameter() -> None:
    assert set(PARAMETERS) == {"openai", "azure", "ollama", "gemini"}
    for table in PARAMETERS.values():
        assert list(table) == [
            "model",
            "input",
            "dimensions",
            "encoding_format",
            "user",
            OTHER_FIELDS,
        ]


def test_an_anthropic_target_is_refused_naming_model() -> None:
    request = EmbeddingsRequest.from_body({"model": "embed", "input": "hi"})
    with pytest.raises(InvalidRequestError) as refused:
        ADAPTER.build_request(request, target("anthropic", "https://api.anthropic.com"))
    assert refused.value.param == "model"


@pytest.mark.parametrize(
    ("fmt", "base", "url"),
    [
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1/embeddings"),
        ("openai", "https://api.openai.com/v1/", "https://api.openai.com/v1/embeddings"),
        ("openai", "https://x.example/v1/embeddings", "https://x.example/v1/embeddings"),
        ("openai", "https://x.example/v1/chat/completions", "https://x.example/v1/embeddings"),
        ("ollama", "http://localhost:11434", "http://localhost:11434/v1/embeddings"),
        ("ollama", "http://localhost:11434/v1", "http://localhost:11434/v1/embeddings"),
        (
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "https://generativelanguage.googleapis.com/v1beta/openai/embeddings",
        ),
        (
            "azure",
            "https://r.openai.azure.com",
            "https://r.openai.azure.com/openai/deployments/text-embedding-3-small/embeddings"
            "?api-version=2024-10-21",
        ),
        (
            "azure",
            "https://r.openai.azure.com/openai/deployments/emb?api-version=2025-01-01",
            "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=2025-01-01",
        ),
        (
            "azure",
            "https://r.openai.azure.com/openai/v1",
            "https://r.openai.azure.com/openai/v1/embeddings",
        ),
    ],
)
def test_embeddings_url_per_preset(fmt: str, base: str, url: str) -> None:
    assert openai_embeddings_url(target(fmt, base)) == url


def test_a_base_pasted_as_the_embeddings_endpoint_still_serves_chat() -> None:
    assert (
        openai_chat_url(target("openai", "https://x.example/v1/embeddings"))
        == "https://x.example/v1/chat/completions"
    )


def test_azure_sends_its_key_as_api_key_and_others_as_bearer() -> None:
    request = EmbeddingsRequest.from_body({"model": "embed", "input": "hi"})
    azure = ADAPTER.build_request(request, target("azure", "https://r.openai.azure.com"))
    assert azure.headers["api-key"] == "sk-test" and "Authorization" not in azure.headers
    other = ADAPTER.build_request(request, target("openai"))
    assert other.headers["Authorization"] == "Bearer sk-test"


def test_base64_is_little_endian_float32() -> None:
    assert encode_base64([1.0]) == "AACAPw=="
    assert decode_base64(encode_base64([0.5, -2.0, 0.25])) == [0.5, -2.0, 0.25]
    with pytest.raises(ValueError):
        decode_base64("AAA=")


def parse(embedding: Any, encoding: str = "float", usage: Any = None) -> dict[str, Any]:
    request = EmbeddingsRequest.from_body(
        {"model": "embed", "input": "hi", "encoding_format": encoding}
    )
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": embedding}]}
    if usage is not None:
        body["usage"] = usage
    return ADAPTER.parse_response(json.dumps(body).encode(), request, target()).body


def test_responses_come_back_in_the_clients_encoding() -> None:
    assert parse([0.5, 1.0])["data"][0]["embedding"] == [0.5, 1.0]
    assert parse([0.5, 1.0], "base64")["data"][0]["embedding"] == encode_base64([0.5, 1.0])
    assert parse(encode_base64([0.5]), "float")["data"][0]["embedding"] == [0.5]
    assert parse("AACAPw==", "base64")["data"][0]["embedding"] == "AACAPw=="
    answer = parse([0.5], usage={"prompt_tokens": 3, "total_tokens": 3})
    assert answer["model"] == "embed"
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>bad gateway</html>",
        b'{"object": "list", "data": []}',
        b'{"error": {"message": "boom"}}',
        b'{"data": [{"embedding": ["x"]}]}',
        b'{"data": [{"embedding": "not base64!"}]}',
    ],
)
def test_a_2xx_body_that_is_not_an_embeddings_list_is_a_retryable_upstream_error(
    raw: bytes,
) -> None:
    request = EmbeddingsRequest.from_body({"model": "embed", "input": "hi"})
    with pytest.raises(UpstreamError) as failed:
        ADAPTER.parse_response(raw, request, target())
    assert failed.value.retryable


def test_upstream_errors_are_classified_like_chat() -> None:
    body = b'{"error": {"message": "too long", "type": "invalid_request_error", "code": null}}'
    error = ADAPTER.classify_error(400, {}, body)
    assert error.status == 400 and "too long" in error.message
    assert ADAPTER.classify_error(503, {}, b"{}").retryable


def test_docs_and_readme_hold_the_generated_embeddings_table() -> None:
    generated = render_markdown()
    docs = (ROOT / "docs" / "parameters.md").read_text()
    assert docs.endswith("\n" + generated), "docs/parameters.md is stale: regenerate it"
    match = re.search(
        r"<!-- embeddings-parameters:start -->\n(.*?)<!-- embeddings-parameters:end -->",
        (ROOT / "README.md").read_text(),
        re.S,
    )
    assert match, "README.md lost its embeddings parameter table markers"
    assert match.group(1) == generated[generated.index("| parameter") :]
