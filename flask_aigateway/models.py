"""SQLAlchemy models of everything the gateway stores (DESIGN §2). All tables are ``aigw_*``."""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import Base, Money, UTCDateTime, utcnow
from .enums import ModelKind, Route

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id(prefix: str) -> str:
    """A public id such as ``team_3f9a0c1d2b4e5f60``: typed, unguessable enough, never reused."""
    return f"{prefix}_{secrets.token_hex(8)}"


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class RulesMixin:
    """Rules shared by teams and keys. ``None`` means "no limit of its own"."""

    budget_per_day: Mapped[Decimal | None] = mapped_column(Money())
    budget_per_month: Mapped[Decimal | None] = mapped_column(Money())
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    #: Whitelist of aliases: ``None`` = all, ``[]`` = none, ``"prefix*"`` = prefix wildcard.
    models: Mapped[list[str] | None] = mapped_column(JSON)


class Provider(TimestampMixin, Base):
    __tablename__ = "aigw_providers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("prov"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    format: Mapped[str] = mapped_column(String(20))
    base_url: Mapped[str | None] = mapped_column(String(500))
    #: Fernet token of the credential; never returned by any listing.
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    #: Masked form of the credential (last four characters) for listings.
    api_key_hint: Mapped[str | None] = mapped_column(String(20))
    api_version: Mapped[str | None] = mapped_column(String(40))
    extra_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    deployments: Mapped[list[Deployment]] = relationship(back_populates="provider")


class ModelAlias(TimestampMixin, Base):
    __tablename__ = "aigw_models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    alias: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[str] = mapped_column(String(20), default="weighted")
    #: Ordered aliases tried when every deployment of this one fails.
    fallbacks: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Alias tried instead when the upstream says the prompt is too long.
    context_fallback: Mapped[str | None] = mapped_column(String(200))
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    #: Per-alias cache TTL in seconds; ``None`` follows the global setting, 0 disables.
    cache_ttl: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: What the alias serves (:class:`~.enums.ModelKind`): ``chat`` or ``embedding``.
    kind: Mapped[str] = mapped_column(
        String(20), default=ModelKind.CHAT.value, server_default=ModelKind.CHAT.value
    )

    deployments: Mapped[list[Deployment]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        order_by="Deployment.created_at",
    )


class Deployment(TimestampMixin, Base):
    __tablename__ = "aigw_deployments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dep"))
    model_id: Mapped[str] = mapped_column(
        ForeignKey("aigw_models.id", ondelete="CASCADE"), index=True
    )
    provider_id: Mapped[str] = mapped_column(
        ForeignKey("aigw_providers.id", ondelete="RESTRICT"), index=True
    )
    provider_model: Mapped[str] = mapped_column(String(200))
    #: USD per million tokens.
    input_price: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    output_price: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    #: USD per million cached prompt tokens; ``None`` = the input price.
    cached_input_price: Mapped[Decimal | None] = mapped_column(Money())
    #: Lower is preferred; higher priorities serve only when every better one is unhealthy.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    model: Mapped[ModelAlias] = relationship(back_populates="deployments")
    provider: Mapped[Provider] = relationship(back_populates="deployments", lazy="joined")


class Team(TimestampMixin, RulesMixin, Base):
    __tablename__ = "aigw_teams"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("team"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("aigw_teams.id", ondelete="RESTRICT"), index=True
    )

    parent: Mapped[Team | None] = relationship(remote_side="Team.id", back_populates="children")
    children: Mapped[list[Team]] = relationship(back_populates="parent")
    keys: Mapped[list[ApiKey]] = relationship(back_populates="team")


class ApiKey(TimestampMixin, RulesMixin, Base):
    __tablename__ = "aigw_api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(100))
    #: SHA-256 hex of the secret; the secret itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: First characters of the secret, enough to recognise it in a list.
    prefix: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("aigw_teams.id", ondelete="RESTRICT"), index=True
    )
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: After a rotation the previous secret stays valid until ``previous_expires_at``.
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    previous_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    team: Mapped[Team | None] = relationship(back_populates="keys")


