"""OpenAI chat messages, tools and JSON modes in Anthropic Messages API terms (request side).

Every content shape the translation cannot carry raises :class:`InvalidRequestError` naming the
exact path (``messages[3].content[1]``), so nothing is dropped behind the caller's back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .. import jsoncodec
from ..errors import InvalidRequestError
from .wire import MAX_UPSTREAM_DEPTH

JSON_TOOL_DEFAULT_NAME = "json_response"
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=?[\w.+-]*)*);base64,(.*)$", re.S)
_FORMAT = "the anthropic-format upstream"


_TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_TOOL_ID = re.compile(r"[^A-Za-z0-9_-]")
_ID_FIELDS = {"tool_use": "id", "tool_result": "tool_use_id"}


def tool_id(value: Any) -> Any:
    """A tool call's id as the Messages API accepts it (``^[a-zA-Z0-9_-]+$``; anything else is
    a 400 on the whole request).

    Ids made by other providers break that rule (Kimi K2 on vLLM or OpenRouter says
    ``functions.get_weather:0``, MCP-derived ids carry dots and colons), so a conversation
    begun there, or a fallback to an Anthropic-format deployment, failed. Each character
    outside the set becomes ``_`` and a digest of the original is added, so two ids that
    differ only there stay two; the same id maps the same way in its ``tool_use`` and its
    ``tool_result``. Valid ids, Anthropic's own among them, pass unchanged; a non-string is
    left for the upstream to refuse.
    """
    if not isinstance(value, str) or _TOOL_ID.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    # At most 64 characters: a bound other gateways found (ids are not meant to be long).
    return f"{_NOT_IN_TOOL_ID.sub('_', value)[:55]}_{digest}"


def with_valid_tool_ids(messages: Any) -> Any:
    """Messages API ``messages`` with every ``tool_use`` id and ``tool_result`` reference made
    valid by :func:`tool_id` (a Messages request passed through to an Anthropic-format
    upstream whose history came from another provider). The same list when none needed it."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] | None = None
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        blocks: list[Any] | None = None
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            field = _ID_FIELDS.get(str(block.get("type")))
            if field is None or tool_id(block.get(field)) == block.get(field):
                continue
            if blocks is None:
                blocks = list(content)
            blocks[j] = {**block, field: tool_id(block[field])}
        if blocks is not None:
            if out is None:
                out = list(messages)
            out[i] = {**message, "content": blocks}
    return messages if out is None else out


def _refuse(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}': {what} cannot be sent to {_FORMAT}.", param=param)


