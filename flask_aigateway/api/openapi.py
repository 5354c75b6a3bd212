"""``GET /v1/openapi.json``: an OpenAPI 3.1 description of the gateway's own ``/v1`` API.

Kept as Python data (no data file to ship) and checked against the blueprint's routes and real
responses by ``tests/test_openapi.py``; ``tests/test_openapi_fuzz.py`` fuzzes a live gateway
from it with schemathesis. Request schemas give the types and required fields the gateway
checks, never more (unknown fields pass through to the provider), so a fuzzer's "valid"
requests are ones the gateway accepts.

The document's schemas are in :mod:`.openapi_schemas`, its operations in
:mod:`.openapi_paths`; this module assembles them and serves them.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, request

from .. import jsoncodec
from ..state import get_state
from .openapi_paths import _PATHS
from .openapi_schemas import _SCHEMAS


def document(base_path: str = "/v1") -> dict[str, Any]:
    """The OpenAPI document with ``servers`` at ``base_path`` (the app's mount point, the route
    prefix, then ``/v1``).

    A deep copy each time, so a caller (or a test) may change it freely.
    """
    from .. import __version__

    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "flask-aigateway API",
                "version": __version__,
                "description": "The gateway's own /v1 API: OpenAI-compatible chat "
                "completions, embeddings, Responses and models, Anthropic-compatible "
                "Messages, and health, metrics and usage statistics. Errors are in "
                "OpenAI's shape, on /v1/messages in Anthropic's.",
            },
            "servers": [{"url": base_path}],
            "paths": _PATHS,
            "components": {
                "schemas": _SCHEMAS,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                },
            },
        }
    )


def register(bp: Blueprint) -> None:
    """Add ``/openapi.json`` to the ``/v1`` blueprint (public: it names no secret)."""

    @bp.get("/openapi.json")
    def openapi() -> Response:
        # The WSGI mount point too (SCRIPT_NAME: DispatcherMiddleware, ProxyFix's x_prefix,
        # gunicorn's SCRIPT_NAME), so ``servers`` is where a client reaches the API.
        prefix = request.script_root + get_state().settings["AIGATEWAY_ROUTE_PREFIX"]
        return Response(jsoncodec.dumps(document(prefix + "/v1")), content_type="application/json")


__all__ = ["document", "register"]
