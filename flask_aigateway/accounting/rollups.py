"""Hourly and daily usage rollups of the request log, latency percentiles from their
histogram, and the pruning of raw rows past retention.

The request-log writer calls :func:`write_batch`: the raw rows, the increments of their
hourly and daily rollups and the spend the rows carry for the usage counters (when the live
counters are in Redis) go into one transaction, so they never disagree. Increments are
atomic upserts (``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n`` on PostgreSQL and
SQLite), so any number of processes can write the same rollup row concurrently. The upsert
statements are built once per table and dialect and executed with the batch's rows as
parameters, so a batch costs its rows, not a freshly compiled statement.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import LATENCY_BUCKETS_MS, RequestLog, UsageCounter, UsageDailyRollup, UsageRollup
from ..state import GatewayState
from .record import BUDGET_EXCEEDED, COUNTER_SPEND, RATE_LIMITED

log = logging.getLogger(__name__)

DIMENSIONS = ("hour", "key_id", "team_id", "alias", "provider", "route", "deployment_id")
#: The dimensions of :class:`~.models.UsageDailyRollup` (``day`` is the day's midnight UTC).
DAILY_DIMENSIONS = ("day", "key_id", "team_id", "alias", "provider", "route", "deployment_id")
#: One histogram column per bound of :data:`LATENCY_BUCKETS_MS`, then the overflow column.
BUCKET_COLUMNS: tuple[str, ...] = (
    *(f"lat_le_{bound}" for bound in LATENCY_BUCKETS_MS),
    "lat_inf",
)
COUNTERS = (
    "requests",
    "errors",
    "rate_limited",
    "budget_exceeded",
    "cache_hits",
    "streams",
    "fallbacks",
    "estimated",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
    *BUCKET_COLUMNS,
)

assert set(BUCKET_COLUMNS) <= set(UsageRollup.__table__.c.keys()), "rollup columns and bounds"
assert set(COUNTERS) <= set(UsageDailyRollup.__table__.c.keys()), "daily and hourly measures"

#: Raw rows deleted per transaction when pruning (keeps locks short).
PRUNE_BATCH = 5000
#: No request-log row is older than this: a retention reaching further back prunes nothing.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The start of ``moment``'s UTC hour."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: dt.datetime) -> dt.datetime:
    """Midnight UTC of ``moment``'s UTC day."""
    return moment.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_column(latency_ms: float) -> str:
    """The histogram column that counts a request of ``latency_ms``."""
    return BUCKET_COLUMNS[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)]


def _zero() -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    row["cost"] = Decimal(0)
    row["latency_ms_sum"] = 0.0
    row["ttft_ms_sum"] = 0.0
    return row


