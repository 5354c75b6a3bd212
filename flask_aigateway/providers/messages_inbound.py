"""Anthropic Messages API requests coming in, for OpenAI-format upstreams: the request as an
OpenAI :class:`ChatRequest`, the ``chat.completion`` back as an Anthropic ``message``, and
``chat.completion.chunk`` dicts as the Messages SSE event sequence.

Anthropic-format upstreams get the client's body unchanged (except ``model``) and need none of
this. Every field or block the OpenAI format cannot carry raises :class:`InvalidRequestError`
naming its exact path, per :data:`PARAMETERS` — never dropped behind the caller's back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import jsoncodec
from ..errors import InvalidRequestError
from ..schemas import ChatRequest, ChatResponse, Usage
from .parameters import OTHER_FIELDS, Handling
from .wire import (
    MAX_UPSTREAM_DEPTH,
    after_whole_arguments,
    arguments_whole,
    call_name,
    tool_call_key,
)

_TO = "an OpenAI-format upstream"

#: Every top-level field of Anthropic's ``POST /v1/messages``, for OpenAI-format upstreams
#: (Anthropic-format upstreams get every field unchanged except ``model``).
PARAMETERS: dict[str, Handling] = {
    "model": Handling("translated", "replaced by the deployment's provider model id"),
    "messages": Handling(
        "translated",
        "text, images (base64 → data URL, url → URL), `tool_use` → assistant `tool_calls`, "
        "`tool_result` → `tool` messages (text; `is_error: true` prefixes it with `Error: `; "
        "images a tool returned follow the tool messages in a user message); "
        "`cache_control` accepted and ignored; an assistant turn's "
        "`thinking`/`redacted_thinking` blocks left out (Anthropic too ignores earlier "
        'turns\' thinking); a mid-conversation `role: "system"` message → a system message '
        "at its place (text blocks; left out once a later user message exists when its "
        "`clear_at` is `next_user_message`; its `output_config.effort`, after the last user "
        "message, → `reasoning_effort`). `document`, server-tool, tool addition/removal and "
        "other blocks refused",
    ),
    "system": Handling("translated", "a leading `system` message (string or text blocks)"),
    "max_tokens": Handling("translated", "`max_tokens`"),
    "stream": Handling(
        "translated",
        "`stream: true` with `stream_options.include_usage`; chunks become Anthropic events",
    ),
    "stop_sequences": Handling("translated", "`stop`"),
    "temperature": Handling("passed"),
    "top_p": Handling("passed"),
    "top_k": Handling("refused", "OpenAI has no top-k sampling"),
    "metadata": Handling(
        "translated",
        "`metadata.user_id` (a string) → `user`; other keys refused",
    ),
    "tools": Handling(
        "translated",
        "client tools → `function` tools (`input_schema` → `parameters`); server tools refused",
    ),
    "tool_choice": Handling(
        "translated",
        "`auto` → auto, `any` → required, `tool` → the named function, `none` → none; "
        "`disable_parallel_tool_use` → `parallel_tool_calls: false`",
    ),
    "thinking": Handling(
        "translated",
        "`enabled` → `reasoning_effort` by `budget_tokens` (under 4,096 `low`, under 16,384 "
        "`medium`, else `high`; an `output_config.effort` wins); `adaptive` and `disabled` → "
        "not sent. OpenAI returns no thinking blocks, and models without reasoning refuse "
        "`reasoning_effort` upstream",
    ),
    "output_config": Handling(
        "translated",
        "`format` (`json_schema`) → `response_format` `json_schema`; `effort` → `reasoning_effort`",
    ),
    "output_format": Handling("translated", "as `output_config.format` (its earlier name)"),
    "cache_control": Handling(
        "translated", "accepted and ignored: OpenAI caches long prompt prefixes by itself"
    ),
    "service_tier": Handling(
        "translated",
        "`auto` → not sent; `standard_only` → `service_tier: default`",
    ),
    "speed": Handling("refused", "only `standard`", lambda v: v == "standard"),
    "container": Handling("refused", "no code-execution containers"),
    "mcp_servers": Handling("refused", "no MCP connector"),
    "thread": Handling(
        "refused",
        "server-side message threads; the 400 carries `details.error_code: "
        "thread_unsupported_request`, on which the SDK's tool runner goes on without a thread",
    ),
    "context_management": Handling(
        "translated",
        "`clear_thinking_*` edits accepted (earlier turns' thinking is left out anyway); "
        "other edits refused: OpenAI has no context editing",
    ),
    OTHER_FIELDS: Handling("refused", "unknown fields cannot be translated"),
}

#: Anthropic's fields in the order of its reference (the docs table's rows).
MESSAGES_PARAMETERS: tuple[str, ...] = tuple(name for name in PARAMETERS if name != OTHER_FIELDS)

#: OpenAI ``finish_reason`` → Anthropic ``stop_reason``.
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _refuse(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}': {what} cannot be sent to {_TO}.", param=param)


def _invalid(param: str, expected: str) -> InvalidRequestError:
    """A field of the wrong type or shape, said as Anthropic's API says it (400, whatever the
    upstream: the request is wrong)."""
    return InvalidRequestError(f"{param}: Input should be {expected}.", param=param)


def _string(value: Any, where: str, *, optional: bool = False) -> str | None:
    """``value`` when it is a string (or None, when ``optional``); else 400 naming ``where``."""
    if isinstance(value, str) or (optional and value is None):
        return value
    raise _invalid(where, "a valid string")


def _block(block: Any, where: str) -> str:
    """A content block's ``type``; 400 when it is not an object with a string type."""
    if not isinstance(block, dict):
        raise _invalid(where, "an object (a content block)")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type", "a valid string (the block's type)")
    return kind


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


# -- request ---------------------------------------------------------------------------------


def _text_of(blocks: Any, where: str) -> str:
    """Text blocks joined (``cache_control`` and ``citations`` carry nothing OpenAI reads);
    None is no text. 400 naming the field or block for anything else."""
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    if not isinstance(blocks, list):
        raise _invalid(where, "a valid string or a list of text blocks")
    texts = []
    for j, block in enumerate(blocks):
        here = f"{where}[{j}]"
        kind = _block(block, here)
        if kind != "text":
            raise _refuse(here, f"a {kind!r} block here (text only)")
        texts.append(_text(block, here))
    return "\n\n".join(texts)


def _text(block: Mapping[str, Any], where: str) -> str:
    """A text block's text (a string, as Anthropic requires)."""
    return _string(block.get("text"), f"{where}.text") or ""


def _tool_result(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A ``tool_result``'s content: its text, and its images as chat image parts."""
    if not isinstance(content, list):
        if content is not None and not isinstance(content, str):
            raise _invalid(where, "a valid string or a list of content blocks")
        return _text_of(content, where), []
    texts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = _block(block, f"{where}[{j}]")
        if kind == "image":
            images.append(_image_part(block, f"{where}[{j}]"))
        elif kind == "text":
            texts.append(block)
        else:
            raise _refuse(f"{where}[{j}]", f"a {kind!r} block here (text and images only)")
    return _text_of(texts, where), images


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source", "an object (an image source)")
    kind = source.get("type")
    if kind == "base64":
        media_type = _string(source.get("media_type"), f"{where}.source.media_type")
        data = _string(source.get("data"), f"{where}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _string(source.get("url"), f"{where}.source.url") or ""
    else:
        raise _refuse(f"{where}.source", f"an image source of type {kind!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn: ``tool`` messages for its tool results, then a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []  # images tool results returned
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = _block(block, here)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, here)})
        elif kind == "image":
            parts.append(_image_part(block, here))
        elif kind == "tool_result":
            call_id = _string(block.get("tool_use_id"), f"{here}.tool_use_id")
            is_error = block.get("is_error")
            if is_error is not None and not isinstance(is_error, bool):
                raise _invalid(f"{here}.is_error", "a valid boolean")
            text, images = _tool_result(block.get("content"), f"{here}.content")
            if images:
                note = f"Images returned by tool call {call_id}:"
                media += [{"type": "text", "text": note}, *images]
                text = text or "(the output is the image below)"
            if is_error:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            raise _refuse(here, f"a {kind!r} block")
    # Chat's tool messages hold text: the images a tool returned (a screenshot, a file read)
    # follow the run of tool messages in a user message, before the turn's own content.
    parts = media + parts
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        joined = "\n\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": joined})
    return out


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = _block(block, here)
        if kind == "text":
            texts.append(_text(block, here))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # Anthropic leaves earlier turns' thinking out of the context too
        elif kind == "tool_use":
            arguments = block.get("input")
            if arguments is not None and not isinstance(arguments, dict):
                raise _invalid(f"{here}.input", "a valid dictionary")
            calls.append(
                {
                    "id": _string(block.get("id"), f"{here}.id"),
                    "type": "function",
                    "function": {
                        "name": _string(block.get("name"), f"{here}.name"),
                        "arguments": json.dumps(arguments or {}, ensure_ascii=False),
                    },
                }
            )
        else:
            raise _refuse(here, f"a {kind!r} block")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


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


