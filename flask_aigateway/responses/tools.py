"""The Responses API's client-side tools in terms of chat's function tools, and back.

Chat completions knows one kind of tool, the function with JSON arguments; the Responses API
has three that the client runs, and agents such as Codex CLI send all of them:

* ``function`` — the same thing;
* ``custom`` — free-form text input (optionally under a Lark or regex grammar, which the
  model is shown in the description): a function with one string argument, ``input``; the
  call comes back as a ``custom_tool_call`` item whose ``input`` is that string;
* ``namespace`` — function and custom tools grouped under a name: each is a function named
  ``<namespace>__<name>``, and its calls come back with their own ``name`` and ``namespace``;
* ``tool_search`` run by the client (``execution: "client"``) — a function named
  ``tool_search`` with the tool's parameters; its calls come back as ``tool_search_call``
  items, and the ``tool_search_output`` the client sends back adds the tools it found.

Tools also arrive in ``additional_tools`` input items (Codex's default model sends its tools
only that way). :class:`ToolSpec` remembers, per chat function name, what a call to it is.
Tools that run on OpenAI's servers (web search, file search…) cannot run through a gateway
and are refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import jsoncodec
from ..errors import InvalidRequestError
from ..providers.wire import MAX_UPSTREAM_DEPTH
from .fields import BUILT_IN_TOOLS, CLIENT_RUN_BUILT_INS

#: Between a namespace and a tool's name in the chat function's name (names allow ``_``).
SEPARATOR = "__"

_FUNCTION_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
#: ``defer_loading`` and ``allowed_callers`` ask for tool search and programmatic calling,
#: which need OpenAI's servers: accepted only at the values that ask for neither.
_DEFAULTS: dict[str, Any] = {
    "defer_loading": lambda v: v in (None, False),
    "allowed_callers": lambda v: v in (None, ["direct"]),
    "async": lambda v: v in (None, False),
}
_CUSTOM_FIELDS = frozenset({"type", "name", "description", "format"})


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a call to one chat function is on the Responses side."""

    kind: str  # "function", "custom" or "tool_search"
    name: str
    namespace: str | None = None
    #: The chat function it was given as (the same tool given again is merged, not refused).
    function: dict[str, Any] | None = None


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def chat_name(name: str, namespace: str | None) -> str:
    return f"{namespace}{SEPARATOR}{name}" if namespace else name


#: The client's tool search as a chat function, when its tool gives no parameters.
_SEARCH_PARAMETERS = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What to look for."}},
    "required": ["query"],
}


