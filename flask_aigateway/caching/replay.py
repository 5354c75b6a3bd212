"""Between a finished ``chat.completion`` and its stream chunks, both ways: a streamed answer is
assembled into a completion for the cache, and a cached completion is replayed as chunks.

Pure functions over OpenAI-shaped dicts (no I/O), so a JSON request and a streamed one share
cache entries.
"""

from __future__ import annotations

import time
from typing import Any

from ..providers.wire import tool_call_key

#: The token lists of a choice's ``logprobs`` (one for the content, one for a refusal).
_TOKEN_LISTS = ("content", "refusal")


def _add_logprobs(acc: dict[str, Any], logprobs: dict[str, Any]) -> None:
    """One chunk's ``logprobs`` added to a choice's, as OpenAI's SDK accumulates them: the
    first one taken as it is (its lists copied: the chunk is still to be sent), then each
    later one's ``content`` and ``refusal`` token lists appended."""
    held = acc["logprobs"]
    if held is None:
        held = acc["logprobs"] = dict(logprobs)
        for name in _TOKEN_LISTS:
            if isinstance(held.get(name), list):
                held[name] = list(held[name])
        return
    for name in _TOKEN_LISTS:
        tokens = logprobs.get(name)
        if tokens and isinstance(tokens, list):
            if held.get(name) is None:
                held[name] = []
            if isinstance(held[name], list):
                held[name].extend(tokens)


class CompletionAssembler:
    """Feed it every chunk of a stream (in order); :meth:`completion` then gives the
    ``chat.completion`` body the same answer would have had without streaming (each choice's
    ``logprobs`` included)."""

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            acc = self._choices.setdefault(
                index,
                {
                    "role": "assistant",
                    "content": [],
                    "refusal": [],
                    "tools": {},
                    "finish_reason": None,
                    "logprobs": None,
                },
            )
            delta = choice.get("delta") or {}
            if delta.get("role"):
                acc["role"] = delta["role"]
            if delta.get("content"):
                acc["content"].append(delta["content"])
            if delta.get("refusal"):
                acc["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                key = acc["last_call"] = tool_call_key(call, acc.get("last_call"))
                slot = acc["tools"].setdefault(
                    key,
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] += function["name"]
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if logprobs and isinstance(logprobs, dict):
                _add_logprobs(acc, logprobs)

    def completion(self, *, model: str, usage: dict[str, Any] | None) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            acc = self._choices[index]
            message: dict[str, Any] = {
                "role": acc["role"],
                "content": "".join(acc["content"]) if acc["content"] else None,
            }
            if acc["refusal"]:
                message["refusal"] = "".join(acc["refusal"])
            if acc["tools"]:
                tools = acc["tools"]
                order = sorted(tools) if all(isinstance(k, int) for k in tools) else list(tools)
                message["tool_calls"] = [tools[key] for key in order]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": acc["logprobs"],
                    "finish_reason": acc["finish_reason"],
                }
            )
        body: dict[str, Any] = {
            "id": None,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return body


def completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``chat.completion`` body as the chunks of a stream (without id/created/model, which
    the stream stamps, and without the usage chunk): per choice a role chunk, a content chunk,
    one chunk per tool call, and the finish chunk last.

    A choice's ``logprobs`` ride on its content chunk (a refusal's on the refusal chunk; on
    the role chunk when the message has neither), so accumulating the chunks as OpenAI's SDK
    and :class:`CompletionAssembler` do gives them back unchanged."""
    chunks: list[dict[str, Any]] = []
    finishes: list[dict[str, Any]] = []
    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}

        def chunk(
            delta: dict[str, Any], logprobs: Any = None, index: int = index
        ) -> dict[str, Any]:
            return {
                "choices": [
                    {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
                ]
            }

        content, refusal = message.get("content"), message.get("refusal")
        on_role = on_content = on_refusal = None
        logprobs = choice.get("logprobs")
        if logprobs and content and refusal and logprobs.get("refusal"):
            on_content = {**logprobs, "refusal": None}
            on_refusal = {"content": None, "refusal": logprobs["refusal"]}
        elif logprobs and content:
            on_content = logprobs
        elif logprobs and refusal:
            on_refusal = logprobs
        elif logprobs:
            on_role = logprobs
        chunks.append(chunk({"role": message.get("role", "assistant"), "content": ""}, on_role))
        if content:
            chunks.append(chunk({"content": content}, on_content))
        if refusal:
            chunks.append(chunk({"refusal": refusal}, on_refusal))
        for position, call in enumerate(message.get("tool_calls") or ()):
            chunks.append(chunk({"tool_calls": [{**call, "index": position}]}))
        finishes.append(
            {
                "choices": [
                    {
                        "index": index,
                        "delta": {},
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason") or "stop",
                    }
                ]
            }
        )
    return chunks + finishes


__all__ = ["CompletionAssembler", "completion_chunks"]
