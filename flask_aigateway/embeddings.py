"""The value that crosses the gateway on ``POST /v1/embeddings``: :class:`EmbeddingsRequest`.

OpenAI's embeddings API takes five fields and the gateway knows each of them, so, unlike a chat
request (whose unknown fields pass through to OpenAI-format upstreams), an embeddings request
with any other field is refused with a 400 naming it: nothing is silently dropped, and nothing
unknown reaches an upstream that may ignore it. The answer is a
:class:`~flask_aigateway.schemas.ChatResponse` carrying OpenAI's ``list`` body: it holds what
every finished ``/v1`` answer needs (body, usage, cost, deployment, headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidRequestError
from .schemas import ChatRequest

#: Every parameter of OpenAI's ``POST /v1/embeddings``, in the order of its reference.
EMBEDDINGS_PARAMETERS: tuple[str, ...] = ("model", "input", "dimensions", "encoding_format", "user")
ENCODING_FORMATS = ("float", "base64")
#: OpenAI's limit on the number of inputs in one request.
MAX_INPUTS = 2048

EncodingFormat = Literal["float", "base64"]
#: One input: a text, or the token ids of one.
Input = str | list[int]


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_input(message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'input' {message}. It must be a non-empty string, an array of non-empty strings, "
        "an array of token ids, or an array of non-empty token arrays "
        f"(at most {MAX_INPUTS} items).",
        param="input",
    )


def _parse_input(value: Any) -> tuple[list[Input], bool]:
    """The inputs as a list, and whether the client sent one input (a string or one token
    array) rather than an array of them."""
    if isinstance(value, str):
        if not value:
            raise _bad_input("is an empty string")
        return [value], True
    if not isinstance(value, list):
        raise _bad_input("is required" if value is None else f"is a {type(value).__name__}")
    if not value:
        raise _bad_input("is an empty array")
    if len(value) > MAX_INPUTS:
        raise _bad_input(f"has {len(value)} items")
    if all(_is_token(item) for item in value):
        return [list(value)], True
    if all(isinstance(item, str) for item in value):
        for i, item in enumerate(value):
            if not item:
                raise _bad_input(f"has an empty string at index {i}")
        return list(value), False
    if all(isinstance(item, list) for item in value):
        for i, item in enumerate(value):
            if not item or not all(_is_token(t) for t in item):
                raise _bad_input(
                    f"has a token array at index {i} that is empty or holds something other "
                    "than token ids (integers of 0 or more)"
                )
        return [list(item) for item in value], False
    raise _bad_input("mixes strings, token ids and token arrays")


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """One embeddings request in OpenAI's shape, validated.

    ``inputs`` is always a list (one text or token array per embedding); ``single`` remembers
    that the client sent one bare input, so the body sent upstream keeps the client's shape.
    """

    model: str
    inputs: tuple[Input, ...]
    single: bool = False
    dimensions: int | None = None
    encoding_format: EncodingFormat = "float"
    #: Whether the client named ``encoding_format`` (else the upstream is not told either).
    encoding_given: bool = False
    user: str | None = None

    @classmethod
    def from_body(cls, body: Any) -> EmbeddingsRequest:
        """Validate a decoded JSON body; raise :class:`InvalidRequestError` naming the param."""
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        for name in body:
            if name not in EMBEDDINGS_PARAMETERS:
                raise InvalidRequestError(
                    f"Unrecognized request argument supplied: {name!r}. POST /v1/embeddings "
                    f"takes {', '.join(EMBEDDINGS_PARAMETERS)}; the gateway refuses what it "
                    "cannot carry rather than drop it.",
                    param=name,
                )
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(
                "'model' is required and must be a non-empty string.", param="model"
            )
        inputs, single = _parse_input(body.get("input"))
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
        ):
            raise InvalidRequestError(
                f"'dimensions' must be an integer of 1 or more (got {dimensions!r}).",
                param="dimensions",
            )
        encoding = body.get("encoding_format")
        if encoding is not None and encoding not in ENCODING_FORMATS:
            raise InvalidRequestError(
                f"'encoding_format' must be 'float' or 'base64' (got {encoding!r}).",
                param="encoding_format",
            )
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise InvalidRequestError("'user' must be a string.", param="user")
        return cls(
            model=model,
            inputs=tuple(inputs),
            single=single,
            dimensions=dimensions,
            encoding_format=encoding or "float",
            encoding_given=encoding is not None,
            user=user,
        )

    @property
    def input(self) -> Input | list[Input]:
        """``input`` as the client shaped it (one input, or an array of them)."""
        return self.inputs[0] if self.single else list(self.inputs)

    @property
    def max_output_tokens(self) -> int:
        """An embedding produces no output tokens (budgets and routing read this)."""
        return 0

    def to_body(self) -> dict[str, Any]:
        """The request as an OpenAI body again (model as set on this object)."""
        body: dict[str, Any] = {"model": self.model, "input": self.input}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        if self.encoding_given:
            body["encoding_format"] = self.encoding_format
        if self.user is not None:
            body["user"] = self.user
        return body

    def cache_payload(self) -> dict[str, Any]:
        """What changes the answer (``user`` does not): the cache key is made of it."""
        return {
            "route": "embeddings",
            "model": self.model,
            "input": self.input,
            "dimensions": self.dimensions,
            "encoding_format": self.encoding_format,
        }


#: A request any pipeline step may hold: a chat completion or an embeddings request.
GatewayRequest = ChatRequest | EmbeddingsRequest

__all__ = [
    "EMBEDDINGS_PARAMETERS",
    "ENCODING_FORMATS",
    "EmbeddingsRequest",
    "GatewayRequest",
]
