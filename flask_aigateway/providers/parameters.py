"""What happens to each OpenAI chat parameter per upstream format, and the docs table from it.

Each adapter module holds one ``PARAMETERS`` table of :class:`Handling` values; the adapter
enforces it, the tests iterate over it, and :func:`render_markdown` turns the tables into
``docs/parameters.md`` (a test keeps that file in sync).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Decision = Literal["passed", "translated", "ignored", "refused"]

#: Every parameter of OpenAI's ``POST /v1/chat/completions``, in the order of its reference.
OPENAI_CHAT_PARAMETERS: tuple[str, ...] = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "metadata",
    "store",
    "service_tier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "reasoning_effort",
    "verbosity",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
)

#: The table row standing for every field OpenAI's reference does not list.
OTHER_FIELDS = "(any other field)"


def _always(value: Any) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Handling:
    """One parameter's fate for one upstream format.

    ``note`` says how it is translated or why it is refused. For a refused parameter,
    ``accepts`` names the values that ask for nothing beyond the format's behaviour (``n: 1``,
    ``logprobs: false``): those are accepted, everything else is refused with 400.
    """

    decision: Decision
    note: str = ""
    accepts: Callable[[Any], bool] = _always

    def allows(self, value: Any) -> bool:
        """Whether ``value`` may be sent (None always may: it means "the default")."""
        return value is None or self.decision != "refused" or self.accepts(value)


def render_markdown(tables: Mapping[str, Mapping[str, Handling]]) -> str:
    """The parameters table: one row per OpenAI parameter, one column per upstream format."""
    formats = list(tables)
    names = [*OPENAI_CHAT_PARAMETERS, OTHER_FIELDS]
    lines = [
        "# OpenAI chat parameters per upstream format",
        "",
        "Generated from the `PARAMETERS` tables of `flask_aigateway/providers/openai.py` and",
        "`anthropic.py` (a test fails when this file and the tables disagree).",
        "",
        "- **passed**: sent upstream unchanged.",
        "- **translated**: sent in the upstream format's own terms (how is said in the cell).",
        "- **ignored**: accepted and not sent: a hint the upstream format has no place for,",
        "  which does not change what a valid answer is (the cell says why).",
        "- **refused**: answered `400 invalid_request_error` with `param` naming the parameter",
        "  before any upstream call; never silently dropped. A value that asks for nothing",
        "  (`null`, or the default named in the cell) is accepted.",
        "",
        "| parameter | " + " | ".join(f"{f}-format upstream" for f in formats) + " |",
        "|---|" + "---|" * len(formats),
    ]
    for name in names:
        cells = []
        for fmt in formats:
            handling = tables[fmt][name]
            cell: str = handling.decision if handling.decision != "refused" else "refused 400"
            if handling.note:
                cell += f": {handling.note}"
            cells.append(cell.replace("|", "\\|"))
        label = name if name == OTHER_FIELDS else f"`{name}`"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
