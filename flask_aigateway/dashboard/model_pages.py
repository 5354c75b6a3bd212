"""Model alias pages: list, detail (deployments, usage), new, edit, delete, and deployments
add / edit / remove, with the routing strategy and the fallback chain."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..errors import GatewayError, NotFoundError
from ..services import models as service
from ..services import providers as provider_service
from ..services.detail_stats import Scope, detail_stats
from ..services.model_fields import DEPLOYMENT_FIELDS
from ..state import get_state
from . import charts
from .forms import Form, display_list, display_value
from .notices import notify

ALIAS_FIELDS = (
    "alias",
    "kind",
    "strategy",
    "fallbacks",
    "context_fallback",
    "max_tokens",
    "cache_ttl",
    "enabled",
)
DAYS = 60
#: Every deployment field but the checkbox: what the services take as keyword arguments.
_DEPLOYMENT_INPUTS = DEPLOYMENT_FIELDS[:-1]


def _deployment_input(form: Form) -> dict[str, Any]:
    """A submitted deployment as the services' keyword arguments (raw text: they validate)."""
    return {name: form.get(name) for name in _DEPLOYMENT_INPUTS}


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/models", "models", list_page)
    bp.add_url_rule("/models/new", "model_new", new_page, methods=["GET", "POST"])
    bp.add_url_rule("/models/<ref>", "model", detail_page)
    bp.add_url_rule("/models/<ref>/edit", "model_edit", edit_page, methods=["GET", "POST"])
    bp.add_url_rule("/models/<ref>/delete", "model_delete", delete, methods=["POST"])
    bp.add_url_rule(
        "/models/<ref>/deployments/new", "deployment_new", deployment_new, methods=["GET", "POST"]
    )
    bp.add_url_rule(
        "/models/<ref>/deployments/<deployment_id>/edit",
        "deployment_edit",
        deployment_edit,
        methods=["GET", "POST"],
    )
    bp.add_url_rule(
        "/models/<ref>/deployments/<deployment_id>/remove",
        "deployment_remove",
        deployment_remove,
        methods=["POST"],
    )


def _choices() -> dict[str, Any]:
    state = get_state()
    return {
        "providers": [p.name for p in provider_service.list_providers(state)],
        "strategies": service.STRATEGY_CHOICES,
        "kinds": service.KIND_CHOICES,
        "aliases": [m.alias for m in service.list_models(state)],
    }


def list_page() -> str:
    models = [service.model_to_dict(m) for m in service.list_models(get_state())]
    return render_template("aigateway/models/list.html", models=models)


def detail_page(ref: str, *, error: str | None = None, status: int = 200) -> Any:
    state = get_state()
    model = service.model_to_dict(service.get_model(state, ref))
    detail = detail_stats(
        state, Scope(alias=model["alias"]), days=DAYS, by=("provider", "deployment", "key", "team")
    )
    return render_template(
        "aigateway/models/detail.html",
        model=model,
        detail=detail,
        charts=charts.detail_charts(detail),
        days=DAYS,
        error=error,
    ), status


def _form_page(form: Form, model: dict[str, Any] | None) -> Any:
    return render_template(
        "aigateway/models/form.html", form=form, model=model, **_choices()
    ), form.status


def new_page() -> Any:
    fields = ALIAS_FIELDS + DEPLOYMENT_FIELDS
    if request.method == "GET":
        defaults = {
            "kind": "chat",
            "strategy": "weighted",
            "enabled": True,
            "priority": "0",
            "weight": "1",
        }
        return _form_page(Form(fields, defaults, ("enabled",)), None)
    form = Form.submitted(fields, ("enabled",))
    try:
        created = service.create_model(
            get_state(),
            alias=form.get("alias"),
            kind=form.get("kind") or "chat",
            strategy=form.get("strategy"),
            fallbacks=form.get("fallbacks"),
            context_fallback=form.get("context_fallback"),
            max_tokens=form.get("max_tokens"),
            cache_ttl=form.get("cache_ttl"),
            enabled=form.checked("enabled"),
            **_deployment_input(form),
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), None)
    notify(f"Model alias {created.alias!r} created.")
    return redirect(url_for(".model", ref=created.id), 303)


