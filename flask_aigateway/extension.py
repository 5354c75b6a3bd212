"""The Flask extension object: ``AIGateway(app)`` or ``AIGateway()`` + ``init_app(app)``."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flask import Flask

from . import config
from .accounting import install_signal_handlers
from .embeddings import EmbeddingsRequest
from .errors import ConfigError
from .governance import throttles
from .schemas import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .pipeline import ChatStream
from .db import init_database
from .state import EXTENSION_KEY, GatewayState, get_state
from .wording import plural


class AIGateway:
    """Turns a Flask app into an AI gateway.

    ``options`` are ``AIGATEWAY_*`` settings that win over ``app.config`` (Flask-Limiter's
    precedence: constructor > config > default). The object keeps no reference to an app: one
    instance may serve several apps, each with its own state in ``app.extensions["aigateway"]``.

    ``db`` is the host's Flask-SQLAlchemy instance; without it the gateway uses the one in
    ``app.extensions["sqlalchemy"]``, else one of its own (see :func:`~.db.init_database`).
    """

    def __init__(
        self, app: Flask | None = None, *, db: SQLAlchemy | None = None, **options: Any
    ) -> None:
        unknown = sorted(k for k in options if k not in config.BY_NAME)
        if unknown:
            raise ConfigError(
                f"Unknown AIGateway {plural(len(unknown), 'option')}: {', '.join(unknown)}."
            )
        self._options = options
        self._db = db
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, db: SQLAlchemy | None = None) -> None:
        """Register the gateway on ``app``: its state, database bind, blueprints and commands.

        Touches nothing of the host outside the gateway's own routes and commands, and the
        gateway's bind engine in ``db.engines`` (never added to the host's
        ``SQLALCHEMY_BINDS``).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "AIGateway is already initialised on this app. Call init_app() once per app; "
                "to run another configuration, create another Flask app."
            )
        settings = config.resolve(app.config, self._options)
        sqlalchemy, database_uri, engine = init_database(
            app, settings["AIGATEWAY_DATABASE_URI"], db if db is not None else self._db
        )
        secret = settings["AIGATEWAY_SECRET_KEY"] or app.config.get("SECRET_KEY")
        state = GatewayState(settings, database_uri, engine, secret, db=sqlalchemy)
        app.extensions[EXTENSION_KEY] = state
        # Flush the request log on SIGTERM when nothing else handles it (see logwriter).
        install_signal_handlers()

        from .cli import register_cli

        register_cli(app)
        prefix = settings["AIGATEWAY_ROUTE_PREFIX"]
        api_blueprints = []
        if settings["AIGATEWAY_API_ENABLED"]:
            from .api import create_blueprint as create_api

            api_blueprints.append(create_api())
            app.register_blueprint(api_blueprints[0], url_prefix=prefix + "/v1")
        # Flask-Limiter throttles on failed authentications (see throttles.py).
        throttles.install(app, state, exempt=api_blueprints)
        if settings["AIGATEWAY_DASHBOARD_ENABLED"]:
            from .dashboard import create_blueprint as create_dashboard

            if create_dashboard is not None:
                app.register_blueprint(create_dashboard(), url_prefix=prefix + "/dashboard")
        if settings["AIGATEWAY_FINISH_AFTER_RESPONSE"] and api_blueprints:
            from .after_response import RunAfter

            # The /v1 requests' ends run when their answers are closed (after_response.py).
            app.wsgi_app = RunAfter(app.wsgi_app)  # type: ignore[method-assign]
        if settings["AIGATEWAY_CREATE_TABLES"]:
            state.create_tables()

    def chat(
        self, request: ChatRequest, api_key: str | None = None, *, app: Flask | None = None
    ) -> ChatResponse:
        """Run ``request`` through the same pipeline as ``POST /v1/chat/completions``.

        Without ``api_key`` the call is trusted (no key rules, logged without a key); with one,
        that key's rules apply exactly as over HTTP. ``request`` is validated as the HTTP API
        validates a body (a bad value is its 400, sent nowhere). Raises :class:`GatewayError`
        subclasses.
        """
        from .pipeline import get_pipeline, new_request_id

        pipeline = get_pipeline(self.get_state(app))
        rid = new_request_id()
        request = _call_decides_stream(request, stream=False)
        caller = pipeline.check_direct(request, api_key, rid, stream=False)
        return pipeline.chat(request, caller, rid)

    def stream(
        self, request: ChatRequest, api_key: str | None = None, *, app: Flask | None = None
    ) -> ChatStream:
        """Like :meth:`chat`, streamed: every check happens before this returns; iterate the
        result for :class:`StreamChunk` values. Use it in a ``with`` block (or call
        ``close()``) when you may stop early: that closes the upstream and logs the usage."""
        from .pipeline import get_pipeline, new_request_id

        pipeline = get_pipeline(self.get_state(app))
        rid = new_request_id()
        request = _call_decides_stream(request, stream=True)
        caller = pipeline.check_direct(request, api_key, rid, stream=True)
        return pipeline.open_stream(request, caller, rid)

    def embeddings(
        self, request: EmbeddingsRequest, api_key: str | None = None, *, app: Flask | None = None
    ) -> ChatResponse:
        """Run ``request`` through the same pipeline as ``POST /v1/embeddings`` (trusted without
        ``api_key``, as :meth:`chat`); ``.body`` is OpenAI's ``list`` of embeddings."""
        from .pipeline import TRUSTED, get_pipeline

        pipeline = get_pipeline(self.get_state(app))
        return pipeline.embeddings(request, TRUSTED if api_key is None else api_key)

    @staticmethod
    def get_state(app: Flask | None = None) -> GatewayState:
        """The gateway state of ``app`` (default: the current app), with a helpful error."""
        return get_state(app)


def _call_decides_stream(request: ChatRequest, *, stream: bool) -> ChatRequest:
    """``request`` as the call makes it: :meth:`AIGateway.chat` answers JSON and
    :meth:`AIGateway.stream` streams, whatever the request's ``stream`` field or a boolean
    ``stream`` in its ``params`` (a host passing a client's body on) says. Validation then
    sees the call's mode: ``stream()`` with ``params={"stream_options": {"include_usage":
    True}}`` was refused as "only allowed when 'stream' is true". Any other ``stream`` value
    in ``params`` is left for validation to refuse."""
    params = request.params
    if isinstance(params, dict) and isinstance(params.get("stream"), bool):
        params = {k: v for k, v in params.items() if k != "stream"}
    if params is request.params and request.stream == stream:
        return request
    return replace(request, stream=stream, params=params)
