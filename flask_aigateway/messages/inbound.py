"""Anthropic Messages API requests coming in: the shape every upstream needs (:func:`check_body`),
what governance and the cache see (:func:`carrier`) and, for OpenAI-format upstreams, the
request as an OpenAI :class:`ChatRequest` (the answer goes back in :mod:`.outbound` and
:mod:`.events`).

Anthropic-format upstreams get the client's body unchanged (except ``model``) and need none of
the translation. Every field or block the OpenAI format cannot carry raises
:class:`InvalidRequestError` naming its exact path, per :data:`.fields.PARAMETERS` — never
dropped behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidRequestError
from ..providers.parameters import OTHER_FIELDS
from ..schemas import ChatRequest
from .checks import _effort, _invalid, _refuse, _string
from .fields import PARAMETERS
from .turns import _assistant_turn, _system_turn, _text_of, _user_turn


def check_body(body: Any) -> dict[str, Any]:
    """The shape every upstream needs (model, messages, max_tokens); 400 naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("model: Field required (a non-empty string).", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError("messages: Field required (an array).", param="messages")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant", "system"):
            raise InvalidRequestError(
                f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'.",
                param=f"messages.{i}.role",
            )
        content = message.get("content")
        if role == "system" and content is None and isinstance(message.get("output_config"), dict):
            continue  # a per-turn output_config alone (Anthropic accepts it without content)
        if not isinstance(content, str | list):
            raise InvalidRequestError(
                f"messages.{i}.content: a string or an array of content blocks is required.",
                param=f"messages.{i}.content",
            )
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError(
            "max_tokens: Field required (a positive integer).", param="max_tokens"
        )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream: Input should be a valid boolean.", param="stream")
    return body


def carrier(
    body: Mapping[str, Any], route: str, forwarded: Mapping[str, str] | None = None
) -> ChatRequest:
    """What governance and the cache see of a Messages request: the alias, the messages (the
    system prompt first), ``max_tokens`` and every other field, plus the door it came in
    through so it never shares a cache entry with a chat completion, and the headers sent to
    Anthropic-format upstreams that change the answer (``forwarded``: ``anthropic-version``,
    ``anthropic-beta``) so a request with a beta is never answered from an entry without."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system})
    messages += body["messages"]
    params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream", "system")}
    if system:
        params["system"] = system
    params["aigateway_route"] = route
    if forwarded:
        params["aigateway_headers"] = dict(forwarded)
    return ChatRequest(
        model=body["model"], messages=messages, stream=bool(body.get("stream")), params=params
    )


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequestError("tools: Input should be a valid list.", param="tools")
    out = []
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if not isinstance(tool, dict):
            raise _invalid(where, "an object (a tool)")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _refuse(f"{where}.type", f"a {kind!r} server tool (client tools only)")
        if not isinstance(tool.get("name"), str):
            raise InvalidRequestError(f"{where}.name: Field required.", param=f"{where}.name")
        _string(tool.get("description"), f"{where}.description", optional=True)
        if tool.get("input_schema") is not None and not isinstance(tool["input_schema"], dict):
            raise _invalid(f"{where}.input_schema", "a valid dictionary")
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            raise _invalid(f"{where}.strict", "a valid boolean")
        for name, value in tool.items():
            if value is None or name in _TOOL_FIELDS:
                continue
            if not _TOOL_DEFAULTS.get(name, _never)(value):
                raise _refuse(f"{where}.{name}", f"a tool's {name!r}")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


#: A client tool's fields carried to the function (``strict`` as ``function.strict``) or
#: that ask for nothing chat needs: a cache breakpoint, eager input streaming (chat streams
#: arguments as they come anyway).
_TOOL_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "strict",
        "cache_control",
        "eager_input_streaming",
    }
)


def _never(value: Any) -> bool:
    return False


#: Fields accepted only at the value that asks for nothing beyond a plain tool (tool search's
#: deferred loading and programmatic calling need Anthropic's servers); ``input_examples``
#: cannot be carried at all.
_TOOL_DEFAULTS: dict[str, Any] = {
    "defer_loading": lambda v: v in (None, False),
    "allowed_callers": lambda v: v in (None, ["direct"]),
}


def _output(body: Mapping[str, Any]) -> dict[str, Any]:
    """``output_config`` (and the earlier ``output_format``) as chat's ``response_format``
    and ``reasoning_effort``: structured outputs are a JSON schema on both sides, and the
    effort levels have the same names."""
    config = body.get("output_config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidRequestError(
            "output_config: Input should be an object.", param="output_config"
        )
    params: dict[str, Any] = {}
    for name in config:
        if name not in ("format", "effort"):
            raise _refuse(f"output_config.{name}", f"output_config's {name!r}")
    fmt, where = config.get("format"), "output_config.format"
    if fmt is None and body.get("output_format") is not None:
        fmt, where = body["output_format"], "output_format"
    if fmt is not None:
        if (
            not isinstance(fmt, dict)
            or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), dict)
        ):
            raise InvalidRequestError(
                f"{where}: expected {{'type': 'json_schema', 'schema': {{...}}}}.", param=where
            )
        spec = {"name": "output", "schema": fmt["schema"]}
        params["response_format"] = {"type": "json_schema", "json_schema": spec}
    effort = config.get("effort")
    if effort is not None:
        params["reasoning_effort"] = _effort(effort, "output_config.effort")
    return params


def _thinking_effort(thinking: Any) -> str | None:
    """``thinking`` as chat's ``reasoning_effort``: an enabled budget picks the level."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind in ("disabled", "adaptive"):
        return None
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidRequestError(
            "thinking: expected {'type': 'enabled', 'budget_tokens': N}, "
            "{'type': 'adaptive'} or {'type': 'disabled'}.",
            param="thinking",
        )
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _check_context_management(value: Any) -> None:
    """Context editing: clearing earlier turns' thinking is what the translation does
    anyway; clearing tool results (or anything else) would need Anthropic's servers."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidRequestError(
            "context_management: Input should be an object.", param="context_management"
        )
    edits = value.get("edits")
    if edits is None:
        edits = []
    if not isinstance(edits, list):
        raise InvalidRequestError(
            "context_management.edits: Input should be a valid list.",
            param="context_management.edits",
        )
    for j, edit in enumerate(edits):
        kind = edit.get("type") if isinstance(edit, dict) else None
        if not (isinstance(kind, str) and kind.startswith("clear_thinking_")):
            raise _refuse(f"context_management.edits[{j}]", f"a {kind!r} context edit")
    for name in value:
        if name != "edits":
            raise _refuse(f"context_management.{name}", f"context_management's {name!r}")


def _tool_choice(choice: Any, params: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "an object")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        params["tool_choice"] = kind
    elif kind == "any":
        params["tool_choice"] = "required"
    elif kind == "tool":
        name = _string(choice.get("name"), "tool_choice.name")
        params["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _invalid("tool_choice.type", "'auto', 'any', 'tool' or 'none'")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _invalid("tool_choice.disable_parallel_tool_use", "a valid boolean")
    if disable and kind != "none":
        params["parallel_tool_calls"] = False


def _stop(value: Any) -> list[str]:
    """``stop_sequences``: a list of strings (a string alone is not one, as at Anthropic)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("stop_sequences", "a valid list")
    for j, sequence in enumerate(value):
        _string(sequence, f"stop_sequences[{j}]")
    return value


def _check_turns(turns: list[dict[str, Any]]) -> None:
    """What Anthropic refuses of a conversation's shape and an OpenAI-format upstream would
    not: no messages at all, and a message with empty content anywhere but a final assistant
    turn (an empty user turn left out would make the assistant's turn before it a prefill to
    continue, or the conversation empty). ``check_body`` has checked each message's type."""
    if not turns:
        raise InvalidRequestError("messages: at least one message is required.", param="messages")
    last = len(turns) - 1
    for i, message in enumerate(turns):
        if (
            message["role"] == "system"
            or message["content"]
            or (i == last and message["role"] == "assistant")
        ):
            continue
        raise InvalidRequestError(
            f"messages.{i}.content: all messages must have non-empty content except for the "
            "optional final assistant message.",
            param=f"messages.{i}.content",
        )


def _user(metadata: Any) -> str | None:
    """``metadata.user_id`` (Anthropic's ``metadata`` holds nothing else); other keys are
    refused, never dropped."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "an object")
    for name in metadata:
        if name != "user_id":
            raise _refuse(f"metadata.{name}", f"metadata's {name!r} (only 'user_id' is carried)")
    return _string(metadata.get("user_id"), "metadata.user_id", optional=True)


def to_chat_request(body: Mapping[str, Any]) -> ChatRequest:
    """The Messages request as an OpenAI chat request; raises :class:`InvalidRequestError`
    (400, ``param`` naming the field or block) for anything :data:`.fields.PARAMETERS` refuses."""
    # ``thread`` first: its refusal carries the details the SDK goes on without a thread on,
    # which another refused field named first would hide.
    for name, value in sorted(body.items(), key=lambda field: field[0] != "thread"):
        handling = PARAMETERS.get(name, PARAMETERS[OTHER_FIELDS])
        if not handling.allows(value):
            refusal = InvalidRequestError(
                f"'{name}' cannot be honoured by the OpenAI-format upstream serving "
                f"'{body.get('model')}' ({handling.note}). Remove it, or use a model served "
                "by an Anthropic-format provider.",
                param=name,
            )
            if name == "thread":
                # No ``unsupported`` list: the request has no feature threads cannot take;
                # the upstream format has no threads at all.
                refusal.details = {"error_code": "thread_unsupported_request"}
            raise refusal
    messages: list[dict[str, Any]] = []
    system = _text_of(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    turns = body["messages"]
    _check_turns(turns)
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=-1)
    turn_effort = None
    for i, message in enumerate(turns):
        where = f"messages[{i}]"
        if message["role"] == "user":
            messages += _user_turn(message["content"], where)
        elif message["role"] == "system":
            system_message, effort = _system_turn(message, where, cleared=i < last_user)
            if system_message is not None:
                messages.append(system_message)
            if effort is not None and i > last_user:
                turn_effort = effort
        else:
            messages.append(_assistant_turn(message["content"], where))
    params: dict[str, Any] = {"max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid(name, "a valid number")
            # Anthropic's range for both; OpenAI's temperature goes to 2, so 1.5 would be
            # served where Anthropic answers 400 (the chat door refuses it the other way).
            if not 0 <= value <= 1:
                raise _invalid(name, "between 0 and 1")
            params[name] = value
    stop = _stop(body.get("stop_sequences"))
    if stop:
        params["stop"] = stop
    user = _user(body.get("metadata"))
    if user:
        params["user"] = user
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            params["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], params)
    effort = _thinking_effort(body.get("thinking"))
    if effort is not None:
        params["reasoning_effort"] = effort
    _check_context_management(body.get("context_management"))
    params.update(_output(body))
    if turn_effort is not None:
        params["reasoning_effort"] = turn_effort
    if body.get("cache_control") is not None and not isinstance(body["cache_control"], dict):
        raise _invalid("cache_control", "an object")
    tier = body.get("service_tier")
    if tier == "standard_only":
        params["service_tier"] = "default"
    elif tier not in (None, "auto"):
        raise InvalidRequestError(
            "service_tier: Input should be 'auto' or 'standard_only'.", param="service_tier"
        )
    stream = bool(body.get("stream"))
    if stream:
        params["stream_options"] = {"include_usage": True}
    return ChatRequest(model=body["model"], messages=messages, stream=stream, params=params)
