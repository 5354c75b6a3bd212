"""Running the attempt sequence: retries on a deployment, then the next ones and the fallbacks.

:func:`execute` walks the plan, then the alias's fallbacks, retrying retryable upstream
failures with backoff (:mod:`.retry`), feeding every outcome back to the router's state, all
inside one overall deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..catalog import AliasRoute
from ..embeddings import GatewayRequest
from ..errors import (
    ConfigError,
    GatewayError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeoutError,
    header_text,
    without_tracebacks,
)
from ..providers.base import Target
from ..providers.classify import CONTEXT_LENGTH_CODE
from ..wording import counted
from .leases import AttemptLog, FirstLease
from .plan import Plan, Skip
from .retry import MAX_RETRY_WAIT, retry_delay
from .router import Router

T = TypeVar("T")

_FAILED = object()


def execute(
    router: Router,
    settings: dict[str, Any],
    routes: Iterable[AliasRoute],
    attempt: Callable[[Target, float], T],
    deadline: float,
    log: AttemptLog,
    *,
    request: GatewayRequest | None = None,
    resolve: Callable[[str], AliasRoute | None] | None = None,
    hold: bool = False,
    defer: bool = False,
    first: FirstLease | None = None,
    refusal: Callable[[Target], GatewayError | None] | None = None,
) -> tuple[Target, T]:
    """Call ``attempt(target, seconds_left)`` until one succeeds.

    Retryable upstream failures are retried on the same deployment up to
    ``AIGATEWAY_RETRY_MAX_ATTEMPTS`` times (unless its circuit opens meanwhile), then the next
    deployment of the plan is tried, then each fallback alias in order. A context-length error
    switches to the alias's ``context_fallback`` (looked up with ``resolve``) and its
    fallbacks; the caller's other errors end the sequence at once. Nothing runs past
    ``deadline`` (monotonic time). With ``hold``, the winning attempt's in-flight lease is
    kept until ``log.release()`` (streams: until they close); with ``defer``, the winning
    attempt's success and lease are reported by ``log.end(batch)`` (JSON: with the end of the
    request, in one Redis round trip with its budget settlement). ``first``: the plan and the
    first attempt's lease, taken with the request's admission.

    ``refusal(target)``: why ``target`` cannot carry the request (a field its wire format has
    no way to send), or None. Such a target is left out, never called nor counted as an
    attempt: a fallback that cannot carry the request does not turn an upstream outage into
    the caller's fault. When no deployment of the requested alias's best priority can carry
    it, the request can never be served as asked: the first one's refusal is raised before
    any attempt.

    :raises UpstreamError: the last upstream failure when every attempt failed.
    :raises ServiceUnavailableError: 503 ``no_healthy_deployment`` when no deployment could
        even be tried because every circuit is open (the message says which, until when).
    :raises RateLimitError: 429 when every deployment is at its requests-per-minute limit.
    :raises ConfigError: 500 when no deployment was left to try and one was left out of its
        alias because its provider's credentials cannot be decrypted
        (:attr:`.AliasRoute.unreadable`).
    :raises GatewayError: the ``refusal`` of the requested alias's first deployment (above).

    Every error raised carries the ``x-aigateway-attempts`` (and, past the first alias,
    ``x-aigateway-fallback``) headers, like a success, and when a deployment was tried, the
    last one's ``x-aigateway-provider`` and ``x-aigateway-deployment``: the failing upstream is
    named to the client as in the request log.
    """
    try:
        return _execute(
            router,
            settings,
            routes,
            attempt,
            deadline,
            log,
            request=request,
            resolve=resolve,
            hold=hold,
            defer=defer,
            first=first,
            refusal=refusal,
        )
    except GatewayError as error:
        error.headers["x-aigateway-attempts"] = str(log.attempts)
        target = log.last_target
        if target is not None:
            error.headers.setdefault("x-aigateway-provider", header_text(target.provider_name))
            error.headers.setdefault("x-aigateway-deployment", target.deployment_id)
        if len(log.path) > 1:
            error.headers["x-aigateway-fallback"] = ",".join(log.path)
        raise


def _execute(
    router: Router,
    settings: dict[str, Any],
    routes: Iterable[AliasRoute],
    attempt: Callable[[Target, float], T],
    deadline: float,
    log: AttemptLog,
    *,
    request: GatewayRequest | None,
    resolve: Callable[[str], AliasRoute | None] | None,
    hold: bool,
    defer: bool,
    first: FirstLease | None,
    refusal: Callable[[Target], GatewayError | None] | None,
) -> tuple[Target, T]:
    queue: Iterator[AliasRoute] = iter(routes)
    seen: set[str] = set()
    errors: list[UpstreamError] = []
    skipped: list[Skip] = []
    unreadable: str | None = None
    while (route := next(queue, None)) is not None:
        if route.alias in seen:
            continue
        if log.attempts and deadline - time.monotonic() <= 0:
            break  # no time left for this alias: not tried, so not in the fallback path
        seen.add(route.alias)
        unreadable = unreadable or route.unreadable
        if refusal is not None and not _carriable(route, refusal, requested=not log.path, log=log):
            continue  # not one deployment can carry it: not tried, so not in the path
        log.path.append(route.alias)
        plan = first.plan_for(route.alias) if first is not None else None
        if plan is None:
            plan = router.attempt_plan(route, request)
        if refusal is not None:
            plan = Plan(
                [t for t in plan.targets if refusal(t) is None],
                [s for s in plan.skipped if refusal(s.target) is None],
            )
        skipped.extend(plan.skipped)
        try:
            for target in plan.targets:
                result = _run_target(
                    router,
                    settings,
                    target,
                    attempt,
                    deadline,
                    log,
                    errors,
                    skipped,
                    hold,
                    defer,
                    first,
                )
                if result is not _FAILED:
                    return target, result
        except UpstreamClientError as error:
            fallback = route.context_fallback
            if (
                error.code != CONTEXT_LENGTH_CODE
                or not fallback
                or resolve is None
                or fallback in seen
            ):
                raise
            errors.append(error)
            queue = _chain(fallback, resolve)
    if errors:
        raise errors[-1]
    if skipped:
        raise _unavailable(log.path, skipped)
    if unreadable is not None:
        raise ConfigError(unreadable)
    aliases = ", ".join(log.path) or "?"
    raise ServiceUnavailableError(
        f"No enabled deployment can serve model '{aliases}'. Add one with "
        "'flask model deploy' or enable the provider.",
        code="no_healthy_deployment",
    )


def _carriable(
    route: AliasRoute,
    refusal: Callable[[Target], GatewayError | None],
    *,
    requested: bool,
    log: AttemptLog,
) -> bool:
    """Whether a deployment of ``route`` can carry the request. For the requested alias,
    raises the refusal of its first deployment of the best priority when none of that
    priority can (where the request goes whatever the health of each): the request cannot
    be served as asked, the caller's fault (the log row names that deployment)."""
    if not route.targets:
        return True  # nothing to carry it: said as for any alias without deployments
    if requested:
        best = min(t.priority for t in route.targets)
        tier = [t for t in route.targets if t.priority == best]
        first = refusal(tier[0])
        if first is not None and all(refusal(t) is not None for t in tier[1:]):
            log.last_target = tier[0]
            raise first
    return any(refusal(t) is None for t in route.targets)


