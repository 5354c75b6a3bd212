"""``GET /v1/openapi.json``: an OpenAPI 3.1 description of the gateway's own ``/v1`` API.

Kept as Python data (no data file to ship) and checked against the blueprint's routes and real
responses by ``tests/test_openapi.py``; ``tests/test_openapi_fuzz.py`` fuzzes a live gateway
from it with schemathesis. Request schemas give the types and required fields the gateway
checks, never more (unknown fields pass through to the provider), so a fuzzer's "valid"
requests are ones the gateway accepts.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, request

from .. import jsoncodec
from ..schemas import _PARAM_TYPES, _RANGES, _ROLES
from ..state import get_state

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_NULLABLE_STRING = {"type": ["string", "null"]}

#: Headers every gateway answer carries (errors included).
_REQUEST_ID_HEADER = {
    "x-request-id": {
        "description": "The request id: the caller's X-Request-ID when sane, else a new one.",
        "required": True,
        "schema": _STRING,
    }
}

#: Headers of a completion (chat, messages, responses, embeddings).
_GATEWAY_HEADERS: dict[str, Any] = {
    **_REQUEST_ID_HEADER,
    "x-aigateway-provider": {
        "description": "The provider that answered (percent-encoded UTF-8).",
        "schema": _STRING,
    },
    "x-aigateway-deployment": {"description": "The deployment that answered.", "schema": _STRING},
    "x-aigateway-cost-usd": {
        "description": "The cost of the request in USD (JSON answers only; a stream's cost "
        "is in its final chunk).",
        "schema": _STRING,
    },
    "x-aigateway-attempts": {"description": "Upstream attempts made.", "schema": _STRING},
    "x-aigateway-fallback": {
        "description": "Comma-separated deployments tried before the one that answered.",
        "schema": _STRING,
    },
    "x-ratelimit-limit-requests": {"schema": _STRING},
    "x-ratelimit-remaining-requests": {"schema": _STRING},
    "x-ratelimit-limit-tokens": {"schema": _STRING},
    "x-ratelimit-remaining-tokens": {"schema": _STRING},
}

_ERROR_HEADERS: dict[str, Any] = {
    **_REQUEST_ID_HEADER,
    "Retry-After": {
        "description": "Seconds to wait, on 429 (rate limit, throttle) and some 503 answers.",
        "schema": _STRING,
    },
    "x-aigateway-provider": {
        "description": "After an upstream was tried: the last provider tried (percent-encoded "
        "UTF-8).",
        "schema": _STRING,
    },
    "x-aigateway-deployment": {
        "description": "After an upstream was tried: the last deployment tried.",
        "schema": _STRING,
    },
    "x-aigateway-attempts": {
        "description": "Upstream attempts made, once routing began.",
        "schema": _STRING,
    },
}

_OPENAI_ERROR = {
    "description": "An error in OpenAI's shape (4xx for the client's mistakes, 5xx/503 for "
    "upstream or dependency failures).",
    "headers": _ERROR_HEADERS,
    "content": _json_content(_ref("Error")),
}

_ANTHROPIC_ERROR = {
    "description": "An error in Anthropic's shape.",
    "headers": _ERROR_HEADERS,
    "content": _json_content(_ref("AnthropicError")),
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_ANTHROPIC_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]

_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}
_JSON_TYPES.update({dict: "object", list: "array"})


def _chat_message() -> dict[str, Any]:
    """A chat message as :func:`..schemas._check_message` accepts it: content (a string or
    typed parts) is required, except on an assistant message carrying tool calls (of a
    function, or of a custom tool: ``type: custom`` with its ``custom`` name and input)."""
    part = {"type": "object", "required": ["type"], "properties": {"type": _STRING}}
    function_call = {
        "type": "object",
        "required": ["function"],
        "properties": {
            "type": {"not": {"const": "custom"}},
            "function": {"type": "object", "required": ["name"], "properties": {"name": _STRING}},
        },
    }
    custom_call = {
        "type": "object",
        "required": ["type", "custom"],
        "properties": {
            "type": {"const": "custom"},
            "custom": {
                "type": "object",
                "required": ["name", "input"],
                "properties": {"name": _STRING, "input": _STRING},
            },
        },
    }
    tool_call = {"anyOf": [function_call, custom_call]}
    return {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": sorted(_ROLES)},
            "content": {"type": ["string", "array", "null"], "items": part},
            "name": _STRING,
            "tool_call_id": _STRING,
            "tool_calls": {"type": "array", "items": tool_call},
        },
        "anyOf": [
            {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}},
            {
                "required": ["role", "tool_calls"],
                "properties": {"role": {"const": "assistant"}, "tool_calls": {"minItems": 1}},
            },
        ],
    }


def _chat_request() -> dict[str, Any]:
    """The chat body as :meth:`..schemas.ChatRequest.from_body` checks it: built from the same
    tables of parameter types and ranges, so the document cannot drift from the checks."""
    properties: dict[str, Any] = {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
        "stream": {"type": ["boolean", "null"]},
        "stop": {"type": ["string", "array", "null"], "items": _STRING},
    }
    for name, (types, _words) in _PARAM_TYPES.items():
        if name in properties:
            continue
        names = sorted({"number" if float in types else _JSON_TYPES[t] for t in types})
        if "number" in names and "integer" in names:
            names.remove("integer")
        schema: dict[str, Any] = {"type": [*names, "null"]}
        if name in _RANGES:
            schema["minimum"], schema["maximum"] = _RANGES[name]
        properties[name] = schema
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": properties,
        "additionalProperties": True,
    }


_SCHEMAS: dict[str, Any] = {
    "ServerSentEvent": {
        "description": "One event of a stream; its data is a JSON object (OpenAI's chunks end "
        "with data '[DONE]').",
        "type": "object",
        "required": ["data"],
        "properties": {"event": _STRING, "data": _STRING, "id": _STRING, "retry": _INTEGER},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": _STRING, "message": _STRING},
            },
        },
    },
    "ChatMessage": _chat_message(),
    "ChatCompletionRequest": _chat_request(),
    "Usage": {
        "type": "object",
        "properties": {
            "prompt_tokens": _INTEGER,
            "completion_tokens": _INTEGER,
            "total_tokens": _INTEGER,
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "model", "choices"],
        "properties": {
            "id": _STRING,
            "object": {"const": "chat.completion"},
            "created": _INTEGER,
            "model": _STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message"],
                    "properties": {
                        "index": _INTEGER,
                        "message": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {"role": _STRING, "content": _NULLABLE_STRING},
                        },
                        "finish_reason": _NULLABLE_STRING,
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": _STRING,
            "input": {"type": ["string", "array"]},
            "encoding_format": _STRING,
            "dimensions": _INTEGER,
            "user": _STRING,
        },
        "additionalProperties": True,
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": _INTEGER,
                        "embedding": {"type": ["array", "string"], "items": {"type": "number"}},
                    },
                },
            },
            "model": _STRING,
            "usage": {"type": "object"},
        },
    },
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "properties": {
            "model": _STRING,
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": _STRING,
                        "content": {"type": ["string", "array"], "items": {"type": "object"}},
                    },
                },
            },
            "max_tokens": _INTEGER,
            "system": {"type": ["string", "array"], "items": {"type": "object"}},
            "stream": {"type": "boolean"},
            "temperature": {"type": "number"},
            "stop_sequences": {"type": "array", "items": _STRING},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "CountTokensRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": _STRING,
            "messages": {"type": "array", "items": {"type": "object"}},
            "system": {"type": ["string", "array"], "items": {"type": "object"}},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content", "model"],
        "properties": {
            "id": _STRING,
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object"}},
            "model": _STRING,
            "stop_reason": _NULLABLE_STRING,
            "usage": {"type": "object"},
        },
    },
    "TokenCount": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": _INTEGER},
    },
    "ResponseRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": _STRING,
            "input": {"type": ["string", "array"], "items": {"type": "object"}},
            "instructions": _NULLABLE_STRING,
            "previous_response_id": _NULLABLE_STRING,
            "store": {"type": "boolean"},
            "stream": {"type": "boolean"},
            "max_output_tokens": {"type": ["integer", "null"]},
            "temperature": {"type": ["number", "null"]},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
        "additionalProperties": True,
    },
    "Response": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": _STRING,
            "object": {"const": "response"},
            "created_at": {"type": "number"},
            "status": _STRING,
            "model": _STRING,
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "DeletedResponse": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": _STRING,
            "object": {"const": "response"},
            "deleted": {"const": True},
        },
    },
    "InputItemList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object"}},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
            "has_more": {"type": "boolean"},
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": _STRING,
            "object": {"const": "model"},
            "created": _INTEGER,
            "owned_by": _STRING,
            "aigateway": {
                "type": "object",
                "properties": {"kind": {"enum": ["chat", "embedding"]}},
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "providers_configured", "models_available"],
        "properties": {
            "status": {"const": "ok"},
            "providers_configured": {"type": ["integer", "null"]},
            "models_available": {"type": ["integer", "null"]},
            "problem": _STRING,
        },
    },
    "Ready": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"const": "ready"},
            "checks": {"type": "object", "additionalProperties": _STRING},
        },
    },
    "NotReady": {
        "allOf": [
            _ref("Error"),
            {
                "type": "object",
                "required": ["checks"],
                "properties": {"checks": {"type": "object", "additionalProperties": _STRING}},
            },
        ]
    },
    "Stats": {
        "type": "object",
        "required": ["object", "scope", "key", "since", "by", "data"],
        "properties": {
            "object": {"const": "list"},
            "scope": {"enum": ["all", "key"]},
            "key": {"type": ["string", "null"]},
            "since": _NULLABLE_STRING,
            "by": _NULLABLE_STRING,
            "data": {"type": "array", "items": {"type": "object"}},
        },
    },
}


def _json_or_sse(schema: str, events: str) -> dict[str, Any]:
    return {
        "description": f'A JSON {schema}, or with "stream": true {events}.',
        "headers": _GATEWAY_HEADERS,
        "content": {
            **_json_content(_ref(schema)),
            "text/event-stream": {"schema": _ref("ServerSentEvent")},
        },
    }


_RESPONSE_ID = {"name": "id", "in": "path", "required": True, "schema": _STRING}

_PATHS: dict[str, Any] = {
    "/chat/completions": {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "OpenAI-compatible chat completion, routed to any provider.",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": _json_content(_ref("ChatCompletionRequest")),
            },
            "responses": {
                "200": _json_or_sse("ChatCompletion", "OpenAI chat.completion.chunk events"),
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/embeddings": {
        "post": {
            "operationId": "createEmbedding",
            "summary": "OpenAI-compatible embeddings.",
            "security": _BEARER,
            "requestBody": {"required": True, "content": _json_content(_ref("EmbeddingRequest"))},
            "responses": {
                "200": {
                    "description": "The embeddings.",
                    "headers": _GATEWAY_HEADERS,
                    "content": _json_content(_ref("EmbeddingList")),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/messages": {
        "post": {
            "operationId": "createMessage",
            "summary": "Anthropic-compatible Messages API, routed to any provider.",
            "security": _ANTHROPIC_AUTH,
            "requestBody": {"required": True, "content": _json_content(_ref("MessagesRequest"))},
            "responses": {
                "200": _json_or_sse("Message", "Anthropic message events"),
                "default": _ANTHROPIC_ERROR,
            },
        }
    },
    "/messages/count_tokens": {
        "post": {
            "operationId": "countMessageTokens",
            "summary": "Anthropic-compatible token count (exact on Anthropic upstreams).",
            "security": _ANTHROPIC_AUTH,
            "requestBody": {
                "required": True,
                "content": _json_content(_ref("CountTokensRequest")),
            },
            "responses": {
                "200": {
                    "description": "The count; x-aigateway-token-count says exact or estimated.",
                    "headers": {
                        **_REQUEST_ID_HEADER,
                        "x-aigateway-token-count": {
                            "schema": {"enum": ["exact", "estimated"]},
                        },
                    },
                    "content": _json_content(_ref("TokenCount")),
                },
                "default": _ANTHROPIC_ERROR,
            },
        }
    },
    "/responses": {
        "post": {
            "operationId": "createResponse",
            "summary": "OpenAI Responses API, served through the chat pipeline.",
            "security": _BEARER,
            "requestBody": {"required": True, "content": _json_content(_ref("ResponseRequest"))},
            "responses": {
                "200": _json_or_sse("Response", "Responses API events"),
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/responses/{id}": {
        "parameters": [_RESPONSE_ID],
        "get": {
            "operationId": "getResponse",
            "summary": "A stored response of this key.",
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "The response.",
                    "content": _json_content(_ref("Response")),
                },
                "default": _OPENAI_ERROR,
            },
        },
        "delete": {
            "operationId": "deleteResponse",
            "summary": "Delete a stored response of this key.",
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "Deleted.",
                    "content": _json_content(_ref("DeletedResponse")),
                },
                "default": _OPENAI_ERROR,
            },
        },
    },
    "/responses/{id}/input_items": {
        "parameters": [_RESPONSE_ID],
        "get": {
            "operationId": "listInputItems",
            "summary": "The input items of a stored response, paginated.",
            "security": _BEARER,
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                {"name": "after", "in": "query", "schema": _STRING},
            ],
            "responses": {
                "200": {
                    "description": "A page of input items.",
                    "content": _json_content(_ref("InputItemList")),
                },
                "default": _OPENAI_ERROR,
            },
        },
    },
    "/models": {
        "get": {
            "operationId": "listModels",
            "summary": "The aliases this key may use.",
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "The models.",
                    "content": _json_content(_ref("ModelList")),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/models/{model}": {
        "get": {
            "operationId": "getModel",
            "summary": "One alias (it may contain '/').",
            "security": _BEARER,
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STRING}],
            "responses": {
                "200": {
                    "description": "The model.",
                    "content": _json_content(_ref("Model")),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness (public unless AIGATEWAY_HEALTH_PUBLIC is off).",
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {"description": "Alive.", "content": _json_content(_ref("Health"))},
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/health/ready": {
        "get": {
            "operationId": "ready",
            "summary": "Readiness: the database (with its schema) and Redis answer.",
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {"description": "Ready.", "content": _json_content(_ref("Ready"))},
                "503": {
                    "description": "Not ready, with each dependency's status.",
                    "content": _json_content(_ref("NotReady")),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (bearer AIGATEWAY_METRICS_TOKEN when set).",
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {
                    "description": "The Prometheus (or OpenMetrics, by Accept) exposition.",
                    "content": {
                        "text/plain": {"schema": _STRING},
                        "application/openmetrics-text": {"schema": _STRING},
                    },
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/stats": {
        "get": {
            "operationId": "stats",
            "summary": "Usage statistics: an API key sees its own, AIGATEWAY_ADMIN_TOKEN all.",
            "security": _BEARER,
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "description": "7d, 24h, 30m or an ISO date; default all time.",
                    "schema": _STRING,
                },
                {
                    "name": "by",
                    "in": "query",
                    "description": "key, team, model, provider or route (case-insensitive).",
                    "schema": _STRING,
                },
            ],
            "responses": {
                "200": {
                    "description": "Usage rows.",
                    "content": _json_content(_ref("Stats")),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document (public).",
            "security": [{}],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": _json_content({"type": "object"}),
                },
                "default": _OPENAI_ERROR,
            },
        }
    },
}


def document(base_path: str = "/v1") -> dict[str, Any]:
    """The OpenAPI document with ``servers`` at ``base_path`` (the app's mount point, the route
    prefix, then ``/v1``).

    A deep copy each time, so a caller (or a test) may change it freely.
    """
    from .. import __version__

    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "flask-aigateway API",
                "version": __version__,
                "description": "The gateway's own /v1 API: OpenAI-compatible chat "
                "completions, embeddings, Responses and models, Anthropic-compatible "
                "Messages, and health, metrics and usage statistics. Errors are in "
                "OpenAI's shape, on /v1/messages in Anthropic's.",
            },
            "servers": [{"url": base_path}],
            "paths": _PATHS,
            "components": {
                "schemas": _SCHEMAS,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                },
            },
        }
    )


def register(bp: Blueprint) -> None:
    """Add ``/openapi.json`` to the ``/v1`` blueprint (public: it names no secret)."""

    @bp.route("/openapi.json", methods=_ALL_METHODS)
    def openapi() -> Response:
        if request.method not in ("GET", "HEAD"):
            from .views import _method_not_allowed

            raise _method_not_allowed("GET")
        # The WSGI mount point too (SCRIPT_NAME: DispatcherMiddleware, ProxyFix's x_prefix,
        # gunicorn's SCRIPT_NAME), so ``servers`` is where a client reaches the API.
        prefix = request.script_root + get_state().settings["AIGATEWAY_ROUTE_PREFIX"]
        return Response(jsoncodec.dumps(document(prefix + "/v1")), content_type="application/json")


__all__ = ["document", "register"]
