"""Dashboard management pages: providers, models and deployments, teams, keys. Every change is
checked in the database; validation messages are the CLI's, next to their field, with the
submitted values kept; secrets never reach the HTML."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from dashboard_helpers import (
    FLASK_SECRET,
    TOKEN,
    field_error,
    field_value,
    login,
    submit,
    text,
)
from flask import Flask
from sqlalchemy import select

from flask_aigateway.extension import get_state
from flask_aigateway.models import ApiKey, Deployment, ModelAlias, Provider, Team
from flask_aigateway.services.keys import hash_secret
from flask_aigateway.services.providers import provider_api_key, provider_headers

PROVIDER_KEY = "sk-provider-secret-abcdefghijklmnop"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "AIGATEWAY_DASHBOARD_TOKEN": TOKEN, "SECRET_KEY": FLASK_SECRET}


@pytest.fixture
def csrf(client: Any) -> str:
    return login(client)


def rows(app: Flask, model: Any) -> list[Any]:
    with get_state(app).session() as session:
        return list(session.scalars(select(model)))


def new_provider(client: Any, csrf: str, **fields: Any) -> Any:
    form = {
        "name": "upstream",
        "format": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": PROVIDER_KEY,
        "enabled": True,
        **fields,
    }
    return submit(client, "/dashboard/providers/new", csrf, **form)


def new_model(client: Any, csrf: str, **fields: Any) -> Any:
    form = {
        "alias": "smart",
        "strategy": "weighted",
        "enabled": True,
        "provider": "upstream",
        "model": "gpt-4o-mini",
        "pricing_input": "0.15",
        "pricing_output": "0.60",
        "priority": "0",
        "weight": "1",
        **fields,
    }
    return submit(client, "/dashboard/models/new", csrf, **form)


def test_provider_create_show_edit_keeps_the_secret_write_only(
    client: Any, csrf: str, app: Flask
) -> None:
    response = new_provider(
        client,
        csrf,
        extra_headers="HTTP-Referer: https://x.example\nX-Custom-Token: hidden-value-123456",
    )
    assert response.status_code == 303
    (provider,) = rows(app, Provider)
    assert provider_api_key(get_state(app), provider) == PROVIDER_KEY
    assert response.headers["Location"] == f"/dashboard/providers/{provider.id}"

    detail = text(client.get(response.headers["Location"]))
    assert "Provider &#39;upstream&#39; created." in detail
    assert "****mnop" in detail
    assert PROVIDER_KEY not in detail and "hidden-value-123456" not in detail

    edit = text(client.get(f"/dashboard/providers/{provider.id}/edit"))
    assert field_value(edit, "api_key") is None
    assert PROVIDER_KEY not in edit and "hidden-value-123456" not in edit
    assert "X-Custom-Token: (unchanged)" in edit

    headers = re.search(r'<textarea[^>]*name="extra_headers"[^>]*>(.*?)</textarea>', edit, re.S)
    assert headers
    response = submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        name="renamed",
        format="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="",
        api_version="",
        extra_headers=headers.group(1).replace("&#34;", '"'),
        enabled=False,
    )
    assert response.status_code == 303
    (provider,) = rows(app, Provider)
    assert (provider.name, provider.enabled, provider.base_url) == (
        "renamed",
        False,
        "http://127.0.0.1:9/v1",
    )
    assert provider_api_key(get_state(app), provider) == PROVIDER_KEY
    assert provider_headers(get_state(app), provider)["X-Custom-Token"] == "hidden-value-123456"
    assert "hidden-value-123456" not in str(provider.extra_headers)

    submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        name="renamed",
        format="openai",
        api_key="sk-new-key-000000000000",
        enabled=True,
    )
    (provider,) = rows(app, Provider)
    assert provider_api_key(get_state(app), provider) == "sk-new-key-000000000000"
    both = submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        name="renamed",
        format="openai",
        api_key="sk-other-key-00000000000",
        clear_api_key=True,
        enabled=True,
    )
    assert both.status_code == 400  # which one was meant cannot be guessed: nothing changes
    assert "not both" in (field_error(text(both), "api_key") or "")
    (provider,) = rows(app, Provider)
    assert provider_api_key(get_state(app), provider) == "sk-new-key-000000000000"
    submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        name="renamed",
        format="openai",
        clear_api_key=True,
        enabled=True,
    )
    (provider,) = rows(app, Provider)
    assert provider.api_key_encrypted is None


def test_invalid_provider_form_shows_the_service_message_and_drops_the_typed_key(
    client: Any, csrf: str, app: Flask, runner: Any
) -> None:
    response = new_provider(client, csrf, name="bad\tname", base_url="ftp://nowhere")
    assert response.status_code == 400
    page = text(response)
    cli = runner.invoke(args=["provider", "create", "--name", "bad\tname", "--format", "openai"])
    assert cli.exit_code == 1
    assert field_error(page, "name") == cli.output.strip().removeprefix("Error: ")
    assert field_value(page, "name") == "bad\tname"
    assert field_value(page, "base_url") == "ftp://nowhere"
    assert field_value(page, "api_key") is None
    assert PROVIDER_KEY not in page
    assert "enter it again" in page
    assert rows(app, Provider) == []


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://[::1", "is not a valid URL"),
        ("http://x]/v1", "is not a valid URL"),
        ("https://api.example.com/" + "v" * 477, "too long: use at most 500 characters"),
    ],
)
def test_unusable_base_url_is_a_field_error_on_create_and_edit(
    client: Any, csrf: str, app: Flask, base_url: str, expected: str
) -> None:
    response = new_provider(client, csrf, base_url=base_url)
    assert response.status_code == 400
    assert expected in (field_error(text(response), "base_url") or "")
    assert rows(app, Provider) == []
    assert new_provider(client, csrf).status_code == 303
    (provider,) = rows(app, Provider)
    form = {"name": "upstream", "format": "openai", "base_url": base_url, "enabled": True}
    response = submit(client, f"/dashboard/providers/{provider.id}/edit", csrf, **form)
    assert response.status_code == 400
    assert expected in (field_error(text(response), "base_url") or "")
    assert rows(app, Provider)[0].base_url == "http://127.0.0.1:9/v1"


def test_provider_delete_refused_while_used_then_forced(client: Any, csrf: str, app: Flask) -> None:
    new_provider(client, csrf)
    new_model(client, csrf)
    (provider,) = rows(app, Provider)
    refused = submit(client, f"/dashboard/providers/{provider.id}/delete", csrf)
    assert refused.status_code == 409
    assert "is used by 1 deployment of model alias " in text(refused)
    assert "Remove that deployment first" in text(refused)
    assert "Also remove its 1 deployment</label>" in text(refused)
    assert len(rows(app, Provider)) == 1
    forced = submit(client, f"/dashboard/providers/{provider.id}/delete", csrf, force=True)
    assert forced.status_code == 303
    assert rows(app, Provider) == [] and rows(app, Deployment) == []


def test_model_with_two_deployments_strategy_and_fallbacks(
    client: Any, csrf: str, app: Flask
) -> None:
    new_provider(client, csrf)
    new_provider(client, csrf, name="backup", api_key="")
    assert new_model(client, csrf, alias="cheap").status_code == 303
    response = new_model(client, csrf, strategy="least-busy", fallbacks="cheap")
    assert response.status_code == 303
    smart = next(m for m in rows(app, ModelAlias) if m.alias == "smart")
    assert (smart.strategy, smart.fallbacks) == ("least-busy", ["cheap"])

    add = submit(
        client,
        f"/dashboard/models/{smart.id}/deployments/new",
        csrf,
        provider="backup",
        model="gpt-4o-mini-eu",
        pricing_input="0.2",
        pricing_output="0.8",
        priority="1",
        weight="2",
        rpm_limit="60",
        enabled=True,
    )
    assert add.status_code == 303
    deployments = [d for d in rows(app, Deployment) if d.model_id == smart.id]
    assert len(deployments) == 2
    backup = next(d for d in deployments if d.provider_model == "gpt-4o-mini-eu")
    assert (backup.priority, backup.weight, backup.rpm_limit) == (1, 2, 60)

    detail = text(client.get(f"/dashboard/models/{smart.id}"))
    assert detail.count("data-deployment=") == 2
    assert "least-busy" in detail and "1. cheap" in detail

    edit = submit(
        client,
        f"/dashboard/models/{smart.id}/deployments/{backup.id}/edit",
        csrf,
        provider="backup",
        model="gpt-4o-mini-eu",
        pricing_input="0.25",
        pricing_output="1",
        priority="1",
        weight="3",
        rpm_limit="",
        enabled=False,
    )
    assert edit.status_code == 303
    backup = next(d for d in rows(app, Deployment) if d.id == backup.id)
    assert (
        str(backup.input_price.normalize()),
        backup.weight,
        backup.rpm_limit,
        backup.enabled,
    ) == ("0.25", 3, None, False)

    routing = submit(
        client,
        f"/dashboard/models/{smart.id}/edit",
        csrf,
        strategy="cost-based",
        fallbacks="",
        max_tokens="1024",
        cache_ttl="0",
        enabled=True,
    )
    assert routing.status_code == 303
    smart = next(m for m in rows(app, ModelAlias) if m.id == smart.id)
    assert (smart.strategy, smart.fallbacks, smart.max_tokens, smart.cache_ttl) == (
        "cost-based",
        [],
        1024,
        0,
    )

    remove = submit(client, f"/dashboard/models/{smart.id}/deployments/{backup.id}/remove", csrf)
    assert remove.status_code == 303
    last = [d for d in rows(app, Deployment) if d.model_id == smart.id]
    assert len(last) == 1
    refused = submit(client, f"/dashboard/models/{smart.id}/deployments/{last[0].id}/remove", csrf)
    assert refused.status_code == 409
    assert "is the only one of alias" in text(refused)


def test_model_validation_matches_the_cli_and_keeps_values(
    client: Any, csrf: str, app: Flask, runner: Any
) -> None:
    new_provider(client, csrf)
    response = new_model(client, csrf, pricing_input="cheap", fallbacks="nowhere")
    assert response.status_code == 400
    page = text(response)
    cli = runner.invoke(
        args=[
            "model",
            "create",
            "--alias",
            "smart",
            "--provider",
            "upstream",
            "--model",
            "gpt-4o-mini",
            "--pricing-input",
            "cheap",
            "--pricing-output",
            "0.60",
        ]
    )
    assert cli.exit_code == 1
    message = cli.output.strip().removeprefix("Error: ")
    assert field_error(page, "pricing_input") == message
    assert field_value(page, "pricing_input") == "cheap"
    assert field_value(page, "alias") == "smart"
    assert rows(app, ModelAlias) == []

    unknown = new_model(client, csrf, fallbacks="nowhere")
    assert field_error(text(unknown), "fallbacks").startswith(
        "Unknown alias in the fallbacks: nowhere"
    )
    missing = new_model(client, csrf, provider="ghost")
    assert missing.status_code == 404
    assert field_error(text(missing), "provider").startswith("No provider with name or id 'ghost'")


@pytest.mark.parametrize("model_id", ["gpt\x00x", "gpt\u202ex", "gpt\x07x"])
def test_a_model_id_with_a_control_or_invisible_character_is_a_field_error(
    client: Any, csrf: str, app: Flask, model_id: str
) -> None:
    """On create, add and edit of a deployment: a NUL was an HTTP 500 on PostgreSQL, U+202E
    and BEL were stored and then shown reordered in the tables."""
    new_provider(client, csrf)
    expected = f"contains the control or invisible character U+{ord(model_id[3]):04X}"
    created = new_model(client, csrf, model=model_id)
    assert created.status_code == 400
    assert expected in field_error(text(created), "model")
    assert rows(app, ModelAlias) == []

    assert new_model(client, csrf).status_code == 303
    (smart,) = rows(app, ModelAlias)
    (deployment,) = rows(app, Deployment)
    form = {
        "provider": "upstream",
        "model": model_id,
        "pricing_input": "1",
        "pricing_output": "2",
        "priority": "0",
        "weight": "1",
        "enabled": True,
    }
    for path in (
        f"/dashboard/models/{smart.id}/deployments/new",
        f"/dashboard/models/{smart.id}/deployments/{deployment.id}/edit",
    ):
        refused = submit(client, path, csrf, **form)
        assert refused.status_code == 400, path
        assert expected in field_error(text(refused), "model")
    assert [d.provider_model for d in rows(app, Deployment)] == ["gpt-4o-mini"]


def test_model_delete_refused_while_a_fallback_then_forced(
    client: Any, csrf: str, app: Flask
) -> None:
    new_provider(client, csrf)
    new_model(client, csrf, alias="cheap")
    new_model(client, csrf, fallbacks="cheap")
    cheap = next(m for m in rows(app, ModelAlias) if m.alias == "cheap")
    assert submit(client, f"/dashboard/models/{cheap.id}/delete", csrf).status_code == 409
    assert (
        submit(client, f"/dashboard/models/{cheap.id}/delete", csrf, force=True).status_code == 303
    )
    assert [(m.alias, m.fallbacks) for m in rows(app, ModelAlias)] == [("smart", [])]


def test_team_tree_effective_rules_and_looser_child_refused(
    client: Any, csrf: str, app: Flask
) -> None:
    assert (
        submit(
            client,
            "/dashboard/teams/new",
            csrf,
            name="research",
            budget_per_month="500",
            rate_limit="600",
            models="smart, gpt-4*",
        ).status_code
        == 303
    )
    research = rows(app, Team)[0]
    looser = submit(
        client, "/dashboard/teams/new", csrf, name="nlp", parent=research.id, rate_limit="1000"
    )
    assert looser.status_code == 400
    assert "looser than the 600 requests/minute set by team 'research'" in field_error(
        text(looser), "rate_limit"
    )
    assert field_value(text(looser), "rate_limit") == "1000"
    assert (
        submit(
            client,
            "/dashboard/teams/new",
            csrf,
            name="nlp",
            parent=research.id,
            budget_per_day="20",
            models="gpt-4o",
        ).status_code
        == 303
    )
    nlp = next(t for t in rows(app, Team) if t.name == "nlp")
    assert nlp.parent_id == research.id

    tree = text(client.get("/dashboard/teams"))
    assert tree.index(">research<") < tree.index(">nlp<")
    assert "depth-1" in tree
    detail = text(client.get(f"/dashboard/teams/{nlp.id}"))
    assert "research → nlp" in detail
    assert "$500.00" in detail and "team &#39;research&#39;" in detail

    cycle = submit(
        client,
        f"/dashboard/teams/{research.id}/edit",
        csrf,
        name="research",
        parent=nlp.id,
        rate_limit="600",
        budget_per_month="500",
        models="smart, gpt-4*",
    )
    assert cycle.status_code == 400
    assert "would make a cycle" in field_error(text(cycle), "parent")
    assert (
        submit(
            client,
            f"/dashboard/teams/{nlp.id}/edit",
            csrf,
            name="nlp-renamed",
            parent=research.id,
            budget_per_day="",
            models="",
        ).status_code
        == 303
    )
    nlp = next(t for t in rows(app, Team) if t.id == nlp.id)
    assert (nlp.name, nlp.budget_per_day, nlp.models) == ("nlp-renamed", None, None)

    assert submit(client, f"/dashboard/teams/{research.id}/delete", csrf).status_code == 409
    assert (
        submit(client, f"/dashboard/teams/{research.id}/delete", csrf, force=True).status_code
        == 303
    )
    assert [(t.name, t.parent_id) for t in rows(app, Team)] == [("nlp-renamed", None)]


def test_new_key_secret_is_shown_once_after_a_redirect(client: Any, csrf: str, app: Flask) -> None:
    submit(client, "/dashboard/teams/new", csrf, name="ops", budget_per_day="5")
    team = rows(app, Team)[0]
    response = submit(
        client,
        "/dashboard/keys/new",
        csrf,
        name="ci-bot",
        team=team.id,
        budget_per_day="2",
        expires_at="2099-01-31",
    )
    assert response.status_code == 303
    (key,) = rows(app, ApiKey)
    assert response.headers["Location"] == f"/dashboard/keys/{key.id}/secret"
    assert "aigw_" not in text(response)
    assert (key.team_id, str(key.budget_per_day.normalize())) == (team.id, "2")

    shown = client.get(response.headers["Location"])
    secret = re.search(r'<code id="key-secret" class="secret">([^<]+)</code>', text(shown))
    assert shown.status_code == 200 and secret
    assert hash_secret(secret.group(1)) == key.key_hash

    again = client.get(response.headers["Location"])
    assert again.status_code == 410
    assert secret.group(1) not in text(again)
    assert "no longer available" in text(again)
    for path in ("/dashboard/keys", f"/dashboard/keys/{key.id}", f"/dashboard/teams/{team.id}"):
        assert secret.group(1) not in text(client.get(path))

    rotated = submit(client, f"/dashboard/keys/{key.id}/rotate", csrf, grace_seconds="60")
    assert rotated.headers["Location"] == f"/dashboard/keys/{key.id}/secret"
    shown_again = text(client.get(rotated.headers["Location"]))
    new_secret = re.search(r'class="secret">([^<]+)<', shown_again)
    assert new_secret and new_secret.group(1) != secret.group(1)
    (key,) = rows(app, ApiKey)
    assert key.key_hash == hash_secret(new_secret.group(1))
    assert key.previous_key_hash == hash_secret(secret.group(1))


def test_names_with_spaces_unicode_and_markup_are_shown_escaped(
    client: Any, csrf: str, app: Flask
) -> None:
    team_name, key_name, provider_name = "Data <Science> & Co", 'Frontend "App" 🚀', "Ünï <b>"
    submit(client, "/dashboard/teams/new", csrf, name=f"  {team_name} ")
    (team,) = rows(app, Team)
    assert team.name == team_name
    submit(client, "/dashboard/keys/new", csrf, name=key_name, team=team.id)
    (key,) = rows(app, ApiKey)
    assert key.name == key_name
    new_provider(client, csrf, name=provider_name)
    (provider,) = rows(app, Provider)
    assert provider.name == provider_name
    pages = {
        "/dashboard/teams": team_name,
        f"/dashboard/teams/{team.id}": key_name,
        "/dashboard/keys": key_name,
        f"/dashboard/keys/{key.id}": team_name,
        "/dashboard/providers": provider_name,
        f"/dashboard/providers/{provider.id}": provider_name,
    }
    for path, shown in pages.items():
        page = text(client.get(path))
        escaped = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped.replace('"', "&#34;") in page or escaped in page, path
        assert "<Science>" not in page and "Ünï <b>" not in page, path
    edit = text(client.get(f"/dashboard/teams/{team.id}/edit"))
    assert field_value(edit, "name") == team_name


def test_key_secret_page_belongs_to_its_session(client: Any, csrf: str, app: Flask) -> None:
    response = submit(client, "/dashboard/keys/new", csrf, name="mine")
    other = app.test_client()
    login(other)
    page = other.get(response.headers["Location"])
    assert page.status_code == 410 and "aigw_" not in text(page).replace("aigw_…", "")
    assert client.get(response.headers["Location"]).status_code == 200


def test_key_edit_revoke_and_validation(client: Any, csrf: str, app: Flask, runner: Any) -> None:
    submit(client, "/dashboard/keys/new", csrf, name="bot")
    (key,) = rows(app, ApiKey)
    bad = submit(
        client,
        f"/dashboard/keys/{key.id}/edit",
        csrf,
        name="bot",
        expires_at="2001-01-01",
        rate_limit="0",
    )
    assert bad.status_code == 400
    cli = runner.invoke(args=["key", "update", key.id, "--rate-limit", "0"])
    assert field_error(text(bad), "rate_limit") == cli.output.strip().removeprefix("Error: ")
    ok = submit(
        client,
        f"/dashboard/keys/{key.id}/edit",
        csrf,
        name="bot-2",
        expires_at="2099-06-01T12:00:00Z",
        rate_limit="30",
        models="none",
    )
    assert ok.status_code == 303
    (key,) = rows(app, ApiKey)
    assert (key.name, key.rate_limit, key.models) == ("bot-2", 30, [])
    assert key.expires_at.isoformat() == "2099-06-01T12:00:00+00:00"

    with get_state(app).transaction() as session:
        session.get(ApiKey, key.id).expires_at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    get_state(app).invalidate()
    detail = text(client.get(f"/dashboard/keys/{key.id}"))
    assert "/rotate" not in detail and "Extend its expiry" in detail
    refused = submit(client, f"/dashboard/keys/{key.id}/rotate", csrf)
    assert refused.status_code == 409
    assert "expired on 2020-01-01" in text(refused)
    assert rows(app, ApiKey)[0].key_hash == key.key_hash

    assert submit(client, f"/dashboard/keys/{key.id}/revoke", csrf).status_code == 303
    (key,) = rows(app, ApiKey)
    assert key.revoked_at is not None
    detail = text(client.get(f"/dashboard/keys/{key.id}"))
    assert "revoked" in detail and "/rotate" not in detail
    refused = submit(client, f"/dashboard/keys/{key.id}/rotate", csrf)
    assert refused.status_code == 409
    assert "was revoked" in text(refused)


def test_refused_rotation_keeps_the_grace_period_typed(
    client: Any, csrf: str, app: Flask, runner: Any
) -> None:
    """The rotate form came back with 0 after a refusal, losing what was typed."""
    submit(client, "/dashboard/keys/new", csrf, name="bot")
    (key,) = rows(app, ApiKey)
    assert field_value(text(client.get(f"/dashboard/keys/{key.id}")), "grace_seconds") == "0"
    refused = submit(client, f"/dashboard/keys/{key.id}/rotate", csrf, grace_seconds="-5")
    assert refused.status_code == 400
    page = text(refused)
    assert field_value(page, "grace_seconds") == "-5"
    cli = runner.invoke(args=["key", "rotate", key.id, "--grace-seconds", "-5"])
    assert cli.exit_code == 1
    assert field_error(page, "grace_seconds") == cli.output.strip().removeprefix("Error: ")
    assert 'aria-describedby="grace_seconds-error"' in page
    assert rows(app, ApiKey)[0].key_hash == key.key_hash


def test_unknown_objects_are_404_pages(client: Any, csrf: str) -> None:
    for path in (
        "/dashboard/providers/prov_0000000000000000",
        "/dashboard/models/nothing",
        "/dashboard/teams/nobody",
        "/dashboard/keys/key_missing",
        "/dashboard/requests/999999",
        # A NUL character no name or id holds: PostgreSQL refused it in the query (a 500).
        "/dashboard/providers/a%00b",
        "/dashboard/models/a%00b",
        "/dashboard/teams/a%00b",
        "/dashboard/keys/a%00b",
        "/dashboard/keys/a%00b/edit",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in text(response)


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("path", "fields", "field", "message"),
    [
        ("/dashboard/teams/new", {"name": "t1", "rate_limit": HUGE}, "rate_limit", "at most"),
        ("/dashboard/teams/new", {"name": "t1", "budget_per_day": "1000000000"}, None, "at most"),
        ("/dashboard/keys/new", {"name": "k1", "tokens_per_minute": HUGE}, None, "at most"),
        ("/dashboard/keys/new", {"name": "k1", "budget_per_day": "5000000000"}, None, "at most"),
    ],
)
def test_numbers_too_large_are_form_errors_not_500s(
    client: Any, csrf: str, app: Flask, path: str, fields: dict[str, str], field: Any, message: str
) -> None:
    """A number past what the database columns hold is refused by the form, with what was
    typed kept (it was an OverflowError and a bare 500 page)."""
    response = submit(client, path, csrf, **fields)
    assert response.status_code == 400
    page = text(response)
    assert message in page
    if field is not None:
        assert message in (field_error(page, field) or "")
        assert field_value(page, field) == fields[field]
    assert rows(app, Team) == [] and rows(app, ApiKey) == []


def test_huge_prices_and_model_settings_are_form_errors(client: Any, csrf: str, app: Flask) -> None:
    new_provider(client, csrf)
    for fields in ({"max_tokens": HUGE}, {"weight": HUGE}, {"pricing_input": "9999999999999"}):
        response = new_model(client, csrf, **fields)
        assert response.status_code == 400, fields
        assert "at most" in text(response)
    assert rows(app, ModelAlias) == []


def test_out_of_range_request_ids_and_dates_are_not_500s(client: Any, csrf: str) -> None:
    assert client.get(f"/dashboard/requests/{HUGE}999").status_code == 404
    for until in ("9999-12-31", "253402300799", "9999-12-31T23:00:00-05:00", "0001-01-01"):
        response = client.get(f"/dashboard/requests?until={until}")
        assert response.status_code == 400, until
        assert "out of range" in text(response)


def test_the_cli_refuses_numbers_it_cannot_store_with_one_line(runner: Any) -> None:
    result = runner.invoke(args=["team", "create", "--name", "t", "--rate-limit", HUGE])
    assert result.exit_code == 1
    assert result.output.startswith("Error: The rate limit must be at most 2147483647")
    result = runner.invoke(args=["team", "create", "--name", "t", "--budget-per-day", "1e9"])
    assert result.exit_code == 1 and "at most 100000000 US dollars" in result.output
    # Below the precision amounts are kept at, a budget would be stored as 0 (spend nothing).
    result = runner.invoke(args=["team", "create", "--name", "t", "--budget-per-day", "1e-12"])
    assert result.exit_code == 1 and "at least 0.0000000001 US dollars" in result.output
    ok = runner.invoke(args=["team", "create", "--name", "t", "--budget-per-day", "0.0000000001"])
    assert ok.exit_code == 0, ok.output


def test_unchanged_on_a_header_with_no_stored_value_is_refused(
    client: Any, csrf: str, app: Flask
) -> None:
    """``(unchanged)`` keeps a stored value; typed on a header that has none it would have
    saved an empty header, sent upstream."""
    new_provider(client, csrf, extra_headers="X-Api-Token: secret-token-123")
    (provider,) = rows(app, Provider)
    response = submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        name="upstream",
        format="openai",
        base_url="http://127.0.0.1:9/v1",
        extra_headers="X-Api-Token: (unchanged)\nX-Other: (unchanged)",
        enabled=True,
    )
    assert response.status_code == 400
    assert "Header X-Other has no stored value to keep" in (
        field_error(text(response), "extra_headers") or ""
    )
    assert provider_headers(get_state(app), provider) == {"X-Api-Token": "secret-token-123"}


def test_a_provider_stored_under_an_old_secret_can_be_listed_and_fixed(
    client: Any, csrf: str, app: Flask
) -> None:
    """Its headers cannot be kept: the edit page says so and saving with a new key removes
    them, instead of the page failing."""
    from sqlalchemy import update

    from flask_aigateway.crypto import CredentialCipher, encrypt_headers

    assert new_provider(client, csrf, name="withhdr").status_code == 303
    old = CredentialCipher("a-secret-since-replaced")
    state = get_state(app)
    with state.transaction() as session:
        session.execute(
            update(Provider).values(
                api_key_encrypted=old.encrypt("sk-1"),
                extra_headers={"X-Plain": "kept", **encrypt_headers(old, {"X-Trace": "abc"})},
            )
        )
    state.invalidate()
    (provider,) = rows(app, Provider)
    listing = text(client.get("/dashboard/providers"))
    assert "withhdr" in listing and "(cannot be decrypted)" in listing
    edit = client.get(f"/dashboard/providers/{provider.id}/edit")
    assert edit.status_code == 200
    page = text(edit)
    assert "Extra header X-Trace cannot be decrypted" in page
    assert "The stored API key cannot be decrypted" in page
    form = {"name": "withhdr", "format": "openai", "base_url": "http://127.0.0.1:9/v1"}
    saved = submit(
        client,
        f"/dashboard/providers/{provider.id}/edit",
        csrf,
        **form,
        api_key="sk-new-0123456789",
        extra_headers="X-Plain: (unchanged)",
        enabled=True,
    )
    assert saved.status_code == 303, text(saved)
    (provider,) = rows(app, Provider)
    assert provider_api_key(state, provider) == "sk-new-0123456789"
    assert provider_headers(state, provider) == {"X-Plain": "kept"}
