"""API keys (DESIGN §3): create, list, show, update, revoke and rotate; secrets and their hashes.

A secret is ``aigw_`` + 256 random bits, returned once by :func:`create_key` and
:func:`rotate_key` and never stored: the table keeps its SHA-256 and a short display prefix.
A key's rule overrides must fit its team's whole ancestry (see :mod:`flask_aigateway.policy`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..db import utcnow
from ..errors import ConflictError, NotFoundError, ValidationError
from ..governance.auth import hash_secret
from ..governance.policy import RULE_FIELDS, EffectiveRules, check_within, effective_rules, rules_of
from ..models import ApiKey, Team
from ..state import GatewayState
from . import validation
from .teams import UNSET, ancestors, ancestry_rules, chain, load_teams, parse_rules, resolve

SECRET_PREFIX = "aigw_"
#: Characters of the secret kept for display: ``aigw_`` + 7 random characters.
DISPLAY_PREFIX_LENGTH = 12


def generate_secret() -> str:
    """A new key secret: ``aigw_`` + 32 random bytes, URL-safe base64 (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def key_status(key: ApiKey, now: dt.datetime | None = None) -> str:
    """``revoked``, ``expired`` or ``active``."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def _expiry(value: Any, now: dt.datetime) -> dt.datetime | None:
    moment = validation.parse_datetime(
        value,
        "expires_at",
        what="expiry",
        invalid=f"The expiry {value!r} is not an ISO date or datetime or a Unix timestamp in "
        "seconds, e.g. 2027-01-31 (00:00 UTC that day), 2027-01-31T12:00:00Z or 1801440000.",
    )
    if moment is None:
        return None
    moment = validation.in_range(moment, value, "expires_at", what="expiry")
    if moment <= now:
        raise ValidationError(
            f"The expiry {moment.isoformat()} is in the past: give a future date, or revoke "
            "the key to stop it now.",
            param="expires_at",
        )
    return moment


def _get(session: Session, ref: str) -> ApiKey:
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError("The key id is required.", param="key")
    ref = ref.strip()
    key = session.get(ApiKey, ref) if validation.findable(ref) else None
    if key is not None:
        return key
    if ref.startswith(SECRET_PREFIX):
        message = (
            "That looks like a key secret or its prefix, not a key id: keys are addressed by "
            "their id (key_…), as shown by `flask key list`."
        )
    else:
        message = f"No API key with id {ref!r}: use the full id (key_…) shown by `flask key list`."
    raise NotFoundError(message, param="key")


def _attach_team(key: ApiKey, teams: dict[str, Team]) -> None:
    set_committed_value(key, "team", teams.get(key.team_id) if key.team_id else None)


def _check_rules(key: ApiKey, teams: dict[str, Team]) -> None:
    check_within(rules_of(key), ancestry_rules(chain(teams, key.team_id)), what=f"key {key.name!r}")


def create_key(
    state: GatewayState,
    *,
    name: str,
    team: str | None = None,
    budget_per_day: Any = None,
    budget_per_month: Any = None,
    rate_limit: Any = None,
    tokens_per_minute: Any = None,
    models: Any = None,
    expires_at: Any = None,
) -> tuple[ApiKey, str]:
    """Create a key, optionally in ``team`` (id or name). Returns the key and its secret.

    The secret is returned only here: show it once. Overrides are checked against the
    team's whole ancestry; ``expires_at`` (datetime or ISO text, a date meaning its 00:00 UTC)
    must be in the future.

    :raises ValidationError: :raises NotFoundError: unknown team.
    """
    now = utcnow()
    name = validation.name(name)
    rules = parse_rules(
        {
            "budget_per_day": budget_per_day,
            "budget_per_month": budget_per_month,
            "rate_limit": rate_limit,
            "tokens_per_minute": tokens_per_minute,
            "models": models,
        }
    )
    expiry = _expiry(expires_at, now)
    secret = generate_secret()
    with state.transaction() as session:
        teams = load_teams(session, lock=team is not None)
        team_row = resolve(teams, team) if team is not None else None
        key = ApiKey(
            name=name,
            key_hash=hash_secret(secret),
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            team_id=team_row.id if team_row else None,
            expires_at=expiry,
            **rules,
        )
        _check_rules(key, teams)
        session.add(key)
        session.flush()
        _attach_team(key, teams)
    state.invalidate()
    return key, secret


def list_keys(
    state: GatewayState,
    *,
    team: str | None = None,
    include_revoked: bool = True,
    include_expired: bool = True,
) -> list[ApiKey]:
    """Keys, oldest first, each with ``team`` loaded; ``team`` filters to that team's own keys."""
    now = utcnow()
    with state.transaction() as session:
        teams = load_teams(session)
        stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if team is not None:
            stmt = stmt.where(ApiKey.team_id == resolve(teams, team).id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        if not include_expired:
            stmt = stmt.where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
        keys = list(session.scalars(stmt))
        for key in keys:
            _attach_team(key, teams)
    return keys


def get_key(state: GatewayState, ref: str) -> ApiKey:
    """The key with full id ``ref``, its team loaded. :raises NotFoundError:"""
    with state.transaction() as session:
        key = _get(session, ref)
        _attach_team(key, load_teams(session))
    return key


def key_rules(session: Session, key: ApiKey) -> EffectiveRules:
    """The effective rules of ``key``: its overrides, its team's, then every ancestor's."""
    return effective_rules(
        [rules_of(key), *(rules_of(team) for team in ancestors(session, key.team_id))]
    )


def key_info(state: GatewayState, ref: str) -> dict[str, Any]:
    """A key with its team path (root first), own overrides and effective rules."""
    with state.transaction() as session:
        key = _get(session, ref)
        teams = load_teams(session)
        _attach_team(key, teams)
        lineage = chain(teams, key.team_id)
    return {
        "key": key_to_dict(key),
        "team_path": [{"id": t.id, "name": t.name} for t in reversed(lineage)],
        "rules": rules_of(key).to_dict(),
        "effective": effective_rules([rules_of(key), *(rules_of(t) for t in lineage)]).to_dict(),
    }


def update_key(state: GatewayState, ref: str, **changes: Any) -> ApiKey:
    """Change a key's ``name``, ``team`` (id/name, ``None`` = no team), ``expires_at``
    (``None`` = never) and/or rules (``None`` clears one). Absent or :data:`UNSET` arguments
    stay as they are. The result is checked against the (new) team's whole ancestry.

    :raises ValidationError: :raises NotFoundError: :raises ConflictError: the key is revoked.
    """
    unknown = sorted(set(changes) - {"name", "team", "expires_at", *RULE_FIELDS})
    if unknown:
        raise TypeError(f"update_key() got unexpected arguments: {', '.join(unknown)}")
    now = utcnow()
    new_name = changes.get("name", UNSET)
    if new_name is not UNSET:
        new_name = validation.name(new_name)
    rules = parse_rules({f: changes[f] for f in RULE_FIELDS if f in changes})
    expiry = changes.get("expires_at", UNSET)
    if expiry is not UNSET:
        expiry = _expiry(expiry, now)
    team_ref = changes.get("team", UNSET)
    with state.transaction() as session, session.no_autoflush:
        teams = load_teams(session, lock=True)
        key = _get(session, ref)
        if key.revoked_at is not None:
            raise ConflictError(
                f"Key {key.id} was revoked and can no longer be changed; create a new key "
                "with `flask key create`.",
                param="key",
            )
        if new_name is not UNSET:
            key.name = new_name
        if team_ref is not UNSET:
            key.team_id = resolve(teams, team_ref).id if team_ref is not None else None
        if expiry is not UNSET:
            key.expires_at = expiry
        for field, value in rules.items():
            setattr(key, field, value)
        _check_rules(key, teams)
        _attach_team(key, teams)
    state.invalidate()
    return key


def revoke_key(state: GatewayState, ref: str) -> tuple[ApiKey, bool]:
    """Revoke a key for good (every secret of it, including one in a rotation grace period).

    Idempotent: returns the key and whether this call revoked it (False: it already was).
    """
    with state.transaction() as session:
        key = _get(session, ref)
        changed = key.revoked_at is None
        if changed:
            key.revoked_at = utcnow()
        _attach_team(key, load_teams(session))
    state.invalidate()
    return key, changed


def rotate_key(state: GatewayState, ref: str, *, grace_seconds: Any = 0) -> tuple[ApiKey, str]:
    """Give a key a new secret, keeping its id, rules and history. Returns it and the secret.

    With ``grace_seconds`` > 0 the secret in use until now stays valid that long (one
    previous secret at most: a second rotation ends the first one's grace period).

    An expired key is refused like a revoked one: its new secret would be refused too
    (``expired_api_key``); extend the expiry first.

    :raises ValidationError: bad grace period. :raises ConflictError: the key is revoked or
        expired.
    """
    grace = validation.integer(grace_seconds, "grace_seconds", minimum=0)
    secret = generate_secret()
    with state.transaction() as session:
        key = _get(session, ref)
        if key.revoked_at is not None:
            raise ConflictError(
                f"Key {key.id} was revoked; create a new key instead of rotating it.",
                param="key",
            )
        now = utcnow()
        if key.expires_at is not None and key.expires_at <= now:
            raise ConflictError(
                f"Key {key.id} expired on {key.expires_at:%Y-%m-%d %H:%M} UTC: a new secret "
                "would be refused too. Extend its expiry first (`flask key update "
                f"{key.id} --expires …`, or Edit in the dashboard), then rotate it; or create "
                "a new key.",
                param="key",
            )
        key.previous_key_hash = key.key_hash if grace else None
        key.previous_expires_at = now + dt.timedelta(seconds=grace) if grace else None
        key.key_hash = hash_secret(secret)
        key.prefix = secret[:DISPLAY_PREFIX_LENGTH]
        _attach_team(key, load_teams(session))
    state.invalidate()
    return key, secret


def key_to_dict(key: ApiKey, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """A key as plain data, never its hash or secret: id, name, display prefix, team id and
    name, status (active/revoked/expired), own rules, expiry, revocation, last use and the end
    of a rotation grace period (``previous_valid_until``, None when none is running)."""
    now = now or utcnow()
    grace = key.previous_expires_at
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "team_id": key.team_id,
        "team": key.team.name if key.team is not None else None,
        "status": key_status(key, now),
        **rules_of(key).to_dict(),
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "previous_valid_until": grace if key.previous_key_hash and grace and grace > now else None,
        "created_at": key.created_at,
    }


__all__ = [
    "DISPLAY_PREFIX_LENGTH",
    "SECRET_PREFIX",
    "create_key",
    "generate_secret",
    "get_key",
    "hash_secret",
    "key_info",
    "key_rules",
    "key_status",
    "key_to_dict",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "update_key",
]
