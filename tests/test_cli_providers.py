"""``flask provider …`` end to end: output, exit codes and what the database holds afterwards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from flask_aigateway import AIGateway
from flask_aigateway.enums import AZURE_DEFAULT_API_VERSION
from flask_aigateway.errors import ValidationError
from flask_aigateway.models import Deployment, ModelAlias, Provider
from flask_aigateway.services import models as model_service
from flask_aigateway.services import providers as service

SECRET = "sk-test-0123456789abcdefXYZ9"


def count(state: Any, model: type) -> int:
    with state.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def stored(state: Any, name: str) -> Provider | None:
    with state.session() as session:
        return session.scalar(select(Provider).where(Provider.name == name))


def invoke_ok(runner: Any, *args: str) -> Any:
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def invoke_error(runner: Any, *args: str) -> str:
    """Run a command that must fail as a user error; return its ``Error: …`` message."""
    result = runner.invoke(args=list(args))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: "), result.output
    return result.output


def make_alias(state: Any, alias: str, provider: str) -> ModelAlias:
    return model_service.create_model(
        state, alias=alias, provider=provider, model="m", pricing_input="1", pricing_output="2"
    )


# --- create -----------------------------------------------------------------------------------


def test_create_openai_with_key_stores_it_encrypted(runner, state):
    result = invoke_ok(
        runner,
        "provider",
        "create",
        "--name",
        "openai",
        "--format",
        "openai",
        "--api-key",
        SECRET,
        "--header",
        "HTTP-Referer: https://example.org",
    )
    row = stored(state, "openai")
    assert row is not None
    assert row.id.startswith("prov_") and row.id in result.output
    assert SECRET not in result.output
    assert "****XYZ9" in result.output
    assert row.format == "openai"
    assert row.base_url is None
    assert row.enabled is True
    assert service.provider_headers(state, row) == {"HTTP-Referer": "https://example.org"}
    assert "example.org" not in json.dumps(row.extra_headers)
    assert row.api_key_hint == "****XYZ9"
    assert service.provider_api_key(state, row) == SECRET
    with state.engine.connect() as conn:
        raw = conn.execute(text("SELECT api_key_encrypted, api_key_hint FROM aigw_providers")).one()
    assert raw[0] and SECRET not in raw[0]
    assert SECRET not in raw[1]


def test_create_json_parses_and_masks(runner, state):
    result = invoke_ok(
        runner,
        "provider",
        "create",
        "--name",
        "claude",
        "--format",
        "anthropic",
        "--api-key",
        SECRET,
        "--json",
    )
    data = json.loads(result.stdout)
    assert data["id"] == stored(state, "claude").id
    assert data["format"] == "anthropic"
    assert data["api_key"] == "****XYZ9"
    assert data["effective_base_url"] == "https://api.anthropic.com"
    assert SECRET not in result.stdout


def test_create_ollama_needs_no_key(runner, state):
    invoke_ok(runner, "provider", "create", "--name", "local", "--format", "ollama")
    row = stored(state, "local")
    assert row.api_key_encrypted is None and row.api_key_hint is None
    assert service.provider_api_key(state, row) is None
    assert service.provider_to_dict(row)["effective_base_url"] == "http://localhost:11434/v1"


def test_create_gemini_preset_uses_default_url(runner, state):
    result = invoke_ok(
        runner,
        "provider",
        "create",
        "--name",
        "gemini",
        "--format",
        "gemini",
        "--api-key",
        SECRET,
        "--json",
    )
    data = json.loads(result.stdout)
    assert data["base_url"] is None
    assert data["effective_base_url"].startswith("https://generativelanguage.googleapis.com/")
    assert stored(state, "gemini").format == "gemini"


def test_create_azure_requires_base_url(runner, state):
    message = invoke_error(
        runner, "provider", "create", "--name", "az", "--format", "azure", "--api-key", SECRET
    )
    assert "Azure providers need a base URL" in message
    assert count(state, Provider) == 0


def test_create_azure_gets_default_api_version(runner, state):
    invoke_ok(
        runner,
        "provider",
        "create",
        "--name",
        "az",
        "--format",
        "azure",
        "--base-url",
        "https://res.openai.azure.com/",
        "--api-key",
        SECRET,
    )
    row = stored(state, "az")
    assert row.base_url == "https://res.openai.azure.com"
    assert row.api_version == AZURE_DEFAULT_API_VERSION


def test_create_azure_keeps_given_api_version(runner, state):
    invoke_ok(
        runner,
        "provider",
        "create",
        "--name",
        "az",
        "--format",
        "azure",
        "--base-url",
        "https://res.openai.azure.com",
        "--api-version",
        "2025-01-01-preview",
    )
    assert stored(state, "az").api_version == "2025-01-01-preview"


def test_create_disabled(runner, state):
    invoke_ok(runner, "provider", "create", "--name", "p", "--format", "openai", "--disabled")
    assert stored(state, "p").enabled is False


def test_unknown_format_lists_choices(runner, state):
    message = invoke_error(runner, "provider", "create", "--name", "x", "--format", "cohere")
    assert "'cohere' is not valid" in message
    assert "openai, anthropic, ollama, gemini, azure" in message
    assert count(state, Provider) == 0


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://host/v1",
        "https://",
        "http://host:99999",
        "https://h/v1?x=1",
        "http://[::1",
        "http://[::1/v1",
        "http://x]/v1",
    ],
)
def test_malformed_base_url(runner, state, url):
    message = invoke_error(
        runner, "provider", "create", "--name", "x", "--format", "openai", "--base-url", url
    )
    assert "base url" in message and repr(url) in message
    assert count(state, Provider) == 0


def test_unbalanced_ipv6_bracket_on_update_is_a_field_error(runner, state):
    service.create_provider(state, name="p", format="openai")
    message = invoke_error(runner, "provider", "update", "p", "--base-url", "http://[::1")
    assert "is not a valid URL" in message
    assert stored(state, "p").base_url is None


def test_base_url_longer_than_its_column_is_refused(runner, state):
    """The column holds 500 characters: longer is a field error on every database (PostgreSQL
    refused it with a DataError traceback), on create and on update."""
    url = "https://api.example.com/" + "v" * 477
    assert len(url) == 501
    message = invoke_error(
        runner, "provider", "create", "--name", "x", "--format", "openai", "--base-url", url
    )
    assert "The base url is too long: use at most 500 characters (got 501)" in message
    assert count(state, Provider) == 0
    invoke_ok(
        runner, "provider", "create", "--name", "x", "--format", "openai", "--base-url", url[:-1]
    )
    assert stored(state, "x").base_url == url[:-1]
    message = invoke_error(runner, "provider", "update", "x", "--base-url", url + "/v1")
    assert "too long" in message
    assert stored(state, "x").base_url == url[:-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--name", "bad\x1bname"], "The name 'bad\\x1bname' is not valid"),
        (["--name", "n" * 101], "The name is too long: use at most 100 characters (got 101)"),
        (["--name", "prov_0123456789abcdef"], "looks like a provider id"),
        (["--name", "x", "--header", "no colon"], "must look like 'Name: value'"),
        (["--name", "x", "--header", "Authorization: Bearer abc"], "give it as the API key"),
        (["--name", "x", "--api-key", "  "], "--api-key is empty"),
        (["--name", "x", "--api-key", "sk with space"], "spaces or control characters"),
        (["--name", "x", "--api-version", "v 1"], "The API version 'v 1' is not valid"),
    ],
)
def test_create_invalid_fields(runner, state, args, expected):
    message = invoke_error(runner, "provider", "create", "--format", "openai", *args)
    assert expected in message
    assert count(state, Provider) == 0


@pytest.mark.parametrize(
    "url",
    ["https://h.example/v1\r\nX-Injected: 1", "https://h.example/v\n1", "https://a b.x"],
)
def test_base_url_with_a_line_break_or_space_is_refused(runner, state, url):
    message = invoke_error(
        runner, "provider", "create", "--name", "x", "--format", "openai", "--base-url", url
    )
    assert "The base url" in message and "line breaks or control characters" in message
    assert count(state, Provider) == 0


@pytest.mark.parametrize(
    "header",
    [
        "Host: evil.example",
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "keep-alive: 5",
        "TE: trailers",
        "Upgrade: h2c",
        "Expect: 100-continue",
    ],
)
def test_framing_and_hop_by_hop_headers_are_refused(runner, state, header):
    name = header.partition(":")[0]
    message = invoke_error(
        runner, "provider", "create", "--name", "x", "--format", "openai", "--header", header
    )
    assert f"Header {name!r} cannot be set as an extra header" in message
    assert count(state, Provider) == 0
    service.create_provider(state, name="p", format="openai", extra_headers=["X-Title: t"])
    message = invoke_error(runner, "provider", "update", "p", "--header", header)
    assert repr(name) in message
    assert service.provider_headers(state, stored(state, "p")) == {"X-Title": "t"}


def test_service_refuses_framing_headers_and_line_breaks_naming_the_field(state):
    with pytest.raises(ValidationError) as info:
        service.create_provider(
            state, name="p", format="openai", extra_headers={"Transfer-Encoding": "chunked"}
        )
    assert info.value.param == "extra_headers" and "'Transfer-Encoding'" in str(info.value)
    with pytest.raises(ValidationError) as info:
        service.create_provider(
            state, name="p", format="openai", base_url="https://h.example/v1\r\nHost: x"
        )
    assert info.value.param == "base_url" and "line breaks" in str(info.value)
    with pytest.raises(ValidationError) as info:
        service.create_provider(
            state, name="p", format="openai", extra_headers={"X-A": "v\r\nHost: x"}
        )
    assert info.value.param == "extra_headers"
    assert count(state, Provider) == 0


def test_duplicate_name_is_refused(runner, state):
    invoke_ok(
        runner, "provider", "create", "--name", "p", "--format", "openai", "--api-key", SECRET
    )
    message = invoke_error(runner, "provider", "create", "--name", "p", "--format", "anthropic")
    assert "A provider named 'p' already exists" in message
    assert count(state, Provider) == 1
    row = stored(state, "p")
    assert row.format == "openai"
    assert service.provider_api_key(state, row) == SECRET


def test_storing_a_key_without_encryption_secret_fails(app_config, tmp_path):
    config = {k: v for k, v in app_config.items() if k != "AIGATEWAY_SECRET_KEY"}
    app = Flask("no_secret", instance_path=str(tmp_path / "other"))
    app.config.update(config)
    AIGateway(app)
    state = AIGateway.get_state(app)
    try:
        runner = app.test_cli_runner()
        message = invoke_error(
            runner, "provider", "create", "--name", "p", "--format", "openai", "--api-key", SECRET
        )
        assert "AIGATEWAY_SECRET_KEY" in message
        assert count(state, Provider) == 0
        invoke_ok(runner, "provider", "create", "--name", "local", "--format", "ollama")
        assert count(state, Provider) == 1
    finally:
        state.close()


# --- list / info ------------------------------------------------------------------------------


def test_list_empty(runner):
    result = invoke_ok(runner, "provider", "list")
    assert "No providers yet" in result.output
    assert json.loads(invoke_ok(runner, "provider", "list", "--json").stdout) == []


def test_list_shows_full_ids_and_masks(runner, state):
    openai = service.create_provider(state, name="openai", format="openai", api_key=SECRET)
    local = service.create_provider(
        state, name="local", format="ollama", base_url="http://127.0.0.1:11434/v1"
    )
    result = invoke_ok(runner, "provider", "list")
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "NAME", "FORMAT", "BASE_URL", "API_KEY", "ENABLED"]
    assert local.id in lines[1] and "http://127.0.0.1:11434/v1" in lines[1]
    assert openai.id in lines[2] and "https://api.openai.com/v1 (default)" in lines[2]
    assert "****XYZ9" in lines[2]
    assert SECRET not in result.output
    data = json.loads(invoke_ok(runner, "provider", "list", "--json").stdout)
    assert [p["name"] for p in data] == ["local", "openai"]
    assert data[1]["api_key"] == "****XYZ9"
    assert SECRET not in json.dumps(data)


def test_info_by_name_and_full_id(runner, state):
    provider = service.create_provider(
        state,
        name="openai",
        format="openai",
        api_key=SECRET,
        extra_headers={"X-Api-Token": "tok-abcdefghijkl1234", "X-Title": "demo"},
    )
    by_name = invoke_ok(runner, "provider", "info", "openai")
    assert provider.id in by_name.output
    assert SECRET not in by_name.output
    data = json.loads(invoke_ok(runner, "provider", "info", provider.id, "--json").stdout)
    assert data["name"] == "openai"
    assert data["api_key"] == "****XYZ9"
    assert data["extra_headers"] == {"X-Api-Token": "****1234", "X-Title": "demo"}


def test_info_unknown(runner):
    message = invoke_error(runner, "provider", "info", "nope")
    assert "No provider with name or id 'nope'" in message
    assert "flask provider list" in message


# --- update -----------------------------------------------------------------------------------


def test_update_renames_and_keeps_key(runner, state):
    provider = service.create_provider(state, name="p", format="openai", api_key=SECRET)
    result = invoke_ok(runner, "provider", "update", "p", "--name", "q", "--json")
    assert json.loads(result.stdout)["name"] == "q"
    row = stored(state, "q")
    assert row.id == provider.id
    assert service.provider_api_key(state, row) == SECRET
    assert stored(state, "p") is None


def test_update_replaces_and_clears_key(runner, state):
    provider = service.create_provider(state, name="p", format="openai", api_key=SECRET)
    other = "sk-another-key-00000000ABCD"
    result = invoke_ok(runner, "provider", "update", provider.id, "--api-key", other)
    assert other not in result.output and "****ABCD" in result.output
    row = stored(state, "p")
    assert service.provider_api_key(state, row) == other
    assert row.api_key_hint == "****ABCD"
    invoke_ok(runner, "provider", "update", "p", "--clear-api-key")
    row = stored(state, "p")
    assert row.api_key_encrypted is None and row.api_key_hint is None


def test_update_settings(runner, state):
    service.create_provider(
        state, name="p", format="openai", base_url="https://a.example/v1", extra_headers=["A: 1"]
    )
    invoke_ok(
        runner,
        "provider",
        "update",
        "p",
        "--base-url",
        "https://b.example/v2/",
        "--header",
        "B: 2",
        "--header",
        "C: 3",
        "--disable",
    )
    row = stored(state, "p")
    assert row.base_url == "https://b.example/v2"
    assert service.provider_headers(state, row) == {"B": "2", "C": "3"}
    assert row.enabled is False
    invoke_ok(
        runner, "provider", "update", "p", "--base-url", "default", "--clear-headers", "--enable"
    )
    row = stored(state, "p")
    assert row.base_url is None and row.extra_headers == {} and row.enabled is True


def test_update_to_azure_needs_base_url_and_sets_version(runner, state):
    service.create_provider(state, name="p", format="openai")
    message = invoke_error(runner, "provider", "update", "p", "--format", "azure")
    assert "Azure providers need a base URL" in message
    assert stored(state, "p").format == "openai"
    invoke_ok(
        runner,
        "provider",
        "update",
        "p",
        "--format",
        "azure",
        "--base-url",
        "https://res.openai.azure.com",
    )
    row = stored(state, "p")
    assert row.format == "azure" and row.api_version == AZURE_DEFAULT_API_VERSION


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "grpc"], "'grpc' is not valid"),
        (["--base-url", "localhost:8000"], "is not a valid URL"),
        (["--name", "other"], "A provider named 'other' already exists"),
        (["--api-key", ""], "--api-key is empty"),
    ],
)
def test_update_invalid_changes_nothing(runner, state, args, expected):
    service.create_provider(state, name="p", format="openai", api_key=SECRET)
    service.create_provider(state, name="other", format="openai")
    before = service.provider_to_dict(stored(state, "p"))
    message = invoke_error(runner, "provider", "update", "p", *args)
    assert expected in message
    assert service.provider_to_dict(stored(state, "p")) == before
    assert service.provider_api_key(state, stored(state, "p")) == SECRET


def test_update_usage_errors(runner, state):
    service.create_provider(state, name="p", format="openai")
    # Exit 1 and one line, as key, team and model update say it.
    assert invoke_error(runner, "provider", "update", "p") == (
        "Error: Nothing to change: give --name, --format, --base-url, "
        "--api-key/--clear-api-key, --api-version, --header/--clear-headers or "
        "--enable/--disable (see --help).\n"
    )
    both = invoke_error(runner, "provider", "update", "p", "--api-key", SECRET, "--clear-api-key")
    assert both == "Error: Give either --api-key or --clear-api-key, not both.\n"
    assert stored(state, "p").api_key_encrypted is None
    assert "No provider" in invoke_error(runner, "provider", "update", "ghost", "--disable")


# --- delete -----------------------------------------------------------------------------------


def test_delete_unused_provider(runner, state):
    provider = service.create_provider(state, name="p", format="openai")
    result = invoke_ok(runner, "provider", "delete", "p")
    assert provider.id in result.output
    assert count(state, Provider) == 0


def test_delete_in_use_is_refused_then_forced(runner, state):
    used = service.create_provider(state, name="used", format="openai")
    spare = service.create_provider(state, name="spare", format="anthropic")
    make_alias(state, "chat", "used")
    make_alias(state, "code", "used")
    model_service.add_deployment(
        state, "chat", provider="spare", model="c", pricing_input="1", pricing_output="1"
    )
    message = invoke_error(runner, "provider", "delete", "used")
    assert "used by 2 deployments of model aliases chat, code. Remove those" in message
    assert "--force" in message
    assert count(state, Provider) == 2 and count(state, Deployment) == 3

    result = invoke_ok(runner, "provider", "delete", used.id, "--force")
    assert "Removed 2 deployments: " in result.output
    assert count(state, Provider) == 1
    with state.session() as session:
        remaining = session.scalars(select(Deployment)).all()
        assert [d.provider_id for d in remaining] == [spare.id]
        orphans = session.scalar(
            select(func.count())
            .select_from(Deployment)
            .where(Deployment.provider_id.not_in(select(Provider.id)))
        )
    assert orphans == 0
    assert count(state, ModelAlias) == 2


def test_delete_unknown(runner):
    assert "No provider with name or id 'ghost'" in invoke_error(
        runner, "provider", "delete", "ghost"
    )


# --- names are labels -------------------------------------------------------------------------


def test_provider_names_with_spaces_and_unicode_are_quoted_references(runner, state):
    created = json.loads(
        invoke_ok(
            runner,
            "provider",
            "create",
            "--name",
            "  OpenAI (EU) — Zürich  ",
            "--format",
            "openai",
            "--api-key",
            SECRET,
            "--json",
        ).stdout
    )
    assert created["name"] == "OpenAI (EU) — Zürich"
    assert stored(state, "OpenAI (EU) — Zürich").id == created["id"]
    info = json.loads(
        invoke_ok(runner, "provider", "info", "OpenAI (EU) — Zürich", "--json").stdout
    )
    assert info["id"] == created["id"]
    invoke_ok(
        runner,
        "model",
        "create",
        "--alias",
        "eu-gpt",
        "--provider",
        "OpenAI (EU) — Zürich",
        "--model",
        "gpt-4o",
        "--pricing-input",
        "1",
        "--pricing-output",
        "2",
    )
    assert "OpenAI (EU) — Zürich" in invoke_ok(runner, "provider", "list").output
    invoke_ok(runner, "provider", "update", "OpenAI (EU) — Zürich", "--name", "东京 OpenAI")
    assert stored(state, "东京 OpenAI").id == created["id"]
    message = invoke_error(runner, "provider", "delete", "东京 OpenAI")
    assert "eu-gpt" in message
    assert count(state, Provider) == 1


def test_aliases_keep_their_strict_charset(runner, state):
    service.create_provider(state, name="Main Provider", format="openai", api_key=SECRET)
    message = invoke_error(
        runner,
        "model",
        "create",
        "--alias",
        "my model",
        "--provider",
        "Main Provider",
        "--model",
        "m",
        "--pricing-input",
        "1",
        "--pricing-output",
        "2",
    )
    assert "The alias 'my model' is not valid" in message
    assert count(state, ModelAlias) == 0


# --- credentials stored under another secret ---------------------------------------------------


def stored_under_an_old_secret(state: Any, name: str, **values: Any) -> None:
    """Rewrite ``name``'s stored credentials as an AIGATEWAY_SECRET_KEY since replaced did."""
    from sqlalchemy import update

    from flask_aigateway.crypto import CredentialCipher, encrypt_headers

    old = CredentialCipher("a-secret-since-replaced")
    changes: dict[str, Any] = {}
    if "api_key" in values:
        changes["api_key_encrypted"] = old.encrypt(values["api_key"])
    if "headers" in values:
        changes["extra_headers"] = encrypt_headers(old, values["headers"])
    with state.transaction() as session:
        session.execute(update(Provider).where(Provider.name == name).values(**changes))
    state.invalidate()


