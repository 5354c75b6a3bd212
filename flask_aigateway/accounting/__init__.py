"""Accounting: what a request used and cost, and the record of it.

Prices the usage (:mod:`.record`: the request's record and :func:`cost_of`), writes one
request-log row per request off the request path without ever dropping one
(:mod:`.logwriter`), keeps the hourly and daily rollups the dashboard and ``flask stats`` read
(:mod:`.rollups`), and feeds the Prometheus metrics (:mod:`.metrics`).
"""

from __future__ import annotations

from .logwriter import RequestLogWriter, install_signal_handlers
from .metrics import Metrics
from .record import RequestRecord, cost_of

__all__ = ["Metrics", "RequestLogWriter", "RequestRecord", "cost_of", "install_signal_handlers"]