def _with_cache_control(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Carry Anthropic's ``cache_control`` marker from an OpenAI part (prompt caching)."""
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _text_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequestError(f"'{where}.text' must be a string.", param=f"{where}.text")
    return _with_cache_control({"type": "text", "text": text}, part) if text else None


def text_blocks(content: Any, where: str, *, refusal_ok: bool = False) -> list[dict[str, Any]]:
    """Text content (a string or text parts; ``refusal`` parts too for assistant turns)."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type")
        if kind == "text":
            block = _text_part(part, here)
        elif kind == "refusal" and refusal_ok:
            refusal = part.get("refusal")
            block = None
            if isinstance(refusal, str) and refusal:
                block = {"type": "text", "text": refusal}
        else:
            raise _refuse(here, f"a {kind!r} part in a message of this role (text only)")
        if block is not None:
            blocks.append(block)
    return blocks


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequestError(
            f"'{where}.image_url.url' must be a string.", param=f"{where}.image_url.url"
        )
    match = _DATA_URL.match(url)
    if match:
        source = {"type": "base64", "media_type": match.group(1).lower(), "data": match.group(3)}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise InvalidRequestError(
            f"'{where}.image_url.url' must be an http(s) URL or a base64 data URL "
            "(data:image/png;base64,...).",
            param=f"{where}.image_url.url",
        )
    return _with_cache_control({"type": "image", "source": source}, part)


def _file_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file")
    if not isinstance(file, dict):
        file = {}
    match = _DATA_URL.match(file.get("file_data") or "")
    if not match or match.group(1).lower() != "application/pdf":
        raise _refuse(
            f"{where}.file",
            "a file part other than an inline PDF (file_data 'data:application/pdf;base64,...')",
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": match.group(3)},
    }
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return _with_cache_control(block, part)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type")
        if kind == "text":
            block = _text_part(part, here)
            if block is not None:
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image_block(part, here))
        elif kind == "file":
            blocks.append(_file_block(part, here))
        else:
            raise _refuse(here, f"a {kind!r} content part")
    return blocks


def _tool_use_blocks(calls: Any, where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, call in enumerate(calls or []):
        here = f"{where}.tool_calls[{j}]"
        if isinstance(call, dict) and call.get("type") == "custom":
            # As custom tools are (translate_tools): the Messages API has no free-form tool.
            raise _refuse(f"{here}.type", "a 'custom' tool call (only 'function' tool calls)")
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(f"'{here}' must be a function call with a name.", param=here)
        arguments = function.get("arguments") or "{}"
        try:
            if isinstance(arguments, str):
                parsed = jsoncodec.loads(arguments, MAX_UPSTREAM_DEPTH)
            else:
                parsed = arguments
        except ValueError:  # not JSON, or nested deeper than MAX_UPSTREAM_DEPTH (TooDeep)
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidRequestError(
                f"'{here}.function.arguments' must be a JSON object encoded as a string "
                f"(got {str(arguments)[:80]!r}).",
                param=f"{here}.function.arguments",
            )
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id(str(call.get("id") or f"call_{j}")),
                "name": function["name"],
                "input": parsed,
            }
        )
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": tool_id(message.get("tool_call_id")),
    }
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = text_blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def translate_messages(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """``(system, messages)`` for the Messages API.

    System and developer messages (wherever they are) join into the top-level ``system``: a
    string, or text blocks when a part carries ``cache_control``. Consecutive ``tool`` messages
    become one user turn of ``tool_result`` blocks, and consecutive same-role turns merge, since
    Anthropic requires user and assistant to alternate. Empty text is left out (Anthropic
    refuses empty text blocks); a conversation left with no turn, or ending on an assistant
    turn because the user message after it was empty, is refused naming the field.
    """
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    emptied = None  # the last user message with nothing to send, until a turn follows it
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(text_blocks(message.get("content"), where))
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), where)
        elif role == "assistant":
            if message.get("function_call") is not None:
                raise _refuse(
                    f"{where}.function_call",
                    "the deprecated 'function_call' (send 'tool_calls' instead)",
                )
            turn_role = "assistant"
            blocks = text_blocks(message.get("content"), where, refusal_ok=True)
            refusal = message.get("refusal")
            if isinstance(refusal, str) and refusal:
                # A refusal turn as the SDK gives it back (content null, the text in
                # ``refusal``): the assistant said it, so it is the turn's text, as a
                # ``refusal`` content part is; left out, the turns around it merged.
                blocks.append({"type": "text", "text": refusal})
            blocks += _tool_use_blocks(message.get("tool_calls"), where)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message, where)]
        else:
            raise _refuse(f"{where}.role", f"a {role!r} message (send 'tool' messages instead)")
        if not blocks:
            emptied = where if role == "user" else emptied
            continue
        emptied = None
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    if not turns:
        # Anthropic needs a turn to answer; OpenAI answers a system prompt alone.
        raise _refuse("messages", "a conversation without a user or assistant message with content")
    if emptied is not None and turns[-1]["role"] == "assistant":
        # Left out, it would make the assistant's turn before it a prefill to continue.
        raise _refuse(f"{emptied}.content", "an empty user message after the assistant's turn")
    for turn in turns:
        only = turn["content"][0]
        if len(turn["content"]) == 1 and only["type"] == "text" and "cache_control" not in only:
            turn["content"] = only["text"]
    if not system:
        return None, turns
    if any("cache_control" in block for block in system):
        return system, turns
    return "\n\n".join(block["text"] for block in system), turns


def translate_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """OpenAI ``function`` tools as Anthropic client tools; other tool types are refused."""
    out = []
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _refuse(f"{where}.type", f"a {kind!r} tool (only 'function' tools)")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(
                f"'{where}.function.name' is required.", param=f"{where}.function.name"
            )
        schema = dict(function.get("parameters") or {"properties": {}})
        schema.setdefault("type", "object")
        entry: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def translate_tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    """``auto``/``none``/``required``/a named function as Anthropic's ``tool_choice``, with
    ``disable_parallel_tool_use`` when the client set ``parallel_tool_calls: false``."""
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance((choice.get("function") or {}).get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _refuse("tool_choice", f"tool_choice {json.dumps(choice)[:80]}")
    if parallel_tool_calls is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def json_tool(response_format: Any) -> dict[str, Any] | None:
    """The forced tool that carries a JSON mode (None for ``text`` or no response_format).

    ``json_schema``: the tool's input schema is the client's schema, named after it;
    ``json_object``: any object. The adapter turns the tool's input back into content.
    """
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {
            "name": JSON_TOOL_DEFAULT_NAME,
            "description": "Respond with a JSON object.",
            "input_schema": {"type": "object"},
        }
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequestError(
                "'response_format.json_schema' must be an object.",
                param="response_format.json_schema",
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            schema = {}
        tool: dict[str, Any] = {
            "name": spec.get("name") or JSON_TOOL_DEFAULT_NAME,
            "description": spec.get("description")
            or "Respond with a JSON object that matches this schema.",
            "input_schema": {"type": "object", **schema},
        }
        return tool
    raise _refuse("response_format.type", f"response_format type {kind!r}")


def json_tool_name(params: dict[str, Any]) -> str | None:
    """The forced JSON tool's name for a request, or None when it asks for no JSON mode or
    carries it as a native structured output (alongside tools: :func:`native_format`)."""
    if native_format(params) is not None:
        return None
    tool = json_tool(params.get("response_format"))
    return tool["name"] if tool else None


def native_format(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``output_config.format`` for a ``json_schema`` response format sent with tools: the
    model may call the tools, then answers in the schema (Anthropic's structured outputs,
    on the models that have them). Without tools a forced tool carries the JSON mode, which
    every model understands; with them it cannot (the model must be free to call tools)."""
    response_format = params.get("response_format")
    if not params.get("tools") or not isinstance(response_format, dict):
        return None
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return None
    return {"type": "json_schema", "schema": schema}
