"""``GET /v1/metrics``: the Prometheus scrape of this app's gateway (see :mod:`..metrics`)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import OperatorTokenError
from ..governance.auth import bearer_token
from ..governance.throttles import METRICS_TOKEN, get_throttles
from ..pipeline import get_pipeline
from ..state import get_state
from .stats import is_operator


def register(bp: Blueprint) -> None:
    """Add ``/metrics`` to the ``/v1`` blueprint (no app-wide hook is involved)."""

    @bp.get("/metrics")
    def metrics() -> Response:
        """Open unless ``AIGATEWAY_METRICS_TOKEN`` is set; then that bearer token is needed
        (wrong ones throttled per client address, see :mod:`..throttles`)."""
        state = get_state()
        expected = state.settings["AIGATEWAY_METRICS_TOKEN"]
        if expected:
            token = bearer_token(request.headers.get("Authorization"))
            throttles = get_throttles(state)
            # Over the metrics-token throttle the token is not compared at all (429).
            wait = throttles.wait(METRICS_TOKEN) if token else 0
            if not wait and not is_operator(token, expected):
                wait = throttles.failed(METRICS_TOKEN) if token else 0
                if not wait:
                    raise OperatorTokenError(
                        "The metrics endpoint needs 'Authorization: Bearer "
                        "<AIGATEWAY_METRICS_TOKEN>'"
                        + (" (the token sent is not it)." if token else "."),
                        code="invalid_metrics_token" if token else "missing_metrics_token",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            if wait:
                raise throttles.refusal(METRICS_TOKEN, wait)
        body, content_type = get_pipeline(state).metrics.render(request.headers.get("Accept"))
        return Response(body, content_type=content_type)
