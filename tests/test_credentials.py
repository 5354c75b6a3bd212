"""Credentials stay where they belong: a provider's key follows no base-URL change, base URLs
cannot point at metadata services (as written or after DNS), extra headers are encrypted.

Through the service layer, the CLI (CliRunner), the dashboard (test client, real login and
CSRF) and the transport (real connections to a fake upstream on 127.0.0.1).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dashboard_helpers import FLASK_SECRET, TOKEN, field_error, login, submit, text
from sqlalchemy import select, update

from flask_aigateway.errors import UpstreamError, ValidationError
from flask_aigateway.models import Provider
from flask_aigateway.providers.base import UpstreamRequest
from flask_aigateway.providers.transport import Transport
from flask_aigateway.services import providers as service

KEY = "sk-original-key-0123456789"
NEW_KEY = "sk-replacement-key-987654"

#: Base URLs refused whatever the configuration: metadata names and link-local addresses.
ALWAYS_REFUSED = [
    "http://169.254.169.254/latest",
    "http://169.254.0.1:8080/v1",
    "http://[fe80::1]/v1",
    "http://[fd00:ec2::254]/latest",
    "http://[::ffff:169.254.169.254]/v1",
    "http://100.100.100.200/latest",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://METADATA.google.internal./v1",
    "http://metadata/v1",
    "http://0.0.0.0:8000/v1",
    # 169.254.169.254 as the resolver reads numbers: decimal, hex, octal (accepted before).
    "http://2852039166/latest",
    "http://0xa9fea9fe/latest",
    "http://0251.0376.0251.0376/latest",
]
LOCAL = ["http://127.0.0.1:11434/v1", "http://localhost:8000/v1", "http://10.1.2.3/v1"]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "AIGATEWAY_DASHBOARD_TOKEN": TOKEN, "SECRET_KEY": FLASK_SECRET}


def stored(state: Any, name: str = "p") -> Provider:
    with state.session() as session:
        return session.scalars(select(Provider).where(Provider.name == name)).one()


def make(state: Any, **fields: Any) -> Provider:
    values = {
        "name": "p",
        "format": "openai",
        "base_url": "https://api.example.com/v1",
        "api_key": KEY,
    }
    return service.create_provider(state, **{**values, **fields})


def store_directly(state: Any, name: str, **values: Any) -> None:
    """Write provider ``name``'s row past the services (a row stored before a check existed,
    or by hand), and drop the gateway's cached routes."""
    with state.transaction() as session:
        session.execute(update(Provider).where(Provider.name == name).values(**values))
    state.invalidate()


# -- the service layer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change", [{"base_url": "https://attacker.example/v1"}, {"format": "ollama"}]
)
def test_moving_a_provider_without_its_key_is_refused(state, change) -> None:
    make(state)
    with pytest.raises(ValidationError) as refused:
        service.update_provider(state, "p", **change)
    assert refused.value.param == "api_key"
    assert "give the API key again" in refused.value.message
    row = stored(state)
    assert (row.format, row.base_url) == ("openai", "https://api.example.com/v1")
    assert service.provider_api_key(state, row) == KEY


def test_moving_a_provider_with_its_key_again_or_removed_is_allowed(state) -> None:
    make(state)
    service.update_provider(state, "p", base_url="https://b.example/v1", api_key=NEW_KEY)
    assert service.provider_api_key(state, stored(state)) == NEW_KEY
    service.update_provider(state, "p", base_url="https://c.example/v1", api_key=None)
    row = stored(state)
    assert (row.base_url, row.api_key_encrypted) == ("https://c.example/v1", None)
    # No key stored: nothing to walk off with, the base URL changes freely.
    service.update_provider(state, "p", base_url="https://d.example/v1")
    # Same destination (other fields changing): the key stays.
    service.update_provider(state, "p", api_key=KEY)
    service.update_provider(state, "p", name="renamed", base_url="https://d.example/v1/")
    assert service.provider_api_key(state, stored(state, "renamed")) == KEY


