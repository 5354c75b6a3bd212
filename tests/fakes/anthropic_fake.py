"""The fake Anthropic Messages API (JSON, the real SSE event sequence, request validation)."""

from __future__ import annotations

import json
import re
from typing import Any

from .server import FakeUpstream, Reply, ToolCall, fragments, next_id, words

#: ``output_config.effort`` levels (the Messages API reference).
EFFORTS = ("low", "medium", "high", "xhigh", "max")

#: The models that take ``output_config.effort`` (Opus 4.5 on, Sonnet 4.6 on, and later
#: generations); Haiku 4.5, Sonnet 4.5 and older answer 400 when it is sent.
#: The Messages API's pattern for tool_use ids (and the tool_result references to them).
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_EFFORT_MODELS = re.compile(r"claude-(opus-4-[5-9]|sonnet-4-[6-9]|[a-z]+-[5-9])")
#: The models that take ``temperature`` or ``top_p``, not both (Opus 4.1 on, Sonnet 4.5 on,
#: Haiku 4.5, later generations; Anthropic's migration guide to the 4.5 models): 400 to both.
_ONE_SAMPLER_MODELS = re.compile(r"claude-(opus-4-[1-9]|sonnet-4-[5-9]|haiku-4-[5-9]|[a-z]+-[5-9])")

