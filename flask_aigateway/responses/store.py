"""Stored responses (``store``): kept per key so ``previous_response_id`` continues a
conversation on any provider, read back by ``GET /v1/responses/{id}``, and pruned with the
request log.

A stored response belongs to the key that created it: another key, even of the same team, gets
a 404, as an unknown id would (a team's keys are often different people or services).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Select,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    literal,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .. import jsoncodec
from ..db import utcnow
from ..errors import InvalidRequestError, NotFoundError
from ..models import StoredResponse
from ..offload import sqlite_write
from ..state import GatewayState
from .ids import response_of_item

_TABLE = cast(Table, StoredResponse.__table__)

#: How many responses back a ``previous_response_id`` chain is followed.
MAX_CHAIN = 1000
PRUNE_BATCH = 1000


def not_found(response_id: str) -> NotFoundError:
    return NotFoundError(
        f"No response with id '{response_id}' is stored for this API key.",
        param="response_id",
        code="response_not_found",
    )


def save(
    state: GatewayState,
    response: dict[str, Any],
    input_items: list[dict[str, Any]],
    *,
    key_id: str | None,
    team_id: str | None,
) -> None:
    """Keep a finished response and its own input items (one row).

    One Core INSERT in autocommit (a single statement is atomic by itself) rather than
    ``session.add``: a Session and the ORM's unit of work (identity map, flush plan, attribute
    history) for one row nobody reads back cost every stored response about 0.3 ms of CPU,
    and on PostgreSQL the transaction three round trips (BEGIN, INSERT, COMMIT) where this
    takes one (``bench.inproc --door responses``: 1.76 -> 1.46 ms a request on SQLite, 2.21 ->
    1.75 on PostgreSQL). Same lock and thread as :meth:`GatewayState.write`.
    """
    row = {
        "id": response["id"],
        "created_at": utcnow(),
        "key_id": key_id,
        "team_id": team_id,
        "previous_response_id": response.get("previous_response_id"),
        "input_items": input_items,
        "output_items": response.get("output") or [],
        "response": response,
    }

    def insert_row() -> None:
        with _one_statement(state) as connection:
            connection.execute(_INSERT, row)

    sqlite_write(state.engine, insert_row)


_INSERT = insert(_TABLE)


@contextmanager
def _one_statement(state: GatewayState) -> Iterator[Connection]:
    """A connection on which each statement commits by itself: every statement here stands
    alone (the write of one row, reads that need no snapshot shared with another), and a
    transaction around it would add two round trips on PostgreSQL (BEGIN, COMMIT)."""
    with state.engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def load(state: GatewayState, response_id: str, key_id: str | None) -> StoredResponse:
    """The stored response of this key; :class:`NotFoundError` otherwise."""
    with state.transaction() as session:
        row = session.get(StoredResponse, response_id)
        if row is None or row.key_id != key_id:
            raise not_found(response_id)
        session.expunge(row)
        return row


def history(state: GatewayState, response_id: str, key_id: str | None) -> list[dict[str, Any]]:
    """The conversation up to and including ``response_id``: every earlier response's input
    items and output, oldest first (instructions are not carried over, as upstream).

    The chain is followed back while its responses exist and belong to ``key_id`` (at most
    :data:`MAX_CHAIN`), in one recursive query: an agent's conversation grows by a response
    a turn, and reading them one ``session.get`` at a time cost its 200th turn some 30 ms of
    CPU in the ORM alone (now about 3).
    """
    with _one_statement(state) as connection:
        parameters = {"response_id": response_id, "key_id": key_id, "last_depth": MAX_CHAIN - 1}
        rows = connection.execute(_CHAIN, parameters).all()
    if not rows:
        raise InvalidRequestError(
            f"Previous response with id '{response_id}' not found (responses are "
            "kept only with 'store' and for the key that created them).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items: list[dict[str, Any]] = []
    for input_items, output_items in rows:
        items.extend(input_items)
        items.extend(item for item in output_items if item.get("type") in _REPLAYED_OUTPUT)
    return items


def _chain_query() -> Select[tuple[Any, Any]]:
    """The input and output items of a response and of the ones before it (oldest first),
    while they belong to the key: ``WITH RECURSIVE`` over ``previous_response_id``."""
    table = _TABLE
    own = table.c.key_id.is_not_distinct_from(bindparam("key_id"))
    anchor = select(
        table.c.previous_response_id,
        table.c.input_items,
        table.c.output_items,
        literal(0, Integer).label("depth"),
    ).where(table.c.id == bindparam("response_id"), own)
    chain = anchor.cte("chain", recursive=True)
    earlier = table.alias("earlier")
    chain = chain.union_all(
        select(
            earlier.c.previous_response_id,
            earlier.c.input_items,
            earlier.c.output_items,
            chain.c.depth + 1,
        ).where(
            earlier.c.id == chain.c.previous_response_id,
            earlier.c.key_id.is_not_distinct_from(bindparam("key_id")),
            chain.c.depth < bindparam("last_depth"),
        )
    )
    return select(chain.c.input_items, chain.c.output_items).order_by(chain.c.depth.desc())


_CHAIN = _chain_query()


_REPLAYED_OUTPUT = frozenset({"message", "function_call", "custom_tool_call", "tool_search_call"})


def items_by_id(
    state: GatewayState, item_ids: list[str], key_id: str | None
) -> dict[str, dict[str, Any]]:
    """The stored items (inputs and outputs of this key's stored responses) that ``item_ids``
    name, by id; ids of no such item are left out. The gateway's item ids name their response
    (:func:`.ids.response_of_item`), so each response is read once, by its key.

    The responses are read :data:`REFERENCE_BATCH` at a time: a client that sends every
    earlier answer as an ``item_reference`` (the Vercel AI SDK does) names one more each turn,
    and a query per response cost its 100th turn some 25 ms of CPU. A batch missing one ends
    the reading: the request fails on its first unknown reference (they are read in the order
    they first appear), so reading on would be work for nothing.
    """
    wanted: dict[str, set[str]] = {}
    for item_id in item_ids:
        response_id = response_of_item(item_id)
        if response_id is not None:
            wanted.setdefault(response_id, set()).add(item_id)
    found: dict[str, dict[str, Any]] = {}
    order = list(wanted)
    with _one_statement(state) as connection:
        for start in range(0, len(order), REFERENCE_BATCH):
            batch = order[start : start + REFERENCE_BATCH]
            parameters = {"ids": batch, "key_id": key_id}
            rows = {row.id: row for row in connection.execute(_ITEMS, parameters)}
            for response_id in batch:
                row = rows.get(response_id)
                if row is None:
                    return found
                ids = set(wanted[response_id])
                # References name answers (output items) far more often than inputs, and a
                # response's input holds the whole conversation its client sent inline: the
                # input is decoded only when an id is still missing.
                for text in (row.output_items, row.input_items):
                    for item in jsoncodec.loads(text):
                        if item.get("id") in ids:
                            found[item["id"]] = item
                            ids.discard(item["id"])
                    if not ids:
                        break
    return found


#: How many stored responses one query of :func:`items_by_id` reads (SQLite allows 32,766
#: parameters a statement; far fewer keep each query small).
REFERENCE_BATCH = 200
_ITEMS = select(
    _TABLE.c.id,
    # As text (PostgreSQL's driver would decode a json column itself), decoded in
    # items_by_id only when needed.
    sql_cast(_TABLE.c.output_items, Text).label("output_items"),
    sql_cast(_TABLE.c.input_items, Text).label("input_items"),
).where(
    _TABLE.c.id.in_(bindparam("ids", expanding=True)),
    _TABLE.c.key_id.is_not_distinct_from(bindparam("key_id")),
)


def remove(state: GatewayState, response_id: str, key_id: str | None) -> None:
    def delete_own(session: Session) -> None:
        row = session.get(StoredResponse, response_id)
        if row is None or row.key_id != key_id:
            raise not_found(response_id)
        session.delete(row)

    state.write(delete_own)


def page(
    items: list[dict[str, Any]], *, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """A list page as the API gives it: ``data``, ``first_id``, ``last_id``, ``has_more``."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequestError(f"No input item with id '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


def prune(state: GatewayState, cutoff: dt.datetime) -> int:
    """Delete responses created before ``cutoff`` in short batches; how many went."""
    removed = 0
    while True:
        with state.transaction() as session:
            ids = list(
                session.scalars(
                    select(StoredResponse.id)
                    .where(StoredResponse.created_at < cutoff)
                    .limit(PRUNE_BATCH)
                )
            )
            if ids:
                session.execute(delete(StoredResponse).where(StoredResponse.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            return removed
