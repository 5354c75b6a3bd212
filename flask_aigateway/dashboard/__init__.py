"""The operator dashboard at ``/dashboard`` (not built yet: see the dashboard issue)."""

from __future__ import annotations

from typing import Any

#: Set to a blueprint factory once the dashboard exists; None registers nothing.
create_blueprint: Any = None
