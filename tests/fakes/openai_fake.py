"""The fake OpenAI chat completions endpoint (JSON, SSE with the usage chunk, errors) and its
embeddings endpoint (deterministic unit vectors, float or base64, usage)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
from typing import Any

from .server import FakeUpstream, Reply, _Handler, fragments, next_id, words

#: OpenAI's embedding models and their native dimensions; other model ids get
#: :data:`OTHER_DIMENSIONS` (small vectors keep the tests light).
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
OTHER_DIMENSIONS = 16
_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def fake_vector(model: str, item: Any, dimensions: int) -> list[float]:
    """The deterministic unit vector the fake answers for one input (a text or a token array)
    on ``model``: float32 values, so the float and base64 encodings carry the same numbers."""
    seed = hashlib.sha256(f"{model}\0{json.dumps(item)}".encode()).digest()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        raw += [(v / 0xFFFFFFFF) * 2 - 1 for v in struct.unpack("<8I", block)]
        counter += 1
    raw = raw[:dimensions]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


def embedding_tokens(item: Any) -> int:
    """Tokens the fake counts for one input: a token array its length, a text ~4 chars each."""
    return len(item) if isinstance(item, list) else max(1, len(item) // 4)


#: Models that do not reason, which OpenAI answers 400 when sent ``reasoning_effort``.
_NO_REASONING = re.compile(r"gpt-(3\.5|4)")

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


def completion_json(content: Any, usage: dict[str, int] | None = None) -> bytes:
    """A minimal ``chat.completion`` body with ``content`` as the message's content (text, a
    list of parts, …), for replies the fake's own answers do not cover (``Reply(raw_body=…)``);
    ``usage`` omitted when None."""
    body: dict[str, Any] = {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return json.dumps(body).encode()


def chunk_stream(*deltas: dict[str, Any]) -> bytes:
    """An OpenAI chat stream body of one choice, a ``chat.completion.chunk`` per item of
    ``deltas`` (its ``delta``, ``finish_reason``…) and ``[DONE]``, for servers whose streams
    the fake's own answers do not cover (``Reply(raw_body=…)``: tool calls without an
    ``index``, a refusal)."""
    frame = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    lines = [
        f"data: {json.dumps({**frame, 'choices': [{'index': 0, **delta}]})}\n\n" for delta in deltas
    ]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def streamed_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One whole tool call in a chunk's ``delta.tool_calls``, without the ``index`` OpenAI
    sends (as Gemini's OpenAI endpoint writes them)."""
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"id": call_id, "type": "function", "function": function}


def token_logprob(token: str, body: dict[str, Any]) -> dict[str, Any]:
    """The fake's log probability entry for one streamed piece of text (a deterministic
    ``logprob`` from its length; ``top_logprobs`` as many as asked, the token itself first)."""
    entry = {"token": token, "logprob": -len(token) / 100, "bytes": list(token.encode())}
    top = body.get("top_logprobs") or 0
    alternatives = [token, *(f"{token}~{i}" for i in range(1, top))][:top]
    entry["top_logprobs"] = [
        {"token": t, "logprob": -len(t) / 100, "bytes": list(t.encode())} for t in alternatives
    ]
    return entry


