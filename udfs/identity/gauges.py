"""Gauges of the identity job's component stage: pending work and component sizes (pure, no pyflink).

The Flink wrapper (`jobs/identity.py`) feeds every handled component message to :meth:`StageGauges.observe`
and exports the fields as levels (`jobs.runtime.Level`: counters moved up and down, since Python gauges
crash thread mode) of the operator metric group `tagstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from udfs.identity.routing import Slot


def pending_work(state: Any) -> tuple[int, int]:
    """(observations waiting for identifier claims, claims in flight) of a component slot ((0, 0) otherwise)."""
    if not isinstance(state, Slot):
        return 0, 0
    return len(state.pending), len(state.claiming)


@dataclass
class StageGauges:
    """Gauges of the component stage, per subtask (see docs/identity.md, Metrics).

    `pending_observations` and `pending_claims` are running sums of the changes this subtask made to the
    components it handled (a shipped component moves its work to another key, maybe another subtask: sum
    over subtasks); they start from zero when the subtask starts, so after a restore they count relative to
    the restored state. The `*_max` gauges are the largest component this subtask has written since it
    started: identifiers, link-log entries and serialized state bytes.
    """

    pending_observations: int = 0
    pending_claims: int = 0
    component_size_max: int = 0
    component_links_max: int = 0
    component_state_bytes_max: int = 0

    def values(self) -> dict[str, int]:
        """Every gauge by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def observe(self, slot: Any, work_before: tuple[int, int], state_bytes: int) -> None:
        """Accounts one handled component message: the change of its pending work, its sizes."""
        pending, claims = pending_work(slot)
        self.pending_observations += pending - work_before[0]
        self.pending_claims += claims - work_before[1]
        inner = slot.state if isinstance(slot, Slot) else None
        if inner is not None:
            self.component_size_max = max(self.component_size_max, len(inner.graph.first_seen))
            self.component_links_max = max(self.component_links_max, len(inner.graph.links))
        self.component_state_bytes_max = max(self.component_state_bytes_max, state_bytes)
