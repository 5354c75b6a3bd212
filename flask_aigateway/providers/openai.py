"""The OpenAI wire format: any ``/chat/completions`` endpoint (OpenAI, Azure, Gemini, Ollama…).

The gateway speaks this format itself, so translation is nearly the identity: the model alias
becomes the provider's model id, streams always ask for usage, and every other field, known or
not, passes through untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .. import jsoncodec
from ..enums import ProviderFormat, WireFormat
from ..errors import UpstreamClientError, UpstreamError
from ..schemas import ChatRequest, ChatResponse, Usage
from .base import SSEEvent, Target, UpstreamRequest
from .classify import classify_status
from .parameters import OPENAI_CHAT_PARAMETERS, OTHER_FIELDS, Handling
from .urls import openai_chat_url
from .wire import (
    MAX_UPSTREAM_DEPTH,
    USER_AGENT,
    Deployments,
    describe,
    dumps,
    load_json,
    merge_headers,
    new_call_id,
    quote,
    tool_call_key,
    try_json,
)

log = logging.getLogger(__name__)

LABEL = "OpenAI-format"

PARAMETERS: dict[str, Handling] = {
    **{name: Handling("passed") for name in OPENAI_CHAT_PARAMETERS},
    "model": Handling("translated", "replaced by the deployment's provider model id"),
    "stream_options": Handling(
        "translated",
        "`include_usage: true` is always requested upstream so usage is exact; the client "
        "gets the usage chunk only when it asked for it",
    ),
    "max_tokens": Handling(
        "translated",
        "sent as `max_completion_tokens` to OpenAI's own API and Azure (their reasoning models "
        "refuse `max_tokens`, and it is what `/v1/messages` requires); as is elsewhere",
    ),
    "reasoning_effort": Handling(
        "passed",
        "a model that does not reason (gpt-4o, gpt-4.1…) answers 400 to it: the request is sent "
        "again without it, as are later ones to that deployment (it is a hint: Codex CLI and "
        "the Agents SDK send it to any model, and `/v1/messages` makes it of `thinking`)",
    ),
    OTHER_FIELDS: Handling("passed", "untouched"),
}

#: Deployments whose model answered that it takes no ``reasoning_effort``: it is left out for
#: them from then on (:meth:`OpenAIAdapter.relaxed`).
_NO_EFFORT = Deployments()
#: How OpenAI says so (``Unsupported parameter: 'reasoning_effort' is not supported with this
#: model.``; older: ``Unrecognized request argument supplied: reasoning_effort``), not an
#: effort level the model lacks (``Unsupported value: 'reasoning_effort' does not support
#: 'none'…``, the client's to fix).
_NO_EFFORT_ANSWER = re.compile(
    r"reasoning_effort\W{0,2} is not supported|unrecognized request argument supplied: "
    r"reasoning_effort",
    re.IGNORECASE,
)


def _cap_parameter(target: Target) -> str:
    """The output-limit parameter a budget cap is sent as: OpenAI's own API and Azure take
    ``max_completion_tokens`` (their reasoning models refuse ``max_tokens``); other
    OpenAI-compatible servers (Ollama, Gemini, vLLM or llama.cpp on a custom URL) are sure to
    know ``max_tokens``."""
    if target.provider_format is ProviderFormat.AZURE:
        return "max_completion_tokens"
    if target.provider_format is ProviderFormat.OPENAI and target.base_url.rstrip("/") == (
        ProviderFormat.OPENAI.default_base_url
    ):
        return "max_completion_tokens"
    return "max_tokens"


class OpenAIAdapter:
    """Pure translation to and from OpenAI-format upstreams (stateless, shareable)."""

    wire_format = WireFormat.OPENAI

    def build_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """The client's body with ``model`` = the provider model id; URL and auth per preset
        (``api-key`` header for Azure, ``Authorization: Bearer`` otherwise, none without a key)."""
        body = request.to_body()
        body["model"] = target.provider_model
        cap = _cap_parameter(target)
        if cap == "max_completion_tokens" and "max_tokens" in body:
            body.setdefault("max_completion_tokens", body.pop("max_tokens"))
        if request.cap_output and request.max_output_tokens is None:
            body[cap] = target.default_max_tokens
        if request.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if "reasoning_effort" in body and target in _NO_EFFORT:
            del body["reasoning_effort"]
        return UpstreamRequest(
            method="POST",
            url=openai_chat_url(target),
            headers=request_headers(target, stream=request.stream),
            body=dumps(body),
            stream=request.stream,
        )

    def parse_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResponse:
        """The upstream ``chat.completion`` with ``model`` = the requested alias.

        ``created`` is the upstream's (0 when it sends none: the pipeline may stamp it).
        ``usage`` is zero when the upstream reported none (some OpenAI-compatible servers omit
        it); the body then has no ``usage`` either, so the pipeline can tell and estimate.
        Tool calls are checked and completed as :func:`_check_call` says.
        """
        data = load_json(body, "a chat.completion")
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise _body_error(data, body)
        data["model"] = request.model
        data.setdefault("object", "chat.completion")
        data.setdefault("created", 0)
        for choice in data["choices"]:
            _check_choice(choice, request)
            if isinstance(choice.get("message"), dict):
                choice["message"].setdefault("refusal", None)
        usage = Usage.from_openai(data.get("usage")) or Usage()
        return ChatResponse(
            body=data,
            usage=usage,
            provider=target.provider_name,
            deployment_id=target.deployment_id,
        )

    def stream_translator(self, request: ChatRequest, target: Target) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator(request)

    def relaxed(
        self, request: ChatRequest, target: Target, error: UpstreamError
    ) -> ChatRequest | None:
        """The request to send again after ``error``, when the upstream refused only its
        ``reasoning_effort`` (a model that does not reason); the deployment is remembered, so
        later requests leave it out at once. None for any other error."""
        if (
            request.params.get("reasoning_effort") is None
            or not isinstance(error, UpstreamClientError)
            or not _NO_EFFORT_ANSWER.search(error.message)
        ):
            return None
        _NO_EFFORT.add(target)
        log.info(
            "%s (%s) takes no reasoning_effort: it is left out for it",
            target.provider_model,
            target.provider_name,
        )
        return request

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Read OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (or the bare
        ``{"error": "..."}`` some compatible servers send) and apply the shared policy."""
        data = try_json(body)
        message, code, param = _error_fields(data, body)
        error = data.get("error") if isinstance(data, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        return classify_status(
            status,
            headers,
            label=LABEL,
            message=message,
            code=code,
            param=param,
            error_type=kind if isinstance(kind, str) else None,
        )


def request_headers(target: Target, *, stream: bool = False) -> dict[str, str]:
    """Headers of a request to an OpenAI-format upstream: JSON, the ``api-key`` header for
    Azure or ``Authorization: Bearer`` otherwise (none without a key), then the provider's
    extra headers."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": USER_AGENT,
    }
    if target.api_key:
        if target.provider_format is ProviderFormat.AZURE:
            headers["api-key"] = target.api_key
        else:
            headers["Authorization"] = f"Bearer {target.api_key}"
    return merge_headers(headers, target.extra_headers)


class OpenAIStreamTranslator:
    """Passes chunks through with the alias as ``model``; keeps usage and the finish reason.

    Returned chunks never carry ``usage``: the usage-only chunk is consumed into
    :attr:`usage` (and :attr:`sent_usage`), and the pipeline emits the client's usage chunk
    when it asked for one. Tool calls are checked and completed as :func:`_check_call` says,
    each at its first delta.
    """

    #: Nothing: the chunks carry the whole answer.
    unshown: Sequence[str] = ()

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.alias = request.model
        self.usage: Usage | None = None
        self.sent_usage: Any = None
        self.finish_reason: str | None = None
        self.done = False
        #: Each tool call's id, by choice and :func:`.wire.tool_call_key`, from its first delta.
        self._call_ids: dict[tuple[int, Any], str] = {}
        self._last_call: dict[int, Any] = {}
        #: The calls whose first delta left the name for a later one, until it comes.
        self._unnamed: set[tuple[int, Any]] = set()

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = event.data.strip()
        if data == "[DONE]":
            if self._unnamed:
                raise _never_named()
            self.done = True
            return []
        if not data:
            return []
        try:
            chunk = jsoncodec.loads(data, MAX_UPSTREAM_DEPTH)
        except jsoncodec.TooDeep as exc:
            raise UpstreamError(
                f"The {LABEL} upstream sent a stream event {exc}: {data[:200]!r}",
                retryable=True,
            ) from None
        except ValueError:
            raise UpstreamError(
                f"The {LABEL} upstream sent a stream event that is not JSON: {data[:200]!r}",
                retryable=True,
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamError(
                f"The {LABEL} upstream sent a stream event that is not a chunk: {data[:200]!r}",
                retryable=True,
            )
        if "error" in chunk and not chunk.get("choices"):
            message, code, _ = _error_fields(chunk, data.encode())
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise UpstreamError(
                f"The {LABEL} provider reported an error mid-stream: {message}",
                retryable=error.get("type") != "invalid_request_error"
                and code != "context_length_exceeded",
            )
        usage = chunk.pop("usage", None)
        if usage:
            self.usage = Usage.from_openai(usage)
            self.sent_usage = usage
        choices = chunk.get("choices")
        if not choices:
            return []
        if not isinstance(choices, list):
            raise TypeError("choices is not a list")
        for choice in choices:
            if not isinstance(choice.get("index", 0), int):
                raise TypeError("a choice's index is not an integer")
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _check_delta(delta)
                calls = delta.get("tool_calls")
                if calls:
                    self._check_calls(choice.get("index", 0), calls)
            else:
                choice["delta"] = {}
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                if not isinstance(finish_reason, str):
                    raise TypeError("finish_reason is not a string")
                self.finish_reason = finish_reason
                if self._unnamed and any(c == choice.get("index", 0) for c, _ in self._unnamed):
                    # Said at once (in the first chunk, the attempt is retried): nothing
                    # after its choice's finish names a call.
                    raise _never_named()
        chunk["model"] = self.alias
        chunk.setdefault("object", "chat.completion.chunk")
        chunk.setdefault("created", 0)
        return [chunk]

    def _check_calls(self, choice: int, calls: list[Any]) -> None:
        """:func:`_check_call` on each tool call delta of a choice; a later delta carrying an
        id that is not text gets its call's."""
        for call in calls:
            key = tool_call_key(call, self._last_call.get(choice))
            self._last_call[choice] = key
            known = self._call_ids.get((choice, key))
            if known is None:
                _check_call(call, self.request, first=True, streamed=True)
                self._call_ids[choice, key] = call["id"]
                if not (call.get("function") or call.get(call.get("type")) or {}).get("name"):
                    self._unnamed.add((choice, key))
            else:
                _check_call(call, self.request, first=False)
                if self._unnamed and (call.get("function") or call.get("custom") or {}).get("name"):
                    self._unnamed.discard((choice, key))
                if call.get("id") is not None and not isinstance(call["id"], str):
                    call["id"] = known


def _never_named() -> UpstreamError:
    """A streamed tool call still unnamed when its choice finished (or the stream ended)."""
    return UpstreamError(
        f"The {LABEL} upstream streamed a tool call whose function it never named; the "
        "answer cannot be used.",
        retryable=True,
    )


def _check_choice(choice: Mapping[str, Any], request: ChatRequest) -> None:
    """Raise TypeError (or AttributeError) unless a ``chat.completion`` choice has what the
    gateway reads of it the types OpenAI's format gives it: a message object whose content is
    text (or a list of parts, as some compatible servers send), tool calls (:func:`_check_call`)
    and a finish reason (``None`` or missing stands for nothing)."""
    message = choice.get("message")
    if message is not None:
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise TypeError("message.content is neither text nor a list of parts")
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise TypeError("message.tool_calls is not a list")
            for call in calls:
                _check_call(call, request, first=True)
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise TypeError("finish_reason is not a string")


def _check_delta(delta: Mapping[str, Any]) -> None:
    """Raise TypeError unless what the gateway reads of a chunk's delta (its text, tool-call
    names and arguments, to bill and cache them) has the types OpenAI's format gives it."""
    for name in ("content", "refusal"):
        text = delta.get(name)
        if text is not None and not isinstance(text, str):
            raise TypeError(f"delta.{name} is not a string")
    calls = delta.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise TypeError("delta.tool_calls is not a list")
    for call in calls:
        if not isinstance(call.get("index", 0), int):
            raise TypeError("a tool call's index is not an integer")


def _check_call(
    call: dict[str, Any], request: ChatRequest, *, first: bool, streamed: bool = False
) -> None:
    """Raise TypeError (or AttributeError) unless a tool call (or, not ``first``, a later
    delta of a streamed one) is one every door can serve, and complete it where it falls
    short in a way the gateway can make good.

    A call starts naming its function (a string): one that does not is a malformed answer
    (a retryable 502, or an error event mid-stream), as the SDKs' tool calls and Anthropic's
    ``tool_use`` blocks have ``name: str``. In a stream (``streamed``) the name may come in a
    later delta, as some compatible servers send it (vLLM serving Command-A opens a call with
    ``"name": ""``): the first delta's must then be text or absent, and the chat door passes
    the deltas on (the SDKs join the name's pieces; a call still unnamed at ``[DONE]`` ends
    the stream with an error); the doors that must name a call when it begins refuse one that
    starts unnamed (:func:`.wire.call_name`). A call of another kind of tool (OpenAI's custom
    tools, ``{"type": "custom", "custom": {"name", "input"}}``) passes when the request
    offered that kind, named in its own object, its input text (in every delta). A call
    starting without a string id (or with an empty one) is given one,
    :func:`.wire.new_call_id`: clients pair their tool results with calls by id. Arguments
    sent as a JSON value rather than its text (some OpenAI-compatible servers send an object)
    become that text. Real providers' calls (text ids, names and arguments) are left as they
    came."""
    function = call.get("function")
    kind = call.get("type")
    if function is None and kind not in (None, "function") and first:
        if kind not in _offered_kinds(request):
            raise TypeError(f"a call of a {kind!r} tool, which the request did not offer")
        function = call.get(kind)
    elif function is None and not first:
        function = call.get("custom")  # a later delta of a custom tool's call, if any
        if function is None:
            return
    if not isinstance(function, dict):
        raise TypeError("a tool call's function is not an object")
    name = function.get("name")
    if first:
        if not ((isinstance(name, str) and (name or streamed)) or (streamed and name is None)):
            raise TypeError("a tool call does not name its function")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call["id"] = new_call_id()
    elif name is not None and not isinstance(name, str):
        raise TypeError("a tool call's name is not a string")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        function["arguments"] = jsoncodec.dumps_text(arguments)
    if call.get("function") is None:  # a custom tool's call: its freeform input is text
        given = function.get("input")
        if given is not None and not isinstance(given, str):
            raise TypeError("a custom tool call's input is not text")


def _offered_kinds(request: ChatRequest) -> set[Any]:
    """The ``type`` of each tool the request offered (read only for an unusual call)."""
    tools = request.params.get("tools")
    return {tool.get("type") for tool in tools if isinstance(tool, dict)} if tools else set()


def _error_fields(data: Any, body: bytes) -> tuple[str, str | None, str | None]:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        param = error.get("param")
        return (
            str(error.get("message") or ""),
            str(code) if code is not None else None,
            param if isinstance(param, str) else None,
        )
    if isinstance(error, str):
        return error, None, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], None, None
    return quote(body), None, None


def _body_error(data: Any, body: bytes) -> UpstreamError:
    if isinstance(data, dict) and "error" in data:
        message, _, _ = _error_fields(data, body)
        return UpstreamError(
            f"The {LABEL} provider answered 200 with an error: {message}", retryable=True
        )
    return UpstreamError(
        f"The {LABEL} upstream answered 200 with a body that is not a chat.completion: "
        f"{describe(body)}",
        retryable=True,
    )
