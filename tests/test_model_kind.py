"""Embedding models as an operator makes them: ``flask model create/update --kind``, the
dashboard's model form, the rules on their providers, migration 0005, and the fake OpenAI
``/v1/embeddings`` checked against the ``openai`` SDK's types (migration 0005: in
test_migrations.py)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import openai
import pytest
import requests
from dashboard_helpers import FLASK_SECRET, TOKEN, field_error, login, submit, text
from fakes.openai_fake import fake_vector
from openai.types import CreateEmbeddingResponse
from sqlalchemy import select
from test_fakes import strict

from flask_aigateway.models import ModelAlias
from flask_aigateway.services import models as service
from flask_aigateway.services import providers as provider_service


@pytest.fixture
def providers(state: Any) -> None:
    provider_service.create_provider(
        state, name="openai", format="openai", api_key="sk-test-0000000000000000"
    )
    provider_service.create_provider(state, name="claude", format="anthropic")


def kind_of(state: Any, alias: str) -> str | None:
    with state.session() as session:
        return session.scalar(select(ModelAlias.kind).where(ModelAlias.alias == alias))


CREATE = ["model", "create", "--provider", "openai", "--pricing-input", "0.02"]
CREATE += ["--pricing-output", "0"]


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_create_and_update_kind(runner: Any, state: Any, providers: None) -> None:
    made = runner.invoke(
        args=[
            *CREATE,
            "--alias",
            "embed",
            "--model",
            "text-embedding-3-small",
            "--kind",
            "embedding",
        ]
    )
    assert made.exit_code == 0, made.output
    assert kind_of(state, "embed") == "embedding"
    assert runner.invoke(args=[*CREATE, "--alias", "chat", "--model", "gpt-4o"]).exit_code == 0
    assert kind_of(state, "chat") == "chat"
    listed = runner.invoke(args=["model", "list"]).output.splitlines()
    assert listed[0].split()[2] == "KIND"
    assert [line.split()[2] for line in listed[1:]] == ["chat", "embedding"]
    data = json.loads(runner.invoke(args=["model", "info", "embed", "--json"]).output)
    assert data["kind"] == "embedding"
    updated = runner.invoke(args=["model", "update", "chat", "--kind", "embedding"])
    assert updated.exit_code == 0, updated.output
    assert kind_of(state, "chat") == "embedding"
    assert runner.invoke(args=["model", "update", "chat", "--kind", "chat"]).exit_code == 0
    assert kind_of(state, "chat") == "chat"


def test_cli_refuses_a_bad_kind_and_changes_nothing(runner: Any, state: Any, providers: None):
    bad = runner.invoke(args=[*CREATE, "--alias", "x", "--model", "m", "--kind", "vector"])
    assert bad.exit_code == 1
    assert "The kind 'vector' is not valid; choose one of: chat, embedding" in bad.output
    assert kind_of(state, "x") is None


def test_an_embedding_alias_cannot_be_on_an_anthropic_provider(
    runner: Any, state: Any, providers: None
) -> None:
    args = ["model", "create", "--alias", "e", "--provider", "claude", "--model", "c"]
    refused = runner.invoke(
        args=[*args, "--pricing-input", "1", "--pricing-output", "0", "--kind", "embedding"]
    )
    assert refused.exit_code == 1
    assert "Anthropic-format providers have no embeddings endpoint" in refused.output
    assert kind_of(state, "e") is None
    service.create_model(
        state, alias="c", provider="claude", model="c", pricing_input="1", pricing_output="1"
    )
    update = runner.invoke(args=["model", "update", "c", "--kind", "embedding"])
    assert update.exit_code == 1 and kind_of(state, "c") == "chat"
    service.create_model(
        state,
        alias="e",
        provider="openai",
        model="text-embedding-3-small",
        pricing_input="1",
        pricing_output="0",
        kind="embedding",
    )
    deploy = runner.invoke(
        args=[
            *["model", "deploy", "e", "--provider", "claude", "--model", "c"],
            *["--pricing-input", "1", "--pricing-output", "0"],
        ]
    )
    assert deploy.exit_code == 1
    assert len(service.get_model(state, "e").deployments) == 1


def test_a_provider_serving_an_embedding_alias_cannot_turn_anthropic(
    runner: Any, state: Any, providers: None, dash: Any
) -> None:
    """Deploying an embedding alias on an Anthropic-format provider is refused; changing the
    provider's format under it was accepted, and /v1/embeddings then answered 400."""
    service.create_model(
        state,
        alias="emb",
        provider="openai",
        model="text-embedding-3-small",
        pricing_input="0.02",
        pricing_output="0",
        kind="embedding",
    )
    args = ["provider", "update", "openai", "--format", "anthropic", "--api-key", "sk-ant-0123"]
    refused = runner.invoke(args=args)
    assert refused.exit_code == 1, refused.output
    assert "Provider 'openai' serves embedding alias emb" in refused.output
    assert "no embeddings endpoint" in refused.output
    assert provider_service.get_provider(state, "openai").format == "openai"

    client, csrf = dash
    provider = provider_service.get_provider(state, "openai")
    form = {"name": "openai", "format": "anthropic", "api_key": "sk-ant-0123", "enabled": True}
    page = submit(client, f"/dashboard/providers/{provider.id}/edit", csrf, **form)
    assert page.status_code == 400
    assert "serves embedding alias emb" in (field_error(text(page), "format") or "")
    assert provider_service.get_provider(state, "openai").format == "openai"

    # Chat aliases follow the provider; other OpenAI-compatible formats stay allowed.
    args = ["provider", "update", "openai", "--format", "ollama", "--api-key", "sk-0123456"]
    assert runner.invoke(args=args).exit_code == 0


