"""Fake OpenAI and Anthropic upstreams: real HTTP/1.1 servers on 127.0.0.1 speaking each wire
format (JSON and SSE) the way the real APIs do, scripted per test with :class:`Reply`.

Every request is recorded (headers and JSON body) so tests can assert what the gateway sent.
The Anthropic fake also rejects what the real API rejects (missing ``max_tokens`` or
``anthropic-version``, a ``system`` role in ``messages``, empty text blocks, a ``tool_result``
without its ``tool_use``, temperature above 1…), so translation bugs surface as 400s.
"""

from __future__ import annotations

from .anthropic_fake import FakeAnthropic
from .openai_fake import FakeOpenAI, chunk_stream, completion_json, streamed_call
from .proxy import Flapper, TcpProxy
from .server import FakeUpstream, Recorded, Reply, ToolCall

__all__ = [
    "FakeAnthropic",
    "FakeOpenAI",
    "FakeUpstream",
    "Flapper",
    "Recorded",
    "Reply",
    "TcpProxy",
    "ToolCall",
    "chunk_stream",
    "completion_json",
    "streamed_call",
]
