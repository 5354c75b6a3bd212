"""Cost of a request and the record of what it did (its future request-log row).

Cost is the usage times the prices of the deployment that actually served it, in exact
:class:`~decimal.Decimal` USD; a cache hit costs nothing. Every request that reached the
pipeline becomes one :class:`RequestRecord`, metered by :mod:`.metrics` and written by
:class:`~.logwriter.RequestLogWriter`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..db import database_error, to_money, utcnow
from ..enums import Route
from ..errors import (
    GatewayError,
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from ..providers.base import Target
from ..schemas import ChatRequest, ChatResponse, Usage

_MILLION = Decimal(1_000_000)

#: What one request adds to one usage counter's database row when the live counters are in
#: Redis: (scope, scope id, period, period start, USD spent, requests). It travels with the
#: request's log row and is written in the same transaction (:func:`.rollups.write_batch`).
CounterSpend = tuple[str, str, str, dt.date, Decimal, int]
#: The row key that carries a request's :data:`CounterSpend` (not a column of the log).
COUNTER_SPEND = "counter_spend"

#: ``error_type`` values of requests refused by the gateway's own limits.
RATE_LIMITED = "rate_limit_exceeded"
BUDGET_EXCEEDED = "budget_exceeded"
#: Statuses whose ``model`` may be anything the caller typed (unknown key, alias or
#: permission): metrics do not use it as a label value, so garbage cannot add series.
UNTRUSTED_ALIAS_STATUSES = frozenset({401, 403, 404})


#: What a prompt-cache write costs against the input price: Anthropic bills the tokens it
#: writes to its (default, 5-minute) prompt cache at 1.25x the base input price, and those it
#: writes to the 1-hour cache (``"ttl": "1h"``) at 2x. OpenAI-format upstreams report no cache
#: writes (their caching is automatic and writes are not billed).
CACHE_WRITE_MULTIPLIER = Decimal("1.25")
LONG_CACHE_WRITE_MULTIPLIER = Decimal(2)


def cost_of(usage: Usage, target: Target) -> Decimal:
    """USD for ``usage`` at ``target``'s per-million prices: cached prompt tokens at the
    cached-input price when the deployment has one, prompt-cache writes at
    :data:`CACHE_WRITE_MULTIPLIER` (one-hour ones :data:`LONG_CACHE_WRITE_MULTIPLIER`) times the
    input price, the rest at the input price."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    long_written = min(usage.cache_write_long_tokens, written)
    cached_price = (
        target.cached_input_price if target.cached_input_price is not None else target.input_price
    )
    amount = (
        Decimal(usage.prompt_tokens - cached - written) * target.input_price
        + Decimal(cached) * cached_price
        + Decimal(written - long_written) * target.input_price * CACHE_WRITE_MULTIPLIER
        + Decimal(long_written) * target.input_price * LONG_CACHE_WRITE_MULTIPLIER
        + Decimal(usage.completion_tokens) * target.output_price
    ) / _MILLION
    return to_money(amount)


def upstream_error_kind(error: GatewayError) -> str:
    """A small closed set for the ``kind`` label of ``ai_gateway_upstream_errors_total``."""
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, UpstreamRateLimitError):
        return "rate_limited"
    if isinstance(error, UpstreamClientError):
        return "client_error"
    if isinstance(error, UpstreamError):
        if error.code == "upstream_auth_failed":
            return "auth"
        status = error.upstream_status
        if status is None:
            return "network"
        return "server_error" if status >= 500 else "http_error"
    return "other"


#: Shown instead of a credential an upstream quoted back in its error.
REDACTED = "[redacted]"
#: Credential values shorter than this are not looked for (a header value of "1" or "true"
#: would redact ordinary words).
_MIN_SECRET_CHARS = 8


