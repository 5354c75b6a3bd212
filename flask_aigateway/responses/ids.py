"""Ids of responses and their items: random, an item's naming the response that holds it."""

from __future__ import annotations

import os
import re


def new_id(prefix: str) -> str:
    """``resp_…``, ``call_…``: a prefix and 48 random hex digits."""
    return f"{prefix}_{os.urandom(24).hex()}"


_ITEM_ID = re.compile(r"[a-z]+_([0-9a-f]{48})_[0-9a-f]{8}")


def item_id(prefix: str, response_id: str) -> str:
    """An item's id (``msg_…``, ``fc_…``) naming the response that holds it: the response's
    48 hex digits and 8 of the item's own. An ``item_reference`` to it then finds the stored
    response without an index of items (:func:`response_of_item`)."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{os.urandom(4).hex()}"


def response_of_item(reference: str) -> str | None:
    """The id of the response holding the item ``reference`` names, if the gateway made it."""
    match = _ITEM_ID.fullmatch(reference)
    return f"resp_{match.group(1)}" if match else None
