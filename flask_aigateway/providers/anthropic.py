"""The Anthropic Messages API wire format: the adapter and its per-parameter table.

Request translation lives in :mod:`.anthropic_messages`, response translation in
:mod:`.anthropic_response`; this module decides, parameter by parameter, what is translated and
what is refused (:data:`PARAMETERS`), and assembles the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..enums import WireFormat
from ..errors import InvalidRequestError, UpstreamClientError, UpstreamError
from ..schemas import ChatRequest, ChatResponse
from .anthropic_messages import (
    json_tool,
    json_tool_name,
    native_format,
    translate_messages,
    translate_tool_choice,
    translate_tools,
)
from .anthropic_response import (
    LABEL,
    AnthropicStreamTranslator,
    checked_message,
    message_to_completion,
)
from .base import Target, UpstreamRequest
from .classify import classify_status
from .parameters import OTHER_FIELDS, Handling
from .urls import anthropic_messages_url
from .wire import USER_AGENT, Deployments, dumps, load_json, merge_headers, quote, try_json

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"

PARAMETERS: dict[str, Handling] = {
    "model": Handling("translated", "replaced by the deployment's provider model id"),
    "messages": Handling(
        "translated",
        "system and developer messages → top-level `system`; text, image (data URL → base64 "
        "source, http(s) URL → url source) and inline-PDF `file` parts; assistant `tool_calls` → "
        "`tool_use` blocks; an assistant's `refusal` → its text; consecutive `tool` messages → "
        "one user turn of `tool_result` blocks; same-role turns merged; `cache_control` on parts "
        "kept; a message's `name` and an image's `detail` have no equivalent and are not sent. "
        "`input_audio` parts, `file_id` files, custom tool calls, `function` messages and "
        "`function_call` refused, as is a conversation with no user or assistant content (a "
        "system prompt alone) or whose last user message is empty after an assistant turn "
        "(Anthropic needs a turn to answer; left out, the empty message would make the "
        "assistant's turn a prefill)",
    ),
    "stream": Handling("translated", "`stream: true`; Anthropic events become OpenAI chunks"),
    "stream_options": Handling(
        "translated",
        "Anthropic always reports usage; the gateway emits the usage chunk when "
        "`include_usage` is true",
    ),
    "temperature": Handling(
        "translated", "same value; above 1 refused (Anthropic's range is 0 to 1)"
    ),
    "top_p": Handling(
        "passed",
        "a model that takes only one of `temperature` and `top_p` (Sonnet 4.5, Haiku 4.5, "
        "Opus 4.1 and later) answers 400 to both: the request is sent again without `top_p`, "
        "as are later ones with both to that deployment",
    ),
    "n": Handling("refused", "only `1` (Anthropic returns one choice)", lambda v: v == 1),
    "stop": Handling("translated", "`stop_sequences` (a string becomes a one-item list)"),
    "max_tokens": Handling(
        "translated",
        "`max_tokens`; when neither it nor `max_completion_tokens` is set, the "
        "model alias default (Anthropic requires one)",
    ),
    "max_completion_tokens": Handling("translated", "`max_tokens` (wins over `max_tokens`)"),
    "presence_penalty": Handling("refused", "only `0`", lambda v: v == 0),
    "frequency_penalty": Handling("refused", "only `0`", lambda v: v == 0),
    "logit_bias": Handling("refused", "only `{}`", lambda v: v == {}),
    "logprobs": Handling(
        "refused", "only `false` (no log probabilities at Anthropic)", lambda v: v is False
    ),
    "top_logprobs": Handling("refused", "only `0`", lambda v: v == 0),
    "seed": Handling("refused", "Anthropic has no seeded sampling"),
    "user": Handling("translated", "`metadata.user_id`"),
    "safety_identifier": Handling("translated", "`metadata.user_id` (wins over `user`)"),
    "prompt_cache_key": Handling(
        "ignored",
        "a routing hint for OpenAI's prompt cache; Anthropic caches by `cache_control` "
        "markers, which are kept on content parts",
    ),
    "metadata": Handling("refused", "Anthropic's `metadata` only holds a user id: send `user`"),
    "store": Handling("refused", "only `false`", lambda v: v is False),
    "service_tier": Handling("refused", "no equivalent tiers"),
    "tools": Handling(
        "translated",
        "`function` tools → `{name, description, input_schema}` (`strict` is not "
        "enforced by Anthropic); other tool types refused",
    ),
    "tool_choice": Handling(
        "translated", "`auto` → auto, `none` → none, `required` → any, a named function → tool"
    ),
    "parallel_tool_calls": Handling(
        "translated", "`false` → `tool_choice.disable_parallel_tool_use: true`"
    ),
    "functions": Handling("refused", "deprecated: send `tools`"),
    "function_call": Handling("refused", "deprecated: send `tool_choice`"),
    "response_format": Handling(
        "translated",
        "`json_schema` → a forced tool whose `input_schema` is the schema; "
        '`json_object` → the same with `{"type": "object"}`; the tool input comes back as '
        "the message content with finish_reason `stop`; `text`: nothing to do. With "
        "`tools`, `json_schema` → `output_config.format` (Anthropic's structured outputs, "
        "on the models that have them) and `json_object` is refused",
    ),
    "reasoning_effort": Handling(
        "translated",
        "`output_config.effort` (the same names; `minimal` → `low`, `none` → not sent); a "
        "model without effort (Haiku 4.5, Sonnet 4.5…) answers 400 to it, and the request is "
        "sent again without it, as are later ones to that deployment",
    ),
    "verbosity": Handling("ignored", "a length hint with no Anthropic equivalent"),
    "modalities": Handling("refused", 'only `["text"]`', lambda v: v == ["text"]),
    "audio": Handling("refused", "no audio output at Anthropic"),
    "prediction": Handling("refused", "no predicted outputs at Anthropic"),
    "web_search_options": Handling("refused", "server tools are not mapped"),
    "top_k": Handling("passed", "Anthropic's own sampling parameter"),
    OTHER_FIELDS: Handling(
        "refused", "unknown fields cannot be translated (except `top_k`, passed as Anthropic's own)"
    ),
}

#: Client parameters the body assembly below reads (the others are refused or ignored).
_TRANSLATED = ("temperature", "top_p", "top_k")

#: Deployments (provider id, provider model id) whose model answered that it takes no
#: ``output_config.effort`` (Haiku 4.5, Sonnet 4.5 and older): the gateway leaves a translated
#: ``reasoning_effort`` out for them from then on (:meth:`AnthropicAdapter.relaxed`).
_NO_EFFORT = Deployments()
_NO_EFFORT_ANSWER = "does not support the effort parameter"

#: Deployments whose model answered that it takes ``temperature`` or ``top_p``, not both
#: (Sonnet 4.5, Haiku 4.5, Opus 4.1 and later; OpenAI takes both, so OpenAI-tuned clients
#: send both): ``top_p`` is left out for them when both are given
#: (:meth:`AnthropicAdapter.relaxed`).
_ONE_SAMPLER = Deployments()
_ONE_SAMPLER_ANSWER = "cannot both be specified"

#: Chat's ``reasoning_effort`` as Anthropic's ``output_config.effort`` (``none``: no effort
#: level is sent, the model's default, which reasons only when asked to think).
_EFFORT = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}


class AnthropicAdapter:
    """Pure translation to and from the Anthropic Messages API (stateless, shareable)."""

    wire_format = WireFormat.ANTHROPIC

    def build_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """``POST {base}/v1/messages``; raises :class:`InvalidRequestError` (400, ``param``
        naming the field) for anything :data:`PARAMETERS` refuses or the translation cannot
        carry."""
        params = request.params
        _check_parameters(params, request.model)
        system, messages = translate_messages(request.messages)
        body: dict[str, Any] = {
            "model": target.provider_model,
            "messages": messages,
            "max_tokens": request.max_output_tokens or target.default_max_tokens,
        }
        if system:
            body["system"] = system
        for name in _TRANSLATED:
            if params.get(name) is not None:
                body[name] = params[name]
        if "top_p" in body and "temperature" in body and target in _ONE_SAMPLER:
            del body["top_p"]
        stop = params.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        user = params.get("safety_identifier") or params.get("user")
        if user:
            body["metadata"] = {"user_id": user}
        effort = _EFFORT.get(str(params.get("reasoning_effort")))
        if effort and target not in _NO_EFFORT:
            body["output_config"] = {"effort": effort}
        _add_tools(body, params)
        if "tools" not in body:
            _declare_tools_used(body, messages)
        if request.stream:
            body["stream"] = True
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if request.stream else "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            "User-Agent": USER_AGENT,
        }
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return UpstreamRequest(
            method="POST",
            url=anthropic_messages_url(target),
            headers=merge_headers(headers, target.extra_headers),
            body=dumps(body),
            stream=request.stream,
        )

    def parse_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResponse:
        """The Message as an OpenAI ``chat.completion`` (model = the alias, ``created`` 0 for
        the pipeline to stamp); raises a retryable UpstreamError for a body that is not one."""
        data = checked_message(load_json(body, "an Anthropic message"), body)
        completion, usage = message_to_completion(
            data, request.model, json_tool_name(request.params)
        )
        return ChatResponse(
            body=completion,
            usage=usage,
            provider=target.provider_name,
            deployment_id=target.deployment_id,
        )

    def stream_translator(self, request: ChatRequest, target: Target) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(request.model, json_tool_name(request.params))

    def relaxed(
        self, request: ChatRequest, target: Target, error: UpstreamError
    ) -> ChatRequest | None:
        """The request to send again after ``error``, when the upstream refused only what the
        translation made of it: ``reasoning_effort`` (a hint every request of Codex CLI or the
        Agents SDK carries) sent as ``output_config.effort`` to a model without it, or
        ``temperature`` with ``top_p`` (OpenAI takes both) to a model that takes one. The
        deployment is remembered, so later requests leave it out at once; None for any other
        error (:data:`.pipeline_upstream.RELAXED_TRIES` bounds the tries)."""
        if not isinstance(error, UpstreamClientError):
            return None
        params = request.params
        if params.get("reasoning_effort") is not None and _NO_EFFORT_ANSWER in error.message:
            _NO_EFFORT.add(target)
            what = "takes no effort parameter: reasoning_effort is left out for it"
        elif (
            params.get("temperature") is not None
            and params.get("top_p") is not None
            and _ONE_SAMPLER_ANSWER in error.message
        ):
            _ONE_SAMPLER.add(target)
            what = "takes temperature or top_p, not both: top_p is left out for it"
        else:
            return None
        log.info("%s (%s) %s", target.provider_model, target.provider_name, what)
        return request

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Read ``{"type": "error", "error": {"type", "message"}}`` and apply the shared policy
        (529 ``overloaded_error`` is retryable like a 5xx)."""
        data = try_json(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "")
        else:
            message = quote(body)
        details = error.get("details") if isinstance(error, dict) else None
        if not isinstance(details, dict):
            return classify_status(status, headers, label=LABEL, message=message)
        code = details.get("error_code")
        if 400 <= status < 500 and isinstance(code, str) and code.startswith("thread_"):
            # A thread the upstream does not know (or one continued twice) is the client's
            # to recover from — the SDK replays the turn under a new thread — not a fault of
            # the deployment: no failover, no circuit-breaker count, its own status.
            failure: UpstreamError = UpstreamClientError(
                message, status=status, upstream_status=status, code=code
            )
        else:
            failure = classify_status(status, headers, label=LABEL, message=message)
        failure.details = details  # ``error_code`` and the like, for /v1/messages clients
        return failure


