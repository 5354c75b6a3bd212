"""The worst case a request can cost, which its budget reservation holds (see :mod:`.budgets`).

Pure arithmetic over the alias's routes (the alias and every alias it may fall back to) and the
request: the estimated prompt tokens at the highest input price (an Anthropic-format
deployment's times the prompt-cache write rate when the request sets a ``cache_control``
breakpoint), plus the maximum output tokens at the highest output price. Apart from the
budget book because the rate limiter counts tokens with the same routes and output cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..accounting.record import CACHE_WRITE_MULTIPLIER, LONG_CACHE_WRITE_MULTIPLIER
from ..catalog import AliasRoute, load_route
from ..db import MONEY_QUANTUM
from ..embeddings import EmbeddingsRequest, GatewayRequest
from ..enums import WireFormat
from ..state import GatewayState
from ..tokens import estimate_prompt_tokens

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most a request can cost, and how that was computed (for messages)."""

    prompt_tokens: int
    output_tokens: int
    input_price: Decimal
    output_price: Decimal

    @property
    def cost(self) -> Decimal:
        amount = (
            Decimal(self.prompt_tokens) * self.input_price
            + Decimal(self.output_tokens) * self.output_price
        ) / _MILLION
        return amount.quantize(MONEY_QUANTUM, rounding=ROUND_CEILING)


def reachable_routes(state: GatewayState, route: AliasRoute) -> list[AliasRoute]:
    """``route`` and every alias a request to it may end up on (fallbacks and context
    fallbacks, followed transitively), each once."""
    routes = [route]
    seen = {route.alias}
    i = 0
    while i < len(routes):
        current = routes[i]
        i += 1
        nexts = [
            *current.fallbacks,
            *([current.context_fallback] if current.context_fallback else []),
        ]
        for alias in nexts:
            if alias in seen:
                continue
            seen.add(alias)
            found = load_route(state, alias)
            if found is not None:
                routes.append(found)
    return routes


def max_output_tokens(request: GatewayRequest, routes: Sequence[AliasRoute], default: int) -> int:
    """The most output tokens the request may produce: its own limit, else the largest alias
    default on its routes (else ``default``), times ``n`` choices; none for embeddings."""
    if isinstance(request, EmbeddingsRequest):
        return 0
    limit = request.max_output_tokens
    if limit is None:
        limit = max((r.max_tokens or default for r in routes), default=default)
    n = request.params.get("n")
    return int(limit) * (n if isinstance(n, int) and n > 1 else 1)


def cache_write_multiplier(request: GatewayRequest) -> Decimal:
    """What an Anthropic-format upstream may bill the prompt at, against the input price:
    a request with a ``cache_control`` breakpoint (top level, on a tool, a system or message
    block) may have its prompt written to the prompt cache, at 1.25 times the input price, or
    2 times for a one-hour (``"ttl": "1h"``) breakpoint; without one, the input price."""
    if isinstance(request, EmbeddingsRequest):
        return Decimal(1)
    found: list[Any] = []
    top = request.params.get("cache_control")
    if top is not None:
        found.append(top)
    for tool in request.params.get("tools") or ():
        if isinstance(tool, dict) and tool.get("cache_control") is not None:
            found.append(tool["cache_control"])
    for message in request.messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            found += [
                part["cache_control"]
                for part in content
                if isinstance(part, dict) and part.get("cache_control") is not None
            ]
    if not found:
        return Decimal(1)
    if any(isinstance(marker, dict) and marker.get("ttl") == "1h" for marker in found):
        return LONG_CACHE_WRITE_MULTIPLIER
    return CACHE_WRITE_MULTIPLIER


def worst_case(state: GatewayState, route: AliasRoute, request: GatewayRequest) -> WorstCase:
    """The worst-case cost of ``request`` on ``route`` (see the module docstring)."""
    routes = reachable_routes(state, route)
    targets = [t for r in routes for t in r.targets]
    input_price = max((t.input_price for t in targets), default=Decimal(0))
    if any(t.wire_format is WireFormat.ANTHROPIC for t in targets):
        written = cache_write_multiplier(request)
        if written > 1:
            input_price = max(
                t.input_price * (written if t.wire_format is WireFormat.ANTHROPIC else 1)
                for t in targets
            )
    return WorstCase(
        prompt_tokens=estimate_prompt_tokens(request),
        output_tokens=max_output_tokens(
            request, routes, state.settings["AIGATEWAY_DEFAULT_MAX_TOKENS"]
        ),
        input_price=input_price,
        output_price=max((t.output_price for t in targets), default=Decimal(0)),
    )


__all__ = [
    "WorstCase",
    "cache_write_multiplier",
    "max_output_tokens",
    "reachable_routes",
    "worst_case",
]
