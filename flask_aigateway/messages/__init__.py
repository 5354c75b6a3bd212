"""The Anthropic Messages door (``POST /v1/messages``, ``count_tokens``) on the pipeline's steps:
the door itself (``door``) and its stream (``stream``); the body passed unchanged to
Anthropic-format upstreams (``passthrough``); for OpenAI-format ones, the request translated
(``inbound``, ``turns``, ``checks``, per ``fields``) and the answer back (``outbound``,
``events``)."""

from __future__ import annotations

from ..errors import InvalidRequestError
from .door import MessageResult, Messages, messages_of
from .stream import MessageStream

__all__ = ["InvalidRequestError", "MessageResult", "MessageStream", "Messages", "messages_of"]