def test_secret_looking_headers_do_not_follow_a_move(state) -> None:
    make(state, api_key=None, extra_headers=["X-Auth-Token: hunter2", "X-Title: t"])
    with pytest.raises(ValidationError) as refused:
        service.update_provider(state, "p", base_url="https://elsewhere.example/v1")
    assert refused.value.param == "extra_headers"
    assert "X-Auth-Token" in refused.value.message
    service.update_provider(
        state, "p", base_url="https://elsewhere.example/v1", extra_headers=["X-Title: t"]
    )
    assert service.provider_headers(state, stored(state)) == {"X-Title": "t"}


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_metadata_and_link_local_base_urls_are_refused(state, url) -> None:
    with pytest.raises(ValidationError) as refused:
        make(state, base_url=url)
    assert refused.value.param == "base_url"
    assert "refused" in refused.value.message
    make(state)
    with pytest.raises(ValidationError):
        service.update_provider(state, "p", base_url=url, api_key=KEY)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://user:pass@api.example.com/v1", "user name or password"),
        ("https://sk-123@api.example.com/v1", "user name or password"),
        ("https://api.example.com/v1 ", None),
        ("https://api.example.com/v1\r\nX-Evil: 1", "control characters"),
        ("https://api.exa mple.com/v1", "spaces"),
        ("https://api.example.com/v1\x00", "control characters"),
    ],
)
def test_user_info_whitespace_and_control_characters_are_refused(state, url, words) -> None:
    if words is None:  # surrounding blanks are trimmed, as everywhere else
        assert make(state, base_url=url).base_url == "https://api.example.com/v1"
        return
    with pytest.raises(ValidationError) as refused:
        make(state, base_url=url)
    assert refused.value.param == "base_url"
    assert words in refused.value.message


@pytest.mark.parametrize("url", LOCAL)
def test_loopback_and_private_are_allowed_by_default(state, url) -> None:
    assert make(state, base_url=url).base_url == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://10.1.2.3/v1"])
def test_one_option_blocks_loopback_and_private(app_config, state, url) -> None:
    state.settings["AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS"] = True
    with pytest.raises(ValidationError) as refused:
        make(state, base_url=url)
    assert "AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS" in refused.value.message
    assert make(state, base_url="https://api.example.com/v1")


def test_extra_headers_are_stored_encrypted(state) -> None:
    make(state, extra_headers=["X-Org-Secret: s3cr3t-value", "X-Title: my-app"])
    row = stored(state)
    raw = json.dumps(row.extra_headers)
    assert "s3cr3t-value" not in raw and "my-app" not in raw
    assert set(row.extra_headers) == {"X-Org-Secret", "X-Title"}
    assert service.provider_headers(state, row) == {
        "X-Org-Secret": "s3cr3t-value",
        "X-Title": "my-app",
    }
    shown = service.provider_to_dict(row, state)["extra_headers"]
    assert shown["X-Title"] == "my-app" and "s3cr3t" not in shown["X-Org-Secret"]
    assert service.provider_to_dict(row)["extra_headers"]["X-Title"] == "(encrypted)"