def _check_parameters(params: Mapping[str, Any], alias: str) -> None:
    for name, value in params.items():
        handling = PARAMETERS.get(name, PARAMETERS[OTHER_FIELDS])
        if not handling.allows(value):
            raise InvalidRequestError(
                f"'{name}' cannot be honoured by the anthropic-format upstream serving "
                f"'{alias}' ({handling.note}). Remove it, or use a model served by an "
                "OpenAI-format provider.",
                param=name,
            )
    verbosity = params.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise InvalidRequestError(
            f"'verbosity' must be low, medium or high (got {verbosity!r}).", param="verbosity"
        )
    cache_key = params.get("prompt_cache_key")
    if cache_key is not None and not isinstance(cache_key, str):
        raise InvalidRequestError("'prompt_cache_key' must be a string.", param="prompt_cache_key")
    effort = params.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in _EFFORT):
        raise InvalidRequestError(
            f"'reasoning_effort' must be one of {', '.join(_EFFORT)} (got {effort!r}).",
            param="reasoning_effort",
        )
    temperature = params.get("temperature")
    if temperature is not None and temperature > 1:
        raise InvalidRequestError(
            f"'temperature' must be between 0 and 1 for the anthropic-format upstream serving "
            f"'{alias}' (got {temperature!r}).",
            param="temperature",
        )


