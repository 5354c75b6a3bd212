"""What ``GET /v1/health`` counts and what ``GET /v1/health/ready`` checks (database with its
schema, Redis)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..catalog import catalog_counts
from ..db import database_unreachable
from ..models import ModelAlias
from ..schema import UPGRADE_HINT, missing_schema
from ..state import GatewayState

log = logging.getLogger(__name__)


def liveness_counts(state: GatewayState) -> dict[str, Any]:
    """``providers_configured`` and ``models_available`` for ``/v1/health`` (counts only).

    ``/v1/health`` is the liveness probe, so it stays 200 while the process serves: when the
    database cannot answer the counts are ``None`` (restarting the process would not help;
    ``/v1/health/ready`` is the probe that fails), and a missing schema adds ``problem``
    with the command that fixes it.
    """
    try:
        counts = catalog_counts(state)
    except SQLAlchemyError as exc:
        result: dict[str, Any] = {"providers_configured": None, "models_available": None}
        if missing_schema(exc) is not None:
            result["problem"] = f"the database schema is missing; {UPGRADE_HINT}"
        else:
            log.warning("health: the database could not count the catalogue (%r)", exc)
        return result
    return {
        "providers_configured": counts.providers_configured,
        "models_available": counts.models_available,
    }


def readiness(state: GatewayState) -> tuple[list[str], dict[str, str]]:
    """Problems (empty when ready) and the status of each dependency."""
    problems: list[str] = []
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(select(ModelAlias.id).limit(1))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001  (any failure means "not ready", reported)
        if missing_schema(exc) is not None:
            checks["database"] = "schema missing"
            problems.append(f"the database schema is missing; {UPGRADE_HINT}")
        else:
            # The schema is there (missing_schema said so): name what did fail, not the upgrade.
            checks["database"] = "down"
            name = exc.__class__.__name__
            if database_unreachable(exc):
                problems.append(
                    f"the database is unreachable ({name}); check that its server is up and "
                    "that AIGATEWAY_DATABASE_URI points at it"
                )
            else:
                log.warning("health: the readiness query failed (%r)", exc)
                problems.append(f"the database readiness query failed ({name}); see the log")
    redis_url = state.settings["AIGATEWAY_REDIS_URL"]
    if redis_url:
        try:
            from ..redis_client import redis_client

            client = redis_client(redis_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = "down"
            problems.append(f"Redis unreachable ({exc.__class__.__name__})")
    return problems, checks
