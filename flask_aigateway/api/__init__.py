"""The ``/v1`` API blueprint (views only parse and serialize)."""

from __future__ import annotations

from .views import create_blueprint

__all__ = ["create_blueprint"]
