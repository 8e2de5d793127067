"""Reduced chaos on the local stack: a TaskManager kill, a short Redis outage, the hostile corpus (tier 3).

The whole pipeline suite runs (ingest -> identity -> sessions, segments, with Redis and DynamoDB), as in
`make chaos`; the full set (tools/chaos) adds repeated kills, 30 s Redis and DynamoDB outages, a Kafka broker
restart and a stop-with-savepoint + rescale. Each faulted run is compared with a clean run of the same input.
"""

from __future__ import annotations

import pytest

from tools.chaos.cli import table
from tools.chaos.scenarios import CORPUS, control_input, fault_scenarios, run_scenarios
from tools.chaos.suite import PIPELINE

pytestmark = pytest.mark.e2e


def test_reduced_chaos(stack):
    items, truths = control_input(1200)
    faults = fault_scenarios(outage_s=5, kills=1)
    outcomes = run_scenarios(stack, PIPELINE, [CORPUS, "taskmanager-kill", "redis-outage"], items, truths, faults,
                             corpus_scale=70, chunks=6, pause_s=1.0, timeout_s=300)
    report = table(outcomes)
    print(report)
    by_name = {o.scenario: o for o in outcomes}
    assert all(o.ok for o in outcomes), report + "\n" + "\n".join(
        [f"{o.scenario}: {p}" for o in outcomes for p in o.problems[:20]]
        + [f"{o.scenario} {name}: {diff.get('changed_sample')} lost {diff.get('lost')} unexpected "
           f"{diff.get('unexpected')}" for o in outcomes for name, diff in o.outputs.items()
           if not diff.get("ok", True)])
    assert by_name[CORPUS].extra["cases"] >= 1000
    assert by_name[CORPUS].restarts == 0
    assert by_name["taskmanager-kill"].restarts >= 1  # the kill did hit the jobs
    assert by_name["baseline"].outputs["stores"]["distinct"] > 0  # the stores were compared
