"""The values that cross the gateway: ChatRequest in, ChatResponse / StreamChunk out, Usage.

They are plain frozen dataclasses around OpenAI-shaped dicts: the OpenAI chat format is the
gateway's lingua franca, adapters translate to and from it, and unknown fields survive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .errors import InvalidRequestError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: A text message with one of these roles is valid as it is (the common case, checked first).
_ROLES_WITHOUT_REQUIRED_FIELDS = _ROLES - {"tool"}

#: Type checks for the OpenAI parameters the gateway knows: name -> (types, description).
_NUM = (int, float)
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": (_NUM, "a number"),
    "top_p": (_NUM, "a number"),
    "n": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "presence_penalty": (_NUM, "a number"),
    "frequency_penalty": (_NUM, "a number"),
    "logprobs": ((bool,), "a boolean"),
    "top_logprobs": ((int,), "an integer"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
    "stream_options": ((dict,), "an object"),
    "tools": ((list,), "an array"),
    "tool_choice": ((str, dict), "a string or an object"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "response_format": ((dict,), "an object"),
    "logit_bias": ((dict,), "an object"),
    "stop": ((str, list), "a string or an array of strings"),
}
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "top_logprobs": (0, 20),
    "n": (1, 128),
    "max_tokens": (1, 10_000_000),
    "max_completion_tokens": (1, 10_000_000),
    "seed": (-(2**63), 2**63 - 1),
}


def _check_type(name: str, value: Any) -> None:
    types, words = _PARAM_TYPES[name]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise InvalidRequestError(f"'{name}' must be {words}.", param=name)
    if name in _RANGES:
        low, high = _RANGES[name]
        if not low <= value <= high:
            raise InvalidRequestError(
                f"'{name}' must be between {low:g} and {high:g} (got {value!r}).", param=name
            )


#: OpenAI's limits on ``metadata`` (chat completions and the Responses API alike).
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", dict: "an object"}


def check_metadata(metadata: Any) -> None:
    """``metadata`` as OpenAI takes it: an object of at most 16 key-value pairs, keys of at
    most 64 characters, values strings of at most 512. Raises :class:`InvalidRequestError`
    (param ``metadata``) naming what is wrong: the gateway keeps (Responses) or forwards
    (chat) it, and an OpenAI SDK reads it back as ``dict[str, str]``."""

    def bad(message: str) -> InvalidRequestError:
        return InvalidRequestError(message, param="metadata")

    if not isinstance(metadata, dict):
        raise bad("'metadata' must be an object.")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise bad(
            f"'metadata' has {len(metadata)} key-value pairs; at most {METADATA_MAX_PAIRS} are "
            "allowed: keep fewer."
        )
    for key, value in metadata.items():
        if len(key) > METADATA_MAX_KEY_CHARS:
            raise bad(
                f"'metadata' key {key[:20]!r}… is {len(key)} characters long; keys are at most "
                f"{METADATA_MAX_KEY_CHARS}."
            )
        if not isinstance(value, str):
            got = "null" if value is None else _JSON_TYPES.get(type(value), "an array")
            raise bad(
                f"'metadata.{key}' must be a string (got {got}): metadata values are strings; "
                "send other values as text."
            )
        if len(value) > METADATA_MAX_VALUE_CHARS:
            raise bad(
                f"'metadata.{key}' is {len(value)} characters long; values are at most "
                f"{METADATA_MAX_VALUE_CHARS}."
            )


def _check_message(index: int, message: Any) -> None:
    if (
        isinstance(message, dict)
        and isinstance(message.get("content"), str)
        and isinstance(message.get("role"), str)
        and message["role"] in _ROLES_WITHOUT_REQUIRED_FIELDS
    ):
        return
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where)
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequestError(
            f"'{where}.role' must be one of {', '.join(sorted(_ROLES))} (got {role!r}).",
            param=f"{where}.role",
        )
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(f"{where}.tool_calls", tool_calls)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        if role == "assistant" and "refusal" in message:
            return
        raise InvalidRequestError(f"'{where}.content' is required.", param=f"{where}.content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequestError(
                    f"'{where}.content[{j}]' must be an object with a 'type'.",
                    param=f"{where}.content[{j}]",
                )
            _check_part(f"{where}.content[{j}]", part)
    elif not isinstance(content, str):
        raise InvalidRequestError(
            f"'{where}.content' must be a string or an array of content parts.",
            param=f"{where}.content",
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequestError(
            f"'{where}.tool_call_id' is required for role 'tool'.", param=f"{where}.tool_call_id"
        )


#: Content parts whose payload field the gateway checks: type -> (field, accepted types).
_PART_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "text": ("text", (str,)),
    "image_url": ("image_url", (dict, str)),
    "input_audio": ("input_audio", (dict,)),
    "file": ("file", (dict,)),
}


def _check_part(where: str, part: dict[str, Any]) -> None:
    """A known content part carries its payload (unknown part types pass through)."""
    known = _PART_FIELDS.get(part["type"])
    if known is None:
        return
    name, types = known
    value = part.get(name)
    if isinstance(value, dict) and part["type"] == "image_url":
        value = value.get("url")
        types = (str,)
    if not isinstance(value, types):
        raise InvalidRequestError(
            f"'{where}' of type '{part['type']}' needs its '{name}' field.", param=where
        )


def _check_tool_calls(where: str, tool_calls: Any) -> None:
    """An assistant message's ``tool_calls``: an array of ``{"function": {"name": …}}``, or
    of a custom tool's ``{"type": "custom", "custom": {"name": …, "input": …}}`` (OpenAI's
    ``ChatCompletionMessageCustomToolCallParam``: the call a model made of a custom tool,
    sent back in the next turn of the conversation, as custom tools are accepted)."""
    if not isinstance(tool_calls, list):
        raise InvalidRequestError(f"'{where}' must be an array.", param=where)
    for k, call in enumerate(tool_calls):
        if isinstance(call, dict) and call.get("type") == "custom":
            custom = call.get("custom")
            if (
                not isinstance(custom, dict)
                or not isinstance(custom.get("name"), str)
                or not isinstance(custom.get("input"), str)
            ):
                raise InvalidRequestError(
                    f"'{where}[{k}]' is a custom tool call: it must have a 'custom' object "
                    "holding its 'name' and its 'input' (both strings).",
                    param=f"{where}[{k}].custom",
                )
            continue
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(
                f"'{where}[{k}]' must be an object with a 'function' holding a 'name' (or, "
                "for a custom tool, 'type': 'custom' and a 'custom' object).",
                param=f"{where}[{k}]",
            )


def _check_tools(tools: list[Any]) -> None:
    """Each tool is an object with a ``type``; a function tool names its function."""
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequestError(f"'{where}' must be an object with a 'type'.", param=where)
        if tool["type"] == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidRequestError(
                    f"'{where}.function' must be an object with a 'name'.",
                    param=f"{where}.function",
                )


def _check_typed_object(name: str, value: Any) -> None:
    """``tool_choice`` / ``response_format`` given as an object need a string ``type``."""
    if isinstance(value, dict) and not isinstance(value.get("type"), str):
        raise InvalidRequestError(f"'{name}' must have a string 'type'.", param=name)


#: The body fields a :class:`ChatRequest` holds as attributes; every other one is a param.
_FIELDS = ("model", "messages", "stream")


def _check_request(model: Any, messages: Any, stream: Any, params: dict[str, Any]) -> None:
    """Every check of a chat request (:meth:`ChatRequest.from_body`, :meth:`~ChatRequest.
    validate`); raises :class:`InvalidRequestError` naming the param."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string.", param="model"
        )
    if not model.isprintable():
        raise InvalidRequestError(
            "'model' holds a control character (NUL, CR, LF, tab or the like); send the "
            "alias as plain text.",
            param="model",
        )
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "'messages' is required and must be a non-empty array.", param="messages"
        )
    for i, message in enumerate(messages):
        _check_message(i, message)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean.", param="stream")
    for name, value in params.items():
        if name in _PARAM_TYPES and value is not None:
            _check_type(name, value)
    if params.get("metadata") is not None:
        check_metadata(params["metadata"])
    if params.get("tools"):
        _check_tools(params["tools"])
    _check_typed_object("tool_choice", params.get("tool_choice"))
    _check_typed_object("response_format", params.get("response_format"))
    stop = params.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise InvalidRequestError("'stop' must be a string or an array of strings.", param="stop")
    if params.get("stream_options") is not None and not stream:
        raise InvalidRequestError(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion request in OpenAI's shape.

    ``params`` holds every other body field exactly as the client sent it (known or not), so
    OpenAI-format upstreams receive fields the gateway does not know yet untouched.
    """

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    #: Set by the pipeline when a budget applies and the client gave no output limit: the
    #: adapters then send the alias's default max tokens upstream — the output size the
    #: budget reservation assumed — so one long answer cannot overshoot the budget.
    cap_output: bool = False

    @classmethod
    def from_body(cls, body: Any) -> ChatRequest:
        """Validate a decoded JSON body; raise :class:`InvalidRequestError` naming the param."""
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        model: Any = body.get("model")
        messages: Any = body.get("messages")
        stream = body.get("stream", False)
        params = {k: v for k, v in body.items() if k not in _FIELDS}
        _check_request(model, messages, stream, params)
        return cls(model=model, messages=messages, stream=bool(stream), params=params)

    def validate(self) -> None:
        """Check this request as :meth:`from_body` checks a body: for one built directly
        (``ChatRequest(model=…, messages=…, params=…)``, as the Python API allows), so a bad
        value is refused with the HTTP API's 400 before anything is sent upstream.

        :raises InvalidRequestError: naming the param, as ``POST /v1/chat/completions`` would.
        """
        if not isinstance(self.params, dict):
            raise InvalidRequestError("'params' must be a dict of OpenAI parameters.")
        for name in _FIELDS:
            if name in self.params:
                raise InvalidRequestError(
                    f"'{name}' is given as ChatRequest({name}=…), not in 'params'.", param=name
                )
        _check_request(self.model, self.messages, self.stream, self.params)

    def to_body(self) -> dict[str, Any]:
        """The request as an OpenAI body again (model and stream as set on this object)."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        body.update(self.params)
        if self.stream:
            body["stream"] = True
        return body

    @property
    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` or, failing that, ``max_tokens``; None when neither is set."""
        value = self.params.get("max_completion_tokens")
        if value is None:
            value = self.params.get("max_tokens")
        return value

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for a final usage chunk on a stream."""
        options = self.params.get("stream_options") or {}
        return bool(options.get("include_usage"))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request; ``estimated`` when counted locally, not by the upstream."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: Of ``cache_write_tokens``, those written to Anthropic's one-hour cache (billed at
    #: twice the input price, the five-minute ones at 1.25 times).
    cache_write_long_tokens: int = 0
    #: Of ``completion_tokens``, those a reasoning model spent thinking (OpenAI's
    #: ``completion_tokens_details.reasoning_tokens``): shown to clients, billed as output.
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self, sent: Any = None) -> dict[str, Any]:
        """OpenAI's ``usage`` object with these counts, as a client reads it.

        ``sent``: the upstream's own ``usage`` object (OpenAI format), whose other fields
        (``completion_tokens_details`` with the reasoning tokens, a provider's own) the
        client should see too. It is returned as it is, not copied, when it says what this
        says in OpenAI's types (:meth:`_agrees`: real providers' objects); else these counts
        replace its own (text, null, a float, or the estimate that stood in for them), and
        of its details objects only the integers are kept. Without it (an Anthropic-format
        upstream), ``prompt_tokens_details`` holds the cache reads and writes.
        """
        if isinstance(sent, dict):
            if self._agrees(sent):
                return sent
            served = {**sent, **self._counts(sent)}
            for name in _DETAILS:
                details = sent.get(name)
                if details is not None:
                    served[name] = _counts_of(details)
            served["prompt_tokens_details"] = {
                **(served.get("prompt_tokens_details") or {}),
                **self._prompt_details(),
            }
            return served
        return {**self._counts(None), "prompt_tokens_details": self._prompt_details()}

    def _prompt_details(self) -> dict[str, int]:
        """``prompt_tokens_details``: the cache reads, and the cache writes when there were
        any (an Anthropic-format upstream's, billed above the input price; OpenAI's
        ``PromptTokensDetails.cache_write_tokens``, which other clients leave unread)."""
        details = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            details["cache_write_tokens"] = self.cache_write_tokens
        return details

    def _counts(self, sent: dict[str, Any] | None) -> dict[str, int]:
        """The three counts a client reads: the upstream's total when it is an integer and
        these counts are its own (it may count more than the two), else their sum."""
        total: Any = None if sent is None or self.estimated else sent.get("total_tokens")
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total if type(total) is int and total >= 0 else self.total_tokens,
        }

    def _agrees(self, sent: dict[str, Any]) -> bool:
        """Whether the upstream's ``usage`` says these counts, as integers, and its details
        objects hold integers (or nulls) only. Plain type checks of a few fields: it runs on
        every answer."""
        prompt, completion = sent.get("prompt_tokens"), sent.get("completion_tokens")
        total = sent.get("total_tokens")
        if not (
            type(prompt) is int
            and prompt == self.prompt_tokens
            and type(completion) is int
            and completion == self.completion_tokens
            and type(total) is int
            and total >= 0
        ):
            return False
        for name in _DETAILS:
            details = sent.get(name)
            if details is not None:
                if type(details) is not dict:
                    return False
                for value in details.values():
                    if type(value) is not int and value is not None:
                        return False
        cached = (sent.get("prompt_tokens_details") or {}).get("cached_tokens")
        return cached == self.cached_tokens or (cached is None and not self.cached_tokens)

    @classmethod
    def from_openai(cls, data: Mapping[str, Any] | None) -> Usage | None:
        """Read OpenAI's ``usage`` object; None when absent or empty.

        :raises ValueError: a count is not a non-negative number (:func:`token_count`).
        :raises AttributeError: ``data`` is not an object.
        """
        if not data:
            return None
        details = data.get("prompt_tokens_details") or {}
        completion = data.get("completion_tokens_details")
        reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
        return cls(
            prompt_tokens=token_count(data.get("prompt_tokens")),
            completion_tokens=token_count(data.get("completion_tokens")),
            cached_tokens=token_count(details.get("cached_tokens")),
            # Informational (the output count already holds them): what is not a count is 0.
            reasoning_tokens=reasoning
            if type(reasoning) is int and 0 <= reasoning <= MAX_TOKEN_COUNT
            else 0,
        )


#: The largest token count an upstream may report: what the request log's integer columns
#: hold, and far beyond any model's context window.
MAX_TOKEN_COUNT = 2**31 - 1
#: The objects of counts in OpenAI's ``usage`` (``CompletionUsage``'s, all integers).
_DETAILS = ("prompt_tokens_details", "completion_tokens_details")


def _counts_of(details: Any) -> dict[str, Any]:
    """The entries of a usage details object that are integers (or null), as OpenAI's are;
    none when it is not an object."""
    if not isinstance(details, dict):
        return {}
    return {k: v for k, v in details.items() if type(v) is int or v is None}


def token_count(value: Any) -> int:
    """A token count as an upstream reports it: a number from 0 to :data:`MAX_TOKEN_COUNT`
    (None is 0).

    :raises ValueError: anything else. A negative count would credit a budget, and one past
        the limit could not be written to the request log.
    """
    count = int(value or 0)
    if not 0 <= count <= MAX_TOKEN_COUNT:
        raise ValueError(f"a token count of {count}")
    return count


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A finished chat completion: the OpenAI ``chat.completion`` body plus what it cost."""

    body: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    provider: str | None = None
    deployment_id: str | None = None
    request_id: str | None = None
    cache_hit: bool = False
    attempts: int = 1
    fallback_path: tuple[str, ...] = ()
    #: Extra response headers (rate-limit and budget state) for the HTTP layer.
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def _message(self) -> dict[str, Any]:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("message") or {}

    @property
    def id(self) -> str | None:
        return self.body.get("id")

    @property
    def content(self) -> str | None:
        """The text of the first choice (None when it only calls tools). Some OpenAI-compatible
        servers send it as a list of parts: their ``text`` parts, joined (the body keeps the
        list as it came)."""
        content = self._message.get("content")
        if isinstance(content, list):
            return "".join(
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            )
        return content

    @property
    def refusal(self) -> str | None:
        """The first choice's ``refusal``: the text OpenAI gives instead of content when the
        model declines (structured outputs, safety); None when there is none."""
        refusal = self._message.get("refusal")
        return refusal if isinstance(refusal, str) and refusal else None

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return list(self._message.get("tool_calls") or [])

    @property
    def finish_reason(self) -> str | None:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("finish_reason")

    def to_dict(self) -> dict[str, Any]:
        return self.body


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One OpenAI ``chat.completion.chunk`` (``data``), with the usage it reports, if any."""

    data: dict[str, Any]
    usage: Usage | None = None
