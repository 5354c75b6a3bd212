"""How messages people read count things: ``1 key``, ``2 keys``, never ``key(s)``."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``singular`` when ``count`` is 1, else ``plural_form`` (default: ``singular + "s"``)."""
    return singular if count == 1 else plural_form or singular + "s"


def counted(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` and its noun in the right number: ``1 key``, ``0 keys``, ``3 aliases``."""
    return f"{count} {plural(count, singular, plural_form)}"


def joined(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"
