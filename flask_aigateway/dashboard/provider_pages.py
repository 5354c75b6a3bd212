"""Provider pages: list, detail, new, edit, delete. Credentials are write-only.

A stored API key is never put back into a page: the edit form leaves it blank ("leave blank
to keep"), a submitted key is not echoed when the form comes back with an error, and extra
header values that look secret are shown as :data:`KEEP` and kept unless replaced.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..errors import GatewayError, ValidationError
from ..services import models as model_service
from ..services import providers as service
from ..services import validation
from ..services.detail_stats import Scope, detail_stats
from ..services.validation import UNSET
from ..state import get_state
from ..wording import counted, plural
from . import charts
from .forms import Form
from .notices import notify

#: Shown instead of a secret-looking extra header value; submitting it keeps the stored one.
KEEP = "(unchanged)"
FIELDS = (
    "name",
    "format",
    "base_url",
    "api_key",
    "api_version",
    "extra_headers",
    "enabled",
    "clear_api_key",
)
CHECKBOXES = ("enabled", "clear_api_key")
#: The window of a provider page's analytics, in UTC days.
DAYS = 60


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/providers", "providers", list_page)
    bp.add_url_rule("/providers/new", "provider_new", new_page, methods=["GET", "POST"])
    bp.add_url_rule("/providers/<ref>", "provider", detail_page)
    bp.add_url_rule("/providers/<ref>/edit", "provider_edit", edit_page, methods=["GET", "POST"])
    bp.add_url_rule("/providers/<ref>/delete", "provider_delete", delete, methods=["POST"])


def _usage() -> dict[str, list[dict[str, Any]]]:
    """Deployments per provider id, with their alias."""
    used: dict[str, list[dict[str, Any]]] = {}
    for alias in model_service.list_models(get_state()):
        for deployment in alias.deployments:
            used.setdefault(deployment.provider_id, []).append(
                model_service.deployment_to_dict(deployment, alias.alias) | {"model_id": alias.id}
            )
    return used


def list_page() -> str:
    state = get_state()
    used = _usage()
    providers = [
        service.provider_to_dict(p, state) | {"deployments": len(used.get(p.id, []))}
        for p in service.list_providers(state)
    ]
    return render_template("aigateway/providers/list.html", providers=providers)


def detail_page(ref: str, *, error: str | None = None, status: int = 200) -> Any:
    state = get_state()
    provider = service.get_provider(state, ref)
    detail = detail_stats(state, Scope(provider=provider.name), days=DAYS, by=("model", "key"))
    return render_template(
        "aigateway/providers/detail.html",
        provider=service.provider_to_dict(provider, state),
        deployments=_usage().get(provider.id, []),
        detail=detail,
        charts=charts.detail_charts(detail),
        error=error,
    ), status


def _render_form(form: Form, provider: dict[str, Any] | None) -> Any:
    if form.get("api_key"):
        form.values["api_key"] = ""
        if not form.ok:
            form.general.append("The API key you typed was not kept on this page: enter it again.")
    return render_template(
        "aigateway/providers/form.html",
        form=form,
        provider=provider,
        formats=service.FORMAT_CHOICES,
    ), form.status


def new_page() -> Any:
    if request.method == "GET":
        return _render_form(Form(FIELDS, {"format": "openai", "enabled": True}, CHECKBOXES), None)
    form = Form.submitted(FIELDS, CHECKBOXES)
    try:
        provider = service.create_provider(
            get_state(),
            name=form.get("name"),
            format=form.get("format"),
            base_url=form.text("base_url"),
            api_key=form.text("api_key"),
            api_version=form.text("api_version"),
            extra_headers=form.get("extra_headers"),
            enabled=form.checked("enabled"),
        )
    except GatewayError as exc:
        return _render_form(form.fail(exc), None)
    notify(f"Provider {provider.name!r} created.")
    return redirect(url_for(".provider", ref=provider.id), 303)


def _headers_text(raw: dict[str, str], shown: dict[str, str]) -> str:
    return "\n".join(
        f"{name}: {value if shown.get(name) == value else KEEP}" for name, value in raw.items()
    )


def _merge_headers(text: str, stored: dict[str, str], *, moved: bool) -> dict[str, str]:
    """The submitted headers, with :data:`KEEP` values replaced by the stored ones — unless
    the provider is ``moved`` to another format or base URL: stored values were given for the
    old destination, so they must be typed again (or the header removed)."""
    parsed = validation.headers(text, "extra_headers")
    unknown = sorted(name for name, value in parsed.items() if value == KEEP and name not in stored)
    if unknown:
        raise ValidationError(
            f"{plural(len(unknown), 'Header', 'Headers')} {', '.join(unknown)} "
            f"{plural(len(unknown), 'has', 'have')} no stored value to keep: type the value "
            f"instead of {KEEP}, or remove the line.",
            param="extra_headers",
        )
    kept = sorted(name for name, value in parsed.items() if value == KEEP)
    if moved and kept:
        raise ValidationError(
            f"The base URL or format changes: type the value of "
            f"{plural(len(kept), 'header', 'headers')} {', '.join(kept)} again "
            f"({plural(len(kept), 'it was', 'they were')} stored for the old destination), or "
            f"remove the {plural(len(kept), 'line', 'lines')}.",
            param="extra_headers",
        )
    return {name: stored[name] if value == KEEP else value for name, value in parsed.items()}


def edit_page(ref: str) -> Any:
    state = get_state()
    provider = service.get_provider(state, ref)
    shown = service.provider_to_dict(provider, state)
    stored, unreadable = service.readable_headers(state, provider)
    if request.method == "GET":
        values = {
            "name": provider.name,
            "format": provider.format,
            "base_url": provider.base_url or "",
            "api_version": provider.api_version or "",
            "extra_headers": _headers_text(stored, shown["extra_headers"]),
            "enabled": provider.enabled,
        }
        form = Form(FIELDS, values, CHECKBOXES)
        if unreadable:
            # Their values cannot be kept: left out of the field, so saving removes them.
            form.general.append(
                f"Extra {plural(len(unreadable), 'header')} {', '.join(unreadable)} cannot be "
                "decrypted with the current AIGATEWAY_SECRET_KEY (it changed): type "
                f"{plural(len(unreadable), 'it', 'them')} again below, or saving removes "
                f"{plural(len(unreadable), 'it', 'them')}."
            )
        if "api_key" in shown["unreadable"]:
            form.general.append(
                "The stored API key cannot be decrypted with the current AIGATEWAY_SECRET_KEY "
                "(it changed): enter it again."
            )
        return _render_form(form, shown)
    form = Form.submitted(FIELDS, CHECKBOXES)
    if form.checked("clear_api_key"):
        api_key: Any = None
    else:
        api_key = form.text("api_key") or UNSET
    try:
        if api_key is None and form.text("api_key"):
            # Both asked: which one was meant cannot be guessed (the CLI refuses it too).
            raise ValidationError(
                "Give either a new API key or 'Remove the stored API key', not both.",
                param="api_key",
            )
        moved = form.get("format") != provider.format or validation.url(form.text("base_url")) != (
            provider.base_url
        )
        headers = _merge_headers(form.get("extra_headers"), stored, moved=moved)
        updated = service.update_provider(
            state,
            provider.id,
            name=form.get("name"),
            format=form.get("format"),
            base_url=form.text("base_url"),
            api_key=api_key,
            api_version=form.text("api_version"),
            extra_headers=headers,
            enabled=form.checked("enabled"),
        )
    except GatewayError as exc:
        return _render_form(form.fail(exc), shown)
    notify(f"Provider {updated.name!r} saved.")
    return redirect(url_for(".provider", ref=updated.id), 303)


def delete(ref: str) -> Any:
    state = get_state()
    provider = service.get_provider(state, ref)
    try:
        removed = service.delete_provider(state, provider.id, force="force" in request.form)
    except GatewayError as exc:
        return detail_page(provider.id, error=exc.message, status=exc.status)
    extra = f" with {counted(len(removed), 'deployment')}" if removed else ""
    notify(f"Provider {provider.name!r} deleted{extra}.")
    return redirect(url_for(".providers"), 303)
