"""Prometheus metrics of the gateway: one registry per app, fed by the pipeline's ``finish`` step.

Nothing is registered in ``prometheus_client``'s global default registry and no request hook
is added to the app: each app's :class:`Metrics` owns a :class:`CollectorRegistry`, and
``GET /v1/metrics`` (on the gateway's own blueprint) renders it through
prometheus-flask-exporter's encoder (content negotiation, OpenMetrics when asked).

**Several worker processes** (gunicorn ``--workers N``): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory writable by the workers, the same for all of them, before the server starts
(prometheus_client reads it at import). Every process then writes its values there and a scrape
of any worker sums all of them (``livesum`` for the in-flight gauge). Empty the directory
between runs, and call ``prometheus_client.multiprocess.mark_process_dead(worker.pid)`` from
gunicorn's ``child_exit`` hook so a dead worker's in-flight requests stop counting. In that mode
values are per process, not per app: serve one gateway app per process.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics

from ..models import LATENCY_BUCKETS_MS
from ..state import GatewayState
from .record import BUDGET_EXCEEDED, RATE_LIMITED, RequestRecord

#: Request and first-token durations share the rollups' bounds, so quantiles agree.
DURATION_BUCKETS = tuple(bound / 1000.0 for bound in LATENCY_BUCKETS_MS)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_M = TypeVar("_M", Counter, Histogram)


class Metrics:
    """The ``ai_gateway_*`` metrics of one app.

    Label ``model`` is the alias (empty for requests refused before the alias was known to
    be real: unknown key, alias or permission), ``provider`` the provider that served (empty
    when none did), ``status`` the HTTP status of the answer (499: the client left).
    """

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "ai_gateway_requests",
            "Requests that reached the pipeline, by outcome.",
            ["model", "provider", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "ai_gateway_request_duration_seconds",
            "Time from arrival to the last byte.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "ai_gateway_time_to_first_token_seconds",
            "Streams: time from arrival to the first chunk.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "ai_gateway_overhead_seconds",
            "The gateway's own time per request: duration minus the time spent waiting on "
            "upstreams (and, for streams, on the client).",
            ["model"],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "ai_gateway_tokens",
            "Tokens used upstream (type: prompt, completion, or cached: "
            "the part of prompt tokens read from the provider's prompt cache).",
            ["model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "ai_gateway_cost_dollars",
            "Upstream cost in USD.",
            ["model", "provider"],
            registry=registry,
        )
        self.cache_hits = Counter(
            "ai_gateway_cache_hits",
            "Requests answered from the response cache.",
            ["model"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "ai_gateway_cache_misses",
            "Requests looked up in the response cache and not found.",
            ["model"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "ai_gateway_rate_limited",
            "Requests refused with 429 rate_limit_exceeded: a key or team rate limit, or the "
            "failed-authentication throttle (AIGATEWAY_THROTTLE_API_AUTH).",
            ["model"],
            registry=registry,
        )
        self.budget_exceeded = Counter(
            "ai_gateway_budget_exceeded",
            "Requests refused because a budget would be exceeded.",
            ["model"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "ai_gateway_fallbacks",
            "Requests that went on to a fallback alias.",
            ["model"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "ai_gateway_upstream_errors",
            "Failed upstream attempts (retried or not), by kind: timeout, rate_limited, "
            "client_error, auth, server_error, http_error, network.",
            ["provider", "kind"],
            registry=registry,
        )
        self.inflight = Gauge(
            "ai_gateway_inflight_requests",
            "Requests in the pipeline right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._exporter = PrometheusMetrics(
            app=None, path=None, export_defaults=False, registry=registry
        )
        #: Labelled children already made, by (metric, label values). ``labels()`` checks,
        #: converts and locks on every call, and a request touches six to nine series; a
        #: child is cached only once ``labels()`` made it, so no series appears earlier.
        self._children: dict[tuple[object, ...], Counter | Histogram] = {}

    def _series(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, from the cache after the first time."""
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]

    def started(self) -> None:
        """A request entered the pipeline (paired with :meth:`observe` when it ends)."""
        self.inflight.inc()

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request."""
        self.inflight.dec()
        series = self._series
        model = record.model_label
        provider = record.target.provider_name if record.target is not None else ""
        series(self.requests, model, provider, str(record.status_code)).inc()
        series(self.duration, model).observe(record.stop_clock() / 1000.0)
        series(self.overhead, model).observe(record.overhead_seconds)
        if record.stream and record.ttft_ms is not None:
            series(self.ttft, model).observe(record.ttft_ms / 1000.0)
        usage = record.usage
        if usage.prompt_tokens:
            series(self.tokens, model, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            series(self.tokens, model, "completion").inc(usage.completion_tokens)
        if usage.cached_tokens:
            series(self.tokens, model, "cached").inc(usage.cached_tokens)
        if record.cost:
            series(self.cost, model, provider).inc(float(record.cost))
        if record.cache_hit:
            series(self.cache_hits, model).inc()
        elif record.cache_lookup:
            series(self.cache_misses, model).inc()
        if record.error_type == RATE_LIMITED:
            series(self.rate_limited, model).inc()
        elif record.error_type == BUDGET_EXCEEDED:
            series(self.budget_exceeded, model).inc()
        if record.fallback_path:
            series(self.fallbacks, model).inc()
        for provider_name, kind in record.upstream_errors:
            series(self.upstream_errors, provider_name, kind).inc()

    def render(self, accept: str | None = None) -> tuple[str, str]:
        """The scrape body and its content type; with ``PROMETHEUS_MULTIPROC_DIR`` set, the
        sum over every process writing there."""
        return self._exporter.generate_metrics(accept)


__all__ = ["DURATION_BUCKETS", "Metrics"]
