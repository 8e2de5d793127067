"""Segments end to end: definitions applied with the CLI, events in Kafka, the job submitted with `flink run`,
tags in Redis, DynamoDB and on `segment-changes` (tier 3). No input follows the events: the exits come from
the idle clock alone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.segments_support import definitions_read, event, now_ms, read_until, wait_for
from tools import segments_cli
from tools.flink_jobs import JOBS, cancel, last_exception, operator_metrics, submit
from tools.kafka_io import private_topics, produce
from udfs.segments import person_id_of
from udfs.segments.definitions import EXAMPLES_DIR

pytestmark = pytest.mark.e2e

SEGMENTS = next(j for j in JOBS if j.key == "segments")
QUICK = """\
kind: segment
name: quick_searcher
condition: {count: {match: {type: search}, within: 5s, gte: 2}}
---
kind: segment
name: quick_viewer
params: [product_id]
condition: {recent: {match: {type: product_view, props: {product_id: "{product_id}"}}, within: 4s}}
---
kind: segment
name: hour_buyer
condition: {recent: {match: {type: purchase}, within: 1h}}
"""


def test_applied_definitions_tag_persons_and_exit_without_further_input(stack, stores, tmp_path: Path):
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "segment-changes", "events.late")
    # one partition, like the real topic: definitions are read in the order they were published
    topics.update(private_topics(bootstrap, "segment-definitions", partitions=1))
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK, encoding="utf-8")
    examples = sorted(EXAMPLES_DIR.glob("*.yaml"))
    cli = ["--bootstrap", bootstrap, "--topic", topics["segment-definitions"]]
    assert segments_cli.main([*cli, "apply", *map(str, examples), str(quick)]) == 0
    published = segments_cli.published(bootstrap, topics["segment-definitions"])
    assert {"quick_searcher", "quick_viewer", "hour_buyer", "frequent_searcher"} <= set(published)
    assert segments_cli.main([*cli, "remove", "frequent_searcher"]) == 0  # a tombstone
    assert segments_cli.plan(segments_cli.published(bootstrap, topics["segment-definitions"]), [quick], False) == {}

    run = uuid.uuid4().hex[:6]
    user = f"u-{run}"
    person = person_id_of({"ids": {"user_id": user}})
    job_id = submit(stack, SEGMENTS, [
        "--input-topic", topics["events.valid"], "--definitions-topic", topics["segment-definitions"],
        "--changes-topic", topics["segment-changes"], "--late-topic", topics["events.late"],
        "--group-id", f"segments-{run}", "--lateness", "3s", "--out-of-orderness", "500ms",
        "--idle-timeout", "1s", "--checkpoint-interval", "2s"])
    redis, dynamo = stores
    try:
        records_published = len(examples) + 3 + 1  # every definition once, then the tombstone
        assert wait_for(lambda: definitions_read(stack.ports, job_id) >= records_published, 120), \
            last_exception(stack.ports, job_id)
        assert operator_metrics(stack.ports, job_id)["definition_issues"] == 0  # published in dependency order
        t0 = now_ms()
        plan = [("s1", t0 - 1000, "search", {}), ("v1", t0 - 800, "product_view", {"product_id": "p1"}),
                ("b1", t0 - 700, "purchase", {"revenue": 10}), ("s2", t0 - 500, "search", {})]
        produce(bootstrap, topics["events.valid"], [event(f"{run}-{i}", user, ts, etype, **props)
                                                    for i, ts, etype, props in plan],
                keys=[user.encode()] * len(plan))

        def entered(records: list[dict]) -> bool:
            return {r["tag"] for r in records if r["op"] == "enter"} >= {"quick_searcher", "quick_viewer:p1",
                                                                         "hour_buyer"}

        assert entered(read_until(bootstrap, topics["segment-changes"], entered)), last_exception(stack.ports, job_id)
        # the open-ended purchase tag is in Redis (through the CLI's lookup) and DynamoDB
        assert wait_for(lambda: "hour_buyer" in segments_cli.lookup(redis, person, now_ms())["tags"])
        items = dynamo.query_live("tagstream_segments", person, now_ms())
        assert "hour_buyer" in {i["tag"] for i in items}
        time.sleep(2)  # the watermark has moved past the events: this one is far too late
        produce(bootstrap, topics["events.valid"], [event(f"{run}-late", user, t0 - 60_000, "search")],
                keys=[user.encode()])

        # No more input: the short tags exit by the idle clock alone, at their exact event times.
        def exited(records: list[dict]) -> bool:
            return {r["tag"] for r in records if r["op"] == "exit"} >= {"quick_searcher", "quick_viewer:p1"}

        records = read_until(bootstrap, topics["segment-changes"], exited)
        assert exited(records), last_exception(stack.ports, job_id)
        exits = {r["tag"]: r for r in records if r["op"] == "exit"}
        assert exits["quick_searcher"]["ts_ms"] == t0 - 1000 + 5000  # the 2nd-newest search leaves the window
        assert exits["quick_viewer:p1"]["ts_ms"] == t0 - 800 + 4000
        assert all(r["reason"]["cause"] == "time" for r in exits.values())
        assert "hour_buyer" not in exits and not [r for r in records if r["segment"] == "frequent_searcher"]
        assert all(r["_key"] == person == r["person_id"] for r in records)
        late = read_until(bootstrap, topics["events.late"], lambda rs: len(rs) >= 1, timeout_s=30)
        assert [(r["event_id"], r["reason"], r["person_id"]) for r in late] == [(f"{run}-late", "too_late", person)]

        quick = {"quick_searcher", "quick_viewer:p1"}  # gone; the examples' longer tags (viewed_product:p1,
        # recent_purchaser) and the open-ended purchase tag stay

        def live_tags() -> tuple[set[str], set[str]]:
            items = dynamo.query_live("tagstream_segments", person, now_ms())
            return set(segments_cli.lookup(redis, person, now_ms())["tags"]), {i["tag"] for i in items}

        def settled() -> bool:
            return all(not quick & tags and {"hour_buyer", "viewed_product:p1"} <= tags for tags in live_tags())

        assert wait_for(settled), live_tags()
        assert wait_for(lambda: operator_metrics(stack.ports, job_id).get("store_applied", 0) > 0)
        metrics = operator_metrics(stack.ports, job_id)
        assert metrics["events_in"] == len(plan) + 1 and metrics["late"] == 1
        assert metrics["entries"] >= 3 and metrics["exits"] == 2 and metrics["idle_advances"] >= 1
    finally:
        cancel(stack.ports, job_id)
