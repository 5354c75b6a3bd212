"""A request, failed or not, is freed by reference counting as soon as it is answered: it leaves
nothing for the cyclic garbage collector.

Why it matters: the served configuration makes full collections rare (``sample_app/
gunicorn.conf.py`` raises the thresholds, so busy streams are not paused), and an exception that
a frame on its own traceback refers to (the router's list of failed attempts, a request record)
kept the whole request (Flask context, body, upstream answer: ~100 objects) until the next one.
Under a soak with a tenth of the upstream answers failing, the memory crept up with the faults.

Each case runs requests through the gateway's doors with the collector paused, then asks the
collector what it had to free; nothing of the gateway's (its frames, its objects, any exception)
may be among it. The fake upstreams run in this process too, so the check looks only at the
gateway's own code and objects, not at every cycle the test machinery makes.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import Reply

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def settings(state: Any) -> None:
    """Retries without waiting, and circuits that stay closed through a case's failures."""
    state.settings.update(
        {
            "AIGATEWAY_RETRY_MAX_ATTEMPTS": 2,
            "AIGATEWAY_RETRY_DELAY_MS": 0,
            "AIGATEWAY_CIRCUIT_FAILURES": 1000,
        }
    )


def _gateways(obj: Any) -> bool:
    """Whether ``obj`` belongs to the gateway: a frame of its code, an object of its classes
    (the request record, requests and answers, errors) or any exception."""
    if isinstance(obj, types.FrameType):
        return "flask_aigateway" in obj.f_code.co_filename
    if isinstance(obj, BaseException):
        return True
    return type(obj).__module__.startswith("flask_aigateway")


def _describe(obj: Any) -> str:
    if isinstance(obj, types.FrameType):
        return f"frame {obj.f_code.co_name} ({obj.f_code.co_filename}:{obj.f_lineno})"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def cyclic_garbage(run: Callable[[], None], times: int = 3) -> list[str]:
    """What of the gateway's ``run`` left for the cyclic collector (run ``times`` times)."""
    run()  # first use: caches, pools, compiled statements
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            run()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return sorted({_describe(obj) for obj in gc.garbage if _gateways(obj)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _post(client: Any, key: str, path: str, body: dict[str, Any], status: int) -> bytes:
    response = client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    data = response.get_data()  # the whole body, streams included; then close the request
    response.close()
    assert response.status_code == status, data[:500]
    return bytes(data)


def _chat(client: Any, key: str, status: int, **extra: Any) -> bytes:
    return _post(
        client, key, "/v1/chat/completions", {"model": "gpt", "messages": MESSAGES, **extra}, status
    )


def _messages(client: Any, key: str, status: int, **extra: Any) -> bytes:
    body = {"model": "claude", "max_tokens": 50, "messages": MESSAGES, **extra}
    return _post(client, key, "/v1/messages", body, status)


def _responses(client: Any, key: str, status: int, **extra: Any) -> bytes:
    return _post(client, key, "/v1/responses", {"model": "gpt", "input": "Hello", **extra}, status)


@pytest.fixture
def doors(client: Any, api_key: str, upstreams: dict[str, Any], settings: None) -> Iterator[Any]:
    yield client, api_key, upstreams


def test_an_answered_request_leaves_no_cycle(doors: Any) -> None:
    client, key, _ = doors

    def run() -> None:
        _chat(client, key, 200)
        assert b"[DONE]" in _chat(client, key, 200, stream=True)
        _messages(client, key, 200)
        _responses(client, key, 200)

    assert cyclic_garbage(run) == []


def test_a_request_whose_every_attempt_failed_leaves_no_cycle(doors: Any) -> None:
    client, key, fakes = doors
    fakes["gpt"].default = Reply(status=500)
    fakes["claude"].default = Reply(status=500)

    def run() -> None:
        assert b"upstream_error" in _chat(client, key, 502)
        assert b"api_error" in _messages(client, key, 502)
        _responses(client, key, 502)

    assert cyclic_garbage(run) == []


def test_a_request_rescued_by_a_retry_leaves_no_cycle(doors: Any) -> None:
    """The router keeps the failed attempt's error while it retries: without its traceback."""
    client, key, fakes = doors

    def run() -> None:
        fakes["gpt"].queue(Reply(status=503), Reply())
        fakes["claude"].queue(Reply(status=529), Reply())
        _chat(client, key, 200)
        _messages(client, key, 200)

    assert cyclic_garbage(run) == []


def test_a_stream_cut_midway_leaves_no_cycle(doors: Any) -> None:
    client, key, fakes = doors

    def run() -> None:
        fakes["gpt"].queue(Reply(text="one two three four five six", cut_after=3))
        body = _chat(client, key, 200, stream=True)
        assert b'"error"' in body and b"[DONE]" not in body
        # After the first word (message_start, the block's start and a ping come first; a
        # cut before it is retried and the answer served whole).
        fakes["claude"].queue(Reply(text="one two three four five six", cut_after=4))
        assert b"event: error" in _messages(client, key, 200, stream=True)
        fakes["gpt"].queue(Reply(text="one two three four five six", cut_after=3))
        assert b"response.failed" in _responses(client, key, 200, stream=True)

    assert cyclic_garbage(run) == []


def test_refused_requests_leave_no_cycle(doors: Any) -> None:
    client, key, _ = doors

    def run() -> None:
        _post(client, "aigw_not_a_key", "/v1/chat/completions", {"model": "gpt"}, 401)
        _post(client, "aigw_not_a_key", "/v1/messages", {"model": "claude"}, 401)
        _post(client, key, "/v1/chat/completions", {"model": "gpt", "messages": "x"}, 400)
        _post(client, key, "/v1/chat/completions", {"model": "nope", "messages": MESSAGES}, 404)
        _post(client, key, "/v1/embeddings", {"model": "gpt", "input": []}, 400)

    assert cyclic_garbage(run) == []


def test_an_upstream_slower_than_the_deadline_leaves_no_cycle(doors: Any, state: Any) -> None:
    """The read that times out raises inside http.client under urllib3 and requests, each of
    which chains its own error to it (and urllib3's ``urlopen`` keeps it in a local): the soak's
    slow answers left whole requests to the collector this way."""
    client, key, fakes = doors
    state.settings["AIGATEWAY_REQUEST_TIMEOUT"] = 0.3
    state.settings["AIGATEWAY_RETRY_MAX_ATTEMPTS"] = 1

    def run() -> None:
        fakes["gpt"].queue(Reply(latency=1.0))
        assert b"upstream_timeout" in _chat(client, key, 504)
        fakes["gpt"].queue(Reply(latency=1.0))
        assert b"upstream_timeout" in _chat(client, key, 504, stream=True)
        fakes["claude"].queue(Reply(latency=1.0))
        assert b"timeout_error" in _messages(client, key, 504)
        fakes["gpt"].queue(Reply(latency=1.0))
        _responses(client, key, 504)

    found = cyclic_garbage(run)
    assert found == [], "\n".join(found)
