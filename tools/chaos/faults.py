"""The faults of the chaos scenarios: process kills, service outages, broker restarts, rescaling.

Each fault is injected mid-stream by tools.chaos.runner (after the input chunks its `points` name),
keeps the input flowing while it can, and returns once the suite's jobs run again.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from tools.chaos.runner import RunContext, wait_job
from tools.flink_jobs import stop_with_savepoint


@dataclass(frozen=True)
class KillTaskManager:
    """kill -9 of the TaskManager, input still arriving, then a new TaskManager; jobs recover from checkpoints.

    Attributes:
        points: when to kill (fractions of the input); one kill per point.
        down_s: how long the TaskManager stays dead.
    """

    points: tuple[float, ...] = (0.3, 0.6, 0.85)
    down_s: float = 5.0
    name: str = "kill -9 taskmanager"

    def inject(self, ctx: RunContext) -> None:
        """Kills, feeds a chunk, waits, restarts the TaskManager, waits for the jobs."""
        ctx.stack.stop_service("taskmanager", force=True)
        ctx.feed()
        time.sleep(self.down_s)
        ctx.stack.start_service("taskmanager")
        wait_job(ctx)


# Services whose data lives only in memory (the local Redis runs without persistence): their outage is a
# frozen process (SIGSTOP, then SIGCONT), unreachable but keeping its data, like a production Redis with
# persistence or replicas; a restart would wipe what the jobs wrote before it.
FROZEN_IN_OUTAGE = ("redis",)


@dataclass(frozen=True)
class ServiceOutage:
    """A service (redis, dynamodb) unavailable for `duration_s`, input still arriving, then back.

    DynamoDB Local (on disk) is stopped and started again; Redis is frozen (:data:`FROZEN_IN_OUTAGE`).

    Attributes:
        service: a tools.stack service name.
        duration_s: how long it stays down.
        points: when (fractions of the input).
    """

    service: str
    duration_s: float = 30.0
    points: tuple[float, ...] = (0.4,)

    @property
    def name(self) -> str:
        """E.g. `redis down 30s`."""
        return f"{self.service} down {self.duration_s:g}s"

    def inject(self, ctx: RunContext) -> None:
        """Takes the service down, feeds input for `duration_s`, brings it back, waits for the jobs."""
        frozen = ctx.stack.services[self.service].pid() if self.service in FROZEN_IN_OUTAGE else None
        if frozen is not None:
            os.kill(frozen, signal.SIGSTOP)
        else:
            ctx.stack.stop_service(self.service)
        try:
            end = time.monotonic() + self.duration_s
            while time.monotonic() < end:
                ctx.feed()
                time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        finally:
            if frozen is not None:
                os.kill(frozen, signal.SIGCONT)
            else:
                ctx.stack.start_service(self.service)
        wait_job(ctx)


@dataclass(frozen=True)
class RestartKafka:
    """The Kafka broker stopped and started again (producers pause meanwhile).

    Attributes:
        down_s: how long the broker stays down.
        points: when (fractions of the input).
    """

    down_s: float = 10.0
    points: tuple[float, ...] = (0.5,)
    name: str = "restart kafka"

    def inject(self, ctx: RunContext) -> None:
        """Stops the broker, waits, starts it, waits for the jobs."""
        ctx.stack.stop_service("kafka")
        time.sleep(self.down_s)
        ctx.stack.start_service("kafka")
        wait_job(ctx)


@dataclass(frozen=True)
class RescaleFromSavepoint:
    """`flink stop --savepointPath`, input still arriving, then `flink run -s <savepoint> -p <parallelism>`.

    Attributes:
        parallelism: the new parallelism.
        points: when (fractions of the input).
    """

    parallelism: int = 2
    points: tuple[float, ...] = (0.5,)
    name: str = "savepoint + rescale"

    def inject(self, ctx: RunContext) -> None:
        """Stops every job with a savepoint (keeping its counters), feeds a chunk, resumes them rescaled."""
        ctx.segments.extend(ctx.settled_counters())
        savepoints = [stop_with_savepoint(ctx.stack, jid, ctx.workdir / "savepoints") for jid in ctx.job_ids]
        ctx.note(f"savepoints {', '.join(savepoints)}")
        ctx.feed()
        ctx.resubmit([["-s", savepoint, "-p", str(self.parallelism)] for savepoint in savepoints])
