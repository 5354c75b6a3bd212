"""Helpers of the routing tests: a fleet of fake OpenAI upstreams, one provider and deployment
each, behind one alias; and who served what."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fakes import FakeOpenAI

from flask_aigateway.services.models import add_deployment, create_model
from flask_aigateway.services.providers import create_provider
from flask_aigateway.state import GatewayState

MESSAGES = [{"role": "user", "content": "Route me"}]


class Fleet:
    """Fake OpenAI upstreams started on demand and all closed by :meth:`close`."""

    def __init__(self) -> None:
        self.servers: list[FakeOpenAI] = []

    def start(self, count: int) -> list[FakeOpenAI]:
        started = [FakeOpenAI() for _ in range(count)]
        self.servers.extend(started)
        return started

    def close(self) -> None:
        for server in self.servers:
            server.close()


def add_alias(
    state: GatewayState,
    alias: str,
    fakes: Sequence[FakeOpenAI],
    *,
    deployments: Sequence[Mapping[str, Any]] = (),
    **model: Any,
) -> list[str]:
    """Create ``alias`` with one deployment per fake (each on its own provider), in order.

    ``deployments[i]`` holds deployment fields of the i-th one (weight, priority, rpm_limit,
    pricing_input…); ``model`` holds alias fields (strategy, fallbacks, context_fallback).
    Returns the deployment ids, in the order of ``fakes``.
    """
    ids = []
    for i, fake in enumerate(fakes):
        provider = f"{alias}-upstream-{i}"
        create_provider(
            state,
            name=provider,
            format="openai",
            base_url=fake.base_url,
            api_key=f"sk-{alias}-{i}-0123456789",
        )
        fields: dict[str, Any] = {
            "provider": provider,
            "model": f"model-{i}",
            "pricing_input": "1",
            "pricing_output": "2",
            **(deployments[i] if i < len(deployments) else {}),
        }
        if i == 0:
            created = create_model(state, alias=alias, **fields, **model)
            ids.append(created.deployments[0].id)
        else:
            ids.append(add_deployment(state, alias, **fields).id)
    return ids


def chat(client: Any, key: str, model: str, **body: Any) -> Any:
    """POST /v1/chat/completions through the Flask test client."""
    return client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": MESSAGES, **body}),
        headers={"Authorization": f"Bearer {key}"},
        content_type="application/json",
    )


def served_by(responses: Iterable[Any]) -> list[str]:
    """The ``x-aigateway-deployment`` of each response (each must have succeeded)."""
    out = []
    for response in responses:
        assert response.status_code == 200, response.get_data(as_text=True)
        out.append(response.headers["x-aigateway-deployment"])
    return out


def tally(deployments: Iterable[str], ids: Sequence[str]) -> list[int]:
    """How many requests each of ``ids`` served, in that order."""
    counts = Counter(deployments)
    assert set(counts) <= set(ids), counts
    return [counts[i] for i in ids]
