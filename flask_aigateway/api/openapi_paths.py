"""The operations of the OpenAPI document (``paths``): headers, errors and security per route."""

from __future__ import annotations

from typing import Any

from ..services.stats import GROUPS
from .openapi_schemas import _STRING, _json_content, _ref

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

_EITHER_ERROR = {
    "description": "An error in OpenAI's shape, or in Anthropic's when the request says "
    "anthropic-version.",
    "headers": _ERROR_HEADERS,
    "content": _json_content({"oneOf": [_ref("Error"), _ref("AnthropicError")]}),
}

_ANTHROPIC_VERSION = {
    "name": "anthropic-version",
    "in": "header",
    "description": "Any value: answers in Anthropic's shapes (models and errors).",
    "schema": _STRING,
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_ANTHROPIC_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]


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
            "summary": "The aliases this key may use; in Anthropic's shape, paginated, when the "
            "request says anthropic-version (the Anthropic SDK always does).",
            "security": _ANTHROPIC_AUTH,
            "parameters": [
                _ANTHROPIC_VERSION,
                {
                    "name": "limit",
                    "in": "query",
                    "description": "Anthropic's shape only.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {
                    "name": "after_id",
                    "in": "query",
                    "description": "Anthropic's shape only.",
                    "schema": _STRING,
                },
                {
                    "name": "before_id",
                    "in": "query",
                    "description": "Anthropic's shape only.",
                    "schema": _STRING,
                },
            ],
            "responses": {
                "200": {
                    "description": "The models (OpenAI's list, or Anthropic's page).",
                    "content": _json_content(
                        {"oneOf": [_ref("ModelList"), _ref("AnthropicModelList")]}
                    ),
                },
                "default": _EITHER_ERROR,
            },
        }
    },
    "/models/{model}": {
        "get": {
            "operationId": "getModel",
            "summary": "One alias (it may contain '/'); in Anthropic's shape when the request "
            "says anthropic-version.",
            "security": _ANTHROPIC_AUTH,
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": _STRING},
                _ANTHROPIC_VERSION,
            ],
            "responses": {
                "200": {
                    "description": "The model.",
                    "content": _json_content({"oneOf": [_ref("Model"), _ref("AnthropicModel")]}),
                },
                "default": _EITHER_ERROR,
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
                    "description": f"What the rows are grouped by: {', '.join(GROUPS)} "
                    "(case-insensitive). A team row counts the keys placed directly in that "
                    "team (a sub-team has a row of its own), so the rows add up to the total.",
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
