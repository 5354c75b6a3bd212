"""The Responses API on top of chat: translation in (``translate``, with ``items`` and
``params``) and out (``objects``), the event stream (``events``) and the stored responses behind
``previous_response_id`` (``store``)."""

from __future__ import annotations

from .events import ResponseEvents
from .objects import completed
from .translate import ResponsesRequest

__all__ = ["ResponseEvents", "ResponsesRequest", "completed"]