_EFFORTS = ("low", "medium", "high", "xhigh", "max")


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


def _effort(value: Any, where: str) -> str:
    if value not in _EFFORTS:
        raise InvalidRequestError(
            f"{where}: Input should be one of {', '.join(_EFFORTS)}.", param=where
        )
    return str(value)


def _system_turn(
    message: Mapping[str, Any], where: str, *, cleared: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """A mid-conversation system message: the chat system message at its place (None when
    it has no text, or its ``clear_at`` retired it because a user message came after it),
    and the effort its ``output_config`` sets for the turn it precedes."""
    config = message.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequestError(
            f"{where}.output_config: Input should be an object.", param=f"{where}.output_config"
        )
    effort = None
    for name, value in (config or {}).items():
        if name != "effort":
            raise _refuse(f"{where}.output_config.{name}", f"a system message's {name!r}")
        if value is not None:
            effort = _effort(value, f"{where}.output_config.effort")
    clear_at = message.get("clear_at")
    if clear_at not in (None, "never", "next_user_message"):
        raise InvalidRequestError(
            f"{where}.clear_at: Input should be 'next_user_message' or 'never'.",
            param=f"{where}.clear_at",
        )
    text = _text_of(message.get("content"), f"{where}.content")
    if not text or (cleared and clear_at == "next_user_message"):
        return None, effort
    return {"role": "system", "content": text}, effort


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
    (400, ``param`` naming the field or block) for anything :data:`PARAMETERS` refuses."""
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


# -- response --------------------------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's ``usage``: ``input_tokens`` counts only the uncached prompt tokens."""
    return {
        "input_tokens": max(
            0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _arguments(text: str | None) -> dict[str, Any]:
    """A tool call's ``input`` object from its JSON arguments (the OpenAI adapter gives them as
    text, whatever JSON value an upstream sent). Text that is not a JSON object (not JSON,
    another value, or nesting deeper than :data:`MAX_UPSTREAM_DEPTH`, which no encoder could
    write back) comes whole as ``_raw_arguments``: ``input`` is an object."""
    try:
        value = jsoncodec.loads(text or "{}", MAX_UPSTREAM_DEPTH)
    except ValueError:  # not JSON, or too deep (TooDeep)
        return {"_raw_arguments": text}
    return value if isinstance(value, dict) else {"_raw_arguments": text}


def to_message(response: ChatResponse, message_id: str, alias: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message`` (tool call arguments parsed
    into ``input`` objects). Its tool calls are the OpenAI adapter's, each with a string id
    and name (``tool_use`` blocks need them)."""
    content: list[dict[str, Any]] = []
    choices = response.body.get("choices") or [{}]
    refusal = (choices[0].get("message") or {}).get("refusal")
    if response.content:
        content.append({"type": "text", "text": response.content})
    elif refusal:
        content.append({"type": "text", "text": str(refusal)})
    for call in response.tool_calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": _stop_reason(
            response.finish_reason,
            any(block["type"] == "tool_use" for block in content),
            refused=bool(refusal) and not response.content,
        ),
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }


def _stop_reason(finish_reason: str | None, called_tools: bool, *, refused: bool = False) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason``. An answer that calls tools
    stops for ``tool_use`` whatever the upstream said: OpenAI finishes a forced tool choice
    with ``stop`` (vLLM and Gemini do too), and clients (the SDK's tool runner, the loop in
    Anthropic's docs) run the tools only when ``stop_reason`` is ``tool_use``. An answer that
    is only an OpenAI refusal (``refusal`` text, no content) stops for ``refusal``."""
    if refused:
        return "refusal"
    reason = STOP_REASONS.get(finish_reason or "stop", "end_turn")
    return "tool_use" if called_tools and reason == "end_turn" else reason


@dataclass(slots=True)
class _Held:
    """A block held back while a tool call's block is open: its start, the call's key (None
    for text) and its deltas' text so far."""

    block: dict[str, Any]
    key: Any
    parts: list[str]


class ChunkEvents:
    """OpenAI ``chat.completion.chunk`` dicts → Anthropic stream events (dicts), one stream.

    Text becomes a ``text`` block, each tool call a ``tool_use`` block opened at its first
    chunk (id and name) and fed ``input_json_delta`` fragments. :meth:`start` and
    :meth:`end` frame the sequence.

    Anthropic's blocks come one at a time (start, deltas, stop), while an OpenAI stream may
    interleave parallel calls' fragments by ``index`` (OpenAI does not, some compatible
    servers do). So a block is stopped only once nothing more can belong to it: text when
    anything else comes, a tool call when its arguments are a whole JSON object
    (:func:`.wire.arguments_whole`) or the stream ends. Until then what comes for other
    calls, and text after them, is held (one text per call, joined into one delta when its
    block's turn comes); an ordinary stream, one call after another, is held back nowhere.
    A call whose arguments are still empty when the next begins (a parameterless call sent
    with ``"arguments": ""``, as some servers do) stays open, and what follows it is held to
    the end: delayed, never lost — closing it there would turn an interleaving server's
    later fragments for it into an error.
    """

    def __init__(self, message_id: str, alias: str, input_tokens: int) -> None:
        self.message_id = message_id
        self.alias = alias
        self.input_tokens = input_tokens
        self.finish_reason: str | None = None
        self._refused = False
        self._open: tuple[str, int] | None = None
        self._blocks = 0
        #: Each tool call's block, by the call's ``index`` (or, from servers that send none,
        #: such as Gemini's OpenAI endpoint, by its ``id``); the call fed last.
        self._tool_blocks: dict[Any, int] = {}
        self._last_call: Any = None
        #: The key of the call whose block is open (None when none is) and its arguments.
        self._open_call: Any = None
        self._arguments: list[str] = []
        #: Blocks waiting for the open call's block to stop, in order; the held calls by key.
        self._held: list[_Held] = []
        self._held_calls: dict[Any, _Held] = {}

    @property
    def held_text(self) -> str:
        """The text held back so far (to bill a stream that is cut before its end)."""
        return "".join(part for held in self._held for part in held.parts)

    def start(self) -> list[dict[str, Any]]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.alias,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        self._open_call = None
        return [{"type": "content_block_stop", "index": index}]

    def _begin(self, kind: str, block: dict[str, Any], call: Any = None) -> list[dict[str, Any]]:
        events = self._close()
        index = self._blocks
        self._blocks += 1
        self._open = (kind, index)
        if call is not None:
            self._tool_blocks[call] = index
            self._open_call = call
            self._arguments = []
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        return events

    def _delta(self, text: str) -> dict[str, Any]:
        """A delta of the open block."""
        assert self._open is not None
        if self._open_call is None:
            return {
                "type": "content_block_delta",
                "index": self._open[1],
                "delta": {"type": "text_delta", "text": text},
            }
        self._arguments.append(text)
        return {
            "type": "content_block_delta",
            "index": self._open[1],
            "delta": {"type": "input_json_delta", "partial_json": text},
        }

    def _may_stop(self) -> bool:
        """Whether the open block may stop: nothing more can belong to it."""
        return self._open_call is None or arguments_whole("".join(self._arguments))

    def _release(self, everything: bool = False) -> list[dict[str, Any]]:
        """Give held blocks their turn, in order, while the open block may stop (all of
        them at the end of the stream)."""
        events: list[dict[str, Any]] = []
        while self._held and (everything or self._may_stop()):
            held = self._held.pop(0)
            kind = "text" if held.key is None else "tool"
            events += self._begin(kind, held.block, held.key)
            if held.key is not None:
                del self._held_calls[held.key]
            if held.parts:
                events.append(self._delta("".join(held.parts)))
        return events

    def _text(self, text: str) -> list[dict[str, Any]]:
        """Text while no text block is open: its own block, or held behind an open call."""
        events = self._release()
        if self._held or not self._may_stop():
            if self._held and self._held[-1].key is None:
                self._held[-1].parts.append(text)
            else:
                self._held.append(_Held({"type": "text", "text": ""}, None, [text]))
            return events
        if self._open is None or self._open_call is not None:
            events += self._begin("text", {"type": "text", "text": ""})
        events.append(self._delta(text))
        return events

    def _call(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        position = self._last_call = tool_call_key(call, self._last_call)
        function = call.get("function") or {}
        fragment = function.get("arguments")
        if position == self._open_call:
            return [self._delta(fragment)] if fragment else []
        held = self._held_calls.get(position)
        if held is not None:
            if fragment:
                held.parts.append(fragment)
            return []
        if position in self._tool_blocks:  # its block stopped: its arguments were whole
            if fragment:
                after_whole_arguments(fragment)
            return []
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": call.get("id"),
            "name": call_name(function),
            "input": {},
        }
        events = self._release()
        if self._held or not self._may_stop():
            held = self._held_calls[position] = _Held(
                block, position, [fragment] if fragment else []
            )
            self._held.append(held)
            return events
        events += self._begin("tool", block, position)
        if fragment:
            events.append(self._delta(fragment))
        return events

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if not text and delta.get("refusal"):
                text = delta["refusal"]
                self._refused = True
            if text:
                if self._open is not None and self._open[0] == "text":
                    events.append(self._delta(text))
                else:
                    events += self._text(text)
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def end(self, usage: Usage) -> list[dict[str, Any]]:
        events = self._release(everything=True)
        events += self._close()
        events.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _stop_reason(
                        self.finish_reason, bool(self._tool_blocks), refused=self._refused
                    ),
                    "stop_sequence": None,
                },
                "usage": usage_json(usage),
            }
        )
        events.append({"type": "message_stop"})
        return events


def message_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A finished ``message`` as the stream that would have produced it (a cache replay)."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**(message.get("usage") or {}), "output_tokens": 0},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            for citation in block.get("citations") or ():
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "citations_delta", "citation": citation},
                    }
                )
            delta = {"type": "text_delta", "text": block.get("text") or ""}
        elif kind == "tool_use":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            delta = {
                "type": "input_json_delta",
                "partial_json": json.dumps(block.get("input") or {}),
            }
        elif kind == "thinking":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block.get("thinking") or ""},
                }
            )
            delta = {"type": "signature_delta", "signature": block.get("signature") or ""}
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events.append({"type": "content_block_stop", "index": index})
            continue
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason"),
                "stop_sequence": message.get("stop_sequence"),
            },
            "usage": message.get("usage") or {},
        }
    )
    events.append({"type": "message_stop"})
    return events


