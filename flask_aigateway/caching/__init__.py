"""Caching: answering an identical request without an upstream call.

Decides per request whether the cache applies (global or per-alias setting,
``Cache-Control``), keys it on the SHA-256 of everything that changes the answer, keeps
answers in the SQL, Redis or memory backend (:mod:`.backends`) with a lock so identical
concurrent misses call the upstream once (:mod:`.cache`), and turns a finished answer into
stream chunks and back (:mod:`.replay`).
"""

from __future__ import annotations

from .cache import CacheDecision, ResponseCache
from .replay import CompletionAssembler, completion_chunks

__all__ = ["CacheDecision", "CompletionAssembler", "ResponseCache", "completion_chunks"]