def translate(
    tools: Any,
    where: str,
    specs: dict[str, ToolSpec],
    namespace: str | None = None,
    *,
    found: bool = False,
    context: str = "",
) -> list[dict[str, Any]]:
    """``tools`` (the request's, an ``additional_tools`` item's, a namespace's, or — with
    ``found`` — those a client's tool search returned, which may be marked deferred) as chat
    function tools; what each is goes into ``specs``. A tool given again as it was (the same
    search result twice, a conversation resending its tools) is kept once; the same name
    with another definition is a 400, as is anything that cannot be carried. ``context``:
    the namespace's description, put before each of its tools' own."""
    if not isinstance(tools, list):
        raise _bad(f"'{where}' must be an array.", where)
    result = []
    for index, tool in enumerate(tools):
        here = f"{where}[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "tool_search" and isinstance(tool, dict) and tool.get("execution") == "client":
            result += _add(specs, ToolSpec("tool_search", "tool_search"), _search(tool, here), here)
            continue
        if not isinstance(tool, dict) or kind not in ("function", "custom", "namespace"):
            if kind in CLIENT_RUN_BUILT_INS:
                raise _bad(
                    f"The built-in tool '{kind}' ({here}) is run by the client, but its calls "
                    "come only from OpenAI's own models, which this gateway's upstreams need "
                    "not be: send it as a function or custom tool instead (Codex CLI sends "
                    "'local_shell' for the names of OpenAI's Codex models only: give the alias "
                    "another name).",
                    f"{here}.type",
                )
            if kind in BUILT_IN_TOOLS or kind == "tool_search":
                raise _bad(
                    f"The hosted tool '{kind}' ({here}) runs on OpenAI's servers and cannot run "
                    "through this gateway: send function, custom or namespace tools, or a "
                    "tool_search the client executes (Codex CLI: -c web_search=disabled).",
                    f"{here}.type",
                )
            raise _bad(
                f"'{here}.type' must be 'function', 'custom' or 'namespace' (got {kind!r}).",
                f"{here}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"'{here}.name' must be a non-empty string.", f"{here}.name")
        if kind == "namespace":
            if namespace is not None:
                raise _bad(f"'{here}': namespaces do not nest.", f"{here}.type")
            for field_name in set(tool) - {"type", "name", "description", "tools"}:
                raise _bad(f"'{here}.{field_name}' is not supported.", f"{here}.{field_name}")
            about = tool.get("description") or ""
            if not isinstance(about, str):
                raise _bad(f"'{here}.description' must be a string.", f"{here}.description")
            inner = f"{here}.tools"
            result += translate(tool.get("tools"), inner, specs, name, found=found, context=about)
            continue
        allowed = _FUNCTION_FIELDS if kind == "function" else _CUSTOM_FIELDS
        for field_name, value in tool.items():
            if field_name == "defer_loading" and found:
                continue  # the search has just loaded it
            if field_name not in allowed and not _DEFAULTS.get(field_name, _never)(value):
                raise _bad(f"'{here}.{field_name}' is not supported.", f"{here}.{field_name}")
        function_name = chat_name(name, namespace)
        if kind == "function":
            function: dict[str, Any] = {"name": function_name}
            for field_name in ("description", "parameters", "strict"):
                if tool.get(field_name) is not None:
                    function[field_name] = tool[field_name]
        else:
            function = {
                "name": function_name,
                "description": _custom_description(tool, here),
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": "The input."}},
                    "required": ["input"],
                    "additionalProperties": False,
                },
            }
        if context:
            own = function.get("description")
            function["description"] = f"{context}\n\n{own}" if own else context
        result += _add(specs, ToolSpec(kind, name, namespace), function, here)
    return result


def _add(
    specs: dict[str, ToolSpec], spec: ToolSpec, function: dict[str, Any], where: str
) -> list[dict[str, Any]]:
    """Record ``spec`` under the chat function's name: the chat tool to add, or none when the
    very same tool is there already."""
    name = function["name"]
    existing = specs.get(name)
    if existing is not None:
        if existing.kind == spec.kind and existing.function == function:
            return []
        raise _bad(
            f"'{where}': a different tool named {name!r} is already given.",
            f"{where}.name" if spec.kind != "tool_search" else f"{where}.type",
        )
    specs[name] = ToolSpec(spec.kind, spec.name, spec.namespace, function)
    return [{"type": "function", "function": function}]


def _never(value: Any) -> bool:
    return False


def _search(tool: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A tool search the client runs, as the chat function ``tool_search``."""
    for field_name in set(tool) - {"type", "execution", "description", "parameters"}:
        raise _bad(f"'{where}.{field_name}' is not supported.", f"{where}.{field_name}")
    description = tool.get("description") or (
        "Search for more tools by what they do; the tools found can be called afterwards."
    )
    return {
        "name": "tool_search",
        "description": description,
        "parameters": tool.get("parameters") or _SEARCH_PARAMETERS,
    }


def _custom_description(tool: Mapping[str, Any], where: str) -> str:
    """The tool's description, and the grammar its ``input`` must follow."""
    description = tool.get("description") or ""
    if not isinstance(description, str):
        raise _bad(f"'{where}.description' must be a string.", f"{where}.description")
    fmt = tool.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return description
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "grammar"
        or fmt.get("syntax") not in ("lark", "regex")
        or not isinstance(fmt.get("definition"), str)
    ):
        raise _bad(
            f"'{where}.format' must be {{'type': 'text'}} or {{'type': 'grammar', 'syntax': "
            "'lark' | 'regex', 'definition': …}.",
            f"{where}.format",
        )
    rule = f"The `input` must be text in this {fmt['syntax']} grammar:\n{fmt['definition']}"
    return f"{description}\n\n{rule}" if description else rule


