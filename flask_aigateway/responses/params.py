"""A Responses request's fields beside its input (include, tools, reasoning, text) as chat's.

Pure translation, no I/O; a value the gateway cannot carry is a 400 that names it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError
from .tools import tool_choice as chat_tool_choice


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


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