class UsageCounter(Base):
    """Spend and outstanding reservations of one scope in one UTC period: the budget truth."""

    __tablename__ = "aigw_usage_counters"
    __table_args__ = (UniqueConstraint("scope", "scope_id", "period", "period_start"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(10))
    scope_id: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(10))
    period_start: Mapped[dt.date] = mapped_column(Date)
    spent: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class RequestLog(Base):
    """One row per request that reached the pipeline, whatever its outcome."""

    __tablename__ = "aigw_request_logs"
    __table_args__ = (
        Index("ix_aigw_request_logs_key_time", "key_id", "created_at"),
        Index("ix_aigw_request_logs_alias_time", "alias", "created_at"),
        Index("ix_aigw_request_logs_team_time", "team_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    key_id: Mapped[str | None] = mapped_column(String(40))
    team_id: Mapped[str | None] = mapped_column(String(40))
    alias: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    provider_model: Mapped[str | None] = mapped_column(String(200))
    status_code: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fallback_path: Mapped[list[str] | None] = mapped_column(JSON)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The API door (:class:`~.enums.Route`): chat.completions, messages, embeddings…
    route: Mapped[str] = mapped_column(
        String(40),
        default=Route.CHAT_COMPLETIONS.value,
        server_default=Route.CHAT_COMPLETIONS.value,
    )
    prompt_text: Mapped[str | None] = mapped_column(Text)
    completion_text: Mapped[str | None] = mapped_column(Text)


class CacheEntry(Base):
    """A cached response for the SQL cache backend."""

    __tablename__ = "aigw_cache_entries"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


#: Upper bounds in milliseconds of the latency histogram kept in :class:`UsageRollup` (one
#: column per bound plus one for slower requests). The Prometheus duration histograms use the
#: same bounds, so percentiles from the database and from a scrape agree.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    10,
    25,
    50,
    100,
    250,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    7500,
    10000,
    15000,
    20000,
    30000,
    60000,
)


class RollupMeasuresMixin:
    """The dimensions (``""`` = none) and measures shared by the hourly and daily rollups."""

    key_id: Mapped[str] = mapped_column(String(40), default="")
    team_id: Mapped[str] = mapped_column(String(40), default="")
    alias: Mapped[str] = mapped_column(String(200), default="")
    provider: Mapped[str] = mapped_column(String(100), default="")
    #: The API door (:class:`~.enums.Route`); ``""`` for rows rolled up before it was kept.
    route: Mapped[str] = mapped_column(String(40), default="", server_default="")
    #: The deployment that served (or last failed) the request; ``""`` for none or for rows
    #: rolled up before it was kept (the request log keeps it per row).
    deployment_id: Mapped[str] = mapped_column(String(40), default="", server_default="")
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)
    budget_exceeded: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)
    streams: Mapped[int] = mapped_column(BigInteger, default=0)
    fallbacks: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_count: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_10: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_25: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_50: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_100: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_250: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_500: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_750: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_1000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_1500: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_2000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_3000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_5000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_7500: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_10000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_15000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_20000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_30000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_le_60000: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_inf: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageRollup(RollupMeasuresMixin, Base):
    """Usage of one UTC hour per key x team x alias x provider x route x deployment, kept
    current by the request-log writer (one upsert per batch, in the same transaction as the
    raw rows) so statistics never scan the raw log. ``""`` stands for "none" in the six dimensions
    (unique constraints treat NULLs as distinct). ``lat_le_<ms>`` count the requests whose
    latency fell in that bucket (above the previous bound), ``lat_inf`` the slower ones."""

    __tablename__ = "aigw_usage_rollups"
    __table_args__ = (
        UniqueConstraint(
            "hour",
            "key_id",
            "team_id",
            "alias",
            "provider",
            "route",
            "deployment_id",
            name="uq_aigw_usage_rollups_dimensions",
        ),
        Index("ix_aigw_usage_rollups_key_hour", "key_id", "hour"),
        Index("ix_aigw_usage_rollups_team_hour", "team_id", "hour"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class UsageDailyRollup(RollupMeasuresMixin, Base):
    """Usage of one UTC day per key x team x alias x provider x route x deployment: the same
    measures as :class:`UsageRollup` (``day`` is the day's midnight UTC), kept by the
    request-log writer in the same transaction as the hourly rows, so month-long statistics
    read a day's row instead of its 24 hourly ones."""

    __tablename__ = "aigw_usage_daily_rollups"
    __table_args__ = (
        UniqueConstraint(
            "day",
            "key_id",
            "team_id",
            "alias",
            "provider",
            "route",
            "deployment_id",
            name="uq_aigw_usage_daily_rollups_dimensions",
        ),
        Index("ix_aigw_usage_daily_rollups_key_day", "key_id", "day"),
        Index("ix_aigw_usage_daily_rollups_team_day", "team_id", "day"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    day: Mapped[dt.datetime] = mapped_column(UTCDateTime())


__all__ = [
    "ApiKey",
    "Base",
    "CacheEntry",
    "Deployment",
    "ModelAlias",
    "Provider",
    "RequestLog",
    "Team",
    "UsageCounter",
    "UsageDailyRollup",
    "UsageRollup",
]


class StoredResponse(Base):
    """A Responses API response kept for ``previous_response_id`` and ``GET /v1/responses``
    (``store``): its own input items, its output items, and the whole response object.
    Belongs to the key that created it; pruned with the request log."""

    __tablename__ = "aigw_responses"
    __table_args__ = (Index("ix_aigw_responses_key_time", "key_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    key_id: Mapped[str | None] = mapped_column(String(40))
    team_id: Mapped[str | None] = mapped_column(String(40))
    previous_response_id: Mapped[str | None] = mapped_column(String(80))
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    output_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
