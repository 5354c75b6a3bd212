"""A Responses request's input items: checked and stored with ids, and as chat messages.

Pure translation, no I/O. Nothing is dropped silently: an item or part the gateway cannot
carry is a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import InvalidRequestError
from ..wording import counted
from .ids import item_id
from .tools import chat_call, found_names

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _resolved(
    items: list[dict[str, Any]],
    resolve: Callable[[list[str]], Mapping[str, dict[str, Any]]] | None,
) -> list[dict[str, Any]]:
    """``items`` with each ``item_reference`` replaced by the stored item it names."""
    references = [item for item in items if item["type"] == "item_reference"]
    if not references:
        return items
    found = resolve([item["id"] for item in references]) if resolve is not None else {}
    out = []
    for item in items:
        if item["type"] != "item_reference":
            out.append(item)
            continue
        stored = found.get(item["id"])
        if stored is None:
            raise InvalidRequestError(
                f"Item with id '{item['id']}' not found (an item_reference names an item of a "
                "response stored for this API key, with 'store').",
                param=f"{item['where']}.id",
                code="item_not_found",
            )
        out.append(stored)
    return out


def _call_id(item: dict[str, Any], where: str) -> str:
    """A tool search item's ``call_id`` (optional there; chat pairs a call and its result by
    it, so one is required)."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"'{where}.call_id' must be a non-empty string.", f"{where}.call_id")
    return call_id


def input_items(value: Any, response_id: str) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items (a string is one user message); ids added.
    An ``item_reference`` (or an object with only an ``id``) stays a reference, which
    :func:`..store.resolve_references` replaces by the stored item it names."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("'input' must be a string or an array of input items.", "input")
    items = []
    given: set[str] = set()
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"'{where}' must be an object.", where)
        if item.get("id") is not None and not isinstance(item["id"], str):
            raise _bad(f"'{where}.id' must be a string.", f"{where}.id")
        if item.get("id"):
            # As OpenAI refuses them: the stored input items are paged by id (``after``).
            if item["id"] in given:
                raise _bad(
                    f"Duplicate item found with id '{item['id']}' at '{where}'. Remove "
                    "duplicate items from your input and try again.",
                    f"{where}.id",
                )
            given.add(item["id"])
        kind = item.get("type", "message" if "role" in item or "id" not in item else None)
        if kind in ("item_reference", None):
            if not isinstance(item.get("id"), str) or set(item) - {"type", "id"}:
                raise _bad(
                    f'\'{where}\' must be an item reference: {{"type": "item_reference", '
                    '"id": "..."}.',
                    f"{where}.id",
                )
            items.append({"type": "item_reference", "id": item["id"], "where": where})
        elif kind == "message":
            items.append(_message_item(item, where, response_id))
        elif kind in ("function_call", "custom_tool_call"):
            text = "arguments" if kind == "function_call" else "input"
            for name in ("call_id", "name", text):
                if not isinstance(item.get(name), str):
                    raise _bad(f"'{where}.{name}' must be a string.", f"{where}.{name}")
            namespace = item.get("namespace")
            if namespace is not None and not isinstance(namespace, str):
                raise _bad(f"'{where}.namespace' must be a string.", f"{where}.namespace")
            prefix = "fc" if kind == "function_call" else "ctc"
            call = {
                "type": kind,
                "id": item.get("id") or item_id(prefix, response_id),
                "call_id": item["call_id"],
                "name": item["name"],
                text: item[text],
                "status": "completed",
            }
            if namespace:
                call["namespace"] = namespace
            items.append(call)
        elif kind in ("tool_search_call", "tool_search_output"):
            if item.get("execution", "client") != "client":
                raise _bad(
                    f"'{where}.execution': a tool search run by OpenAI's servers cannot be "
                    "carried through this gateway (only one the client runs).",
                    f"{where}.execution",
                )
            # The call's ``arguments`` (an object), or the output's ``tools`` (an array).
            field_name, shape, prefix = (
                ("arguments", dict, "ts") if kind == "tool_search_call" else ("tools", list, "tso")
            )
            if not isinstance(item.get(field_name), shape):
                what = "an object" if shape is dict else "an array"
                raise _bad(f"'{where}.{field_name}' must be {what}.", f"{where}.{field_name}")
            items.append(
                {
                    "type": kind,
                    "id": item.get("id") or item_id(prefix, response_id),
                    "call_id": _call_id(item, where),
                    "execution": "client",
                    field_name: item[field_name],
                    "status": "completed",
                }
            )
        elif kind == "reasoning":
            # An OpenAI model's reasoning from an earlier turn (a session begun on OpenAI
            # and resumed here): kept with the input, left out of what a chat upstream is
            # sent (:func:`items_to_messages`), which has no place for it and could not read
            # its encrypted content, as the Messages door leaves earlier turns' thinking out.
            summary = item.get("summary", [])
            if not isinstance(summary, list):
                raise _bad(f"'{where}.summary' must be an array.", f"{where}.summary")
            kept = {"type": "reasoning", "id": item.get("id") or item_id("rs", response_id)}
            kept["summary"] = summary
            if isinstance(item.get("encrypted_content"), str):
                kept["encrypted_content"] = item["encrypted_content"]
            items.append(kept)
        elif kind == "additional_tools":
            if not isinstance(item.get("tools"), list):
                raise _bad(f"'{where}.tools' must be an array.", f"{where}.tools")
            items.append(
                {
                    "type": "additional_tools",
                    "id": item.get("id") or item_id("at", response_id),
                    "role": "developer",
                    "tools": item["tools"],
                }
            )
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"'{where}.call_id' must be a string.", f"{where}.call_id")
            output = item.get("output")
            if isinstance(output, list):
                output = _output_parts(output, f"{where}.output")
            if not isinstance(output, (str, list)):
                raise _bad(
                    f"'{where}.output' must be a string or an array of content parts.",
                    f"{where}.output",
                )
            items.append(
                {
                    "type": kind,
                    "id": item.get("id") or item_id("fco", response_id),
                    "call_id": item["call_id"],
                    "output": output,
                    "status": "completed",
                }
            )
        else:
            raise _bad(
                f"'{where}.type' {kind!r} is not supported: send message, function_call, "
                "function_call_output, custom_tool_call(_output), tool_search_call/_output, "
                "reasoning, additional_tools or item_reference items.",
                f"{where}.type",
            )
    return items