def _declare_tools_used(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """A conversation that called tools, sent on without any: the Messages API refuses
    ``tool_use``/``tool_result`` blocks unless the request defines tools, where chat
    completions takes such a history as it is (a summarising step, a handoff to an agent
    without tools). The tools the history names are declared, with no schema, and
    ``tool_choice: none``, so the model reads the calls as they were and calls nothing."""
    names: dict[str, None] = {}
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            for block in content:
                if block.get("type") == "tool_use":
                    names[block["name"]] = None
    if names:
        body["tools"] = [
            {
                "name": name,
                "description": "A tool called earlier in this conversation; not available now.",
                "input_schema": {"type": "object"},
            }
            for name in names
        ]
        body["tool_choice"] = {"type": "none"}


def _add_tools(body: dict[str, Any], params: Mapping[str, Any]) -> None:
    """Tools, tool_choice and JSON modes (a JSON mode is a forced tool of its own)."""
    tools = params.get("tools")
    native = native_format(params)
    forced = None if native is not None else json_tool(params.get("response_format"))
    if native is not None:
        body.setdefault("output_config", {})["format"] = native
    if forced is not None:
        if tools or params.get("tool_choice") is not None:
            raise InvalidRequestError(
                "'response_format' cannot be combined with 'tools' or 'tool_choice' for an "
                "anthropic-format upstream unless it is a json_schema with its 'schema' (sent "
                "as Anthropic's structured output beside the tools).",
                param="response_format",
            )
        body["tools"] = [forced]
        body["tool_choice"] = {"type": "tool", "name": forced["name"]}
        return
    if tools:
        body["tools"] = translate_tools(tools)
        choice = translate_tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    elif params.get("tool_choice") is not None:
        choice = translate_tool_choice(params["tool_choice"], None)
        if choice is not None and choice["type"] not in ("auto", "none"):
            raise InvalidRequestError(
                "'tool_choice' requires 'tools': there is no tool to choose.", param="tool_choice"
            )