class MessageAssembler:
    """Anthropic stream events → the finished ``message`` (to cache a streamed answer)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, str] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self.message = {**(event.get("message") or {}), "content": []}
        elif kind == "content_block_start":
            self.message["content"].append(dict(event.get("content_block") or {}))
        elif kind == "content_block_delta":
            index = int(event.get("index") or 0)
            block = self.message["content"][index]
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                self._json[index] = self._json.get(index, "") + delta.get("partial_json", "")
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif delta.get("type") == "signature_delta":
                block["signature"] = delta.get("signature", "")
            elif delta.get("type") == "citations_delta":
                block.setdefault("citations", []).append(delta.get("citation"))
        elif kind == "content_block_stop":
            index = int(event.get("index") or 0)
            if index in self._json:
                self.message["content"][index]["input"] = _arguments(self._json.pop(index))
        elif kind == "message_delta":
            self.message.update(event.get("delta") or {})
            self.message["usage"] = {
                **(self.message.get("usage") or {}),
                **(event.get("usage") or {}),
            }


def render_markdown() -> str:
    """The ``POST /v1/messages`` parameters table (``docs/parameters-messages.md`` and the
    README): one row per Anthropic field, per upstream format."""
    lines = [
        "# Anthropic Messages parameters (`POST /v1/messages`) per upstream format",
        "",
        "Generated from `PARAMETERS` in `flask_aigateway/providers/messages_inbound.py` (a test",
        "fails when this file and the table disagree).",
        "",
        "- **passed**: sent upstream unchanged.",
        "- **translated**: sent in the upstream format's own terms (how is said in the cell).",
        "- **refused**: answered `400 invalid_request_error` naming the field before any",
        "  upstream call; never silently dropped. A value that asks for nothing (`null`, or the",
        "  default named in the cell) is accepted.",
        "- For OpenAI-format upstreams every field the translation reads is checked as",
        "  Anthropic checks it: a value of the wrong type is `400 invalid_request_error` naming",
        "  its path. Anthropic-format upstreams judge the body they are passed themselves.",
        "- A refusal is the request's fault only where the request goes first: the requested",
        "  alias's deployments of the best priority. A fallback (or lower-priority deployment)",
        "  that cannot carry the request is left out, not tried; if nothing else answers, the",
        "  client gets the upstream failure (5xx), which SDKs retry.",
        "",
        "| field | anthropic-format upstream | openai-format upstream |",
        "|---|---|---|",
    ]
    for name in [*MESSAGES_PARAMETERS, OTHER_FIELDS]:
        handling = PARAMETERS[name]
        cell: str = handling.decision if handling.decision != "refused" else "refused 400"
        if handling.note:
            cell += f": {handling.note}"
        anthropic = (
            "translated: the alias becomes the provider model id" if name == "model" else "passed"
        )
        label = name if name == OTHER_FIELDS else f"`{name}`"
        cell = cell.replace("|", "\\|")
        lines.append(f"| {label} | {anthropic} | {cell} |")
    return "\n".join(lines) + "\n"
