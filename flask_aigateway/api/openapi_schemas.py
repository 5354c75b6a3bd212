"""The component schemas of the OpenAPI document (``#/components/schemas/…``), as Python data.

Request schemas give the types and required fields the gateway checks, never more (unknown
fields pass through to the provider), so a fuzzer's "valid" requests are ones the gateway
accepts; the chat request is built from the same tables as the checks.
"""

from __future__ import annotations

from typing import Any

from ..chat_checks import _PARAM_TYPES, _RANGES, _ROLES

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_NULLABLE_STRING = {"type": ["string", "null"]}

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
    "AnthropicModel": {
        "type": "object",
        "required": ["type", "id", "display_name", "created_at"],
        "properties": {
            "type": {"const": "model"},
            "id": _STRING,
            "display_name": _STRING,
            "created_at": {"type": "string", "format": "date-time"},
            "aigateway": {
                "type": "object",
                "properties": {"kind": {"enum": ["chat", "embedding"]}},
            },
        },
    },
    "AnthropicModelList": {
        "type": "object",
        "required": ["data", "has_more", "first_id", "last_id"],
        "properties": {
            "data": {"type": "array", "items": _ref("AnthropicModel")},
            "has_more": {"type": "boolean"},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
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
