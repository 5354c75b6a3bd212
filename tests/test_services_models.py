"""The provider and model services as a Python API: what the CLI does not reach on its own."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from flask_aigateway.errors import ConflictError, NotFoundError, ValidationError
from flask_aigateway.models import Deployment, ModelAlias, Provider
from flask_aigateway.services import models as service
from flask_aigateway.services import providers as provider_service
from flask_aigateway.services.validation import UNSET

KEY = "sk-service-test-000000000WXYZ"


def count(state: Any, model: type) -> int:
    with state.session() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def alias(state: Any) -> ModelAlias:
    provider_service.create_provider(state, name="openai", format="openai", api_key=KEY)
    provider_service.create_provider(state, name="local", format="ollama")
    return service.create_model(
        state,
        alias="chat",
        provider="openai",
        model="gpt-4o-mini",
        pricing_input="0.15",
        pricing_output="0.60",
    )


def test_model_to_dict_carries_decimal_prices_and_provider_names(state, alias):
    data = service.model_to_dict(service.get_model(state, "chat"))
    (dep,) = data["deployments"]
    assert isinstance(dep["pricing_input"], Decimal)
    assert dep["pricing_input"] == Decimal("0.15") and dep["pricing_output"] == Decimal("0.6")
    assert dep["provider"] == "openai" and dep["alias"] == "chat"


def test_create_model_is_atomic_when_the_provider_is_unknown(state, alias):
    with pytest.raises(NotFoundError) as err:
        service.create_model(
            state, alias="other", provider="ghost", model="m", pricing_input="1", pricing_output="1"
        )
    assert err.value.param == "provider"
    assert count(state, ModelAlias) == 1 and count(state, Deployment) == 1


def test_validation_errors_name_their_field(state, alias):
    with pytest.raises(ValidationError) as err:
        service.add_deployment(
            state, "chat", provider="openai", model="m", pricing_input="1", pricing_output="-1"
        )
    assert err.value.param == "pricing_output"
    with pytest.raises(ValidationError) as err:
        service.update_model(state, "chat", fallbacks=["chat"])
    assert err.value.param == "fallbacks"


def test_update_deployment_sets_and_clears_fields(state, alias):
    dep_id = alias.deployments[0].id
    updated = service.update_deployment(
        state,
        dep_id,
        provider="local",
        model="llama3",
        pricing_input="0",
        pricing_output="0",
        pricing_cached_input="0",
        priority=2,
        weight="4",
        rpm_limit="30",
        enabled=False,
    )
    assert service.deployment_to_dict(updated)["provider"] == "local"
    with state.session() as session:
        row = session.get(Deployment, dep_id)
        assert row.provider.name == "local" and row.provider_model == "llama3"
        assert (row.input_price, row.cached_input_price) == (Decimal(0), Decimal(0))
        assert (row.priority, row.weight, row.rpm_limit, row.enabled) == (2, 4, 30, False)

    service.update_deployment(state, dep_id, pricing_cached_input=None, rpm_limit=None)
    with state.session() as session:
        row = session.get(Deployment, dep_id)
        assert row.cached_input_price is None and row.rpm_limit is None
        assert row.provider_model == "llama3" and row.weight == 4


def test_update_deployment_refusals_change_nothing(state, alias):
    dep_id = alias.deployments[0].id
    before = service.model_to_dict(service.get_model(state, "chat"))
    with pytest.raises(NotFoundError):
        service.update_deployment(state, dep_id, provider="ghost", weight=3)
    with pytest.raises(ValidationError):
        service.update_deployment(state, dep_id, priority=5, weight=0)
    with pytest.raises(NotFoundError):
        service.update_deployment(state, "dep_nope", weight=2)
    assert service.model_to_dict(service.get_model(state, "chat")) == before


def test_unset_leaves_fields_and_none_clears_them(state, alias):
    provider = provider_service.update_provider(state, "openai", api_key=UNSET, enabled=False)
    assert provider_service.provider_api_key(state, provider) == KEY
    provider = provider_service.update_provider(state, "openai", api_key=None)
    assert provider_service.provider_api_key(state, provider) is None
    assert provider_service.provider_to_dict(provider)["api_key"] is None

    service.update_model(state, "chat", max_tokens=500, cache_ttl=0)
    service.update_model(state, "chat", max_tokens=UNSET, cache_ttl=None)
    row = service.get_model(state, "chat")
    assert (row.max_tokens, row.cache_ttl) == (500, None)


def test_mutations_invalidate_the_in_process_caches(state, alias):
    routing = state.cache("routing")
    for mutate in (
        lambda: service.update_model(state, "chat", strategy="round-robin"),
        lambda: service.add_deployment(
            state, "chat", provider="local", model="m", pricing_input="0", pricing_output="0"
        ),
        lambda: provider_service.update_provider(state, "local", enabled=False),
    ):
        routing["chat"] = object()
        mutate()
        assert routing == {}


def test_failed_mutation_keeps_caches(state, alias):
    routing = state.cache("routing")
    routing["chat"] = marker = object()
    with pytest.raises(ConflictError):
        provider_service.create_provider(state, name="openai", format="openai")
    assert routing["chat"] is marker


def test_aliases_may_fall_back_to_each_other(state, alias):
    service.create_model(
        state,
        alias="spare",
        provider="local",
        model="m",
        pricing_input="0",
        pricing_output="0",
        fallbacks="chat",
    )
    updated = service.update_model(state, "chat", fallbacks=["spare"])
    assert updated.fallbacks == ["spare"]


def test_delete_provider_force_returns_removed_ids(state, alias):
    extra = service.add_deployment(
        state, "chat", provider="local", model="m", pricing_input="0", pricing_output="0"
    )
    service.add_deployment(
        state, "chat", provider="openai", model="gpt-4o", pricing_input="2.5", pricing_output="10"
    )
    removed = provider_service.delete_provider(state, "openai", force=True)
    assert len(removed) == 2 and alias.deployments[0].id in removed
    assert [d.id for d in service.get_model(state, "chat").deployments] == [extra.id]
    assert count(state, Provider) == 1
