"""The sample app: a Flask app that is nothing but the gateway, configured from the environment.

It declares its database like any Flask app: ``db = SQLAlchemy()`` holds the engine (the
gateway's bind is its only one) and ``migrate = Migrate(...)`` points Flask-Migrate at the
gateway's migrations, so ``flask --app sample_app db upgrade`` creates or upgrades the schema.
``make run`` runs that, then serves the app with gunicorn (``sample_app/gunicorn.conf.py``).
Environment:

* ``DATABASE_URL``: the gateway's database; ``postgres://`` and ``postgresql://`` URLs are
  read as ``postgresql+psycopg://`` (psycopg 3). Default: SQLite in the instance folder.
* every ``AIGATEWAY_*`` variable of :mod:`flask_aigateway.config` (an unknown one is an error).
* ``AIGATEWAY_TRUSTED_PROXIES``: reverse proxies whose ``X-Forwarded-*`` headers are trusted
  (Werkzeug's ``ProxyFix``; see :func:`trust_proxies`).
* ``SECRET_KEY``; ``INSTANCE_PATH`` (default ``./instance``), which holds the SQLite file and
  the secrets generated on first start (see :mod:`sample_app.bootstrap`).
* ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``: starter providers on first start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask.sessions import SecureCookieSessionInterface
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import URLSafeTimedSerializer
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_aigateway import AIGateway, schema
from flask_aigateway import config as gateway_config
from flask_aigateway.errors import ConfigError

from .bootstrap import announce, ensure_secrets

_PSYCOPG_SCHEMES = ("postgres://", "postgresql://")

#: The app's Flask-SQLAlchemy instance; the gateway adds its bind ("aigateway") to it.
db = SQLAlchemy()
#: Flask-Migrate on the gateway's installed migrations: ``flask --app sample_app db upgrade``.
migrate = Migrate(directory=schema.migrations_dir())


def database_url(url: str) -> str:
    """``DATABASE_URL`` as an SQLAlchemy URL: bare PostgreSQL URLs use the psycopg 3 driver."""
    for scheme in _PSYCOPG_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def settings_from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The app config the environment asks for (``AIGATEWAY_DATABASE_URI`` wins over
    ``DATABASE_URL``).

    :raises ConfigError: an ``AIGATEWAY_*`` variable is unknown or has an invalid value.
    """
    settings = gateway_config.from_environ(environ)
    url = environ.get("DATABASE_URL", "").strip()
    if url and not settings.get("AIGATEWAY_DATABASE_URI"):
        settings["AIGATEWAY_DATABASE_URI"] = database_url(url)
    if environ.get("SECRET_KEY"):
        settings["SECRET_KEY"] = environ["SECRET_KEY"]
    return settings


# Both bases set ``message`` to the same text; click only types it Final.
class StartupError(ConfigError, click.ClickException):  # type: ignore[misc]
    """A configuration error found while building the sample app.

    Still a :class:`~flask_aigateway.errors.ConfigError` to whoever calls :func:`create_app`;
    the ``flask --app sample_app`` commands (``make run``'s ``db upgrade`` among them) load the
    app through this factory and show it as click shows its own errors: ``Error: <message>``
    on stderr and exit status 1, not a traceback through Flask's and click's internals for a
    one-word typo in an environment variable. The extension itself raises plain
    ``ConfigError``: a host app's own factory decides how to report it.
    """


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the sample app: environment, then ``config`` (wins), then first-start secrets.

    Creating the app prints nothing and needs no schema; the gateway's tables come from
    ``flask --app sample_app db upgrade`` (or ``flask --app sample_app aigateway db upgrade``).
    The gateway is given ``db`` before it is initialised, so it adds its bind and calls
    ``db.init_app(app)`` itself (the app has no database of its own to configure).

    :raises StartupError: an ``AIGATEWAY_*`` variable or ``config`` value is unknown, invalid
        or contradicts another one.
    """
    try:
        return _build_app(config)
    except ConfigError as exc:
        raise StartupError(exc.message) from exc


def server_app() -> Flask:
    """The app as gunicorn's workers load it (``wsgi_app`` in ``sample_app/gunicorn.conf.py``).

    A configuration error becomes gunicorn's own "the application could not be loaded"
    (``AppImportError``): the worker prints the one-line reason, exits with
    ``APP_LOAD_ERROR`` and the master stops the server ("App failed to load.", status 4)
    instead of respawning it. Any other exception is logged by gunicorn with its traceback
    ("Exception in worker process"), as a ConfigError was.
    """
    try:
        return create_app()
    except StartupError as exc:
        from gunicorn.errors import AppImportError

        raise AppImportError(exc.message) from exc


def _build_app(config: Mapping[str, Any] | None) -> Flask:
    instance_path = os.environ.get("INSTANCE_PATH", "").strip()
    app = Flask(__name__, instance_path=os.path.abspath(instance_path) if instance_path else None)
    app.config.update(settings_from_environ(os.environ))
    app.config.update(config or {})
    app.config.update(_instance_secrets(app))
    app.session_interface = SessionInterface()
    trust_proxies(app)
    AIGateway(app, db=db)
    migrate.init_app(app, db)
    app.cli.add_command(bootstrap_command)
    return app


def _instance_secrets(app: Flask) -> dict[str, str]:
    """Create the instance folder and read or generate the secrets it keeps.

    :raises ConfigError: the folder cannot be created or written (``INSTANCE_PATH`` names a
        file, or a place the user may not write): one line naming the variable, instead of the
        ``NotADirectoryError`` traceback every command and the server printed.
    """
    try:
        os.makedirs(app.instance_path, exist_ok=True)
        return ensure_secrets(app.instance_path, app.config)
    except OSError as exc:
        reason = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror or exc
        where = f": {exc.filename}" if exc.filename and exc.filename != app.instance_path else ""
        raise ConfigError(
            f"The instance folder {app.instance_path} cannot be used ({reason}{where}). Set "
            "INSTANCE_PATH to a directory the server may create and write in (default "
            "./instance): it holds the SQLite database and the generated secrets."
        ) from exc


def trust_proxies(app: Flask) -> None:
    """Behind ``AIGATEWAY_TRUSTED_PROXIES`` reverse proxies, read the client's address, scheme
    and host from their ``X-Forwarded-For``/``-Proto``/``-Host`` headers (Werkzeug's
    ``ProxyFix``): behind a TLS-terminating proxy the request is then seen as HTTPS and the
    dashboard's session cookie is sent ``Secure``. 0 (the default) trusts no such header —
    a client could otherwise forge them."""
    hops = int(app.config.get("AIGATEWAY_TRUSTED_PROXIES") or 0)
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per secret key.

    Flask builds a new serializer on every request, even one with no cookie (every ``/v1``
    call): about 4 % of the gateway's CPU per request. The serializer depends only on the
    secret key and its fallbacks, so it is kept until they change.
    """

    _cached: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._cached
        if cached is None or cached[0] != keys:
            cached = self._cached = (keys, super().get_signing_serializer(app))
        return cached[1]


@click.command("bootstrap")
@with_appcontext
@click.option(
    "--url",
    default=None,
    help="Where the gateway is served (default: http://$HOST:$PORT, 127.0.0.1:8000).",
)
def bootstrap_command(url: str | None) -> None:
    """Create the starter providers from OPENAI_API_KEY / ANTHROPIC_API_KEY and print how to
    use the gateway (what gunicorn prints on start, for other servers)."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    announce(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        base_url=url or f"http://{host}:{port}",
    )
