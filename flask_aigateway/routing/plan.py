"""A request's plan: the deployments to try, in order, and those left out with the reason."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..providers.base import Target


@dataclass(frozen=True, slots=True)
class Skip:
    """A deployment left out: ``reason`` ``"open"`` (cooling down or being probed) or ``"rpm"``
    (its requests-per-minute limit is used up) until ``until`` (epoch s; ``now`` alike)."""

    target: Target
    reason: str
    until: float
    now: float

    def describe(self) -> str:
        t = self.target
        when = dt.datetime.fromtimestamp(self.until, dt.UTC).strftime("%H:%M:%S UTC")
        left = max(0.0, self.until - self.now)
        name = f"deployment {t.deployment_id} ({t.provider_name}/{t.provider_model})"
        if self.reason == "rpm":
            return (
                f"{name} has used its {t.rpm_limit} requests per minute until {when} "
                f"({left:.1f} s from now)"
            )
        return (
            f"{name} is cooling down after repeated upstream failures until {when} "
            f"({left:.1f} s from now)"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The deployments to try, in order, and the ones left out with the reason."""

    targets: list[Target]
    skipped: list[Skip] = field(default_factory=list)