def test_headers_stored_in_clear_before_are_still_read_and_encrypted_on_update(
    state, upstreams, api_key, client
) -> None:
    """Rows written before header values were encrypted: sent as they are, then encrypted by
    the next update that gives headers."""
    store_directly(state, "fake-openai", extra_headers={"X-Legacy": "plain"})
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=body, headers=auth(api_key))
    assert response.status_code == 200
    assert upstreams["gpt"].last.headers["x-legacy"] == "plain"
    service.update_provider(state, "fake-openai", extra_headers=["X-Legacy: plain"])
    assert "plain" not in json.dumps(stored(state, "fake-openai").extra_headers)
    response = client.post("/v1/chat/completions", json=body, headers=auth(api_key))
    assert upstreams["gpt"].last.headers["x-legacy"] == "plain"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_update_of_the_base_url_needs_the_key_again(runner, state) -> None:
    make(state)
    result = runner.invoke(args=["provider", "update", "p", "--base-url", "https://x.example"])
    assert result.exit_code == 1
    assert "give the API key again" in result.output and "--api-key" in result.output
    assert stored(state).base_url == "https://api.example.com/v1"
    assert service.provider_api_key(state, stored(state)) == KEY
    args = ["provider", "update", "p", "--base-url", "https://x.example", "--api-key", NEW_KEY]
    assert runner.invoke(args=args).exit_code == 0
    assert service.provider_api_key(state, stored(state)) == NEW_KEY
    args = ["provider", "update", "p", "--format", "ollama", "--clear-api-key"]
    assert runner.invoke(args=args).exit_code == 0
    assert stored(state).api_key_encrypted is None


def test_cli_refuses_metadata_and_user_info_urls(runner, state) -> None:
    for url in ["http://169.254.169.254/", "https://u:p@api.example.com/v1"]:
        result = runner.invoke(
            args=["provider", "create", "--name", "p", "--format", "openai", "--base-url", url]
        )
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and "base url" in result.output.lower()
        assert "u:p" not in result.output.replace(url, "")


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_edit_of_the_base_url_needs_the_key_again(client, state) -> None:
    provider = make(state, extra_headers=["X-Api-Token: tok-123456789"])
    csrf = login(client)
    path = f"/dashboard/providers/{provider.id}/edit"
    form = {"name": "p", "format": "openai", "base_url": "https://evil.example/v1"}
    response = submit(client, path, csrf, **form, extra_headers="", enabled=True)
    assert response.status_code == 400
    assert "give the API key again" in (field_error(text(response), "api_key") or "")
    assert stored(state).base_url == "https://api.example.com/v1"

    # The key given again, but the stored secret header still shown as "(unchanged)".
    form["api_key"] = NEW_KEY
    kept = "X-Api-Token: (unchanged)"
    response = submit(client, path, csrf, **form, extra_headers=kept, enabled=True)
    assert response.status_code == 400
    assert "X-Api-Token" in (field_error(text(response), "extra_headers") or "")
    assert service.provider_api_key(state, stored(state)) == KEY

    response = submit(client, path, csrf, **form, extra_headers="", enabled=True)
    assert response.status_code == 303
    row = stored(state)
    assert row.base_url == "https://evil.example/v1"
    assert service.provider_api_key(state, row) == NEW_KEY and row.extra_headers == {}


def test_dashboard_refuses_a_metadata_base_url(client, state) -> None:
    csrf = login(client)
    form = {"name": "p", "format": "openai", "base_url": "http://169.254.169.254/latest"}
    response = submit(client, "/dashboard/providers/new", csrf, **form, enabled=True)
    assert response.status_code == 400
    assert "link-local" in (field_error(text(response), "base_url") or "")
    with state.session() as session:
        assert session.scalars(select(Provider)).all() == []


# -- call time: the transport ----------------------------------------------------------------


def chat(url: str) -> UpstreamRequest:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return UpstreamRequest(
        "POST", url, {"Content-Type": "application/json", "Authorization": "Bearer s"}, body
    )


def test_a_name_resolving_to_a_blocked_address_is_refused_after_dns(fake_openai) -> None:
    """``localhost`` passes the check by name; the connection to 127.0.0.1 is refused before
    the request — and its credential — is written."""
    url = fake_openai.base_url.replace("127.0.0.1", "localhost") + "/chat/completions"
    blocked = Transport(block_private=True)
    try:
        with pytest.raises(UpstreamError) as refused:
            blocked.send(chat(url), timeout=5, pool_key="p")
        assert refused.value.code == "upstream_address_refused"
        assert refused.value.retryable is False
        assert "127.0.0.1" in refused.value.message or "::1" in refused.value.message
        assert fake_openai.requests == []
    finally:
        blocked.close()
    allowed = Transport()
    try:
        assert allowed.send(chat(url), timeout=5, pool_key="p").status == 200
        assert len(fake_openai.requests) == 1
    finally:
        allowed.close()