def edit_page(ref: str) -> Any:
    state = get_state()
    model = service.model_to_dict(service.get_model(state, ref))
    if request.method == "GET":
        values = {
            "alias": model["alias"],
            "kind": model["kind"],
            "strategy": model["strategy"],
            "fallbacks": display_list(model["fallbacks"]),
            "context_fallback": model["context_fallback"] or "",
            "max_tokens": display_value(model["max_tokens"]),
            "cache_ttl": display_value(model["cache_ttl"]),
            "enabled": model["enabled"],
        }
        return _form_page(Form(ALIAS_FIELDS, values, ("enabled",)), model)
    form = Form.submitted(ALIAS_FIELDS, ("enabled",))
    form.values["alias"] = model["alias"]
    try:
        service.update_model(
            state,
            model["id"],
            kind=form.get("kind") or model["kind"],
            strategy=form.get("strategy"),
            fallbacks=form.get("fallbacks"),
            context_fallback=form.get("context_fallback"),
            max_tokens=form.get("max_tokens"),
            cache_ttl=form.get("cache_ttl"),
            enabled=form.checked("enabled"),
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), model)
    notify(f"Model alias {model['alias']!r} saved.")
    return redirect(url_for(".model", ref=model["id"]), 303)


def delete(ref: str) -> Any:
    state = get_state()
    model = service.get_model(state, ref)
    try:
        changed = service.delete_model(state, model.id, force="force" in request.form)
    except GatewayError as exc:
        return detail_page(model.id, error=exc.message, status=exc.status)
    extra = f"; removed from the fallbacks of {', '.join(changed)}" if changed else ""
    notify(f"Model alias {model.alias!r} deleted{extra}.")
    return redirect(url_for(".models"), 303)


def _deployment_page(form: Form, model: dict[str, Any], deployment: dict[str, Any] | None) -> Any:
    return render_template(
        "aigateway/models/deployment_form.html",
        form=form,
        model=model,
        deployment=deployment,
        **_choices(),
    ), form.status


def deployment_new(ref: str) -> Any:
    state = get_state()
    model = service.model_to_dict(service.get_model(state, ref))
    if request.method == "GET":
        defaults = {"priority": "0", "weight": "1", "enabled": True}
        return _deployment_page(Form(DEPLOYMENT_FIELDS, defaults, ("enabled",)), model, None)
    form = Form.submitted(DEPLOYMENT_FIELDS, ("enabled",))
    try:
        service.add_deployment(
            state,
            model["id"],
            **_deployment_input(form),
            enabled=form.checked("enabled"),
        )
    except GatewayError as exc:
        return _deployment_page(form.fail(exc), model, None)
    notify(f"Deployment added to {model['alias']!r}.")
    return redirect(url_for(".model", ref=model["id"]), 303)


def _find_deployment(model: dict[str, Any], deployment_id: str) -> dict[str, Any]:
    for deployment in model["deployments"]:
        if deployment["id"] == deployment_id:
            return deployment
    raise NotFoundError(
        f"No deployment {deployment_id!r} in alias {model['alias']!r}.", param="deployment"
    )


def deployment_edit(ref: str, deployment_id: str) -> Any:
    state = get_state()
    model = service.model_to_dict(service.get_model(state, ref))
    deployment = _find_deployment(model, deployment_id)
    if request.method == "GET":
        values: dict[str, Any] = {
            name: display_value(deployment[name]) for name in _DEPLOYMENT_INPUTS
        }
        values["enabled"] = deployment["enabled"]
        return _deployment_page(Form(DEPLOYMENT_FIELDS, values, ("enabled",)), model, deployment)
    form = Form.submitted(DEPLOYMENT_FIELDS, ("enabled",))
    try:
        service.update_deployment(
            state,
            deployment_id,
            **_deployment_input(form),
            enabled=form.checked("enabled"),
        )
    except GatewayError as exc:
        return _deployment_page(form.fail(exc), model, deployment)
    notify(f"Deployment {deployment_id} of {model['alias']!r} saved.")
    return redirect(url_for(".model", ref=model["id"]), 303)


def deployment_remove(ref: str, deployment_id: str) -> Any:
    state = get_state()
    model = service.get_model(state, ref)
    try:
        service.remove_deployment(state, deployment_id, model_ref=model.id)
    except GatewayError as exc:
        return detail_page(model.id, error=exc.message, status=exc.status)
    notify(f"Deployment {deployment_id} removed from {model.alias!r}.")
    return redirect(url_for(".model", ref=model.id), 303)
