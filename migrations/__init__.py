"""Alembic migrations of the gateway's tables (installed as ``flask_aigateway.migrations``)."""
