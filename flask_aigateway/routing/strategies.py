"""The five load-balancing strategies: each orders one priority tier of healthy deployments.

Pure functions (no I/O, no clock): the router hands them a snapshot of the tier's state, the
first deployment of the result gets the request and the rest are its in-alias fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from ..enums import Strategy
from ..providers.base import Target
from .state import DeploymentStats

#: Output tokens assumed by cost-based routing when the request sets no max_tokens.
EXPECTED_OUTPUT_TOKENS = 256
#: Share of latency-based requests sent to a random deployment, so that a slow one that
#: recovered is measured again and wins its traffic back.
LATENCY_EXPLORATION = 0.1


def expected_cost(target: Target, prompt_tokens: int, output_tokens: int) -> Decimal:
    """USD of a request of this size at ``target``'s per-million prices."""
    return (
        Decimal(prompt_tokens) * target.input_price + Decimal(output_tokens) * target.output_price
    ) / Decimal(1_000_000)


def weighted(tier: Sequence[Target], rng: random.Random) -> list[Target]:
    """A random order in which a deployment comes first with probability ∝ its weight."""
    pool = list(tier)
    order: list[Target] = []
    while pool:
        total = sum(max(t.weight, 0) for t in pool)
        if total <= 0:
            rng.shuffle(pool)
            order.extend(pool)
            break
        pick = rng.uniform(0, total)
        for i, target in enumerate(pool):
            pick -= max(target.weight, 0)
            if pick <= 0 and target.weight > 0:
                order.append(pool.pop(i))
                break
        else:
            order.append(pool.pop(max(i for i, t in enumerate(pool) if t.weight > 0)))
    return order


def round_robin(tier: Sequence[Target], turn: int) -> list[Target]:
    """The tier in a fixed order (by deployment id), rotated by the alias's turn counter."""
    ordered = sorted(tier, key=lambda t: t.deployment_id)
    start = turn % len(ordered) if ordered else 0
    return ordered[start:] + ordered[:start]


def least_busy(
    tier: Sequence[Target], stats: Mapping[str, DeploymentStats], rng: random.Random
) -> list[Target]:
    """Fewest in-flight requests first; ties in random order."""
    keyed = [(stats[t.deployment_id].in_flight, rng.random(), t) for t in tier]
    return [t for *_, t in sorted(keyed, key=lambda k: (k[0], k[1]))]


def cheapest(
    tier: Sequence[Target], prompt_tokens: int, output_tokens: int, rng: random.Random
) -> list[Target]:
    """Lowest expected cost for this request first; ties in random order."""
    keyed = [(expected_cost(t, prompt_tokens, output_tokens), rng.random(), t) for t in tier]
    return [t for *_, t in sorted(keyed, key=lambda k: (k[0], k[1]))]


def fastest(
    tier: Sequence[Target],
    stats: Mapping[str, DeploymentStats],
    rng: random.Random,
    exploration: float = LATENCY_EXPLORATION,
) -> list[Target]:
    """Lowest latency (EWMA) first, except that an untried deployment goes first, and with
    probability ``exploration`` one of the others does, so that a deployment which was slow
    (or whose first, cold-connection sample was) is measured again and wins back its traffic
    once it is the faster one."""

    def latency(t: Target) -> float:
        value = stats[t.deployment_id].latency
        return 0.0 if value is None else value

    ordered = sorted(tier, key=lambda t: (latency(t), rng.random()))
    untried = [t for t in ordered if stats[t.deployment_id].latency is None]
    if untried:
        first = rng.choice(untried)
    elif len(ordered) > 1 and rng.random() < exploration:
        first = rng.choice(ordered[1:])
    else:
        return ordered
    return [first, *(t for t in ordered if t is not first)]


def order_tier(
    strategy: Strategy,
    tier: Sequence[Target],
    *,
    stats: Mapping[str, DeploymentStats],
    rng: random.Random,
    turn: Callable[[], int],
    prompt_tokens: Callable[[], int],
    output_tokens: int | None,
) -> list[Target]:
    """``tier`` ordered by ``strategy``; ``turn`` and ``prompt_tokens`` are called only by the
    strategies that need them (a round-robin turn is a shared counter increment)."""
    if len(tier) <= 1:
        return list(tier)
    if strategy is Strategy.ROUND_ROBIN:
        return round_robin(tier, turn())
    if strategy is Strategy.LEAST_BUSY:
        return least_busy(tier, stats, rng)
    if strategy is Strategy.COST_BASED:
        expected = EXPECTED_OUTPUT_TOKENS if output_tokens is None else output_tokens
        return cheapest(tier, prompt_tokens(), expected, rng)
    if strategy is Strategy.LATENCY_BASED:
        return fastest(tier, stats, rng)
    return weighted(tier, rng)
