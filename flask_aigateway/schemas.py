"""The values that cross the gateway: ChatRequest in, ChatResponse / StreamChunk out, Usage.

They are plain frozen dataclasses around OpenAI-shaped dicts: the OpenAI chat format is the
gateway's lingua franca, adapters translate to and from it, and unknown fields survive. A
request's checks live in :mod:`.chat_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .chat_checks import _check_request
from .errors import InvalidRequestError

#: The body fields a :class:`ChatRequest` holds as attributes; every other one is a param.
_FIELDS = ("model", "messages", "stream")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion request in OpenAI's shape.

    ``params`` holds every other body field exactly as the client sent it (known or not), so
    OpenAI-format upstreams receive fields the gateway does not know yet untouched.
    """

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    #: Set by the pipeline when a budget applies and the client gave no output limit: the
    #: adapters then send the alias's default max tokens upstream — the output size the
    #: budget reservation assumed — so one long answer cannot overshoot the budget.
    cap_output: bool = False

    @classmethod
    def from_body(cls, body: Any) -> ChatRequest:
        """Validate a decoded JSON body; raise :class:`InvalidRequestError` naming the param."""
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        model: Any = body.get("model")
        messages: Any = body.get("messages")
        stream = body.get("stream", False)
        params = {k: v for k, v in body.items() if k not in _FIELDS}
        _check_request(model, messages, stream, params)
        return cls(model=model, messages=messages, stream=bool(stream), params=params)

    def validate(self) -> None:
        """Check this request as :meth:`from_body` checks a body: for one built directly
        (``ChatRequest(model=…, messages=…, params=…)``, as the Python API allows), so a bad
        value is refused with the HTTP API's 400 before anything is sent upstream.

        :raises InvalidRequestError: naming the param, as ``POST /v1/chat/completions`` would.
        """
        if not isinstance(self.params, dict):
            raise InvalidRequestError("'params' must be a dict of OpenAI parameters.")
        for name in _FIELDS:
            if name in self.params:
                raise InvalidRequestError(
                    f"'{name}' is given as ChatRequest({name}=…), not in 'params'.", param=name
                )
        _check_request(self.model, self.messages, self.stream, self.params)

    def to_body(self) -> dict[str, Any]:
        """The request as an OpenAI body again (model and stream as set on this object)."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        body.update(self.params)
        if self.stream:
            body["stream"] = True
        return body

    @property
    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` or, failing that, ``max_tokens``; None when neither is set."""
        value = self.params.get("max_completion_tokens")
        if value is None:
            value = self.params.get("max_tokens")
        return value

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for a final usage chunk on a stream."""
        options = self.params.get("stream_options") or {}
        return bool(options.get("include_usage"))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request; ``estimated`` when counted locally, not by the upstream."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: Of ``cache_write_tokens``, those written to Anthropic's one-hour cache (billed at
    #: twice the input price, the five-minute ones at 1.25 times).
    cache_write_long_tokens: int = 0
    #: Of ``completion_tokens``, those a reasoning model spent thinking (OpenAI's
    #: ``completion_tokens_details.reasoning_tokens``): shown to clients, billed as output.
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self, sent: Any = None) -> dict[str, Any]:
        """OpenAI's ``usage`` object with these counts, as a client reads it.

        ``sent``: the upstream's own ``usage`` object (OpenAI format), whose other fields
        (``completion_tokens_details`` with the reasoning tokens, a provider's own) the
        client should see too. It is returned as it is, not copied, when it says what this
        says in OpenAI's types (:meth:`_agrees`: real providers' objects); else these counts
        replace its own (text, null, a float, or the estimate that stood in for them), and
        of its details objects only the integers are kept. Without it (an Anthropic-format
        upstream), ``prompt_tokens_details`` holds the cache reads and writes.
        """
        if isinstance(sent, dict):
            if self._agrees(sent):
                return sent
            served = {**sent, **self._counts(sent)}
            for name in _DETAILS:
                details = sent.get(name)
                if details is not None:
                    served[name] = _counts_of(details)
            served["prompt_tokens_details"] = {
                **(served.get("prompt_tokens_details") or {}),
                **self._prompt_details(),
            }
            return served
        return {**self._counts(None), "prompt_tokens_details": self._prompt_details()}

    def _prompt_details(self) -> dict[str, int]:
        """``prompt_tokens_details``: the cache reads, and the cache writes when there were
        any (an Anthropic-format upstream's, billed above the input price; OpenAI's
        ``PromptTokensDetails.cache_write_tokens``, which other clients leave unread)."""
        details = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            details["cache_write_tokens"] = self.cache_write_tokens
        return details

    def _counts(self, sent: dict[str, Any] | None) -> dict[str, int]:
        """The three counts a client reads: the upstream's total when it is an integer and
        these counts are its own (it may count more than the two), else their sum."""
        total: Any = None if sent is None or self.estimated else sent.get("total_tokens")
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total if type(total) is int and total >= 0 else self.total_tokens,
        }

    def _agrees(self, sent: dict[str, Any]) -> bool:
        """Whether the upstream's ``usage`` says these counts, as integers, and its details
        objects hold integers (or nulls) only. Plain type checks of a few fields: it runs on
        every answer."""
        prompt, completion = sent.get("prompt_tokens"), sent.get("completion_tokens")
        total = sent.get("total_tokens")
        if not (
            type(prompt) is int
            and prompt == self.prompt_tokens
            and type(completion) is int
            and completion == self.completion_tokens
            and type(total) is int
            and total >= 0
        ):
            return False
        for name in _DETAILS:
            details = sent.get(name)
            if details is not None:
                if type(details) is not dict:
                    return False
                for value in details.values():
                    if type(value) is not int and value is not None:
                        return False
        cached = (sent.get("prompt_tokens_details") or {}).get("cached_tokens")
        return cached == self.cached_tokens or (cached is None and not self.cached_tokens)

    @classmethod
    def from_openai(cls, data: Mapping[str, Any] | None) -> Usage | None:
        """Read OpenAI's ``usage`` object; None when absent or empty.

        :raises ValueError: a count is not a non-negative number (:func:`token_count`).
        :raises AttributeError: ``data`` is not an object.
        """
        if not data:
            return None
        details = data.get("prompt_tokens_details") or {}
        completion = data.get("completion_tokens_details")
        reasoning = completion.get("reasoning_tokens") if isinstance(completion, dict) else None
        return cls(
            prompt_tokens=token_count(data.get("prompt_tokens")),
            completion_tokens=token_count(data.get("completion_tokens")),
            cached_tokens=token_count(details.get("cached_tokens")),
            # Informational (the output count already holds them): what is not a count is 0.
            reasoning_tokens=reasoning
            if type(reasoning) is int and 0 <= reasoning <= MAX_TOKEN_COUNT
            else 0,
        )


#: The largest token count an upstream may report: what the request log's integer columns
#: hold, and far beyond any model's context window.
MAX_TOKEN_COUNT = 2**31 - 1
#: The objects of counts in OpenAI's ``usage`` (``CompletionUsage``'s, all integers).
_DETAILS = ("prompt_tokens_details", "completion_tokens_details")


def _counts_of(details: Any) -> dict[str, Any]:
    """The entries of a usage details object that are integers (or null), as OpenAI's are;
    none when it is not an object."""
    if not isinstance(details, dict):
        return {}
    return {k: v for k, v in details.items() if type(v) is int or v is None}


def token_count(value: Any) -> int:
    """A token count as an upstream reports it: a number from 0 to :data:`MAX_TOKEN_COUNT`
    (None is 0).

    :raises ValueError: anything else. A negative count would credit a budget, and one past
        the limit could not be written to the request log.
    """
    count = int(value or 0)
    if not 0 <= count <= MAX_TOKEN_COUNT:
        raise ValueError(f"a token count of {count}")
    return count


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A finished chat completion: the OpenAI ``chat.completion`` body plus what it cost."""

    body: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    provider: str | None = None
    deployment_id: str | None = None
    request_id: str | None = None
    cache_hit: bool = False
    attempts: int = 1
    fallback_path: tuple[str, ...] = ()
    #: Extra response headers (rate-limit and budget state) for the HTTP layer.
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def _message(self) -> dict[str, Any]:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("message") or {}

    @property
    def id(self) -> str | None:
        return self.body.get("id")

    @property
    def content(self) -> str | None:
        """The text of the first choice (None when it only calls tools). Some OpenAI-compatible
        servers send it as a list of parts: their ``text`` parts, joined (the body keeps the
        list as it came)."""
        content = self._message.get("content")
        if isinstance(content, list):
            return "".join(
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            )
        return content

    @property
    def refusal(self) -> str | None:
        """The first choice's ``refusal``: the text OpenAI gives instead of content when the
        model declines (structured outputs, safety); None when there is none."""
        refusal = self._message.get("refusal")
        return refusal if isinstance(refusal, str) and refusal else None

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return list(self._message.get("tool_calls") or [])

    @property
    def finish_reason(self) -> str | None:
        choices = self.body.get("choices") or [{}]
        return choices[0].get("finish_reason")

    def to_dict(self) -> dict[str, Any]:
        return self.body


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One OpenAI ``chat.completion.chunk`` (``data``), with the usage it reports, if any."""

    data: dict[str, Any]
    usage: Usage | None = None
