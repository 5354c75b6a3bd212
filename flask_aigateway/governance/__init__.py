"""Governance: who may call what, and how much.

Decides, before any upstream work, whether a request goes ahead: the API key and its
effective rules along key → team → ancestors (:mod:`.auth`, :mod:`.policy`), the requests- and
tokens-per-minute windows of the key and every team, admitted at once (:mod:`.ratelimit` over
:mod:`.rate_windows`), and the worst-case budget reservation settled to the real cost later
(:mod:`.budgets`: the worst case from :mod:`.budget_estimate`, held by
:mod:`.budget_reservation`, over the SQL or Redis counters of :mod:`.budget_store` /
:mod:`.budget_store_redis`) — both in one Redis script when they share a Redis
(:mod:`.gate`). :mod:`.throttles` is Flask-Limiter's protection of the gateway
itself (failed authentications per client address).
"""

from __future__ import annotations

from .auth import Principal, authenticate, bearer_token, hash_secret
from .budgets import BudgetBook, Reservation
from .gate import Gate
from .ratelimit import RateLimiter, RateTicket

__all__ = [
    "BudgetBook",
    "Gate",
    "Principal",
    "RateLimiter",
    "RateTicket",
    "Reservation",
    "authenticate",
    "bearer_token",
    "hash_secret",
]
