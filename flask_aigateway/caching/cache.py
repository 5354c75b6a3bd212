"""The response cache (DESIGN §3): exact match on the SHA-256 of everything that changes the
answer, per alias or global TTL, ``Cache-Control`` honoured, and one upstream call for a burst
of identical misses.

:meth:`ResponseCache.decide` says whether a request reads and/or writes the cache;
:meth:`ResponseCache.get` answers a hit or, on a miss, makes this request the one that asks the
upstream (concurrent identical requests wait for its answer: a per-key lock in this process, a
Redis lock across processes when Redis is configured); :meth:`ResponseCache.put` stores the
answer and lets the waiters read it; :meth:`ResponseCache.release` (called when the request
ends, whatever happened) lets them go if no answer came. The backends live in
:mod:`.backends`, the locks in :mod:`.locks`.

The cache only saves work: when its store fails the request goes to the upstream. While Redis
is unreachable the cache and its locks leave it alone for a few seconds at a time
(:class:`~..redis_failure.Outage`: one warning per window, no round trips meanwhile).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..accounting.record import RequestRecord
from ..embeddings import EmbeddingsRequest, GatewayRequest
from ..enums import ProviderFormat, WireFormat
from ..providers.base import Target
from ..redis_failure import Outage
from ..schemas import ChatRequest, ChatResponse, Usage
from ..state import GatewayState
from .backends import CacheBackend, make_backend
from .locks import Lease, Locks, make_locks

if TYPE_CHECKING:
    from ..catalog import AliasRoute
    from ..governance.auth import Principal

log = logging.getLogger(__name__)

#: Bumped when the key or the stored shape changes, so old entries are never misread.
KEY_VERSION = 2
#: Request fields that never change the answer (routing hints, caller labels, transport).
IGNORED_FIELDS = frozenset(
    {
        "user",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "prompt_cache_key",
        "safety_identifier",
    }
)

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


def _canonical(value: Any) -> Any:
    """JSON-equal values made identical: ``1.0`` and ``1`` are the same number."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def output_cap(request: GatewayRequest, route: AliasRoute) -> str | None:
    """The output limit the gateway adds upstream to a request whose client set none, as
    part of its cache key (None: nothing added). The alias's default max tokens goes to every
    deployment when a budget caps the request (:meth:`Pipeline.admit`), and always to an
    Anthropic-format one (its API requires ``max_tokens``): a capped answer may be cut short
    (``finish_reason: length``) where the uncapped request's is not."""
    if not isinstance(request, ChatRequest) or not route.targets:
        return None
    if request.max_output_tokens is not None:
        return None  # the client's own limit is in the parameters
    limit = route.targets[0].default_max_tokens
    anthropic = [t.wire_format is WireFormat.ANTHROPIC for t in route.targets]
    if request.cap_output and not all(anthropic):
        return f"capped:{limit}"
    if any(anthropic):
        return f"anthropic:{limit}"
    return None


