"""Readiness checks behind ``GET /v1/health/ready``: database (schema present), Redis."""

from __future__ import annotations

from sqlalchemy import select

from ..models import ModelAlias
from ..state import GatewayState


def readiness(state: GatewayState) -> tuple[list[str], dict[str, str]]:
    """Problems (empty when ready) and the status of each dependency."""
    problems: list[str] = []
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(select(ModelAlias.id).limit(1))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001  (any failure means "not ready", reported)
        checks["database"] = "down"
        problems.append(
            f"database unreachable or schema missing ({exc.__class__.__name__}); run "
            "'flask aigateway db upgrade'"
        )
    redis_url = state.settings["AIGATEWAY_REDIS_URL"]
    if redis_url:
        try:
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = "down"
            problems.append(f"Redis unreachable ({exc.__class__.__name__})")
    return problems, checks
