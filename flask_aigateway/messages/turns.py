"""A Messages conversation's turns as chat messages: user turns (text, images, tool results),
assistant turns (text, tool calls) and mid-conversation system messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidRequestError
from .checks import _block, _effort, _invalid, _refuse, _string


def _text_of(blocks: Any, where: str) -> str:
    """Text blocks joined (``cache_control`` and ``citations`` carry nothing OpenAI reads);
    None is no text. 400 naming the field or block for anything else."""
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    if not isinstance(blocks, list):
        raise _invalid(where, "a valid string or a list of text blocks")
    texts = []
    for j, block in enumerate(blocks):
        here = f"{where}[{j}]"
        kind = _block(block, here)
        if kind != "text":
            raise _refuse(here, f"a {kind!r} block here (text only)")
        texts.append(_text(block, here))
    return "\n\n".join(texts)


def _text(block: Mapping[str, Any], where: str) -> str:
    """A text block's text (a string, as Anthropic requires)."""
    return _string(block.get("text"), f"{where}.text") or ""


def _tool_result(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A ``tool_result``'s content: its text, and its images as chat image parts."""
    if not isinstance(content, list):
        if content is not None and not isinstance(content, str):
            raise _invalid(where, "a valid string or a list of content blocks")
        return _text_of(content, where), []
    texts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = _block(block, f"{where}[{j}]")
        if kind == "image":
            images.append(_image_part(block, f"{where}[{j}]"))
        elif kind == "text":
            texts.append(block)
        else:
            raise _refuse(f"{where}[{j}]", f"a {kind!r} block here (text and images only)")
    return _text_of(texts, where), images


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source", "an object (an image source)")
    kind = source.get("type")
    if kind == "base64":
        media_type = _string(source.get("media_type"), f"{where}.source.media_type")
        data = _string(source.get("data"), f"{where}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _string(source.get("url"), f"{where}.source.url") or ""
    else:
        raise _refuse(f"{where}.source", f"an image source of type {kind!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn: ``tool`` messages for its tool results, then a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []  # images tool results returned
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = _block(block, here)
        if kind == "text":
            text = _text(block, here)
            if not text:  # Anthropic refuses it; OpenAI would answer an empty turn
                raise InvalidRequestError(
                    f"{here}.text: text content blocks must be non-empty.", param=f"{here}.text"
                )
            parts.append({"type": "text", "text": text})
        elif kind == "image":
            parts.append(_image_part(block, here))
        elif kind == "tool_result":
            call_id = _string(block.get("tool_use_id"), f"{here}.tool_use_id")
            is_error = block.get("is_error")
            if is_error is not None and not isinstance(is_error, bool):
                raise _invalid(f"{here}.is_error", "a valid boolean")
            text, images = _tool_result(block.get("content"), f"{here}.content")
            if images:
                note = f"Images returned by tool call {call_id}:"
                media += [{"type": "text", "text": note}, *images]
                text = text or "(the output is the image below)"
            if is_error:
                text = "Error: " + text
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            raise _refuse(here, f"a {kind!r} block")
    # Chat's tool messages hold text: the images a tool returned (a screenshot, a file read)
    # follow the run of tool messages in a user message, before the turn's own content.
    parts = media + parts
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        joined = "\n\n".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": joined})
    return out


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = _block(block, here)
        if kind == "text":
            texts.append(_text(block, here))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # Anthropic leaves earlier turns' thinking out of the context too
        elif kind == "tool_use":
            arguments = block.get("input")
            if arguments is not None and not isinstance(arguments, dict):
                raise _invalid(f"{here}.input", "a valid dictionary")
            calls.append(
                {
                    "id": _string(block.get("id"), f"{here}.id"),
                    "type": "function",
                    "function": {
                        "name": _string(block.get("name"), f"{here}.name"),
                        "arguments": json.dumps(arguments or {}, ensure_ascii=False),
                    },
                }
            )
        else:
            raise _refuse(here, f"a {kind!r} block")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _system_turn(
    message: Mapping[str, Any], where: str, *, cleared: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """A mid-conversation system message: the chat system message at its place (None when
    it has no text, or its ``clear_at`` retired it because a user message came after it),
    and the effort its ``output_config`` sets for the turn it precedes."""
    config = message.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequestError(
            f"{where}.output_config: Input should be an object.", param=f"{where}.output_config"
        )
    effort = None
    for name, value in (config or {}).items():
        if name != "effort":
            raise _refuse(f"{where}.output_config.{name}", f"a system message's {name!r}")
        if value is not None:
            effort = _effort(value, f"{where}.output_config.effort")
    clear_at = message.get("clear_at")
    if clear_at not in (None, "never", "next_user_message"):
        raise InvalidRequestError(
            f"{where}.clear_at: Input should be 'next_user_message' or 'never'.",
            param=f"{where}.clear_at",
        )
    text = _text_of(message.get("content"), f"{where}.content")
    if not text or (cleared and clear_at == "next_user_message"):
        return None, effort
    return {"role": "system", "content": text}, effort