def tool_choice(choice: Any) -> Any:
    """``tool_choice`` as chat's: a named function or custom tool (with its ``namespace``)
    names the chat function."""
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        if not isinstance(choice.get("name"), str):
            raise _bad("'tool_choice.name' must be a string.", "tool_choice.name")
        name = chat_name(choice["name"], choice.get("namespace"))
        return {"type": "function", "function": {"name": name}}
    raise _bad(
        "'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function' | 'custom', "
        "'name': …}.",
        "tool_choice",
    )


def output_call(
    specs: Mapping[str, ToolSpec], name: str, arguments: str, **fields: Any
) -> dict[str, Any]:
    """A chat tool call (its function ``name`` and ``arguments``) as the output item the
    client expects: ``function_call``, or ``custom_tool_call`` with the ``input`` text;
    ``fields``: ``id``, ``call_id``, ``status``."""
    spec = specs.get(name)
    if spec is None or spec.kind == "function":
        item = {"type": "function_call", **fields, "name": spec.name if spec else name}
        item["arguments"] = arguments
    elif spec.kind == "tool_search":
        item = {"type": "tool_search_call", **fields, "execution": "client"}
        item["arguments"] = search_arguments(arguments)
    else:
        item = {"type": "custom_tool_call", **fields, "name": spec.name}
        item["input"] = custom_input(arguments)
    if spec is not None and spec.namespace is not None:
        item["namespace"] = spec.namespace
    return item


def custom_input(arguments: str) -> str:
    """The ``input`` text of a custom tool's call from its JSON arguments (a model that wrote
    something else gets it verbatim: the client's tool reports what is wrong with it)."""
    try:
        value = jsoncodec.loads(arguments, MAX_UPSTREAM_DEPTH) if arguments else {}
    except ValueError:  # not JSON, or nested too deep to write again (TooDeep)
        return arguments
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments


def search_arguments(arguments: str) -> dict[str, Any]:
    """A tool search call's ``arguments`` object from its JSON text (text that is not an
    object is given as ``query``)."""
    try:
        value = jsoncodec.loads(arguments, MAX_UPSTREAM_DEPTH) if arguments else {}
    except ValueError:  # not JSON, or nested too deep to write again (TooDeep)
        return {"query": arguments}
    return value if isinstance(value, dict) else {"query": arguments}


def chat_call(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``function_call``, ``custom_tool_call`` or ``tool_search_call`` item (of the
    history) as chat's tool call."""
    if item["type"] == "tool_search_call":
        name = "tool_search"
        arguments = json.dumps(item["arguments"], ensure_ascii=False)
    elif item["type"] == "custom_tool_call":
        name = chat_name(item["name"], item.get("namespace"))
        arguments = json.dumps({"input": item["input"]}, ensure_ascii=False)
    else:
        name = chat_name(item["name"], item.get("namespace"))
        arguments = item["arguments"]
    function = {"name": name, "arguments": arguments}
    return {"id": item["call_id"], "type": "function", "function": function}


def found_names(tools: list[dict[str, Any]]) -> list[str]:
    """The chat function names of the tools a tool search returned (for its result; the
    tools were checked by :func:`translate` first)."""
    names: list[str] = []
    for tool in tools:
        if tool.get("type") == "namespace":
            names += [chat_name(inner["name"], tool["name"]) for inner in tool["tools"]]
        else:
            names.append(tool.get("name") or tool["type"])
    return names