def _run_target(
    router: Router,
    settings: dict[str, Any],
    target: Target,
    attempt: Callable[[Target, float], Any],
    deadline: float,
    log: AttemptLog,
    errors: list[UpstreamError],
    skipped: list[Skip],
    hold: bool,
    defer: bool,
    first: FirstLease | None = None,
) -> Any:
    """Up to ``AIGATEWAY_RETRY_MAX_ATTEMPTS`` attempts on one deployment; the result, or
    ``_FAILED`` to move on. The first attempt takes the lease of ``first`` when it is for this
    deployment. The caller's errors propagate."""
    max_attempts = max(1, settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"])
    for n in range(1, max_attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UpstreamTimeoutError(
                "The request did not complete within AIGATEWAY_REQUEST_TIMEOUT "
                f"({settings['AIGATEWAY_REQUEST_TIMEOUT']:g} s) across "
                f"{counted(log.attempts, 'attempt')}.",
                retryable=False,
            )
        ticket = first.take(target) if first is not None and n == 1 else None
        if ticket is None:
            ticket = router.begin(target, remaining)
        if isinstance(ticket, Skip):
            skipped.append(ticket)
            return _FAILED
        log.attempts += 1
        log.last_target = target
        started = time.monotonic()
        keep = False
        try:
            result = attempt(target, remaining)
        except UpstreamClientError:
            router.succeeded(ticket, None)
            raise
        except UpstreamError as error:
            # Kept without tracebacks, its own and its causes': they hold this frame, which
            # holds ``errors``, a cycle that would keep every failed attempt's request state
            # alive until the cyclic collector's next pass (``without_tracebacks`` says more).
            errors.append(without_tracebacks(error))
            opened = router.failed(ticket)
            if not error.retryable or n == max_attempts or opened is not None:
                return _FAILED
            if error.retry_after is not None and error.retry_after > MAX_RETRY_WAIT:
                # The upstream asks for longer than the gateway waits between attempts: a
                # retry before its time would fail again. Move on (the next deployment, a
                # fallback, else its Retry-After to the client).
                return _FAILED
            wait = retry_delay(settings, n, error.retry_after)
            if wait >= deadline - time.monotonic():
                return _FAILED
        else:
            keep = True
            if hold:
                log.hold(router, ticket, time.monotonic() - started)
            elif defer:
                log.defer(router, ticket, time.monotonic() - started)
            else:
                router.finish(ticket, time.monotonic() - started)
            return result
        finally:
            if not keep:
                router.release(ticket)
        time.sleep(wait)
    return _FAILED


def _chain(alias: str, resolve: Callable[[str], AliasRoute | None]) -> Iterator[AliasRoute]:
    """``alias`` and then its own fallbacks, as routes (unknown or disabled ones left out)."""
    first = resolve(alias)
    if first is None:
        return
    yield first
    for name in first.fallbacks:
        route = resolve(name)
        if route is not None:
            yield route


def _unavailable(path: Sequence[str], skipped: Sequence[Skip]) -> GatewayError:
    """503 (open circuits) or 429 (RPM limits) naming each deployment and until when."""
    unique = list({s.target.deployment_id: s for s in skipped}.values())
    wait = max(0.0, min(s.until - s.now for s in unique))
    headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    details = "; ".join(s.describe() for s in unique)
    model = path[0] if path else "?"
    if all(s.reason == "rpm" for s in unique):
        return RateLimitError(
            f"Every deployment of model '{model}' is at its requests-per-minute limit: "
            f"{details}. Retry in {wait:.1f} s, or add a deployment with "
            f"'flask model deploy {model} …'.",
            code="deployment_rate_limited",
            headers=headers,
        )
    return ServiceUnavailableError(
        f"No healthy deployment can serve model '{model}': {details}. Retry after that, or "
        f"add another deployment with 'flask model deploy {model} …'.",
        code="no_healthy_deployment",
        headers=headers,
    )
