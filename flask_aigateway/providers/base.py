"""The seam between the pipeline and the wire formats: a small Protocol and its values.

An adapter is pure translation (no I/O, no clock, no globals): it turns a :class:`ChatRequest`
into an :class:`UpstreamRequest`, and upstream bytes back into OpenAI-shaped values. Only
the ``transport`` package talks to the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from ..enums import ProviderFormat, WireFormat
from ..errors import UpstreamError
from ..schemas import ChatRequest, ChatResponse, Usage


@dataclass(frozen=True, slots=True)
class Target:
    """A snapshot of one deployment and its provider: everything an adapter and the router need.

    Built once from the database and cached, so the hot path never touches ORM objects.
    """

    deployment_id: str
    alias: str
    provider_id: str
    provider_name: str
    provider_format: ProviderFormat
    base_url: str
    provider_model: str
    api_key: str | None = None
    api_version: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    input_price: Decimal = Decimal(0)
    output_price: Decimal = Decimal(0)
    cached_input_price: Decimal | None = None
    #: max_tokens to send when the request has none (alias setting or AIGATEWAY_DEFAULT_MAX_TOKENS).
    default_max_tokens: int = 4096
    priority: int = 0
    weight: int = 1
    rpm_limit: int | None = None

    @property
    def wire_format(self) -> WireFormat:
        return self.provider_format.wire_format


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to send upstream."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its ``event:`` name (None when absent) and joined ``data:`` lines."""

    data: str
    event: str | None = None


class StreamTranslator(Protocol):
    """Turns one upstream stream, event by event, into OpenAI ``chat.completion.chunk`` dicts.

    One instance per stream (it keeps the state a format needs, e.g. Anthropic's content block
    index → tool call index). Chunks it returns carry no id/created/model of their own worth
    keeping: the pipeline stamps one id per stream.
    """

    #: Usage reported by the upstream so far (final once ``done``).
    usage: Usage | None
    #: The upstream's own ``usage`` object when it is in OpenAI's format (its other fields
    #: reach the client: :meth:`Usage.to_openai`); None otherwise.
    sent_usage: Any
    finish_reason: str | None
    #: True once the upstream signalled a proper end (``[DONE]`` or ``message_stop``).
    done: bool

    @property
    def unshown(self) -> Sequence[str]:
        """Text of the answer its chunks do not carry (an Anthropic upstream's thinking),
        which the completion estimate counts with theirs, as the Messages door's does."""
        ...

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        """Translate one event; raises :class:`UpstreamError` for an in-stream error event."""
        ...


class Adapter(Protocol):
    """Pure translation between OpenAI's chat format and one upstream wire format.

    An adapter may also have ``relaxed(request, target, error) -> ChatRequest | None``: the
    request to send once more when the upstream refused only something the adapter added in
    translation (the Anthropic adapter's ``output_config.effort`` to a model without it); the
    pipeline calls it after a failed answer, when present.
    """

    wire_format: WireFormat

    def build_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """The upstream request; raises InvalidRequestError (400, naming the param) for a
        parameter this format cannot honour."""
        ...

    def parse_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResponse:
        """A 2xx upstream body as an OpenAI ``chat.completion`` (model = the requested alias);
        raises UpstreamError when the body is not what the format promises. When the upstream
        counted nothing, the usage is zero (the pipeline estimates the answer from the body),
        or ``estimated`` with the completion the adapter estimated (from what the body does
        not show) and the prompt zero, for the pipeline to estimate."""
        ...

    def stream_translator(self, request: ChatRequest, target: Target) -> StreamTranslator: ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """A non-2xx upstream answer as an error: retryable or not, the caller's fault or not,
        with the upstream message and Retry-After (seconds) when given."""
        ...
