"""Pure summaries of benchmark samples: percentiles, rates and whether a load step was sustained."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max of a sample (ms)."""
    return {"count": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None}


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope dy/dx of (x, y) points (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def rate(points: Sequence[tuple[float, float]]) -> float:
    """Average rate of a counter sampled as (seconds, value) points: (last - first) / elapsed."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return 0.0
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def commit_rate(points: Sequence[tuple[float, float]]) -> float:
    """Rate of a committed-offsets counter that moves in jumps (one per checkpoint): measured between the
    first and the last sample where it moved, so the sawtooth does not bias it; `rate` with fewer jumps."""
    moved = [points[i] for i in range(1, len(points)) if points[i][1] != points[i - 1][1]]
    return rate(moved) if len(moved) >= 2 else rate(points)


@dataclass(frozen=True)
class Verdict:
    """Whether a step was sustained, and why not."""

    sustained: bool
    reasons: tuple[str, ...]


def sustained(lag: Sequence[tuple[float, float]], offered_rate: float, commit_interval_s: float,
              probes_sent: int, probes_seen: int, grace_s: float = 3.0) -> Verdict:
    """Judges a load step from its consumer-lag samples (seconds, records) and its probes.

    Consumer groups of Flink jobs commit offsets only when a checkpoint completes, so committed lag reads up
    to a commit interval's worth of records high even when the job keeps up. A step is sustained when the
    lag at its end is within `(commit_interval_s + grace_s)` seconds of input, the lag over the second half
    of the step does not grow by more than 10 % of the offered rate (judged only when that half spans two
    commit intervals: a shorter one shows the commit sawtooth, not a trend), and every probe was seen.

    Args:
        lag: (seconds since the step started, total lag in records) samples.
        offered_rate: records per second offered during the step.
        commit_interval_s: how often the consumer commits offsets (checkpoint interval).
        probes_sent: probe events sent during the step. probes_seen: how many reached Redis.
        grace_s: seconds of input tolerated on top of the commit interval.
    """
    reasons = []
    allowance = offered_rate * (commit_interval_s + grace_s)
    if lag and lag[-1][1] > allowance:
        reasons.append(f"lag {lag[-1][1]:.0f} records at the end > {allowance:.0f}")
    half = [p for p in lag if p[0] >= (lag[0][0] + lag[-1][0]) / 2] if lag else []
    if half and half[-1][0] - half[0][0] >= 2 * commit_interval_s:
        growth = slope(half)
        if growth > 0.1 * offered_rate:
            reasons.append(f"lag grows {growth:.0f} records/s")
    if probes_seen < probes_sent:
        reasons.append(f"{probes_sent - probes_seen} of {probes_sent} probes not seen in time")
    return Verdict(not reasons, tuple(reasons))
