"""What every command group shares: the ``--json`` flag, one renderer, one error wrapper."""

from __future__ import annotations

import datetime as dt
import functools
import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import click
from flask.cli import with_appcontext

from ..db import database_error
from ..errors import GatewayError
from ..state import GatewayState, get_state

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
)


def command(fn: F) -> F:
    """Run a command in the app context with the gateway state as first argument.

    A :class:`GatewayError` becomes ``Error: <message>`` on stderr and exit code 1; a
    traceback is never shown for a user's mistake. So does a database the command cannot use
    (:func:`~..db.database_error`): the schema missing (the words ``/v1`` answers with, naming
    the upgrade command) or the database unreachable (with the driver's reason). Any other
    exception is a bug and keeps its traceback.

    An option or argument given as an empty string is refused before anything runs (exit 1,
    one line, as every user error here): services read a blank value as "no value" (a blank
    dashboard field is one), so ``--budget-per-month "$UNSET_VAR"`` removed a budget,
    ``--models ''`` a whitelist, and the command succeeded. Removing a setting takes its word
    ('none', 'unset', 'all', ``--no-expiry``), as each option's help says.
    """

    @functools.wraps(fn)
    @with_appcontext
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _refuse_empty(kwargs)
        try:
            return fn(get_state(), *args, **kwargs)
        except GatewayError as exc:
            raise click.ClickException(exc.message) from None
        except Exception as exc:
            message = database_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None

    return wrapper  # type: ignore[return-value]


def _refuse_empty(values: Mapping[str, Any]) -> None:
    # Options a decorator gathered into one dict (``deployment_options``) are looked up there.
    gathered = [value for value in values.values() if isinstance(value, dict)]
    for param in click.get_current_context().command.params:
        name = param.name or ""
        value = next((d[name] for d in gathered if name in d), values.get(name))
        if isinstance(value, str) and not value.strip():
            if isinstance(param, click.Option):
                raise click.ClickException(
                    f"{param.opts[0]} is empty: leave the option out to keep what is set, or "
                    "give a value (its help names the word that removes a setting)."
                )
            raise click.ClickException(f"{param.human_readable_name} is empty.")


def database_message(exc: BaseException) -> str | None:
    """The one line a command prints for a database it cannot use (:func:`~..db.
    database_error`: schema missing, database unreachable); None for any other exception.
    The gateway's commands and its migrations' ``env.py`` (Flask-Migrate's ``flask db …`` in
    an app pointed at them) say the same."""
    problem = database_error(exc)
    return None if problem is None else _database_message(problem, exc)


def _database_message(problem: GatewayError, exc: BaseException) -> str:
    """``problem``'s message on one line; for an unreachable database, with the first line of
    the driver's own words (connection refused, authentication failed, file not writable…),
    which the operator at the command line needs and an HTTP client is not shown."""
    if problem.code != "database_unavailable":
        return problem.message
    original = getattr(exc, "orig", None) or exc
    reason = next((line.strip() for line in str(original).splitlines() if line.strip()), "")
    return f"{problem.message} The driver said: {reason}" if reason else problem.message


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Fixed-point always: str() would write 0.0000001 as "1E-7".
        return format(value.normalize(), "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(data: Any) -> str:
    """JSON for scripts: Decimals as strings (exact), datetimes ISO 8601 UTC."""
    return json.dumps(_plain(data), indent=2, sort_keys=False)


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "-"
    return str(value)


#: Unicode categories a terminal draws in no column of their own: combining and enclosing
#: marks, and format characters such as the zero-width joiner names may hold.
_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})


def display_width(text: str) -> int:
    """How many terminal columns ``text`` takes: two for a wide or fullwidth East Asian
    character (``客服``), none for a combining mark or a zero-width format character, one for
    anything else (from the standard library's Unicode data, no wcwidth needed)."""
    width = 0
    for char in text:
        if unicodedata.category(char) in _ZERO_WIDTH:
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def render_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str]) -> str:
    """A plain aligned table; full values, never truncated (ids must be copyable). Columns
    are aligned by :func:`display_width`, so names in any script line up."""
    cols = list(columns)
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [
        max([display_width(c)] + [display_width(r[i]) for r in cells]) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(_pad(c.upper(), w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(_pad(v, w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render_record(record: Mapping[str, Any]) -> str:
    """One object as ``key: value`` lines."""
    width = max((len(k) for k in record), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in record.items())


def output(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    as_json: bool,
    columns: Iterable[str] | None = None,
    empty: str = "Nothing here yet.",
) -> None:
    """Print a record or a list as JSON or as text."""
    if as_json:
        click.echo(to_json(data))
    elif isinstance(data, Mapping):
        click.echo(render_record(data))
    elif not data:
        click.echo(empty)
    else:
        click.echo(render_table(data, columns or list(data[0].keys())))


__all__ = [
    "GatewayState",
    "command",
    "display_width",
    "json_option",
    "output",
    "render_table",
    "to_json",
]