def _interleaved(calls: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The ``delta.tool_calls`` lists of parallel calls streamed interleaved (see
    ``Reply.interleave``): each call's first fragment in turn, then the rest round-robin."""
    pieces = [fragments(call["function"]["arguments"]) for call in calls]
    deltas = [
        [{"index": i, **call, "function": {**call["function"], "arguments": pieces[i][0]}}]
        for i, call in enumerate(calls)
    ]
    for round_ in range(1, max(map(len, pieces), default=0)):
        here = [
            {"index": i, "function": {"arguments": p[round_]}}
            for i, p in enumerate(pieces)
            if round_ < len(p)
        ]
        deltas += [here] if round_ % 2 else [[call] for call in reversed(here)]
    return deltas


class FakeOpenAI(FakeUpstream):
    """``POST /v1/chat/completions`` as OpenAI answers it (usage chunk when asked, ``[DONE]``)."""

    format = "openai"
    endpoint = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"

    #: False: behave like an OpenAI-compatible server that ignores ``encoding_format`` and
    #: always sends floats (reset to True between tests).
    honours_base64 = True

    def _max_output(self, body: dict[str, Any]) -> int | None:
        """``max_completion_tokens``, else the legacy ``max_tokens`` (as OpenAI reads them)."""
        for name in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(name), int):
                return int(body[name])
        return None

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_fake{next_id()}", "openai-processing-ms": "1"}

    def reset(self) -> None:
        super().reset()
        self.honours_base64 = True

    # -- POST /v1/embeddings ----------------------------------------------------------------

    def _other_route(
        self, h: _Handler, path: str, headers: dict[str, str], body: Any, reply: Reply
    ) -> bool:
        if path != "/v1/embeddings":
            return False
        problem = self._invalid_embeddings(headers, body)
        if problem is not None:
            status, message = problem
            self._error(h, Reply(status=status, error_message=message))
        elif reply.status >= 400:
            self._error(h, reply)
        elif reply.raw_body is not None:
            self._send(h, 200, reply.raw_body, reply.headers)
        else:
            data = json.dumps(self._embeddings(body, reply)).encode()
            self._send(h, 200, data, reply.headers)
        return True

    def _invalid_embeddings(self, headers: dict[str, str], body: Any) -> tuple[int, str] | None:
        if self.require_key and headers.get("authorization") != f"Bearer {self.require_key}":
            return 401, _OPENAI_ERRORS[401][2]
        if not isinstance(body, dict):
            return 400, "We could not parse the JSON body of your request."
        unknown = sorted(set(body) - _EMBEDDING_FIELDS)
        if unknown:
            return 400, f"Unrecognized request argument supplied: {unknown[0]}"
        if not isinstance(body.get("model"), str):
            return 400, "you must provide a model parameter"
        items = self._inputs(body.get("input"))
        if items is None:
            return 400, "'$.input' is invalid. Please check the API reference."
        if body.get("encoding_format") not in (None, "float", "base64"):
            return 400, (
                f"{body['encoding_format']!r} is not one of ['float', 'base64'] - 'encoding_format'"
            )
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if not body["model"].startswith("text-embedding-3"):
                return 400, "This model does not support specifying dimensions."
            if not isinstance(dimensions, int) or dimensions < 1:
                return 400, f"{dimensions!r} is less than the minimum of 1 - 'dimensions'"
        return None

    @staticmethod
    def _inputs(value: Any) -> list[Any] | None:
        """The inputs of an embeddings body, or None when OpenAI would refuse ``input``."""
        if isinstance(value, str):
            return [value] if value else None
        if not isinstance(value, list) or not value or len(value) > 2048:
            return None
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return list(value)
        return None

    def _embeddings(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        model = body["model"]
        items = self._inputs(body["input"]) or []
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS.get(model, OTHER_DIMENSIONS)
        as_base64 = self.honours_base64 and body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector: Any = fake_vector(model, item, dimensions)
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                vector = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(embedding_tokens(item) for item in items)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }

    def _invalid(self, headers: dict[str, str], body: Any) -> tuple[Any, ...] | None:
        if self.require_key and headers.get("authorization") != f"Bearer {self.require_key}":
            return 401, _OPENAI_ERRORS[401][2]
        if not isinstance(body, dict):
            return 400, "We could not parse the JSON body of your request."
        if not isinstance(body.get("model"), str):
            return 400, "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return 400, "[] is too short - 'messages'"
        if body.get("reasoning_effort") is not None and _NO_REASONING.match(body["model"]):
            return (
                400,
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "unsupported_parameter",
            )
        if body.get("stream_options") is not None and not body.get("stream"):
            return 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        if not body.get("tools"):
            for name in ("tool_choice", "parallel_tool_calls"):
                if body.get(name) is not None:
                    return 400, (
                        f"Invalid value for '{name}': '{name}' is only allowed when 'tools' "
                        "are specified."
                    )
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
                    "logprobs": self._logprobs(body, words(reply.text or "")),
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": self._usage_json(body, reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _logprobs(self, body: dict[str, Any], tokens: list[str]) -> dict[str, Any] | None:
        """A choice's ``logprobs`` for ``tokens`` of its content: None unless asked, as
        OpenAI answers (one entry per streamed piece of text, so the JSON answer's list is
        the concatenation of the stream's)."""
        if not body.get("logprobs"):
            return None
        return {"content": [token_logprob(t, body) for t in tokens], "refusal": None}

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
            logprobs = self._logprobs(body, [delta["content"]]) if delta.get("content") else None
            data = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": w}) for w in words(reply.text or "")]
        calls = self._calls(reply)
        if reply.interleave:
            events += [chunk({"tool_calls": delta}) for delta in _interleaved(calls)]
        else:
            for index, call in enumerate(calls):
                function = {**call["function"], "arguments": ""}
                events.append(
                    chunk({"tool_calls": [{**call, "index": index, "function": function}]})
                )
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
