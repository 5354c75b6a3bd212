"""The fake OpenAI chat completions endpoint (JSON, SSE with the usage chunk, errors)."""

from __future__ import annotations

import json
import time
from typing import Any

from .server import FakeUpstream, Reply, fragments, next_id, words

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fa***ke."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `gpt-unknown` does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class FakeOpenAI(FakeUpstream):
    """``POST /v1/chat/completions`` as OpenAI answers it (usage chunk when asked, ``[DONE]``)."""

    format = "openai"
    endpoint = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    def _max_output(self, body: dict[str, Any]) -> int | None:
        """``max_completion_tokens``, else the legacy ``max_tokens`` (as OpenAI reads them)."""
        for name in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(name), int):
                return int(body[name])
        return None

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_fake{next_id()}", "openai-processing-ms": "1"}

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        if self.require_key and headers.get("authorization") != f"Bearer {self.require_key}":
            return 401, _OPENAI_ERRORS[401][2]
        if not isinstance(body, dict):
            return 400, "We could not parse the JSON body of your request."
        if not isinstance(body.get("model"), str):
            return 400, "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, "[] is too short - 'messages'"
        if body.get("stream_options") is not None and not body.get("stream"):
            return 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return None

    def _calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id or f"call_fake{next_id()}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]

    def _finish(self, reply: Reply) -> str:
        return reply.finish or ("tool_calls" if reply.tool_calls else "stop")

    def _usage_json(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        prompt, completion = self._usage(body, reply)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "id": f"chatcmpl-fake{next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": self._usage_json(body, reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _events(self, body: dict[str, Any], reply: Reply) -> list[str]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {
            "id": f"chatcmpl-fake{next_id()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": w}) for w in words(reply.text or "")]
        for index, call in enumerate(self._calls(reply)):
            first = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
            events.append(chunk({"tool_calls": [first]}))
            events += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
                for f in fragments(call["function"]["arguments"])
            ]
        events.append(chunk({}, self._finish(reply)))
        if include_usage:
            usage = {**head, "choices": [], "usage": self._usage_json(body, reply)}
            events.append(f"data: {json.dumps(usage)}\n\n")
        return [*events, "data: [DONE]\n\n"]

    def _error_body(self, reply: Reply) -> dict[str, Any]:
        kind, code, message = _OPENAI_ERRORS.get(reply.status, _OPENAI_ERRORS[500])
        return {
            "error": {
                "message": reply.error_message or message,
                "type": reply.error_type or kind,
                "param": None,
                "code": reply.error_code or code,
            }
        }

    def _error_event(self, reply: Reply) -> str:
        error = {
            "message": reply.error_message
            or "The server had an error while processing your request.",
            "type": reply.error_type or "server_error",
            "param": None,
            "code": reply.error_code,
        }
        return f"data: {json.dumps({'error': error})}\n\n"
