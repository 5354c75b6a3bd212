"""The Messages request fields and what an OpenAI-format upstream gets of each, and the
README's table of them."""

from __future__ import annotations

from ..providers.parameters import OTHER_FIELDS, Handling

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
        "not sent. OpenAI returns no thinking blocks; a model that does not reason answers "
        "400 to `reasoning_effort`, and the request is sent again without it (as are later "
        "ones to that deployment)",
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


def render_markdown() -> str:
    """The ``POST /v1/messages`` parameters table (``docs/parameters-messages.md`` and the
    README): one row per Anthropic field, per upstream format."""
    lines = [
        "# Anthropic Messages parameters (`POST /v1/messages`) per upstream format",
        "",
        "Generated from `PARAMETERS` in `flask_aigateway/messages/fields.py` (a test",
        "fails when this file and the table disagree).",
        "",
        "- **passed**: sent upstream unchanged.",
        "- **translated**: sent in the upstream format's own terms (how is said in the cell).",
        "- **refused**: answered `400 invalid_request_error` naming the field before any",
        "  upstream call; never silently dropped. A value that asks for nothing (`null`, or the",
        "  default named in the cell) is accepted.",
        "- For OpenAI-format upstreams every field the translation reads is checked as",
        "  Anthropic checks it: a value of the wrong type is `400 invalid_request_error` naming",
        "  its path, as are `temperature` or `top_p` outside 0 to 1, no messages, and empty",
        "  content (an empty string, no blocks, an empty text block) anywhere but a final",
        "  assistant turn. A final assistant turn (a prefill) is sent as the last assistant",
        "  message: some OpenAI-compatible servers (OpenRouter) continue it; OpenAI's own API",
        "  answers after it.",
        "  Anthropic-format upstreams judge the body they are passed themselves.",
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
