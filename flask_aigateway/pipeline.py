"""The request path, as named steps (DESIGN §1).

authenticate → authorize(model) → admit (rate limit, budget reservation) → cache lookup →
route (pick a deployment, call, retry, fall back) → account (usage, cost) → settle → finish
(log, metrics). No Flask globals: the ``/v1`` views and ``AIGateway.chat``/``stream`` both call
:meth:`Pipeline.chat` and :meth:`Pipeline.open_stream`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

from . import after_response
from .accounting import Metrics, RequestLogWriter, RequestRecord, cost_of
from .admission import Admission
from .caching import ResponseCache
from .caching.cache import BYPASS
from .catalog import AliasRoute, load_route, wrong_kind
from .embedding_pipeline import embed
from .embeddings import EmbeddingsRequest, GatewayRequest
from .enums import ModelKind, Route
from .errors import GatewayError, NotFoundError, PermissionDeniedError
from .governance import BudgetBook, Gate, Principal, RateLimiter, authenticate
from .pipeline_doors import TRUSTED, DoorChecks
from .pipeline_stream import open_stream
from .pipeline_upstream import call_upstream, carriage
from .providers.base import Target
from .providers.transport import Transport
from .routing import AttemptLog, Router, execute
from .schemas import ChatRequest, ChatResponse, Usage
from .state import GatewayState
from .streaming import ChatStream
from .tokens import completion_pieces, estimate_completion_tokens, estimate_prompt_tokens

T = TypeVar("T")
_Req = TypeVar("_Req", bound=GatewayRequest)


def new_request_id() -> str:
    """A random version-4 UUID as 32 hex digits: what ``uuid.uuid4().hex`` gives, made without
    building a :class:`uuid.UUID` (this runs on every request)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


