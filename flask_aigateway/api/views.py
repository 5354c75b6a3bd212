"""Views of the /v1 API (placeholder until the proxy core lands)."""

from __future__ import annotations

from flask import Blueprint


def create_blueprint() -> Blueprint:
    bp = Blueprint("aigateway_api", __name__)

    @bp.get("/health")
    def health() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    return bp
