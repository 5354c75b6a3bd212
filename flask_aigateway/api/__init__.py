"""The ``/v1`` API blueprint (views only parse and serialize)."""

from __future__ import annotations

from flask import Blueprint

from . import messages, models, openapi, views


def create_blueprint() -> Blueprint:
    """A new ``/v1`` blueprint: the OpenAI-compatible views, then the other API doors."""
    bp = views.create_blueprint()
    messages.register(bp)
    models.register(bp)
    openapi.register(bp)
    return bp


__all__ = ["create_blueprint"]
