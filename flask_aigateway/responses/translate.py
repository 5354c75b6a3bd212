"""The Responses API in terms of chat: a ``POST /v1/responses`` body → :class:`ChatRequest`
(``objects`` turns the chat answer back into a ``response`` object).

Pure translation, no I/O: every provider serves the Responses API through its chat adapter.
Nothing is dropped silently: a field, item or part the gateway cannot carry is a 400 that
names it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError
from ..schemas import ChatRequest, check_metadata
from ..wording import counted
from .fields import KNOWN_FIELDS
from .tools import ToolSpec, chat_call, found_names
from .tools import tool_choice as chat_tool_choice
from .tools import translate as translate_tools

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})


def new_id(prefix: str) -> str:
    """``resp_…``, ``call_…``: a prefix and 48 random hex digits."""
    return f"{prefix}_{os.urandom(24).hex()}"


_ITEM_ID = re.compile(r"[a-z]+_([0-9a-f]{48})_[0-9a-f]{8}")


def item_id(prefix: str, response_id: str) -> str:
    """An item's id (``msg_…``, ``fc_…``) naming the response that holds it: the response's
    48 hex digits and 8 of the item's own. An ``item_reference`` to it then finds the stored
    response without an index of items (:func:`response_of_item`)."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{os.urandom(4).hex()}"


def response_of_item(reference: str) -> str | None:
    """The id of the response holding the item ``reference`` names, if the gateway made it."""
    match = _ITEM_ID.fullmatch(reference)
    return f"resp_{match.group(1)}" if match else None


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


