"""The Python API (``gateway.chat`` / ``gateway.stream``), including the README's example."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from fakes import Reply

from flask_aigateway import AIGateway, AuthenticationError, ChatRequest, NotFoundError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- readme-example:library -->\s*```python\n(.*?)```\s*<!-- /readme-example:library -->",
        text,
        re.S,
    )
    assert match, "README.md lost its library example"
    return match.group(1)


def test_readme_library_example_runs(tmp_path, monkeypatch, fake_openai, empty_database_uri):
    monkeypatch.chdir(tmp_path)
    # The example reads its configuration like any app: here from the environment.
    monkeypatch.setenv("FLASK_AIGATEWAY_DATABASE_URI", empty_database_uri)
    source = readme_example().replace(
        "gateway = AIGateway(app)",
        "app.config.from_prefixed_env()\ngateway = AIGateway(app)",
    )
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), namespace)
    app = namespace["app"]
    state = AIGateway.get_state(app)
    assert state.database_uri == empty_database_uri
    runner = app.test_cli_runner()
    assert runner.invoke(args=["aigateway", "db", "upgrade"]).exit_code == 0
    result = runner.invoke(
        args=[
            "provider",
            "create",
            "--name",
            "openai",
            "--format",
            "openai",
            "--base-url",
            fake_openai.base_url,
            "--api-key",
            "sk-test-1234567",
        ]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        args=[
            "model",
            "create",
            "--alias",
            "smart",
            "--provider",
            "openai",
            "--model",
            "gpt-4o-mini",
            "--pricing-input",
            "0.15",
            "--pricing-output",
            "0.60",
        ]
    )
    assert result.exit_code == 0, result.output
    client = app.test_client()

    fake_openai.reply(text="A short summary.", prompt_tokens=1000, completion_tokens=100)
    response = client.post("/summarise", json={"text": "A long text."})
    assert response.status_code == 200, response.json
    assert response.json == {
        "summary": "A short summary.",
        "finish_reason": "stop",
        "tokens": 1100,
        "cost_usd": "0.0002100000",
    }
    # A cost under a millionth of a dollar: str(Decimal) wrote "1.500E-7" there.
    fake_openai.reply(text="Tiny.", prompt_tokens=1, completion_tokens=0)
    response = client.post("/summarise", json={"text": "x"})
    assert response.json["cost_usd"] == "0.0000001500"
    fake_openai.reply(text="A short summary.", prompt_tokens=1000, completion_tokens=100)
    client.post("/summarise", json={"text": "A long text."})
    sent = fake_openai.last.json
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 200
    assert sent["messages"][0] == {"role": "system", "content": "Summarise in one sentence."}

    fake_openai.reply(text="Once upon a time")
    response = client.post("/story")
    assert response.json == {"story": "Once upon a time"}

    fake_openai.default = Reply(status=500)
    response = client.post("/summarise", json={"text": "x"})
    assert response.status_code == 502
    assert response.json["error"]["type"] == "upstream_error"
    state.close()


def test_chat_with_a_key_applies_its_rules(app, state, upstreams, gateway):
    from flask_aigateway.services.keys import create_key

    _key, secret = create_key(state, name="gpt-only", models="gpt")
    request = ChatRequest(model="gpt", messages=[{"role": "user", "content": "hi"}])
    with app.app_context():
        reply = gateway.chat(request, api_key=secret)
        assert reply.content
        assert reply.provider == "fake-openai"
        assert reply.cost > Decimal(0)
        with pytest.raises(AuthenticationError):
            gateway.chat(request, api_key="aigw_wrong")
        with pytest.raises(NotFoundError):
            gateway.chat(ChatRequest(model="nope", messages=request.messages))


def test_stream_closed_early_is_logged_and_billed(app, state, upstreams, gateway):
    from sqlalchemy import select

    from flask_aigateway.models import RequestLog

    upstreams["claude"].reply(text=" ".join(["word"] * 50), prompt_tokens=10)
    request = ChatRequest(model="claude", messages=[{"role": "user", "content": "hi"}])
    with app.app_context(), gateway.stream(request) as chunks:
        first = next(iter(chunks))
        assert first.data["object"] == "chat.completion.chunk"
    with state.transaction() as session:
        [row] = session.scalars(select(RequestLog)).all()
    assert row.stream is True
    assert row.status_code == 499
    assert row.cost > 0


def test_gateway_without_app_context_says_what_to_do(gateway, upstreams):
    with pytest.raises(RuntimeError, match="application context"):
        gateway.chat(ChatRequest(model="gpt", messages=[{"role": "user", "content": "hi"}]))


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ({"messages": "hello"}, {"messages": "hello"}),
        ({"messages": [{"role": "user"}]}, {"messages": [{"role": "user"}]}),
        ({"params": {"max_tokens": "lots"}}, {"max_tokens": "lots"}),
        ({"params": {"temperature": "hot"}}, {"temperature": "hot"}),
        ({"params": {"stop": [1]}}, {"stop": [1]}),
        ({"params": {"tools": [{"type": "function"}]}}, {"tools": [{"type": "function"}]}),
        ({"model": ""}, {"model": ""}),
    ],
    ids=[
        "messages-text",
        "message-no-content",
        "max_tokens",
        "temperature",
        "stop",
        "tools",
        "model",
    ],
)
@pytest.mark.parametrize("keyed", [False, True], ids=["trusted", "keyed"])
def test_a_directly_built_request_gets_the_http_apis_400(
    app, state, client, upstreams, gateway, api_key, fields, body, keyed
):
    """``ChatRequest(...)`` built directly, as the README shows, is checked as a body is over
    HTTP: the same 400 (a GatewayError, not AttributeError/ValueError), nothing sent upstream,
    and its log row (with its key) like the HTTP refusal's."""
    from sqlalchemy import select

    from flask_aigateway import InvalidRequestError
    from flask_aigateway.models import RequestLog

    over_http = client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": HI, **body},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert over_http.status_code == 400
    request = ChatRequest(**{"model": "gpt", "messages": HI, **fields})
    secret = api_key if keyed else None
    with app.app_context():
        for call in (gateway.chat, gateway.stream):
            with pytest.raises(InvalidRequestError) as info:
                call(request, api_key=secret)
            assert info.value.to_dict() == over_http.json
    assert upstreams["gpt"].requests == []
    with state.transaction() as session:
        rows = session.scalars(select(RequestLog).order_by(RequestLog.id)).all()
        assert [(r.status_code, r.error_type) for r in rows] == [(400, "invalid_request_error")] * 3
        assert [r.stream for r in rows[1:]] == [False, True]
        assert (rows[1].key_id is not None) is keyed


