"""``POST /v1/embeddings`` through the pipeline's named steps (DESIGN §1).

authenticate → authorize (an ``embedding`` alias on OpenAI-format deployments) → admit (rate
limits count the input tokens; the budget reserves them at the highest input price) → cache
lookup (alias, input, dimensions, encoding) → route (retries, fallbacks to other embedding
aliases) → account (the upstream's ``prompt_tokens``) → finish (settle, log with route
``embeddings``, metrics). The steps are :class:`~.pipeline.Pipeline`'s own; only the call and
the checks that are particular to embeddings live here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .accounting import RequestRecord
from .catalog import AliasRoute, wrong_kind
from .embeddings import EmbeddingsRequest
from .enums import ModelKind, Route, WireFormat
from .errors import InvalidRequestError
from .pipeline_upstream import call_upstream
from .providers.openai_embeddings import OpenAIEmbeddingsAdapter
from .schemas import ChatResponse, Usage
from .tokens import estimate_input_tokens
from .wording import counted, plural

if TYPE_CHECKING:
    from .pipeline import Pipeline

_ADAPTER = OpenAIEmbeddingsAdapter()


def check_embeddable(route: AliasRoute, prefix: str = "") -> None:
    """An alias may serve embeddings when it is of kind ``embedding`` and no deployment of it
    is Anthropic-format (that API has no embeddings); else 400 naming ``model`` (and the
    routes under ``prefix``, the gateway's ``AIGATEWAY_ROUTE_PREFIX``)."""
    anthropic = [t.provider_name for t in route.targets if t.wire_format is WireFormat.ANTHROPIC]
    if anthropic:
        raise InvalidRequestError(
            f"The model '{route.alias}' is served by Anthropic-format "
            f"{plural(len(set(anthropic)), 'provider')} {', '.join(sorted(set(anthropic)))}, "
            f"which {plural(len(set(anthropic)), 'has', 'have')} no embeddings endpoint; use an "
            "embedding model on an OpenAI-format provider (OpenAI, Azure, Ollama, Gemini).",
            param="model",
            code="model_not_embedding",
        )
    if route.kind is not ModelKind.EMBEDDING:
        raise wrong_kind(route, ModelKind.EMBEDDING, prefix)


def embed(
    pipeline: Pipeline,
    request: EmbeddingsRequest,
    api_key: Any,
    request_id: str,
    cache_control: str | None = None,
) -> ChatResponse:
    """Run one embeddings request through every step; always writes its log row.

    The answer is OpenAI's ``{"object": "list", "data": [...], "model": alias, "usage"}`` in a
    :class:`ChatResponse` (cost, deployment, attempts and headers beside it).
    """
    record = RequestRecord(request_id, alias=request.model, route=Route.EMBEDDINGS.value)
    if pipeline.settings["AIGATEWAY_LOG_CONTENT"]:
        record.keeps_content = True
        record.prompt_text = json.dumps(request.input, ensure_ascii=False)
    prefix = pipeline.settings["AIGATEWAY_ROUTE_PREFIX"]
    with pipeline.steps(record) as admission:
        route, request, cached = pipeline.enter(
            request,
            api_key,
            record,
            admission,
            cache_control,
            kind=None,
            check=lambda route: check_embeddable(route, prefix),
        )
        if cached is not None:
            served = pipeline.cache.serve(cached, record, route, restamp=False)
            return replace(served, headers=admission.headers)
        target, response, _attempts = pipeline.route(
            request,
            route,
            record,
            lambda t, left: call_upstream(pipeline.transport, request, t, left, record, _ADAPTER),
            admission=admission,
        )
        usage = response.usage
        body = response.body
        if usage.prompt_tokens == 0:
            usage = Usage(prompt_tokens=estimate_input_tokens(request), estimated=True)
            body = {
                **body,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
            }
        pipeline.account(record, target, usage)
        result = pipeline.answer(record, target, body, admission.headers)
        if record.keeps_content:
            record.completion_text = counted(len(body["data"]), "embedding")
        pipeline.cache.put(admission.cache, result)
        return result
