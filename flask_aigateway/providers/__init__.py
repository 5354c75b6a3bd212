"""Upstream providers: one pure adapter per wire format, and the transport that does the I/O."""

from __future__ import annotations

from ..enums import WireFormat
from .base import Adapter, SSEEvent, StreamTranslator, Target, UpstreamRequest


def get_adapter(wire_format: WireFormat | str) -> Adapter:
    """The adapter for a wire format (adapters are stateless, so these are shared)."""
    from .anthropic import AnthropicAdapter
    from .openai import OpenAIAdapter

    adapters: dict[WireFormat, Adapter] = {
        WireFormat.OPENAI: OpenAIAdapter(),
        WireFormat.ANTHROPIC: AnthropicAdapter(),
    }
    return adapters[WireFormat(wire_format)]


__all__ = ["Adapter", "SSEEvent", "StreamTranslator", "Target", "UpstreamRequest", "get_adapter"]
