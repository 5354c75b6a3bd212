"""One-time notices ("Key revoked.") carried from a POST to the page it redirects to.

Kept in the dashboard's own session cookie, not Flask's ``flash`` (which writes the host's
session).
"""

from __future__ import annotations

from ..state import get_state
from . import session as dashboard_session

_KEY = "notices"
#: At most this many notices wait in the cookie; older ones are dropped.
_LIMIT = 5


def notify(message: str, kind: str = "ok") -> None:
    """Show ``message`` on the next page (``kind``: ok, warn or error)."""
    session = dashboard_session.current(get_state())
    pending = list(session.get(_KEY) or [])[-(_LIMIT - 1) :]
    pending.append([kind, message])
    session.put(_KEY, pending)


def take() -> list[tuple[str, str]]:
    """The waiting notices, removed from the session."""
    session = dashboard_session.current(get_state())
    return [(str(kind), str(message)) for kind, message in session.take(_KEY, [])]