def rollup(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate request-log rows (as :meth:`RequestRecord.to_row` makes them) into rollup
    increments, one per hour x key x team x alias x provider x route x deployment, sorted by
    those dimensions (a fixed order keeps concurrent upserts from deadlocking on
    PostgreSQL)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        dims = (
            hour_of(row["created_at"]),
            row["key_id"] or "",
            row["team_id"] or "",
            row["alias"] or "",
            row["provider"] or "",
            row.get("route") or "",
            row.get("deployment_id") or "",
        )
        acc = merged.get(dims)
        if acc is None:
            acc = merged[dims] = {**dict(zip(DIMENSIONS, dims, strict=True)), **_zero()}
        status = row["status_code"]
        acc["requests"] += 1
        acc["errors"] += status >= 400
        acc["rate_limited"] += row["error_type"] == RATE_LIMITED
        acc["budget_exceeded"] += row["error_type"] == BUDGET_EXCEEDED
        acc["cache_hits"] += bool(row["cache_hit"])
        acc["streams"] += bool(row["stream"])
        acc["fallbacks"] += bool(row["fallback_path"])
        acc["estimated"] += bool(row["usage_estimated"])
        acc["prompt_tokens"] += row["prompt_tokens"] or 0
        acc["completion_tokens"] += row["completion_tokens"] or 0
        acc["cached_tokens"] += row["cached_tokens"] or 0
        acc["cost"] += row["cost"] or Decimal(0)
        latency = row["latency_ms"] or 0.0
        acc["latency_ms_sum"] += latency
        acc[bucket_column(latency)] += 1
        if row["ttft_ms"] is not None:
            acc["ttft_ms_sum"] += row["ttft_ms"]
            acc["ttft_count"] += 1
    return [merged[dims] for dims in sorted(merged, key=lambda d: (d[0].isoformat(), *d[1:]))]


def daily(increments: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Merge hourly increments (as :func:`rollup` makes them) into daily ones, one per day x
    key x team x alias x provider x route x deployment, sorted by those dimensions like
    :func:`rollup`'s."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for increment in increments:
        dims = (day_of(increment["hour"]), *(increment[name] for name in DIMENSIONS[1:]))
        acc = merged.get(dims)
        if acc is None:
            merged[dims] = {
                **dict(zip(DAILY_DIMENSIONS, dims, strict=True)),
                **{name: increment[name] for name in COUNTERS},
            }
            continue
        for name in COUNTERS:
            acc[name] += increment[name]
    return [merged[dims] for dims in sorted(merged, key=lambda d: (d[0].isoformat(), *d[1:]))]


def upsert_insert(dialect: str) -> Any:
    """The ``insert`` with ``on_conflict_do_update`` of ``dialect`` (postgresql or sqlite)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert_statement(dialect: str, table: Table, dimensions: Sequence[str]) -> Any:
    """The parameterised upsert of ``table`` on ``dialect``, built on first use and reused
    (SQLAlchemy then serves its compiled form from its statement cache)."""
    stmt = _UPSERTS.get((dialect, table.name))
    if stmt is None:
        base = upsert_insert(dialect)(table)
        stmt = base.on_conflict_do_update(
            index_elements=list(dimensions),
            set_={name: table.c[name] + base.excluded[name] for name in COUNTERS},
        )
        _UPSERTS[(dialect, table.name)] = stmt
    return stmt


def _upsert(
    session: Session,
    table: Table,
    dimensions: Sequence[str],
    increments: Sequence[Mapping[str, Any]],
) -> None:
    if not increments:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        session.execute(
            _upsert_statement(dialect, table, dimensions), [dict(i) for i in increments]
        )
        return
    # Other databases: update, else insert (correct within one process, which is what a
    # database without an atomic upsert can offer).
    for increment in increments:
        where = [table.c[name] == increment[name] for name in dimensions]
        result = session.execute(
            update(table)
            .where(*where)
            .values({name: table.c[name] + increment[name] for name in COUNTERS})
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(insert(table).values(dict(increment)))


def upsert_rollups(session: Session, increments: Sequence[Mapping[str, Any]]) -> None:
    """Add hourly ``increments`` (from :func:`rollup`) to their hourly rollup rows and to the
    daily rows of their days, creating the rows that do not exist yet."""
    _upsert(session, cast(Table, UsageRollup.__table__), DIMENSIONS, increments)
    _upsert(session, cast(Table, UsageDailyRollup.__table__), DAILY_DIMENSIONS, daily(increments))


#: The columns of a usage counter's row that name it.
_COUNTER_COLUMNS = ("scope", "scope_id", "period", "period_start")
_COUNTER_UPSERTS: dict[str, Any] = {}


def counter_spend(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spend ``rows`` carry for the usage counters (:data:`~.record.COUNTER_SPEND`),
    summed per counter and sorted by counter: the order in which every writer takes counter
    rows (no deadlocks), and no row named twice in one statement."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        for scope, scope_id, period, start, spent, requests in row.get(COUNTER_SPEND) or ():
            sums = merged.get((scope, scope_id, period, start))
            if sums is None:
                merged[(scope, scope_id, period, start)] = [spent, requests]
            else:
                sums[0] += spent
                sums[1] += requests
    now = utcnow()
    return [
        {
            **dict(zip(_COUNTER_COLUMNS, key, strict=True)),
            "spent": spent,
            "reserved": Decimal(0),
            "requests": requests,
            "updated_at": now,
        }
        for key, (spent, requests) in sorted(merged.items())
    ]


def _counter_upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE`` adding ``spent`` and ``requests`` to a counter's row
    (``reserved`` untouched), built once per dialect."""
    stmt = _COUNTER_UPSERTS.get(dialect)
    if stmt is None:
        table = cast(Table, UsageCounter.__table__)
        base = upsert_insert(dialect)(table)
        stmt = _COUNTER_UPSERTS[dialect] = base.on_conflict_do_update(
            index_elements=list(_COUNTER_COLUMNS),
            set_={
                "spent": table.c.spent + base.excluded.spent,
                "requests": table.c.requests + base.excluded.requests,
                "updated_at": base.excluded.updated_at,
            },
        )
    return stmt


def add_counter_spend(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add the spend ``rows`` carry to the usage counters' rows, creating missing rows."""
    spend = counter_spend(rows)
    if spend:
        session.execute(_counter_upsert(session.get_bind().dialect.name), spend)


def _log_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` without what is not a column of the request log."""
    if COUNTER_SPEND not in row:
        return dict(row)
    return {name: value for name, value in row.items() if name != COUNTER_SPEND}


def write_batch(state: GatewayState, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert request-log rows, add them to their hourly and daily rollups and add the spend
    they carry to the usage counters, in one transaction."""
    if not rows:
        return
    with state.transaction() as session:
        insert_log_rows(session, rows)
        upsert_rollups(session, rollup(rows))
        add_counter_spend(session, rows)


def insert_log_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """The raw rows, in the session's transaction: on PostgreSQL through psycopg one ``COPY``,
    elsewhere an executemany of one INSERT.

    psycopg runs an executemany as a pipeline that waits for the socket after every row,
    and under gevent each wait goes through the hub: about 120 µs of CPU a row, against 45
    with ``COPY`` (a batch of 68 realistic rows, rollups included) — on PostgreSQL + Redis
    the log writer was about a tenth of a request's CPU. The values go through the columns'
    own bind processors (money, UTC datetimes, JSON), as the INSERT's do, and an absent
    column gets its Python default, so both paths store the same row (a test compares
    them).
    """
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        session.execute(insert(RequestLog), [_log_row(row) for row in rows])
        return
    plan = _copy_plan(dialect)
    driver: Any = connection.connection.driver_connection
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(plan.sql) as copy:
            for row in rows:
                copy.write_row([column(row) for column in plan.columns])
    except dbapi_error as error:
        # As SQLAlchemy raises it for an execute, so callers tell a missing table, a refused
        # value or a lost connection apart as they do for the INSERT (a broken connection is
        # found by the pool's pre-ping at its next checkout).
        raise DBAPIError.instance(plan.sql, None, error, dbapi_error, dialect=dialect) from error


class _CopyPlan:
    """The ``COPY`` statement of the request log for one dialect, and per column a function
    from a row to the value to send."""

    def __init__(self, dialect: Any) -> None:
        table = cast(Table, RequestLog.__table__)
        columns = [c for c in table.columns if not (c.primary_key and c.autoincrement)]
        self.sql = f"COPY {table.name} ({', '.join(c.name for c in columns)}) FROM STDIN"
        self.columns = [_copy_value(c, dialect) for c in columns]


def _copy_value(column: Any, dialect: Any) -> Any:
    name = column.name
    process = column.type._cached_bind_processor(dialect)
    default = column.default

    def value(row: Mapping[str, Any]) -> Any:
        if name in row:
            found = row[name]
        elif default is None:
            found = None
        elif default.is_callable:
            found = default.arg(None)
        else:
            found = default.arg
        return process(found) if process is not None and found is not None else found

    return value


_COPY_PLANS: weakref.WeakKeyDictionary[Any, _CopyPlan] = weakref.WeakKeyDictionary()


def _copy_plan(dialect: Any) -> _CopyPlan:
    plan = _COPY_PLANS.get(dialect)
    if plan is None:
        plan = _COPY_PLANS[dialect] = _CopyPlan(dialect)
    return plan


def write_spend(state: GatewayState, rows: Sequence[Mapping[str, Any]]) -> None:
    """Only the usage-counter spend of ``rows``, in one transaction: for rows the database
    refused, so their cost still reaches the counters."""
    if any(row.get(COUNTER_SPEND) for row in rows):
        with state.transaction() as session:
            add_counter_spend(session, rows)


def prune_request_log(
    state: GatewayState,
    *,
    older_than_days: int | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Delete raw request-log rows older than ``older_than_days`` (default
    ``AIGATEWAY_LOG_RETENTION_DAYS``; 0 keeps everything) and return how many went.

    Works through the ``created_at`` index in batches of :data:`PRUNE_BATCH`, one short
    transaction each; rollups are never pruned. Stored Responses API responses share this
    retention and go with them. Idempotent: several processes may run it.
    """
    days = (
        state.settings["AIGATEWAY_LOG_RETENTION_DAYS"]
        if older_than_days is None
        else (older_than_days)
    )
    if days <= 0:
        return 0
    now = now or utcnow()
    if days > (now - _EPOCH).days:
        return 0  # no row is older than the Unix epoch (and the subtraction could overflow)
    cutoff = now - dt.timedelta(days=days)
    removed = 0
    while True:
        with state.transaction() as session:
            ids = list(
                session.scalars(
                    select(RequestLog.id)
                    .where(RequestLog.created_at < cutoff)
                    .order_by(RequestLog.created_at)
                    .limit(PRUNE_BATCH)
                )
            )
            if ids:
                session.execute(delete(RequestLog).where(RequestLog.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    if removed:
        log.info("pruned %d request-log rows older than %s", removed, cutoff.isoformat())
    from ..responses.store import prune as prune_responses  # stored responses share retention

    gone = prune_responses(state, cutoff)
    if gone:
        log.info("pruned %d stored responses older than %s", gone, cutoff.isoformat())
    return removed


def histogram_percentile(counts: Sequence[int], fraction: float) -> float | None:
    """The ``fraction`` quantile in milliseconds from bucket counts (in :data:`BUCKET_COLUMNS`
    order), interpolated linearly inside its bucket like Prometheus' ``histogram_quantile``;
    the overflow bucket answers its lower bound. None without any request."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = fraction * total
    cumulative = 0
    for index, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if index == len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])
            lower = 0.0 if index == 0 else float(LATENCY_BUCKETS_MS[index - 1])
            upper = float(LATENCY_BUCKETS_MS[index])
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return float(LATENCY_BUCKETS_MS[-1])


__all__ = [
    "BUCKET_COLUMNS",
    "COUNTERS",
    "DAILY_DIMENSIONS",
    "DIMENSIONS",
    "add_counter_spend",
    "bucket_column",
    "counter_spend",
    "daily",
    "day_of",
    "histogram_percentile",
    "hour_of",
    "prune_request_log",
    "rollup",
    "upsert_insert",
    "upsert_rollups",
    "write_batch",
    "write_spend",
]