@dataclass(slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses`` body; ``items`` are its input as stored items (each
    with an id), in order."""

    model: str
    items: list[dict[str, Any]]
    body: dict[str, Any]
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    id: str = field(default_factory=lambda: new_id("resp"))
    #: Per chat function name, the tool it stands for (set by :meth:`chat`).
    tool_specs: dict[str, ToolSpec] = field(default_factory=dict)
    created_at: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def from_body(
        cls, body: Any, resolve: Callable[[list[str]], Mapping[str, dict[str, Any]]] | None = None
    ) -> ResponsesRequest:
        """Validate a decoded body; raise :class:`InvalidRequestError` naming the field.

        ``resolve`` gives the stored items that ``item_reference`` inputs name, by id (the
        caller's stored responses); without it such inputs are refused.
        """
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        for name, value in body.items():
            if name not in KNOWN_FIELDS and value is not None:
                raise _bad(
                    f"'{name}' is not supported by this gateway's Responses API; remove it.", name
                )
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise _bad("'model' is required and must be a non-empty string.", "model")
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise _bad("'stream' must be a boolean.", "stream")
        store = body.get("store")
        if store is not None and not isinstance(store, bool):
            raise _bad("'store' must be a boolean.", "store")
        previous = body.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise _bad("'previous_response_id' must be a string.", "previous_response_id")
        check_include(body.get("include"))
        truncation = body.get("truncation")
        if truncation not in (None, "disabled", "auto"):
            raise _bad("'truncation' must be 'disabled' or 'auto'.", "truncation")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _bad("'instructions' must be a string.", "instructions")
        limit = body.get("max_output_tokens")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise _bad("'max_output_tokens' must be a positive integer.", "max_output_tokens")
        if body.get("metadata") is not None:
            check_metadata(body["metadata"])
        # Echoed on the response object (max_tool_calls only there): of the type it says.
        for name in ("service_tier", "prompt_cache_key", "safety_identifier"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise _bad(f"'{name}' must be a string.", name)
        calls = body.get("max_tool_calls")
        if calls is not None and (
            not isinstance(calls, int) or isinstance(calls, bool) or calls < 0
        ):
            raise _bad("'max_tool_calls' must be a non-negative integer.", "max_tool_calls")
        response_id = new_id("resp")
        items = _resolved(input_items(body.get("input"), response_id), resolve)
        request = cls(
            model=model,
            items=items,
            body=body,
            stream=stream,
            store=store,
            previous_response_id=previous,
            id=response_id,
        )
        # Validates tools, text.format, reasoning … before anything runs; with a previous
        # response, what its history brings is checked when it is read.
        request.chat([], partial=previous is not None)
        return request

    def chat(self, history: list[dict[str, Any]], *, partial: bool = False) -> ChatRequest:
        """The chat request: instructions, then ``history`` (items of earlier responses),
        then this request's input. ``partial``: a check before the history is read (a tool
        choice may name a tool the history brings)."""
        body = self.body
        # Tools first: those of the items (additional tools, a tool search's finds) are
        # checked before the items that name them are turned into messages.
        specs: dict[str, ToolSpec] = {}
        tools = translate_tools(body["tools"], "tools", specs) if body.get("tools") else []
        for where, items in (("previous_response_id", history), ("input", self.items)):
            for index, item in enumerate(items):
                if item["type"] in ("additional_tools", "tool_search_output"):
                    here = where if where == "previous_response_id" else f"input[{index}]"
                    found = item["type"] == "tool_search_output"
                    tools += translate_tools(item["tools"], f"{here}.tools", specs, found=found)
        self.tool_specs = specs
        messages: list[dict[str, Any]] = []
        if body.get("instructions"):
            messages.append({"role": "system", "content": body["instructions"]})
        messages.extend(items_to_messages(history, "previous_response_id"))
        messages.extend(items_to_messages(self.items, "input"))
        if not messages and not partial:
            raise _bad("'input' is required: send a string or a list of input items.", "input")
        params: dict[str, Any] = {}
        for name in _SAME_ON_CHAT:
            if body.get(name) is not None:
                params[name] = body[name]
        if body.get("max_output_tokens") is not None:
            params["max_completion_tokens"] = body["max_output_tokens"]
        params.update(chat_tool_params(body, tools, partial=partial))
        text = body.get("text")
        if text is not None:
            params.update(chat_text(text))
        reasoning = body.get("reasoning")
        if reasoning is not None:
            params.update(chat_reasoning(reasoning))
        stream = self.stream
        if stream:
            params["stream_options"] = {"include_usage": True}
        return ChatRequest.from_body(
            {"model": self.model, "messages": messages, "stream": stream, **params}
        )


#: Request fields chat completions has under the same name and meaning.
_SAME_ON_CHAT = (
    "temperature",
    "top_p",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
)

#: ``include`` values (OpenAI's ``ResponseIncludable``) and why each asks for nothing more
#: here: the gateway emits no reasoning items (so no encrypted reasoning), keeps input images'
#: URLs on the stored items anyway, and refuses the built-in tools whose results the others
#: would add. Token log probabilities are the one value refused (not carried).
INCLUDABLE = frozenset(
    {
        "reasoning.encrypted_content",
        "message.input_image.image_url",
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
    }
)
_REASONING_SUMMARIES = frozenset({"auto", "concise", "detailed"})


def check_include(include: Any) -> None:
    """``include``: an array of values that ask for nothing the gateway would have to add."""
    if include is None:
        return
    if not isinstance(include, list):
        raise _bad("'include' must be an array of strings.", "include")
    for index, value in enumerate(include):
        if value == "message.output_text.logprobs":
            raise _bad(
                "'include' value 'message.output_text.logprobs' is not supported: token log "
                "probabilities are not carried through the Responses API here (use chat "
                "completions' 'logprobs').",
                f"include[{index}]",
            )
        if value not in INCLUDABLE:
            raise _bad(
                f"'include[{index}]' must be one of {', '.join(sorted(INCLUDABLE))} "
                f"(got {value!r}).",
                f"include[{index}]",
            )


def chat_tool_params(
    body: dict[str, Any], tools: list[dict[str, Any]], *, partial: bool = False
) -> dict[str, Any]:
    """``tools`` (already chat's, :mod:`.tools`), ``tool_choice`` and ``parallel_tool_calls``
    as chat's. Without any tool the Responses API accepts ``tool_choice: auto|none`` and
    ``parallel_tool_calls`` (they change nothing), where chat completions refuses them: they
    are left out. A choice that needs a tool (``required``, a named one) is a 400 when there
    is none to call."""
    params: dict[str, Any] = {}
    if tools:
        params["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        converted = chat_tool_choice(choice)
        if "tools" in params:
            params["tool_choice"] = converted
        elif converted not in ("auto", "none") and not partial:
            raise _bad(
                "'tool_choice' asks for a tool call, but the request has no 'tools'.",
                "tool_choice",
            )
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _bad("'parallel_tool_calls' must be a boolean.", "parallel_tool_calls")
        if "tools" in params:
            params["parallel_tool_calls"] = parallel
    return params


def chat_reasoning(reasoning: Any) -> dict[str, Any]:
    """``reasoning.effort`` as chat's ``reasoning_effort``. A ``summary`` (or the older
    ``generate_summary``) is accepted and yields none: chat completions returns no reasoning
    to summarise, so the response has no reasoning items, as a model that did not reason."""
    if not isinstance(reasoning, dict):
        raise _bad("'reasoning' must be an object.", "reasoning")
    params: dict[str, Any] = {}
    for name, value in reasoning.items():
        if value is None:
            continue
        if name == "effort":
            params["reasoning_effort"] = value
        elif name == "context":
            continue  # which turns' reasoning to keep: no reasoning items are produced here
        elif name in ("summary", "generate_summary"):
            if value not in _REASONING_SUMMARIES:
                raise _bad(
                    f"'reasoning.{name}' must be one of auto, concise, detailed.",
                    f"reasoning.{name}",
                )
        else:
            raise _bad(f"'reasoning.{name}' is not supported.", f"reasoning.{name}")
    return params


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
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"'{where}' must be an object.", where)
        if item.get("id") is not None and not isinstance(item["id"], str):
            raise _bad(f"'{where}.id' must be a string.", f"{where}.id")
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
                f"'{where}.type' {kind!r} is not supported: send messages, function_call and "
                "function_call_output items.",
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


def chat_text(text: Any) -> dict[str, Any]:
    """``text.format`` as chat's ``response_format``, ``text.verbosity`` as its
    ``verbosity``."""
    if not isinstance(text, dict):
        raise _bad("'text' must be an object.", "text")
    params: dict[str, Any] = {}
    for name, value in text.items():
        if name == "verbosity" and value is not None:
            params["verbosity"] = value
        elif name != "format" and value is not None:
            raise _bad(f"'text.{name}' is not supported.", f"text.{name}")
    fmt = text.get("format")
    if fmt is None:
        return params
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return params
    if kind == "json_object":
        return {**params, "response_format": {"type": "json_object"}}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _bad(
                "'text.format' of type json_schema needs 'name' and 'schema'.", "text.format"
            )
        spec = {k: fmt[k] for k in ("name", "schema", "description", "strict") if k in fmt}
        return {**params, "response_format": {"type": "json_schema", "json_schema": spec}}
    raise _bad("'text.format.type' must be text, json_object or json_schema.", "text.format.type")