def _output_parts(parts: list[Any], where: str) -> str | list[dict[str, Any]]:
    """A tool's output given as parts: its text when that is all (as before), else the
    parts as a user message's (images and files a tool returned, the Agents SDK's
    ``ToolOutputImage``)."""
    content = [_part(part, f"{where}[{j}]", "user") for j, part in enumerate(parts)]
    if all(part["type"] == "input_text" for part in content):
        return "".join(part["text"] for part in content)
    return content


def _message_item(item: dict[str, Any], where: str, response_id: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise _bad(
            f"'{where}.role' must be one of assistant, developer, system, user (got {role!r}).",
            f"{where}.role",
        )
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts: list[dict[str, Any]] = [{"type": text_type, "text": content}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]", role) for j, p in enumerate(content)]
    else:
        raise _bad(
            f"'{where}.content' must be a string or an array of content parts.",
            f"{where}.content",
        )
    stored: dict[str, Any] = {
        "type": "message",
        "id": item.get("id") or item_id("msg", response_id),
        "role": role,
        "content": parts,
        "status": "completed",
    }
    return stored


def _part(part: Any, here: str, role: str) -> dict[str, Any]:
    """One content part of a ``role`` message (or of a tool's output: ``user``), stored."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise _bad(f"'{here}.text' must be a string.", f"{here}.text")
        if role == "assistant":
            return {"type": "output_text", "text": part["text"], "annotations": []}
        return {"type": "input_text", "text": part["text"]}
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": str(part.get("refusal", ""))}
    if kind == "input_image" and role != "assistant":
        if not isinstance(part.get("image_url"), str):
            raise _bad(
                f"'{here}.image_url' is required (an http(s) URL or a base64 data "
                "URL); image file ids cannot be carried.",
                f"{here}.image_url",
            )
        return {
            "type": "input_image",
            "image_url": part["image_url"],
            "detail": part.get("detail") or "auto",
        }
    if kind == "input_file" and role != "assistant":
        if part.get("file_url") is not None:
            raise _bad(
                f"'{here}.file_url' cannot be carried; send 'file_data' instead.",
                f"{here}.file_url",
            )
        if not isinstance(part.get("file_data"), str) and not isinstance(part.get("file_id"), str):
            raise _bad(f"'{here}' needs 'file_data' (a base64 data URL) or 'file_id'.", here)
        return {k: v for k, v in part.items() if v is not None}
    raise _bad(f"'{here}.type' {kind!r} is not supported in a {role} message.", f"{here}.type")


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        image = {"url": part["image_url"], "detail": part["detail"]}
        return {"type": "image_url", "image_url": image}
    file = {k: part[k] for k in ("file_data", "file_id", "filename") if k in part}
    return {"type": "file", "file": file}


_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})


def items_to_messages(items: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Stored items as chat messages: consecutive ``function_call`` items (and the assistant
    message before them) become one assistant message with ``tool_calls``.

    An assistant message's ``refusal`` parts go back as its text ``content``, after its
    ``output_text``: every chat upstream takes a string, while OpenAI's chat API documents
    ``content`` as required beside a ``refusal`` field (tool calls aside) and a refusal part
    as allowed only alone, and OpenAI-compatible servers may know neither."""
    messages: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []  # what tool outputs returned besides text
    for item in items:
        kind = item["type"]
        if kind == "reasoning":
            continue  # see input_items
        if media and kind not in _TOOL_OUTPUTS and kind != "tool_search_output":
            messages.append({"role": "user", "content": media})
            media = []
        if kind == "message":
            parts = item["content"]
            if item["role"] == "assistant":
                text = "".join(p.get("text") or p.get("refusal") or "" for p in parts)
                messages.append({"role": "assistant", "content": text})
            elif all(p["type"] == "input_text" for p in parts):
                text = "".join(p["text"] for p in parts)
                messages.append({"role": item["role"], "content": text})
            else:
                messages.append({"role": item["role"], "content": [_chat_part(p) for p in parts]})
        elif kind in ("function_call", "custom_tool_call", "tool_search_call"):
            call = chat_call(item)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "tool_search_output":
            names = found_names(item["tools"])
            text = (
                f"Found {counted(len(names), 'tool')}, which can be called now: {', '.join(names)}."
                if names
                else "No tools were found."
            )
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind in _TOOL_OUTPUTS:
            output = item["output"]
            if isinstance(output, list):
                # Chat's tool messages hold text only: the images and files follow the run of
                # tool messages as a user message (a user message between two tool messages
                # would break the run), introduced by the call they came from.
                text = "".join(p["text"] for p in output if p["type"] == "input_text")
                others = [_chat_part(p) for p in output if p["type"] != "input_text"]
                note = f"Attachments returned by tool call {item['call_id']}:"
                media += [{"type": "text", "text": note}, *others]
                output = text or "(the output is attached below)"
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    if media:
        messages.append({"role": "user", "content": media})
    return messages