def test_a_direct_request_is_authenticated_before_it_is_checked(app, upstreams, gateway):
    """As over HTTP, a wrong key is the answer even when the request is bad too."""
    with app.app_context(), pytest.raises(AuthenticationError):
        gateway.chat(ChatRequest(model="gpt", messages="hello"), api_key="aigw_wrong")


def test_model_messages_and_stream_are_not_params(app, upstreams, gateway):
    from flask_aigateway import InvalidRequestError

    request = ChatRequest(model="gpt", messages=HI, params={"model": "other"})
    with app.app_context(), pytest.raises(InvalidRequestError, match=r"ChatRequest\(model=…\)"):
        gateway.chat(request)
    assert upstreams["gpt"].requests == []


def test_a_clients_body_passed_on_as_params_is_served(app, upstreams, gateway):
    """A host building a request from a client's body the obvious way (all but ``model``
    and ``messages`` into ``params``, ``"stream": false`` included) is served as before the
    library checks: the call decides whether it streams."""
    body = {"model": "gpt", "messages": HI, "stream": False, "max_tokens": 20}
    params = {k: v for k, v in body.items() if k not in ("model", "messages")}
    with app.app_context():
        answer = gateway.chat(ChatRequest(model="gpt", messages=HI, params=params))
        with gateway.stream(ChatRequest(model="gpt", messages=HI, params=params)) as chunks:
            streamed = list(chunks)
    assert answer.content
    assert streamed and upstreams["gpt"].last.json["stream"] is True


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_stream_asks_for_its_usage_as_over_http(app, upstreams, gateway, alias):
    """``stream()`` with ``stream_options.include_usage`` (how a host gets a stream's token
    counts) was refused: "'stream_options' is only allowed when 'stream' is true", though
    the call streams. It ends with the usage chunk now, as ``POST /v1/chat/completions``
    does; ``chat()`` still refuses it (its answer is JSON)."""
    from flask_aigateway import ChatStream, InvalidRequestError

    upstreams[alias].reply(text="Hello there.", prompt_tokens=9, completion_tokens=3)
    params = {"stream_options": {"include_usage": True}}
    with app.app_context():
        with gateway.stream(ChatRequest(model=alias, messages=HI, params=params)) as chunks:
            assert isinstance(chunks, ChatStream)  # exported for a host's annotations
            last = list(chunks)[-1].data
        with pytest.raises(InvalidRequestError, match="only allowed when 'stream' is true"):
            gateway.chat(ChatRequest(model=alias, messages=HI, stream=True, params=params))
    assert last["choices"] == []
    usage = last["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (9, 3)
