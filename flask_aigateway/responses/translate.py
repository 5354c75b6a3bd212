"""The Responses API in terms of chat: a ``POST /v1/responses`` body → :class:`ChatRequest`
(``objects`` turns the chat answer back into a ``response`` object).

Pure translation, no I/O: every provider serves the Responses API through its chat adapter.
Nothing is dropped silently: a field, item or part the gateway cannot carry is a 400 that
names it. The input items are :mod:`.items`, the other fields' chat parameters
:mod:`.params`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..chat_checks import check_metadata
from ..errors import InvalidRequestError
from ..schemas import ChatRequest
from .fields import KNOWN_FIELDS
from .ids import new_id
from .items import _resolved, input_items, items_to_messages
from .params import chat_reasoning, chat_text, chat_tool_params, check_include
from .tools import ToolSpec
from .tools import translate as translate_tools


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
