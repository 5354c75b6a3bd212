"""Upstream providers: one pure adapter per wire format, and the transport that does the I/O."""

from __future__ import annotations

from ..enums import WireFormat
from .anthropic import AnthropicAdapter
from .base import Adapter, SSEEvent, StreamTranslator, Target, UpstreamRequest
from .openai import OpenAIAdapter

#: Adapters are pure and stateless, so one instance per wire format serves every request.
_ADAPTERS: dict[WireFormat, Adapter] = {
    WireFormat.OPENAI: OpenAIAdapter(),
    WireFormat.ANTHROPIC: AnthropicAdapter(),
}


def get_adapter(wire_format: WireFormat | str) -> Adapter:
    """The adapter for a wire format."""
    return _ADAPTERS[WireFormat(wire_format)]


__all__ = ["Adapter", "SSEEvent", "StreamTranslator", "Target", "UpstreamRequest", "get_adapter"]