def redact_credentials(error: GatewayError, target: Target) -> None:
    """Remove from ``error``'s text the credentials the call to ``target`` carried (its API
    key, its extra headers' values): an upstream may quote them back ("Invalid header:
    Authorization: Bearer sk-…"), and the error's text reaches the client, the request log
    and the dashboard, where a provider key is never shown."""
    secrets = [target.api_key or "", *target.extra_headers.values()]
    secrets = sorted((s for s in secrets if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True)
    if not secrets:
        return

    def clean(text: str) -> str:
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    message = clean(error.message)
    if message != error.message:
        error.message = message
        error.args = (message, *error.args[1:])
    if error.details:
        error.details = {k: clean(v) if isinstance(v, str) else v for k, v in error.details.items()}


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in step by step; becomes one request-log row.

    Times: ``started`` is a ``perf_counter`` reading; :meth:`stop_clock` fixes ``latency_ms``
    once, so the log, the rollups and the metrics see the same number. ``upstream_seconds`` is
    the time spent waiting on upstreams (sending, reading answers and stream events) and
    ``client_seconds`` the time a stream waited for the client to take a chunk; the rest is the
    gateway's own overhead.
    """

    request_id: str
    stream: bool = False
    #: The API door the request came in through (a :class:`~..enums.Route` value).
    route: str = Route.CHAT_COMPLETIONS.value
    started: float = field(default_factory=time.perf_counter)
    started_at: dt.datetime = field(default_factory=utcnow)
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
    latency_ms: float | None = None
    upstream_seconds: float = 0.0
    client_seconds: float = 0.0
    attempts: int = 0
    fallback_path: list[str] = field(default_factory=list)
    #: (provider name, kind) of every failed upstream attempt, retried or not.
    upstream_errors: list[tuple[str, str]] = field(default_factory=list)
    cache_hit: bool = False
    #: True when the cache was read for this request (a HIT or a MISS, not a BYPASS).
    cache_lookup: bool = False
    #: Kept only with ``AIGATEWAY_LOG_CONTENT`` (see :meth:`keep_content`).
    prompt_text: str | None = None
    completion_text: str | None = None
    keeps_content: bool = False
    finished: bool = False
    #: Spend for the usage counters' rows, written with this request's log row (Redis
    #: counters only: the SQL store writes its rows when it settles).
    counter_spend: tuple[CounterSpend, ...] = ()

    def keep_content(self, request: ChatRequest) -> None:
        """Store this request's text in its row (``AIGATEWAY_LOG_CONTENT``): the messages as
        JSON now, the answer when it comes."""
        self.keeps_content = True
        self.prompt_text = json.dumps(request.messages, ensure_ascii=False)

    def keep_completion(
        self, text: str | None = None, *, response: ChatResponse | None = None
    ) -> None:
        """The answer's text (content, then each tool call's name and arguments), if kept."""
        if not self.keeps_content:
            return
        if response is not None:
            parts = [response.content or ""]
            parts += [
                json.dumps(call.get("function") or call, ensure_ascii=False)
                for call in response.tool_calls
            ]
            text = "\n".join(part for part in parts if part)
        self.completion_text = text or ""

    def fail(self, error: GatewayError) -> None:
        self.status_code = error.status
        self.error_type = error.code or error.type
        self.error_message = error.message[:2000]

    def stopped(self) -> None:
        """The process stopped serving the request before it ended (a worker's shutdown)."""
        self.status_code = 503
        self.error_type = "gateway_stopped"
        self.error_message = "The gateway's worker stopped before the request ended (shutdown)."

    def crash(self, exc: BaseException) -> None:
        """An unexpected exception (a bug, or an interrupt): logged as a 500."""
        self.status_code = 500
        self.error_type = "internal_error"
        self.error_message = f"{exc.__class__.__name__}: {exc}"[:2000]

    def failed_with(self, error: BaseException) -> BaseException:
        """Record why the request failed and return what to raise: a GatewayError as it is,
        a database problem as its 503 (:func:`..db.database_error`), anything else as it is,
        logged as a crash — or, when it is not an ``Exception`` at all (``GreenletExit``,
        ``SystemExit``: the worker stopping), as :meth:`stopped`. Every door's ``except`` ends
        this way."""
        if isinstance(error, GatewayError):
            self.fail(error)
            return error
        if not isinstance(error, Exception):
            self.stopped()
            return error
        problem = database_error(error)
        if problem is None:
            self.crash(error)
            return error
        self.fail(problem)
        return problem

    def note_upstream_error(self, target: Target, error: GatewayError) -> None:
        """Count one failed upstream attempt (the request may still succeed elsewhere), and
        take the target's credentials out of its text (:func:`redact_credentials`): every
        upstream failure passes here before it is answered, streamed or logged."""
        redact_credentials(error, target)
        self.upstream_errors.append((target.provider_name, upstream_error_kind(error)))

    def upstream_wait(self) -> _UpstreamWait:
        """Count the time spent in the block as waiting on an upstream."""
        return _UpstreamWait(self)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def stop_clock(self) -> float:
        """Fix the request's latency (first call wins) and return it in milliseconds."""
        if self.latency_ms is None:
            self.latency_ms = self.elapsed_ms()
        return self.latency_ms

    @property
    def overhead_seconds(self) -> float:
        """Time the gateway itself took: latency minus upstream and client waits (≥ 0)."""
        total = self.stop_clock() / 1000.0
        return max(0.0, total - self.upstream_seconds - self.client_seconds)

    @property
    def model_label(self) -> str:
        """The alias as a metrics label: empty when the caller could have typed anything."""
        if self.status_code in UNTRUSTED_ALIAS_STATUSES and self.target is None:
            return ""
        return self.alias or ""

    def to_row(self) -> dict[str, Any]:
        """The ``aigw_request_logs`` row (``created_at`` is when the request arrived), plus
        :data:`COUNTER_SPEND` when the request owes the usage counters' rows a cost."""
        target = self.target
        row: dict[str, Any] = {
            "request_id": self.request_id,
            "created_at": self.started_at,
            "key_id": self.key_id,
            "team_id": self.team_id,
            "alias": self.alias,
            "provider": target.provider_name if target else None,
            "deployment_id": target.deployment_id if target else None,
            "provider_model": target.provider_model if target else None,
            "status_code": self.status_code,
            "error_type": self.error_type,
            "error_message": storable(self.error_message),
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "usage_estimated": self.usage.estimated,
            "cost": self.cost,
            "latency_ms": round(self.stop_clock(), 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "attempts": self.attempts,
            "fallback_path": list(self.fallback_path) or None,
            "cache_hit": self.cache_hit,
            "stream": self.stream,
            "route": self.route,
            "prompt_text": storable(self.prompt_text),
            "completion_text": storable(self.completion_text),
        }
        if self.counter_spend:
            row[COUNTER_SPEND] = self.counter_spend
        return row


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str | None) -> str | None:
    """``text`` as a database can store it. An upstream's JSON may carry a lone surrogate
    (``"\\ud800"``: a valid escape, not Unicode), which the answer passes on escaped but no
    UTF-8 column takes: the row was refused and lost. It becomes U+FFFD here."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


class _UpstreamWait:
    """The context manager of :meth:`RequestRecord.upstream_wait` (a plain class: cheaper to
    enter and leave than a ``@contextmanager`` generator)."""

    __slots__ = ("_began", "_record")

    def __init__(self, record: RequestRecord) -> None:
        self._record = record
        self._began = 0.0

    def __enter__(self) -> None:
        self._began = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._record.upstream_seconds += time.perf_counter() - self._began


__all__ = [
    "BUDGET_EXCEEDED",
    "COUNTER_SPEND",
    "RATE_LIMITED",
    "CounterSpend",
    "RequestRecord",
    "cost_of",
    "upstream_error_kind",
]