_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeUpstream):
    """``POST /v1/messages`` as Anthropic answers it (the real SSE event sequence)."""

    format = "anthropic"
    endpoint = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.origin

    def overloaded(self, **fields: Any) -> None:
        self.fail(529, "Overloaded", **fields)

    length_finish = "max_tokens"

    def _max_output(self, body: dict[str, Any]) -> int | None:
        return int(body["max_tokens"]) if isinstance(body.get("max_tokens"), int) else None

    def _headers(self) -> dict[str, str]:
        return {"request-id": f"req_fake{next_id()}", "anthropic-organization-id": "org-fake"}

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        bearer = headers.get("authorization", "")
        key = headers.get("x-api-key") or (bearer[7:] if bearer.startswith("Bearer ") else "")
        if not key:
            return 401, "x-api-key header is required"
        if self.require_key and key != self.require_key:
            return 401, "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "request body must be a JSON object"
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(name), kind):
                return 400, f"{name}: Field required"
        if not 0 <= body.get("temperature", 0) <= 1:
            return 400, "temperature: range: 0..1"
        if "temperature" in body and "top_p" in body and _ONE_SAMPLER_MODELS.match(body["model"]):
            return 400, (
                "`temperature` and `top_p` cannot both be specified for this model. "
                "Please use only one."
            )
        config = body.get("output_config")
        if config is not None:
            if not isinstance(config, dict) or set(config) - {"format", "effort"}:
                return 400, "output_config: Extra inputs are not permitted"
            if config.get("effort") not in (None, *EFFORTS):
                return 400, f"output_config.effort: Input should be one of {', '.join(EFFORTS)}"
            if config.get("effort") is not None and not _EFFORT_MODELS.match(str(body["model"])):
                return 400, "This model does not support the effort parameter."
        pending: set[str] = set()
        for i, message in enumerate(body["messages"]):
            role = message.get("role")
            if role not in ("user", "assistant", "system"):
                return 400, f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
            if role == "system":
                # A mid-conversation system message: text blocks (and a per-turn
                # output_config); it sits between turns without touching tool pairing.
                content = message.get("content", "")
                blocks = (
                    [{"type": "text", "text": content}] if isinstance(content, str) else content
                )
                if any(b.get("type") != "text" for b in blocks):
                    return 400, f"messages.{i}.content: system messages hold text blocks"
                continue
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if results - pending:
                return 400, (
                    f"messages.{i}.content: unexpected `tool_use_id` found in "
                    "`tool_result` blocks. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if pending - results:
                return 400, (
                    "messages: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(pending - results))}"
                )
            if any(b.get("type") == "text" and not b.get("text") for b in blocks):
                return 400, f"messages.{i}: text content blocks must be non-empty"
            for j, block in enumerate(blocks):
                field = {"tool_use": "id", "tool_result": "tool_use_id"}.get(block.get("type"))
                if field and not _TOOL_ID.fullmatch(str(block.get(field))):
                    return 400, (
                        f"messages.{i}.content.{j}.{block['type']}.{field}: String should "
                        "match pattern '^[a-zA-Z0-9_-]+$'"
                    )
            if not body.get("tools") and any(
                b.get("type") in ("tool_use", "tool_result") for b in blocks
            ):
                return 400, (
                    "Requests which include `tool_use` or `tool_result` blocks must define tools."
                )
            pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        return None

    def _extra_endpoint(self, method: str, path: str) -> Any:
        if method == "POST" and path == "/v1/messages/count_tokens":
            return self._count_tokens
        return None

    def _count_tokens(self, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /v1/messages/count_tokens``: the same checks as a message (no
        ``max_tokens``, which the real endpoint refuses as an extra input), then
        ``{"input_tokens": N}``; N counts the system prompt, messages and tools."""
        if isinstance(body, dict) and "max_tokens" in body:
            return 400, self._error_body(
                Reply(status=400, error_message="max_tokens: Extra inputs are not permitted")
            )
        checked = {**body, "max_tokens": 1} if isinstance(body, dict) else body
        problem = self._invalid(headers, checked)
        if problem is not None:
            status, message = problem
            return status, self._error_body(Reply(status=status, error_message=message))
        counted = {k: body.get(k) for k in ("system", "messages", "tools") if body.get(k)}
        return 200, {"input_tokens": max(1, len(json.dumps(counted)) // 4)}

    def _blocks(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        text, calls = reply.text, list(reply.tool_calls)
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool" and not calls:
            try:
                forced = json.loads(text or "{}")
            except ValueError:
                forced = {"text": text}
            text, calls = None, [ToolCall(choice["name"], forced)]
        blocks: list[dict[str, Any]] = []
        if reply.thinking:
            blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": "c2ln"})
        blocks += [{"type": "text", "text": text}] if text else []
        blocks += [
            {
                "type": "tool_use",
                "id": c.id or f"toolu_fake{next_id()}",
                "name": c.name,
                "input": dict(c.arguments),
            }
            for c in calls
        ]
        return blocks

    def _usage_json(self, body: dict[str, Any], reply: Reply, output: int) -> dict[str, Any]:
        prompt, _ = self._usage(body, reply)
        usage: dict[str, Any] = {
            "input_tokens": prompt,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": output,
            "service_tier": "standard",
        }
        if reply.cache_write_1h_tokens:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": reply.cache_write_tokens - reply.cache_write_1h_tokens,
                "ephemeral_1h_input_tokens": reply.cache_write_1h_tokens,
            }
        return usage

    def _stop(self, blocks: list[dict[str, Any]], reply: Reply) -> str:
        return reply.finish or (
            "tool_use" if blocks and blocks[-1]["type"] == "tool_use" else "end_turn"
        )

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        blocks = self._blocks(body, reply)
        return {
            "id": f"msg_fake{next_id()}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": self._stop(blocks, reply),
            "stop_sequence": None,
            "usage": self._usage_json(body, reply, self._usage(body, reply)[1]),
        }

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        def event(data: dict[str, Any]) -> str:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

        message = self._message(body, reply)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage_json(body, reply, 1),
        }
        events = [event({"type": "message_start", "message": start})]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    event(
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        }
                    )
                )
                if index == 0:
                    events.append(event({"type": "ping"}))
                deltas = [{"type": "text_delta", "text": w} for w in words(block["text"])]
            elif block["type"] == "thinking":
                events.append(
                    event(
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                        }
                    )
                )
                deltas = [
                    *({"type": "thinking_delta", "thinking": w} for w in words(block["thinking"])),
                    {"type": "signature_delta", "signature": block["signature"]},
                ]
            else:
                events.append(
                    event(
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {**block, "input": {}},
                        }
                    )
                )
                arguments = json.dumps(block["input"]) if block["input"] else ""
                deltas = [
                    {"type": "input_json_delta", "partial_json": f}
                    for f in ["", *fragments(arguments)]
                ]
            events += [
                event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
            ]
            events.append(event({"type": "content_block_stop", "index": index}))
        events.append(
            event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    # Cumulative counts, input included, as the API sends them today (the
                    # documentation's older examples show output_tokens alone; clients such
                    # as langchain-anthropic read the input count here).
                    "usage": {
                        name: message["usage"][name]
                        for name in (
                            "input_tokens",
                            "cache_creation_input_tokens",
                            "cache_read_input_tokens",
                            "output_tokens",
                        )
                        if name in message["usage"]
                    },
                }
            )
        )
        return [*events, event({"type": "message_stop"})]

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        kind = reply.error_type or _ANTHROPIC_ERRORS.get(reply.status, "api_error")
        error: dict[str, Any] = {
            "type": kind,
            "message": reply.error_message or "Internal server error",
        }
        if reply.error_code:  # machine-readable details (a lost message thread…)
            error["details"] = {"error_code": reply.error_code}
        return {"type": "error", "error": error, "request_id": f"req_fake{next_id()}"}

    _keep_alive = b'event: ping\ndata: {"type": "ping"}\n\n'

    def _error_event(self, reply: Reply) -> str:
        error = {
            "type": reply.error_type or "overloaded_error",
            "message": reply.error_message or "Overloaded",
        }
        return f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n"
