"""Waiting in end-to-end tests: poll a probe until it answers, or fail with the jobs' last exceptions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tools.flink_jobs import last_exception


def wait_for(probe: Callable[[], Any], what: str, ports, *job_ids: str, timeout_s: float = 120) -> Any:
    """Returns the first truthy answer of `probe` (polled every second); on timeout fails naming `what` and
    the last exception of each job."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    failures = {job_id: last_exception(ports, job_id) or "no exception" for job_id in job_ids}
    raise AssertionError(f"timed out waiting for {what}; jobs: {failures}")
