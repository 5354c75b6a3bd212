"""``POST /v1/embeddings``: parse the body into an :class:`EmbeddingsRequest`, run it through
the pipeline, answer OpenAI's ``list`` with the gateway's headers (cost included)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..embeddings import EmbeddingsRequest
from ..enums import Route
from ..governance.auth import bearer_token
from ..pipeline import get_pipeline
from ..state import get_state


def register(bp: Blueprint) -> None:
    """Add the route to the ``/v1`` blueprint (its error handlers answer in OpenAI's shape)."""
    # The views module imports this one to register it; its helpers are read at registration.
    from .views import _gateway_headers, _json, _read_json_body, _request_id

    @bp.post("/embeddings")
    def embeddings() -> Response:
        rid = _request_id()
        state = get_state()
        headers = request.headers
        pipeline = get_pipeline(state)
        api_key = pipeline.authenticate_first(
            bearer_token(headers.get("Authorization")), rid, Route.EMBEDDINGS
        )
        settings = state.settings
        with pipeline.refusals(api_key, rid, Route.EMBEDDINGS):
            embeddings_request = EmbeddingsRequest.from_body(
                _read_json_body(
                    settings["AIGATEWAY_MAX_BODY_BYTES"], settings["AIGATEWAY_MAX_JSON_DEPTH"]
                )
            )
        result = pipeline.embeddings(
            embeddings_request, api_key, rid, cache_control=headers.get("Cache-Control")
        )
        response = _json(result.body)
        response.headers.extend(_gateway_headers(rid, result))
        return response
