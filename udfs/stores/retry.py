"""Bounded retries with exponential backoff and full jitter, and the errors the stores raise."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class StoreError(RuntimeError):
    """A store operation failed for good (a bug, a bad op, a rejected request): not retried."""


class StoreUnavailable(StoreError):
    """The store stayed unreachable or throttled through the whole retry budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    Attributes:
        max_retries: retries after the first attempt (0: fail at once).
        base_backoff_ms: backoff cap of the first retry; doubles with each retry.
        max_backoff_ms: upper bound of the backoff cap.
    """

    max_retries: int = 5
    base_backoff_ms: int = 50
    max_backoff_ms: int = 5_000

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_backoff_ms < 0 or self.max_backoff_ms < self.base_backoff_ms:
            raise ValueError(f"invalid retry policy {self!r}")

    def backoff_s(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (0-based): uniform in [0, cap] (full jitter)."""
        cap = min(self.max_backoff_ms, self.base_backoff_ms * 2**retry)
        return cap * rng() / 1000.0


def call_with_retry(fn: Callable[[], T], retryable: Callable[[BaseException], bool], policy: RetryPolicy,
                    what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """Calls `fn`, retrying the failures `retryable` accepts with backoff, at most `policy.max_retries` times.

    Raises:
        StoreUnavailable: still failing after the budget (chained to the last error).
        Exception: a failure `retryable` rejects, as raised by `fn`.
    """
    for retry in range(policy.max_retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            if retry == policy.max_retries:
                raise StoreUnavailable(f"{what}: still failing after {policy.max_retries} retries: "
                                       f"{type(exc).__name__}: {exc}") from exc
            sleep(policy.backoff_s(retry))
    raise AssertionError("unreachable")