class Pipeline(DoorChecks):
    """One per app: owns the transport (pooled upstream connections), the router, the rate
    limiter, the budget book, the response cache, metrics and the request-log writer."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.settings = state.settings
        self.transport = Transport.from_settings(self.settings)
        self.router = Router(self.settings, state=state)
        self.limiter = RateLimiter(state)
        self.budgets = BudgetBook(state, flush_log=lambda timeout: self.log_writer.flush(timeout))
        self.gate = Gate(state, self.limiter, self.budgets)
        self.cache = ResponseCache(state)
        self.metrics = Metrics(state)
        self.log_writer = RequestLogWriter(state)

    def close(self) -> None:
        self.transport.close()
        self.budgets.pending.close()
        self.log_writer.close()

    # -- steps ---------------------------------------------------------------------------

    def authenticate(self, api_key: Any, record: RequestRecord) -> Principal | None:
        """The caller's principal; ``api_key`` may be a secret, :data:`TRUSTED`, or a
        :class:`Principal` the caller already authenticated (:meth:`authenticate_first`)."""
        if api_key is TRUSTED:
            return None
        principal = api_key if isinstance(api_key, Principal) else authenticate(self.state, api_key)
        record.key_id = principal.key_id
        record.team_id = principal.team_id
        return principal

    def authorize(
        self,
        request: GatewayRequest,
        principal: Principal | None,
        kind: ModelKind | None = ModelKind.CHAT,
    ) -> AliasRoute:
        """The route of the requested alias, if it exists, this key may use it and it serves
        ``kind`` (None: the caller checks)."""
        if principal is not None and not principal.rules.allows_model(request.model):
            raise PermissionDeniedError(
                f"This API key may not use model '{request.model}'.", param="model"
            )
        route = load_route(self.state, request.model)
        prefix = self.settings["AIGATEWAY_ROUTE_PREFIX"]
        if route is None:
            raise NotFoundError(
                f"The model '{request.model}' does not exist. GET {prefix}/v1/models lists the "
                "models this key can use.",
                param="model",
                code="model_not_found",
            )
        if kind is not None and route.kind is not kind:
            raise wrong_kind(route, kind, prefix)
        return route

    def admit(
        self,
        request: _Req,
        principal: Principal | None,
        route: AliasRoute,
        admission: Admission,
    ) -> _Req:
        """Rate limits first (cheap, and a refused request reserves nothing), then the budget
        reservation of the worst-case cost, atomically across every budget that applies (in
        one Redis script with the rate windows when both are in Redis: :class:`Gate`).

        Returns the request to send: when a budget applies and the client set no output
        limit, one that asks the adapters to send the output cap the reservation assumed
        (``ChatRequest.cap_output``), so the budget holds however long the answer would be.
        """
        self.gate.admit(principal, request, route, admission)
        assert admission.reservation is not None
        if (
            isinstance(request, ChatRequest)
            and admission.reservation.limited
            and request.max_output_tokens is None
        ):
            return replace(request, cap_output=True)
        return request

    def enter(
        self,
        request: _Req,
        api_key: Any,
        record: RequestRecord,
        admission: Admission,
        cache_control: str | None,
        kind: ModelKind | None = ModelKind.CHAT,
        check: Callable[[AliasRoute], None] | None = None,
    ) -> tuple[AliasRoute, _Req, ChatResponse | None]:
        """Every check a door runs before any upstream work, in order: authenticate →
        authorize (the alias, the key's rules, its ``kind``; then ``check``) → the cache
        decision → admit (rate windows, budget reservation; with Redis, the first attempt's
        deployment lease in the same round trip) → the cache key (of the request as admitted)
        → cache lookup.

        Fills the caller's ``admission`` as it goes, so :meth:`finish` releases whatever it
        came to hold however this ends. Returns the alias route, the request to send (capped
        when a budget applies, see :meth:`admit`) and the cached answer (None on a miss).
        """
        principal = self.authenticate(api_key, record)
        route = self.authorize(request, principal, kind)
        if check is not None:
            check(route)
        admission.cache = self.cache.decide(route, cache_control)
        # MISS only once looked up: a request refused at admission never was (it said MISS
        # on a cached alias, BYPASS on another, for the same refusal).
        admission.headers["x-aigateway-cache"] = BYPASS
        if len(route.targets) == 1 and not admission.cache.read:
            client = self.gate.redis_client(principal)
            if client is not None and client is self.router.shared_client:
                # The first attempt's lease rides in the admission's round trip. Only when
                # planning costs nothing (one deployment: several need the store's snapshot
                # first, which a refused request would then pay for) and nothing can stand
                # between the admission and the attempt (a cache lookup may wait for an
                # identical request's answer, and the lease would wait with it).
                admission.first_lease = self.router.first_lease(
                    route, request, self.settings["AIGATEWAY_REQUEST_TIMEOUT"]
                )
        request = self.admit(request, principal, route, admission)
        # Keyed on the request as it will be sent: admitting may cap its output.
        self.cache.bind(admission.cache, request, principal, route)
        cached = self.cache.get(admission.cache, self.deadline(record) - time.monotonic())
        if cached is not None:
            admission.headers["x-aigateway-cache"] = "HIT"
        elif admission.cache.looked_up:
            admission.headers["x-aigateway-cache"] = admission.cache.status
        return route, request, cached

    def routes(self, first: AliasRoute, kind: ModelKind = ModelKind.CHAT) -> Iterator[AliasRoute]:
        """The requested alias, then its fallback chain in order (each alias once; fallbacks
        of another kind left out)."""
        seen = {first.alias}
        yield first
        for alias in first.fallbacks:
            if alias in seen:
                continue
            seen.add(alias)
            route = self.resolve(alias, kind)
            if route is not None:
                yield route

    def resolve(self, alias: str, kind: ModelKind = ModelKind.CHAT) -> AliasRoute | None:
        """The route of another alias (a context-length fallback) of ``kind``, or None."""
        route = load_route(self.state, alias)
        return route if route is not None and route.kind is kind else None

    def route(
        self,
        request: GatewayRequest,
        route: AliasRoute,
        record: RequestRecord,
        attempt: Callable[[Target, float], T],
        *,
        hold: bool = False,
        admission: Admission | None = None,
        refusal: Callable[[Target], GatewayError | None] | None = None,
    ) -> tuple[Target, T, AttemptLog]:
        """Pick deployments, call, retry, fall back (``routing.execute``); the record gets the
        attempts, the fallback path and the deployment tried last, whatever the outcome.
        Fallbacks serve the requested alias's kind only.

        With ``admission``, what the winning attempt still has to tell the router (its
        success and lease; a stream's lease) is reported when the admission ends, in the
        same Redis round trip as the budget settlement. ``refusal``: why a deployment cannot
        carry the request, or None (``routing.execute`` leaves such deployments out)."""
        attempts = AttemptLog()
        if admission is not None:
            if admission.attempts is not None:
                admission.attempts.end()  # an earlier call's outcome, not left pending
            admission.attempts = attempts
        kind = route.kind
        try:
            target, result = execute(
                self.router,
                self.settings,
                self.routes(route, kind),
                attempt,
                self.deadline(record),
                attempts,
                request=request,
                resolve=lambda alias: self.resolve(alias, kind),
                hold=hold,
                defer=admission is not None and not hold,
                first=admission.first_lease if admission is not None else None,
                refusal=refusal,
            )
        finally:
            record.attempts = attempts.attempts
            record.fallback_path = attempts.path if len(attempts.path) > 1 else []
            record.target = record.target or attempts.last_target
        return target, result, attempts

    def deadline(self, record: RequestRecord) -> float:
        """When the request's time is up, on the monotonic clock: ``AIGATEWAY_REQUEST_TIMEOUT``
        after it began, so that what it waited for before routing (an identical request's
        answer, see :meth:`.ResponseCache.get`) counts against the same one deadline."""
        elapsed = time.perf_counter() - record.started
        return time.monotonic() - elapsed + self.settings["AIGATEWAY_REQUEST_TIMEOUT"]

    def account(self, record: RequestRecord, target: Target, usage: Usage) -> None:
        record.target = target
        record.usage = usage
        record.cost = cost_of(usage, target)

    @staticmethod
    def answer(
        record: RequestRecord, target: Target, body: dict[str, Any], headers: dict[str, str]
    ) -> ChatResponse:
        """The answer a JSON door returns once :meth:`account` ran: ``body`` with the usage and
        cost the request is billed, the deployment that served it, its attempts and fallback
        path, as its log row has them, and the ``headers`` of its admission. One place, so
        every door's answer carries the same fields (a cache hit's: :meth:`.ResponseCache.serve`).
        """
        return ChatResponse(
            body=body,
            usage=record.usage,
            cost=record.cost,
            provider=target.provider_name,
            deployment_id=target.deployment_id,
            request_id=record.request_id,
            attempts=record.attempts,
            fallback_path=tuple(record.fallback_path),
            headers=headers,
        )

    def finish(self, record: RequestRecord, admission: Admission | None) -> None:
        """Last step of every request, whatever its outcome: end the admission (settle or
        release what was reserved, correct the token windows, report the router outcome),
        let identical requests waiting on this one's cache miss go, then log and meter it.
        The log row carries the spend the usage counters' rows still need (Redis counters).

        The request's latency is fixed here. With ``AIGATEWAY_FINISH_AFTER_RESPONSE``, inside
        the ``/v1`` blueprint, the rest runs once the answer is sent (:mod:`.after_response`);
        the remaining-budget header it would have set is set now, from the reservation and
        the cost."""
        record.stop_clock()
        if after_response.defer(lambda: self._end(record, admission)):
            if admission is not None and self._charges(record):
                admission.expect_settled(record.cost)
            return
        self._end(record, admission)

    @staticmethod
    def _charges(record: RequestRecord) -> bool:
        """Whether the request's end settles its cost (else it releases the reservation)."""
        return record.status_code < 400 or record.cost > 0

    def _end(self, record: RequestRecord, admission: Admission | None) -> None:
        try:
            if admission is not None:
                try:
                    if self._charges(record):
                        admission.settle(record)
                    else:
                        admission.release(record)
                finally:
                    if admission.cache is not None:
                        record.cache_lookup = admission.cache.looked_up
                        self.cache.release(admission.cache)
            self.metrics.observe(record)
        finally:
            self.log_writer.write(record)

    # -- JSON ------------------------------------------------------------------------------

    def chat(
        self,
        request: ChatRequest,
        api_key: Any,
        request_id: str | None = None,
        *,
        cache_control: str | None = None,
        api_route: Route = Route.CHAT_COMPLETIONS,
    ) -> ChatResponse:
        """Run one non-streaming request through every step; always writes its log row
        (``api_route``: the API door it came in through)."""
        record = RequestRecord(request_id or new_request_id(), alias=request.model)
        record.route = api_route.value
        if request.stream:
            request = replace(request, stream=False)
        if self.settings["AIGATEWAY_LOG_CONTENT"]:
            record.keep_content(request)
        with self.steps(record) as admission:
            route, request, cached = self.enter(request, api_key, record, admission, cache_control)
            if cached is not None:
                record.keep_completion(response=cached)
                return replace(self.cache.serve(cached, record, route), headers=admission.headers)
            target, response, _attempts = self.route(
                request,
                route,
                record,
                lambda t, left: call_upstream(self.transport, request, t, left, record),
                admission=admission,
                refusal=carriage(self.state, request, route),
            )
            usage = response.usage
            if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
                usage = Usage(
                    completion_tokens=estimate_completion_tokens(completion_pieces(response.body)),
                    estimated=True,
                )
            if usage.estimated:
                # The upstream counted nothing; its adapter may have estimated the completion
                # from what the body does not show (an Anthropic answer's thinking).
                usage = replace(usage, prompt_tokens=estimate_prompt_tokens(request))
            self.account(record, target, usage)
            body = response.body
            if not body.get("created"):
                body["created"] = int(time.time())
            sent = body.get("usage")
            if sent is not None:
                # The client reads the counts billed (an answer without usage stays so).
                body["usage"] = usage.to_openai(sent)
            result = self.answer(record, target, body, admission.headers)
            record.keep_completion(response=result)
            self.cache.put(admission.cache, result)
            return result

    def embeddings(
        self,
        request: EmbeddingsRequest,
        api_key: Any,
        request_id: str | None = None,
        *,
        cache_control: str | None = None,
    ) -> ChatResponse:
        """Run one ``/v1/embeddings`` request through the same steps (:mod:`.embedding_pipeline`);
        always writes its log row."""
        return embed(self, request, api_key, request_id or new_request_id(), cache_control)

    # -- streams ---------------------------------------------------------------------------

    def open_stream(
        self,
        request: ChatRequest,
        api_key: Any,
        request_id: str | None = None,
        *,
        cache_control: str | None = None,
        api_route: Route = Route.CHAT_COMPLETIONS,
    ) -> ChatStream:
        """Do every check and open the upstream stream before the first byte is sent
        (:mod:`.pipeline_stream`); the :class:`ChatStream` it returns finishes the request
        however it ends."""
        return open_stream(
            self, request, api_key, request_id or new_request_id(), cache_control, api_route
        )


def get_pipeline(state: GatewayState) -> Pipeline:
    """The app's pipeline, created on first use."""
    pipeline = state.resources.get("pipeline")
    if pipeline is None:
        with state._lock:
            pipeline = state.resources.get("pipeline")
            if pipeline is None:
                pipeline = state.resources["pipeline"] = Pipeline(state)
    return pipeline
