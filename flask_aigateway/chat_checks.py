"""The checks of a chat completion request: its messages, their parts, the OpenAI parameters.

:meth:`.ChatRequest.from_body` and :meth:`~.ChatRequest.validate` run :func:`_check_request`,
which raises :class:`InvalidRequestError` naming the param. The parameter tables also make the
OpenAPI document's schemas (:mod:`.api.openapi_schemas`); :func:`check_metadata` serves the
Responses API too.
"""

from __future__ import annotations

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
    if not ok and not (types == (int,) and _beyond_64_bits(value)):
        raise InvalidRequestError(f"'{name}' must be {words}.", param=name)
    if name in _RANGES:
        low, high = _RANGES[name]
        if not low <= value <= high:
            # Bounds written out whole: ``:g`` rounded 2**63 - 1 to 9.22337e+18, which read
            # as if 2**63 were inside the range.
            raise InvalidRequestError(
                f"'{name}' must be between {low} and {high} (got {value!r}).", param=name
            )


def _beyond_64_bits(value: Any) -> bool:
    """An integer too large for 64 bits, which the JSON decoder (orjson) reads as a float:
    out of range, not "not an integer"."""
    return isinstance(value, float) and value.is_integer() and abs(value) >= 2**63


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
