"""Dashboard forms: submitted values kept as typed, service errors shown next to their field.

Forms do no validation of their own: values go to the same service functions as the CLI, and
the :class:`~flask_aigateway.errors.GatewayError` they raise (``param`` = the field) is
attached to that field, so both skins show the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import request

from ..errors import GatewayError
from ..services.validation import UNSET


class Form:
    """The values of one form (strings as typed, booleans for checkboxes) and its errors."""

    def __init__(
        self,
        fields: Iterable[str],
        values: Mapping[str, Any] | None = None,
        checkboxes: Iterable[str] = (),
    ) -> None:
        self.fields = tuple(fields)
        self.checkboxes = frozenset(checkboxes)
        self.values: dict[str, Any] = dict(values or {})
        self.errors: dict[str, str] = {}
        self.general: list[str] = []
        self.status = 200

    @classmethod
    def submitted(cls, fields: Iterable[str], checkboxes: Iterable[str] = ()) -> Form:
        """The form as posted: text fields as typed, a checkbox True when present."""
        fields = tuple(fields)
        boxes = frozenset(checkboxes)
        values: dict[str, Any] = {}
        for name in fields:
            if name in boxes:
                values[name] = name in request.form
            else:
                values[name] = request.form.get(name, "")
        return cls(fields, values, boxes)

    def get(self, name: str) -> str:
        """A field's value for an ``<input value=…>`` (never None)."""
        value = self.values.get(name)
        return "" if value is None or isinstance(value, bool) else str(value)

    def checked(self, name: str) -> bool:
        return bool(self.values.get(name))

    def text(self, name: str) -> str | None:
        """The value stripped, or None when left blank."""
        value = self.get(name).strip()
        return value or None

    def changed(self, name: str, before: str) -> Any:
        """The raw value when it differs from what the form showed, else :data:`UNSET`."""
        value = self.get(name)
        return UNSET if value.strip() == before.strip() else value

    def fail(self, error: GatewayError) -> Form:
        """Attach ``error`` to its field (or above the form) and take its HTTP status."""
        if error.param in self.fields:
            self.errors[error.param] = error.message
        else:
            self.general.append(error.message)
        self.status = error.status if 400 <= error.status < 600 else 400
        return self

    @property
    def ok(self) -> bool:
        return not self.errors and not self.general


def display_list(values: Iterable[str] | None, *, none_word: str = "") -> str:
    """A list as the comma-separated text forms accept back (``None`` → ``none_word``)."""
    if values is None:
        return none_word
    return ", ".join(values)


def display_value(value: Any) -> str:
    """A stored value as form text: None → "", Decimal without trailing zeros."""
    if value is None:
        return ""
    if hasattr(value, "normalize"):
        return format(value.normalize(), "f")
    return str(value)


__all__ = ["Form", "display_list", "display_value"]