def test_list_marks_what_cannot_be_decrypted_instead_of_failing(runner, state):
    """One provider stored under an old secret made `provider list` fail as a whole."""
    service.create_provider(state, name="healthy", format="openai", api_key=SECRET)
    service.create_provider(state, name="withhdr", format="openai", api_key=SECRET)
    stored_under_an_old_secret(state, "withhdr", api_key="sk-1", headers={"X-Trace": "abc"})
    result = invoke_ok(runner, "provider", "list")
    assert "healthy" in result.output and "withhdr" in result.output
    assert "****XYZ9 (cannot be decrypted)" in result.output
    assert "Warning: provider 'withhdr': its API key and its extra header X-Trace" in result.output
    assert "flask provider update 'withhdr' --api-key" in result.output
    assert "'healthy':" not in result.output
    info = invoke_ok(runner, "provider", "info", "withhdr", "--json")
    data = json.loads(info.stdout)
    assert data["unreadable"] == ["api_key", "X-Trace"]
    assert data["extra_headers"] == {"X-Trace": "(cannot be decrypted)"}


def test_update_with_a_new_key_proceeds_and_says_what_is_still_unreadable(runner, state):
    service.create_provider(state, name="withhdr", format="openai", api_key=SECRET)
    stored_under_an_old_secret(state, "withhdr", api_key="sk-1", headers={"X-Trace": "abc"})
    result = invoke_ok(runner, "provider", "update", "withhdr", "--api-key", "sk-new-0123456789")
    assert "Updated provider withhdr" in result.output
    assert "its extra header X-Trace cannot be decrypted" in result.output
    assert "--clear-headers" in result.output and "its API key" not in result.output
    assert service.provider_api_key(state, stored(state, "withhdr")) == "sk-new-0123456789"
    result = invoke_ok(runner, "provider", "update", "withhdr", "--header", "X-Trace: abc")
    assert "Warning" not in result.output
    assert service.provider_headers(state, stored(state, "withhdr")) == {"X-Trace": "abc"}
