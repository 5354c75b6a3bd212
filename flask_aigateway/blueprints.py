"""The base of the gateway's blueprints (``/v1``, the dashboard): every method on their paths
answered by the blueprint itself, through a catch-all rule of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import Rule


class CatchAllBlueprint(Blueprint):
    """A blueprint whose routes list only their real methods and leave OPTIONS to its
    catch-all (:func:`add_catch_all`): Flask's automatic OPTIONS asks the URL map, where the
    catch-all accepts every method, and would answer an empty ``Allow``."""

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Callable[..., Any] | None = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options=False, **options)


def add_catch_all(
    setup: BlueprintSetupState,
    view: Callable[..., Any],
    paths: Iterable[tuple[str, dict[str, Any] | None]],
) -> None:
    """Rules for ``paths`` (under the blueprint's prefix, with their defaults) served by
    ``view`` as one of the blueprint's endpoints, added to the URL map directly: a rule
    without ``methods`` takes every method (Flask's ``add_url_rule`` always sets some), so
    routing never refuses a method on the blueprint's paths before the blueprint, its error
    handlers and hooks are known (Werkzeug's HTML 405, the host's 404 page). Routing tries the
    real rules first; a wrong method on one of them comes here too."""
    endpoint = f"{setup.name_prefix}.{setup.name}.{view.__name__}".lstrip(".")
    setup.app.view_functions[endpoint] = view
    prefix = (setup.url_prefix or "").rstrip("/")
    for path, defaults in paths:
        setup.app.url_map.add(
            Rule(prefix + path, endpoint=endpoint, defaults=defaults, subdomain=setup.subdomain)
        )


__all__ = ["CatchAllBlueprint", "add_catch_all"]
