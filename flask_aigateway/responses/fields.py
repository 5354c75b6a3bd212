"""The Responses API request fields the gateway understands, and the README's table of them."""

from __future__ import annotations

#: Tools the upstream would have to run itself: the gateway cannot, so it refuses them.
BUILT_IN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer_use",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
    }
)

#: Built-in tools the client runs (OpenAI's models call them by type; the client executes):
#: refused as the others are, with words that do not send the user to the hosted ones.
CLIENT_RUN_BUILT_INS = frozenset({"local_shell", "shell", "apply_patch"})

#: Every request field the gateway understands, with what it does with it (the README's
#: field table is :func:`render_markdown` of this; others are refused by name).
_FIELD_DOCS: dict[str, str] = {
    "model": ("the gateway alias (echoed back as `model`)"),
    "input": (
        "a string (one user message) or items: `message` (roles `user`, `assistant`, "
        "`system`, `developer`; parts `input_text`, `input_image` with an http(s) or "
        "base64 data URL, `input_file` with `file_data` — or `file_id` for OpenAI-format "
        "upstreams), `function_call`, `function_call_output` (its `output` a string or "
        "parts: images and files a tool returned follow the tool results as a user "
        "message), `custom_tool_call` / `custom_tool_call_output`, `tool_search_call` / "
        "`tool_search_output`, `additional_tools` "
        "(developer tools, see `tools`), `item_reference` (or an object with only an "
        "`id`: an item of a response stored for the same key, put in its place; an "
        "unknown id is 400 `item_not_found`); `reasoning` items (a session begun on "
        "OpenAI) kept with the input and not sent: a chat upstream has no place for them "
        "and cannot read their encrypted content. "
        "`input_file.file_url`, image file ids and other items: 400 naming them"
    ),
    "instructions": ("a system message first (not carried to the next turn, as upstream)"),
    "tools": (
        "`function` tools (`name`, `description`, `parameters`, `strict`); `custom` tools "
        "(free-form `input`, a `grammar` format shown to the model): a function with one "
        "string argument, answered as `custom_tool_call` items; `namespace` tools: their "
        "tools as functions named `<namespace>__<name>`, answered with `namespace`; the same "
        "in `additional_tools` input items; `tool_search` run by the client (`execution: "
        "client`): a function `tool_search`, answered as `tool_search_call` items, its "
        "`tool_search_output` adding the tools found. Hosted tools (`web_search`, "
        "`file_search`, server-side `tool_search`, `code_interpreter`, "
        "`computer_use_preview`, `image_generation`, `mcp`…) 400 naming the tool"
    ),
    "tool_choice": (
        "chat's `tool_choice` (`auto`, `none`, `required`, or a named function); without "
        "`tools`, `auto`/`none` are left out (chat refuses them there) and the others are 400"
    ),
    "parallel_tool_calls": ("chat's `parallel_tool_calls` (left out without `tools`)"),
    "max_output_tokens": (
        'chat\'s `max_completion_tokens`; hitting it gives `status: "incomplete"`, '
        '`incomplete_details.reason: "max_output_tokens"`; an answer the upstream\'s content '
        "filter ended (OpenAI `content_filter`, Anthropic `refusal`) gives `incomplete` with "
        '`incomplete_details.reason: "content_filter"`'
    ),
    "temperature": ("as on chat completions"),
    "top_p": ("as on chat completions"),
    "user": ("as on chat completions"),
    "service_tier": ("as on chat completions (a string); echoed on the response object"),
    "prompt_cache_key": ("as on chat completions (a string); echoed on the response object"),
    "safety_identifier": ("as on chat completions (a string); echoed on the response object"),
    "max_tool_calls": (
        "accepted (a non-negative integer) and echoed; it limits built-in tool calls, which "
        "are refused here"
    ),
    "stream_options": ("accepted; the events carry no `obfuscation` padding"),
    "metadata": (
        "kept on the response object (and stored), not sent upstream; at most 16 pairs, keys "
        "up to 64 characters, values strings up to 512 (else 400)"
    ),
    "client_metadata": (
        "accepted, not sent upstream nor kept (the client's own labels, such as Codex CLI's "
        "installation id)"
    ),
    "truncation": ("`disabled` (default) or `auto`, accepted"),
    "store": ("keep the response for `previous_response_id` and `GET` (see below)"),
    "previous_response_id": (
        "the stored conversation (every earlier input item and output) comes before "
        "`input`; such a request bypasses the response cache"
    ),
    "stream": (
        "the event stream; its `response.completed` event carries the `aigateway` object "
        "with the cost, as chat's final chunk does"
    ),
    "include": (
        "accepted values add nothing (no reasoning items are produced, input image URLs are "
        "kept anyway, built-in tools are refused); `message.output_text.logprobs` is 400"
    ),
    "text": (
        "`format`: `text`, `json_object`, `json_schema` → chat's `response_format`; "
        "`verbosity` → chat's `verbosity`; echoed on the response object"
    ),
    "reasoning": (
        "`effort` → chat's `reasoning_effort` (on Anthropic-format upstreams "
        "`output_config.effort`); `summary` and `context` accepted, and no reasoning summary "
        "or item is returned (chat answers carry no reasoning); other keys 400; echoed on "
        "the response object"
    ),
}
KNOWN_FIELDS = frozenset(_FIELD_DOCS)


def render_markdown() -> str:
    """The README's Responses API field table."""
    lines = ["| field | what the gateway does |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in _FIELD_DOCS.items()]
    lines.append("| (any other field) | refused 400 naming it (a `null` value is accepted) |")
    return "\n".join(lines) + "\n"