# -- dashboard ------------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "AIGATEWAY_DASHBOARD_TOKEN": TOKEN, "SECRET_KEY": FLASK_SECRET}


@pytest.fixture
def dash(client: Any, providers: None) -> tuple[Any, str]:
    """The test client logged in to the dashboard, and its CSRF token."""
    return client, login(client)


@pytest.mark.parametrize("kind", ["embedding", "chat"])
def test_dashboard_creates_and_edits_the_kind(kind: str, dash: Any, state: Any) -> None:
    client, csrf = dash
    form = {
        "alias": "e",
        "kind": kind,
        "strategy": "weighted",
        "enabled": True,
        "provider": "openai",
        "model": "text-embedding-3-small",
        "pricing_input": "0.02",
        "pricing_output": "0",
        "priority": "0",
        "weight": "1",
    }
    created = submit(client, "/dashboard/models/new", csrf, **form)
    assert created.status_code == 303, created.get_data(as_text=True)[:2000]
    assert kind_of(state, "e") == kind
    page = client.get(created.headers["Location"]).get_data(as_text=True)
    assert f"<dt>Kind</dt><dd>{kind}</dd>" in page
    model_id = service.get_model(state, "e").id
    other = "chat" if kind == "embedding" else "embedding"
    edit = submit(
        client,
        f"/dashboard/models/{model_id}/edit",
        csrf,
        kind=other,
        strategy="weighted",
        enabled=True,
    )
    assert edit.status_code == 303
    assert kind_of(state, "e") == other


def test_dashboard_shows_the_rule_next_to_the_kind(dash: Any, state: Any) -> None:
    client, csrf = dash
    form = {
        "alias": "e",
        "kind": "embedding",
        "strategy": "weighted",
        "enabled": True,
        "provider": "claude",
        "model": "c",
        "pricing_input": "1",
        "pricing_output": "0",
        "priority": "0",
        "weight": "1",
    }
    refused = submit(client, "/dashboard/models/new", csrf, **form)
    assert refused.status_code == 400
    assert "no embeddings endpoint" in field_error(text(refused), "kind")
    assert kind_of(state, "e") is None


# -- the fake upstream against the SDK ------------------------------------------------------------


def test_fake_embeddings_are_valid_sdk_objects(fake_openai: Any) -> None:
    url = fake_openai.base_url + "/embeddings"
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"}
    answer = requests.post(url, json=body, timeout=10).json()
    parsed = strict(CreateEmbeddingResponse, answer)
    assert [len(d.embedding) for d in parsed.data] == [1536, 1536]
    assert parsed.usage.prompt_tokens == 2
    packed = requests.post(url, json={**body, "encoding_format": "base64"}, timeout=10).json()
    raw = base64.b64decode(packed["data"][1]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == answer["data"][1]["embedding"]


def test_openai_sdk_against_the_fake(fake_openai: Any) -> None:
    client = openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-x", max_retries=0)
    try:
        default = client.embeddings.create(model="text-embedding-3-large", input="hi")
        assert default.data[0].embedding == fake_vector("text-embedding-3-large", "hi", 3072)
        small = client.embeddings.create(
            model="text-embedding-3-small", input=[[1, 2], [3]], dimensions=3
        )
        assert [len(d.embedding) for d in small.data] == [3, 3]
        assert small.usage.prompt_tokens == 3
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=3)
        assert "does not support specifying dimensions" in str(refused.value)
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="text-embedding-3-small", input="")
    finally:
        client.close()
