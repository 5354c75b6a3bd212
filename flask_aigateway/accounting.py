"""Cost of a request and its row in the request log.

Cost is the upstream usage times the prices of the deployment that actually served it, in
exact :class:`~decimal.Decimal` USD. Every request that reached the pipeline becomes one
:class:`RequestRecord`, written by :class:`RequestLogWriter`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .db import to_money, utcnow
from .errors import GatewayError
from .models import RequestLog
from .providers.base import Target
from .schemas import Usage
from .state import GatewayState

log = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)


def cost_of(usage: Usage, target: Target) -> Decimal:
    """USD for ``usage`` at ``target``'s per-million prices (cached prompt tokens at the
    cached-input price when the deployment has one)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = (
        target.cached_input_price if target.cached_input_price is not None else target.input_price
    )
    amount = (
        Decimal(usage.prompt_tokens - cached) * target.input_price
        + Decimal(cached) * cached_price
        + Decimal(usage.completion_tokens) * target.output_price
    ) / _MILLION
    return to_money(amount)


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in step by step; becomes one request-log row."""

    request_id: str
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    team_id: str | None = None
    alias: str | None = None
    target: Target | None = None
    status_code: int = 200
    error_type: str | None = None
    error_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    ttft_ms: float | None = None
    attempts: int = 0
    fallback_path: list[str] = field(default_factory=list)
    cache_hit: bool = False
    prompt_text: str | None = None
    completion_text: str | None = None
    finished: bool = False

    def fail(self, error: GatewayError) -> None:
        self.status_code = error.status
        self.error_type = error.code or error.type
        self.error_message = error.message[:2000]

    def crash(self, exc: BaseException) -> None:
        """An unexpected exception (a bug, or an interrupt): logged as a 500."""
        self.status_code = 500
        self.error_type = "internal_error"
        self.error_message = f"{exc.__class__.__name__}: {exc}"[:2000]

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def to_row(self) -> dict[str, Any]:
        target = self.target
        return {
            "request_id": self.request_id,
            "created_at": utcnow(),
            "key_id": self.key_id,
            "team_id": self.team_id,
            "alias": self.alias,
            "provider": target.provider_name if target else None,
            "deployment_id": target.deployment_id if target else None,
            "provider_model": target.provider_model if target else None,
            "status_code": self.status_code,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "usage_estimated": self.usage.estimated,
            "cost": self.cost,
            "latency_ms": round(self.elapsed_ms(), 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "attempts": self.attempts,
            "fallback_path": list(self.fallback_path) or None,
            "cache_hit": self.cache_hit,
            "stream": self.stream,
            "prompt_text": self.prompt_text,
            "completion_text": self.completion_text,
        }


class RequestLogWriter:
    """Writes request-log rows. Synchronous: the row is committed before the call returns,
    so nothing is lost; a failure to write is logged loudly, never swallowed silently."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def write(self, record: RequestRecord) -> None:
        row = record.to_row()
        try:
            with self._state.transaction() as session:
                session.add(RequestLog(**row))
        except Exception:
            log.exception("could not write the request-log row of %s", record.request_id)
            raise

    def close(self) -> None:
        """Nothing buffered: every row is already written."""