@pytest.mark.parametrize("url", ["http://169.254.169.254/v1", "http://metadata/v1"])
def test_the_transport_refuses_metadata_destinations_by_name(url) -> None:
    transport = Transport()
    try:
        with pytest.raises(UpstreamError) as refused:
            transport.send(chat(url + "/chat/completions"), timeout=5, pool_key="p")
        assert refused.value.code == "upstream_address_refused"
        assert "Nothing was sent" in refused.value.message
    finally:
        transport.close()


def test_a_row_pointing_at_metadata_is_refused_at_call_time(
    client, state, upstreams, api_key
) -> None:
    """A base URL stored before the configuration-time check (or written to the database
    directly) is refused on the request path: a 502 naming the problem, not retried."""
    store_directly(state, "fake-openai", base_url="http://169.254.169.254/v1")
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=body, headers=auth(api_key))
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert "link-local" in error["message"]
    assert upstreams["gpt"].requests == []


# -- values an HTTP request cannot carry --------------------------------------------------------

#: Each refused at save, each a deployment that can never be called when stored before the check.
UNSENDABLE = [
    (["--api-key", "sk-ключ-0123456789"], "The API key contains non-ASCII characters"),
    (["--header", "X-Team: 客服"], "The value of header 'X-Team' contains characters"),
    (["--base-url", "https://api..openai.com/v1"], "has an empty label"),
    (["--base-url", "https://" + "a" * 64 + ".example.com/v1"], "longer than 63 characters"),
]


@pytest.mark.parametrize(("args", "expected"), UNSENDABLE)
def test_cli_refuses_what_no_request_can_carry(runner, state, args, expected) -> None:
    create = ["provider", "create", "--name", "p", "--format", "openai", *args]
    result = runner.invoke(args=create)
    assert result.exit_code == 1 and result.output.startswith("Error: "), result.output
    assert expected in result.output and "ключ" not in result.output
    with state.session() as session:
        assert session.scalars(select(Provider)).all() == []
    make(state)
    result = runner.invoke(args=["provider", "update", "p", *args])
    assert result.exit_code == 1 and expected in result.output
    assert stored(state).base_url == "https://api.example.com/v1"
    assert service.provider_api_key(state, stored(state)) == KEY


def test_dashboard_refuses_what_no_request_can_carry(client, state) -> None:
    csrf = login(client)
    form = {"name": "p", "format": "openai", "base_url": "https://api..openai.com/v1"}
    response = submit(client, "/dashboard/providers/new", csrf, **form, enabled=True)
    assert response.status_code == 400
    assert "empty label" in (field_error(text(response), "base_url") or "")
    form = {"name": "p", "format": "openai", "extra_headers": "X-Team: 客服"}
    response = submit(client, "/dashboard/providers/new", csrf, **form, enabled=True)
    assert response.status_code == 400
    assert "X-Team" in (field_error(text(response), "extra_headers") or "")
    form = {"name": "p", "format": "openai", "api_key": "sk-ключ-0123456789"}
    response = submit(client, "/dashboard/providers/new", csrf, **form, enabled=True)
    assert response.status_code == 400
    assert "non-ASCII" in (field_error(text(response), "api_key") or "")
    with state.session() as session:
        assert session.scalars(select(Provider)).all() == []