def cache_key(request: GatewayRequest, scope: str = "", cap: str | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of the alias, the messages and every parameter
    except :data:`IGNORED_FIELDS` (a parameter set to null counts as absent), and ``cap``
    (the output limit the gateway adds, :func:`output_cap`), within ``scope``; for an
    embeddings request, of its alias, input, dimensions and encoding."""
    payload: dict[str, Any]
    if isinstance(request, EmbeddingsRequest):
        payload = {"v": KEY_VERSION, "scope": scope, **request.cache_payload()}
    else:
        params = {
            name: value
            for name, value in request.params.items()
            if name not in IGNORED_FIELDS and value is not None
        }
        payload = {
            "v": KEY_VERSION,
            "scope": scope,
            "model": request.model,
            "messages": request.messages,
            "params": params,
        }
        if cap is not None:
            payload["cap"] = cap
    text = json.dumps(
        _canonical(payload),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def cache_directives(header: str | None) -> frozenset[str]:
    """The directives of a ``Cache-Control`` header, lower-cased (``no-cache``, ``no-store``…)."""
    if not header:
        return frozenset()
    return frozenset(
        part.split("=", 1)[0].strip().lower() for part in header.split(",") if part.strip()
    )


@dataclass(slots=True)
class CacheDecision:
    """Whether and how one request uses the cache; ``status`` is the x-aigateway-cache value.

    ``key`` is set once the request is admitted (:meth:`ResponseCache.bind`): only then is it
    known what will be sent upstream. ``lease`` is held by the one request that asks the
    upstream for a missing key until it stores the answer or ends.
    """

    key: str | None = None
    read: bool = False
    write: bool = False
    ttl: int = 0
    status: str = BYPASS
    alias: str = ""
    #: Set once the cache was actually read (a request refused at admission never is).
    looked_up: bool = False
    lease: Lease | None = field(default=None, repr=False)


class ResponseCache:
    """The app's response cache; the backend is created on first use."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._settings = state.settings
        self._backend: CacheBackend | None = None
        self._locks: Locks | None = None
        #: Shared by the Redis backend and the Redis locks: one Redis, one outage.
        self.outage = Outage(
            "the response cache",
            "requests skip the cache (no hits, no waiting for identical requests) and go to "
            "their upstreams",
        )

    @property
    def backend(self) -> CacheBackend:
        if self._backend is None:
            self._backend = make_backend(self._state, self.outage)
        return self._backend

    @property
    def locks(self) -> Locks:
        if self._locks is None:
            self._locks = make_locks(self._state, self.outage)
        return self._locks

    def ttl_for(self, route: AliasRoute) -> int:
        """Seconds a response of this alias stays cached; 0 = not cached. The alias's own
        ``cache_ttl`` wins (0 disables it even when the cache is on globally)."""
        if route.cache_ttl is not None:
            return max(0, route.cache_ttl)
        if self._settings["AIGATEWAY_CACHE_ENABLED"]:
            return max(0, self._settings["AIGATEWAY_CACHE_TTL"])
        return 0

    def scope_of(self, principal: Principal | None) -> str:
        scope = self._settings["AIGATEWAY_CACHE_SCOPE"]
        if scope == "global":
            return ""
        if principal is None:
            return "trusted"
        if scope == "team" and principal.team_id:
            return f"team:{principal.team_id}"
        return f"key:{principal.key_id}"

    def decide(self, route: AliasRoute, cache_control: str | None) -> CacheDecision:
        """``no-store`` bypasses the cache; ``no-cache`` skips the read but stores the fresh
        answer (a refresh); otherwise a cached alias reads and writes (status MISS until a hit).
        The key comes later (:meth:`bind`)."""
        ttl = self.ttl_for(route)
        directives = cache_directives(cache_control)
        if ttl <= 0 or "no-store" in directives:
            return CacheDecision(alias=route.alias)
        if "no-cache" in directives:
            return CacheDecision(write=True, ttl=ttl, alias=route.alias)
        return CacheDecision(read=True, write=True, ttl=ttl, status=MISS, alias=route.alias)

    def bind(
        self,
        decision: CacheDecision,
        request: GatewayRequest,
        principal: Principal | None,
        route: AliasRoute,
    ) -> None:
        """Key a decision that uses the cache on ``request`` as admitted (capped or not: see
        :func:`output_cap`); nothing for one that does not."""
        if decision.read or decision.write:
            cap = output_cap(request, route)
            decision.key = cache_key(request, self.scope_of(principal), cap)

    def get(self, decision: CacheDecision | None, wait: float | None = None) -> ChatResponse | None:
        """The cached answer, or None. On a miss this request becomes the one that asks the
        upstream for the key; an identical request already doing so is waited for (at most
        ``wait`` seconds, what is left of the request's deadline; by default
        ``AIGATEWAY_REQUEST_TIMEOUT``) and its answer returned."""
        if decision is None or not decision.read or decision.key is None:
            return None
        decision.looked_up = True
        found = self._load(decision.key)
        if found is not None:
            return found
        if wait is None:
            wait = self._settings["AIGATEWAY_REQUEST_TIMEOUT"]
        lease = self.locks.acquire(decision.key, max(0.0, wait))
        if lease is None:
            return None
        found = self._load(decision.key)
        if found is not None:
            lease.release()
            return found
        decision.lease = lease
        return None

    def put(self, decision: CacheDecision | None, response: ChatResponse) -> None:
        """Store ``response`` when the decision writes, then let waiting requests read it."""
        if decision is None:
            return
        try:
            if decision.write and decision.key is not None and decision.ttl > 0:
                self._store(decision, response)
        finally:
            self.release(decision)

    def release(self, decision: CacheDecision | None) -> None:
        """Let identical requests waiting on this one go (idempotent)."""
        if decision is not None and decision.lease is not None:
            lease, decision.lease = decision.lease, None
            lease.release()

    def serve(
        self,
        cached: ChatResponse,
        record: RequestRecord,
        route: AliasRoute,
        *,
        restamp: bool = True,
    ) -> ChatResponse:
        """A hit as this request's answer: a fresh id, zero cost, attributed to the deployment
        that produced it (the record's usage stays zero: no upstream tokens were used).
        ``restamp=False`` keeps the body as stored (an embeddings list has no id or time)."""
        record.cache_hit = True
        record.target = _origin(cached, route)
        body = cached.body
        if restamp:
            body = {**body, "id": f"chatcmpl-{record.request_id}", "created": int(time.time())}
        return replace(
            cached,
            body=body,
            cost=Decimal(0),
            provider=record.target.provider_name,
            deployment_id=record.target.deployment_id,
            request_id=record.request_id,
            cache_hit=True,
            attempts=0,
            fallback_path=(),
        )

    def clear(self) -> int:
        """Remove every entry of this gateway's cache; returns how many went (when known)."""
        return self.backend.clear()

    # -- storage -----------------------------------------------------------------------------

    def _load(self, key: str) -> ChatResponse | None:
        try:
            entry = self.backend.load(key)
        except Exception:
            log.warning("cache read failed; answering from the upstream", exc_info=True)
            return None
        if entry is None:
            return None
        usage = entry.get("usage") or {}
        return ChatResponse(
            body=entry["body"],
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                cached_tokens=int(usage.get("cached_tokens", 0)),
                reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
                estimated=bool(usage.get("estimated", False)),
            ),
            provider=entry.get("provider"),
            deployment_id=entry.get("deployment_id"),
        )

    def _store(self, decision: CacheDecision, response: ChatResponse) -> None:
        usage = response.usage
        entry = {
            "body": response.body,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "estimated": usage.estimated,
            },
            "provider": response.provider,
            "deployment_id": response.deployment_id,
        }
        try:
            self.backend.store(decision.key or "", decision.alias, entry, decision.ttl)
        except Exception:
            log.warning("cache write failed; the answer is served but not cached", exc_info=True)


def _origin(cached: ChatResponse, route: AliasRoute) -> Target:
    """The target that produced a cached answer: the live one when the deployment still
    exists, else a price-less description of it (only used to attribute the hit)."""
    for target in route.targets:
        if target.deployment_id == cached.deployment_id:
            return target
    return Target(
        deployment_id=cached.deployment_id or "",
        alias=route.alias,
        provider_id="",
        provider_name=cached.provider or "",
        provider_format=ProviderFormat.OPENAI,
        base_url="",
        provider_model="",
    )


__all__ = [
    "BYPASS",
    "HIT",
    "MISS",
    "CacheDecision",
    "ResponseCache",
    "cache_directives",
    "cache_key",
    "output_cap",
]
