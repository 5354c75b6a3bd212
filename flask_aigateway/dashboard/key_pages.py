"""API key pages: list, detail, new, edit, revoke, rotate, and the one-time secret page.

A new or rotated secret is shown once through Post/Redirect/Get: the POST puts it in the
encrypted session cookie and redirects to the secret page, which takes it out while showing
it. Reloading that page (or coming back later) shows that it is gone; nothing is re-posted.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from ..enums import Scope
from ..errors import GatewayError
from ..governance.policy import RULE_FIELDS, describe
from ..services import keys as service
from ..services import live_usage
from ..services import teams as team_service
from ..services.detail_stats import Scope as DetailScope
from ..services.detail_stats import cost_share, daily_by_model, detail_stats
from ..state import get_state
from . import charts
from . import session as dashboard_session
from .forms import Form
from .notices import notify
from .team_pages import rule_values

FIELDS = ("name", "team", "expires_at", *RULE_FIELDS)
_ROTATE_FIELDS = ("grace_seconds",)
DAYS = 30
#: How long a new secret waits in the session for its one display, seconds.
REVEAL_SECONDS = 600
_REVEAL = "reveal"


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/keys", "keys", list_page)
    bp.add_url_rule("/keys/new", "key_new", new_page, methods=["GET", "POST"])
    bp.add_url_rule("/keys/<ref>", "key", detail_page)
    bp.add_url_rule("/keys/<ref>/secret", "key_secret", secret_page)
    bp.add_url_rule("/keys/<ref>/edit", "key_edit", edit_page, methods=["GET", "POST"])
    bp.add_url_rule("/keys/<ref>/revoke", "key_revoke", revoke, methods=["POST"])
    bp.add_url_rule("/keys/<ref>/rotate", "key_rotate", rotate, methods=["POST"])


def expiry_text(moment: dt.datetime | None) -> str:
    """An expiry as form text: the date alone at midnight UTC, else ISO with ``Z``."""
    if moment is None:
        return ""
    moment = moment.astimezone(dt.UTC)
    if moment.time() == dt.time(0):
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def list_page() -> str:
    state = get_state()
    status = request.args.get("status", "")
    keys = [service.key_to_dict(k) for k in service.list_keys(state)]
    if status in ("active", "revoked", "expired"):
        keys = [k for k in keys if k["status"] == status]
    return render_template(
        "aigateway/keys/list.html", keys=keys, status=status, rule_fields=RULE_FIELDS
    )


def detail_page(
    ref: str, *, error: str | None = None, status: int = 200, rotate_form: Form | None = None
) -> Any:
    """The key's page; ``rotate_form`` is a refused rotation's, so the grace period typed and
    its error are shown again (the default offers 0 seconds)."""
    state = get_state()
    info = service.key_info(state, ref)
    key = info["key"]
    owner_name = describe(service.get_key(state, key["id"]))
    detail = detail_stats(state, DetailScope(key_id=key["id"]), days=DAYS, by=("model",))
    share = cost_share(state, key["id"], key["team_id"], days=DAYS)
    per_model = daily_by_model(state, DetailScope(key_id=key["id"]), days=DAYS)
    specs = charts.detail_charts(detail)
    specs["by_model_per_day"] = charts.requests_by_model_per_day(per_model, DAYS)
    return render_template(
        "aigateway/keys/detail.html",
        info=info,
        key=key,
        usage=live_usage.usage_of(state, Scope.KEY.value, key["id"]),
        limits=live_usage.limits_report(state, Scope.KEY.value, key["id"]),
        detail=detail,
        team_share=share,
        owner_name=owner_name,
        rule_fields=RULE_FIELDS,
        per_model=per_model,
        charts=specs,
        days=DAYS,
        error=error,
        rotate_form=rotate_form or Form(_ROTATE_FIELDS, {"grace_seconds": "0"}),
    ), status


def _form_page(form: Form, key: dict[str, Any] | None) -> Any:
    teams = [team_service.team_to_dict(t) for t in team_service.list_teams(get_state())]
    return render_template(
        "aigateway/keys/form.html", form=form, key=key, teams=teams, rule_fields=RULE_FIELDS
    ), form.status


def _rules(form: Form) -> dict[str, str]:
    return {field: form.get(field) for field in RULE_FIELDS}


def _reveal(key_id: str, secret: str) -> Any:
    dashboard_session.current(get_state()).put(
        _REVEAL, {"key": key_id, "secret": secret, "at": int(time.time())}
    )
    return redirect(url_for(".key_secret", ref=key_id), 303)


def new_page() -> Any:
    if request.method == "GET":
        return _form_page(Form(FIELDS, {"team": request.args.get("team", "")}), None)
    form = Form.submitted(FIELDS)
    try:
        key, secret = service.create_key(
            get_state(),
            name=form.get("name"),
            team=form.text("team"),
            expires_at=form.get("expires_at"),
            **_rules(form),
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), None)
    return _reveal(key.id, secret)


def secret_page(ref: str) -> Any:
    """Show a new secret once; afterwards (reload, back button) say that it is gone."""
    state = get_state()
    key = service.key_to_dict(service.get_key(state, ref))
    session = dashboard_session.current(state)
    pending = session.get(_REVEAL)
    secret = None
    if isinstance(pending, dict) and pending.get("key") == key["id"]:
        session.take(_REVEAL)
        if time.time() - int(pending.get("at", 0)) <= REVEAL_SECONDS:
            secret = pending.get("secret")
    return render_template("aigateway/keys/secret.html", key=key, secret=secret), (
        200 if secret else 410
    )


def edit_page(ref: str) -> Any:
    state = get_state()
    key = service.key_to_dict(service.get_key(state, ref))
    before = {
        "name": key["name"],
        "team": key["team_id"] or "",
        "expires_at": expiry_text(key["expires_at"]),
        **rule_values(key),
    }
    if request.method == "GET":
        return _form_page(Form(FIELDS, before), key)
    form = Form.submitted(FIELDS)
    try:
        updated = service.update_key(
            state,
            key["id"],
            name=form.get("name"),
            team=form.text("team"),
            expires_at=form.changed("expires_at", before["expires_at"]),
            **_rules(form),
        )
    except GatewayError as exc:
        return _form_page(form.fail(exc), key)
    notify(f"Key {updated.name!r} saved.")
    return redirect(url_for(".key", ref=updated.id), 303)


def revoke(ref: str) -> Any:
    key, changed = service.revoke_key(get_state(), ref)
    notify(f"Key {key.name!r} revoked." if changed else f"Key {key.name!r} was already revoked.")
    return redirect(url_for(".key", ref=key.id), 303)


def rotate(ref: str) -> Any:
    state = get_state()
    form = Form.submitted(_ROTATE_FIELDS)
    try:
        key, secret = service.rotate_key(
            state, ref, grace_seconds=request.form.get("grace_seconds", "0")
        )
    except GatewayError as exc:
        return detail_page(ref, error=exc.message, status=exc.status, rotate_form=form.fail(exc))
    return _reveal(key.id, secret)