@pytest.mark.parametrize("stored_value", ["api_key", "header", "base_url"])
def test_a_row_no_request_can_carry_fails_over_to_the_next_deployment(
    client, state, upstreams, api_key, stored_value
) -> None:
    """A key, header or base URL stored before the checks is that deployment's failure (a
    502 naming the host, never the key), not the gateway's: the alias's next deployment and
    its fallback chain still answer."""
    from flask_aigateway.crypto import encrypt_headers
    from flask_aigateway.services.models import add_deployment, create_model

    fake = upstreams["gpt"]
    make(state, name="bad", base_url=fake.base_url)
    values: dict[str, Any] = {
        "api_key": {"api_key_encrypted": state.cipher.encrypt("sk-ключ-0123456789")},
        "header": {"extra_headers": encrypt_headers(state.cipher, {"X-Team": "客服"})},
        "base_url": {"base_url": "https://api..openai.com/v1"},
    }[stored_value]
    store_directly(state, "bad", **values)
    price = {"model": "m", "pricing_input": "1", "pricing_output": "1"}
    create_model(state, alias="alone", provider="bad", **price)
    create_model(state, alias="primary", provider="bad", fallbacks="gpt", **price)
    create_model(state, alias="pair", provider="bad", **price)
    add_deployment(state, "pair", provider="fake-openai", priority=1, **price)
    body = {"messages": [{"role": "user", "content": "hi"}]}

    response = client.post(
        "/v1/chat/completions", json={"model": "alone", **body}, headers=auth(api_key)
    )
    assert response.status_code == 502, response.get_data(as_text=True)
    message = response.get_json()["error"]["message"]
    assert ("127.0.0.1" in message or "api..openai.com" in message) and "ключ" not in message
    assert fake.requests == []
    for alias in ("primary", "pair"):
        response = client.post(
            "/v1/chat/completions", json={"model": alias, **body}, headers=auth(api_key)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    assert len(fake.requests) == 2
    assert all("x-team" not in r.headers for r in fake.requests)


def test_a_provider_whose_credentials_cannot_be_read_leaves_the_others_serving(
    client, state, upstreams, api_key
) -> None:
    """``AIGATEWAY_SECRET_KEY`` changed without the old key kept: the one provider whose
    stored key cannot be decrypted is left out of its aliases, whose other deployments still
    serve (the whole alias failed); an alias with nothing else still says why."""
    from flask_aigateway.services.models import add_deployment, create_model

    fake = upstreams["gpt"]
    make(state, name="old-secret", base_url=fake.base_url)
    store_directly(state, "old-secret", api_key_encrypted="gAAAAABnot-a-token-this-secret-can-read")
    price = {"model": "m", "pricing_input": "1", "pricing_output": "1"}
    create_model(state, alias="pair", provider="old-secret", **price)
    add_deployment(state, "pair", provider="fake-openai", priority=1, **price)
    create_model(state, alias="alone", provider="old-secret", **price)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    served = client.post(
        "/v1/chat/completions", json={"model": "pair", **body}, headers=auth(api_key)
    )
    assert served.status_code == 200, served.get_data(as_text=True)
    assert len(fake.requests) == 1
    alone = client.post(
        "/v1/chat/completions", json={"model": "alone", **body}, headers=auth(api_key)
    )
    assert alone.status_code >= 500
    assert "cannot be decrypted" in alone.get_data(as_text=True)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_alias_whose_only_provider_cannot_be_read_still_falls_back(
    client, state, upstreams, api_key, stream: bool
) -> None:
    """Its one deployment left out (the secret changed), the alias is as one whose
    deployments are all down: its fallbacks serve the request (the whole request failed with
    the decryption error, fallbacks untried), and a failing fallback's own error is what the
    client gets (the test above has the alias with nothing else, whose error says why)."""
    from fakes import Reply

    from flask_aigateway.services.models import create_model

    fake = upstreams["gpt"]
    make(state, name="old-secret", base_url=fake.base_url)
    store_directly(state, "old-secret", api_key_encrypted="gAAAAABnot-a-token-this-secret-can-read")
    price = {"model": "m", "pricing_input": "1", "pricing_output": "1"}
    create_model(state, alias="first", provider="old-secret", fallbacks=["gpt"], **price)
    body = {"model": "first", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    served = client.post("/v1/chat/completions", json=body, headers=auth(api_key))
    assert served.status_code == 200, served.get_data(as_text=True)
    assert served.headers["x-aigateway-fallback"] == "first,gpt"
    assert len(fake.requests) == 1
    fake.default = Reply(status=500)
    failed = client.post("/v1/chat/completions", json=body, headers=auth(api_key))
    assert failed.status_code == 502, "the fallback's own failure, not the credentials"


def test_count_tokens_on_an_alias_whose_provider_cannot_be_read_says_why(
    client, state, upstreams, api_key
) -> None:
    """The Anthropic-format alias's only provider cannot be decrypted: ``count_tokens`` says
    so (it answered the gateway's estimate, as for an OpenAI-format alias, hiding it)."""
    from flask_aigateway.services.models import create_model

    make(state, name="old-secret", format="anthropic", base_url=upstreams["claude"].base_url)
    store_directly(state, "old-secret", api_key_encrypted="gAAAAABnot-a-token-this-secret-can-read")
    price = {"model": "claude-sonnet-4-5", "pricing_input": "1", "pricing_output": "1"}
    create_model(state, alias="unreadable", provider="old-secret", **price)
    body = {"model": "unreadable", "messages": [{"role": "user", "content": "hi"}]}
    counted = client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": api_key})
    assert counted.status_code == 500, counted.get_data(as_text=True)
    assert "cannot be decrypted" in counted.get_json()["error"]["message"]


# -- credentials an upstream quotes back ----------------------------------------------------------

OPENAI_KEY = "sk-fake-openai-0123456789"  # the conftest upstreams' provider keys
ANTHROPIC_KEY = "sk-ant-fake-0123456789"


def _log_messages(state: Any) -> list[str]:
    from flask_aigateway.models import RequestLog

    with state.transaction() as session:
        return [row.error_message or "" for row in session.scalars(select(RequestLog))]


@pytest.mark.parametrize(
    ("alias", "path", "stream", "reply"),
    [
        ("gpt", "/v1/chat/completions", False, {"status": 400}),
        ("gpt", "/v1/chat/completions", False, {"status": 500}),
        ("gpt", "/v1/chat/completions", True, {"error_event_after": 3}),
        ("claude", "/v1/chat/completions", True, {"error_event_after": 4}),
        ("claude", "/v1/messages", False, {"status": 400}),
        ("claude", "/v1/messages", True, {"error_event_after": 4}),
        ("gpt", "/v1/responses", False, {"status": 400}),
    ],
    ids=[
        "chat-400",
        "chat-500",
        "chat-stream",
        "chat-anthropic-stream",
        "messages-400",
        "messages-stream",
        "responses-400",
    ],
)
def test_a_provider_key_quoted_back_by_the_upstream_is_redacted(
    client, state, api_key, upstreams, alias, path, stream, reply
) -> None:
    """An upstream error quoting the gateway's own provider key ("Invalid header:
    Authorization: Bearer sk-…") reached the client, the request log and the dashboard:
    the key is ``[redacted]`` in every answer, event and row."""
    from fakes import Reply

    secret = OPENAI_KEY if alias == "gpt" else ANTHROPIC_KEY
    state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] = 1
    message = f"Invalid header: Authorization: Bearer {secret}"
    upstreams[alias].queue(Reply(text="one two three four five", error_message=message, **reply))
    if path == "/v1/responses":
        body: dict[str, Any] = {"model": alias, "input": "hi"}
    else:
        body = {"model": alias, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    response = client.post(path, json={**body, "stream": stream}, headers=auth(api_key))
    answer = response.get_data(as_text=True)
    assert "[redacted]" in answer, answer
    assert secret not in answer
    logged = _log_messages(state)
    assert any("[redacted]" in m for m in logged) and not any(secret in m for m in logged)
