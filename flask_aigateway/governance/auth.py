"""Authentication of API keys: from a bearer secret to a :class:`Principal` with its rules.

Verified keys are cached in-process for ``AIGATEWAY_KEY_CACHE_SECONDS`` so the hot path does
no database round trip; a revocation made through this process clears the cache at once (the
services call ``state.invalidate()``) and reaches other processes within that many seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..db import utcnow
from ..errors import AuthenticationError
from ..models import ApiKey, Team
from ..state import GatewayState
from .policy import EffectiveRules, effective_rules, rules_of

log = logging.getLogger(__name__)

_CACHE = "principals"
#: last_used_at is written at most this often per key and process.
_TOUCH_INTERVAL = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its team chain (nearest first) and the effective rules."""

    key_id: str
    key_name: str
    team_id: str | None
    team_ids: tuple[str, ...]
    rules: EffectiveRules
    expires_at: dt.datetime | None = None
    #: Set when the secret used is the previous one of a rotated key.
    grace_until: dt.datetime | None = None


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest stored for ``secret`` (and looked up by authentication)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (None when absent or malformed)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(state: GatewayState, secret: str | None) -> Principal:
    """The principal of ``secret``; raises :class:`AuthenticationError` saying why not.

    The message never echoes the key. Expiry is checked on every call, not only on a cache
    miss, so an expired key stops at its second.
    """
    if not secret:
        raise AuthenticationError(
            "Missing API key. Send it as 'Authorization: Bearer aigw_…'.", code="missing_api_key"
        )
    digest = hash_secret(secret)
    cache = state.cache(_CACHE)
    now_mono = time.monotonic()
    entry = cache.get(digest)
    if entry is None or entry[1] <= now_mono:
        principal = _load(state, digest)
        cache[digest] = (principal, now_mono + state.settings["AIGATEWAY_KEY_CACHE_SECONDS"])
    else:
        principal = entry[0]
    now = utcnow()
    if principal.expires_at is not None and principal.expires_at <= now:
        raise AuthenticationError("This API key has expired.", code="expired_api_key")
    if principal.grace_until is not None and principal.grace_until <= now:
        raise AuthenticationError(
            "This API key was rotated and its old secret is no longer valid.",
            code="invalid_api_key",
        )
    return principal


def _load(state: GatewayState, digest: str) -> Principal:
    with state.transaction() as session:
        key = session.scalars(
            select(ApiKey).where(or_(ApiKey.key_hash == digest, ApiKey.previous_key_hash == digest))
        ).first()
        if key is None:
            raise AuthenticationError("Invalid API key.", code="invalid_api_key")
        current = hmac.compare_digest(key.key_hash, digest)
        if not current and not hmac.compare_digest(key.previous_key_hash or "", digest):
            raise AuthenticationError("Invalid API key.", code="invalid_api_key")
        if key.revoked_at is not None:
            raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
        grace_until = None
        if not current:
            grace_until = key.previous_expires_at or utcnow()
        levels = [rules_of(key)]
        team_ids: list[str] = []
        team: Team | None = key.team
        while team is not None and team.id not in team_ids:
            team_ids.append(team.id)
            levels.append(rules_of(team))
            team = team.parent
        now = utcnow()
        touch = key.last_used_at is None or now - key.last_used_at >= _TOUCH_INTERVAL
        principal = Principal(
            key_id=key.id,
            key_name=key.name,
            team_id=key.team_id,
            team_ids=tuple(team_ids),
            rules=effective_rules(levels),
            expires_at=key.expires_at,
            grace_until=grace_until,
        )
    if touch:
        # Its own short write, after the read: on SQLite it may have to wait for the write
        # lock, which it does off the gevent hub (GatewayState.write). Bookkeeping only: a
        # failure is logged and the request goes on.
        try:
            state.write(
                lambda session: session.execute(
                    update(ApiKey).where(ApiKey.id == principal.key_id).values(last_used_at=now)
                )
            )
        except SQLAlchemyError:
            log.warning("could not record the last use of key %s", principal.key_id, exc_info=True)
    return principal
