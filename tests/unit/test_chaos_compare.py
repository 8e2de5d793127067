"""The chaos comparator: loss, changes and conflicts fail; at-least-once duplicates are counted (tier 1)."""

from __future__ import annotations

import orjson

from tools.chaos import compare
from tools.chaos.stores import StoreSnapshot, comparable
from tools.chaos.suite import INGEST, PIPELINE

TOPICS = {"events": "events.run1", "events.valid": "events.valid.run1", "events.dlq": "events.dlq.run1"}
VALID = next(o for o in INGEST.outputs if o.topic == "events.valid")
DLQ = next(o for o in INGEST.outputs if o.topic == "events.dlq")


def valid(event_id: str, **extra) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": "page_view", "ts_ms": 1, **extra})


def dead(offset: int, topic: str = "events.run1", at: int = 5) -> bytes:
    return orjson.dumps({"dlq_id": f"{topic}:0:{offset}", "reason": "schema", "dead_lettered_at": at,
                         "origin": {"topic": topic, "partition": 0, "offset": offset}})


def idx(values: list[bytes], reader=VALID, topics=TOPICS) -> compare.OutputIndex:
    return compare.index(values, lambda v: reader.normalize(v, topics))


def test_identical_outputs_pass():
    diff = compare.diff_outputs("v", idx([valid("a"), valid("b")]), idx([valid("b"), valid("a")]))
    assert diff.ok and diff.duplicates == 0


def test_a_lost_record_is_detected():
    diff = compare.diff_outputs("v", idx([valid("a"), valid("b")]), idx([valid("a"), valid("a")]))
    assert not diff.ok
    assert diff.lost == ["b"]
    assert diff.summary()["lost"]["count"] == 1


def test_redelivered_copies_are_allowed_and_counted():
    diff = compare.diff_outputs("v", idx([valid("a"), valid("b")]), idx([valid("a"), valid("b"), valid("a")]))
    assert diff.ok and diff.duplicates == 1


def test_changed_extra_and_conflicting_records_fail():
    clean = idx([valid("a"), valid("b")])
    assert compare.diff_outputs("v", clean, idx([valid("a"), valid("b", type="search")])).changed == ["b"]
    assert compare.diff_outputs("v", clean, idx([valid("a"), valid("b"), valid("c")])).unexpected == ["c"]
    conflicting = compare.diff_outputs("v", clean, idx([valid("a"), valid("b"), valid("a", x=1)]))
    assert not conflicting.ok and conflicting.conflicts == ["a"]


def test_dead_letters_compare_across_private_topics_and_wall_clock():
    other = {k: v.replace("run1", "run2") for k, v in TOPICS.items()}
    clean = idx([dead(1, at=5), dead(2)], DLQ)
    faulted = idx([dead(2, "events.run2", at=9), dead(1, "events.run2", at=7)], DLQ, other)
    assert compare.diff_outputs("d", clean, faulted).ok
    assert not compare.diff_outputs("d", clean, idx([dead(1, "events.run2")], DLQ, other)).ok


def counters(records_in: int, valid_: int, dups: int, dead_: int) -> dict[str, int]:
    return {"records_in": records_in, "valid": valid_, "duplicates": dups, "dead_lettered": dead_,
            "dead_lettered_schema": dead_}


def test_metrics_without_restart_must_add_up_exactly():
    clean = [("ingest", counters(10, 7, 1, 2))]
    assert compare.metric_problems(clean, [("ingest", counters(10, 7, 1, 2))], False, INGEST.balance) == []
    split = [("ingest", counters(4, 3, 0, 1)), ("ingest", counters(6, 4, 1, 1))]  # stop with savepoint + resume
    assert compare.metric_problems(clean, split, False, INGEST.balance) == []
    assert compare.metric_problems(clean, [("ingest", counters(9, 6, 1, 2))], False, INGEST.balance)


def test_metrics_after_restart_balance_and_stay_within_the_clean_run():
    clean = [("ingest", counters(10, 7, 1, 2))]
    assert compare.metric_problems(clean, [("ingest", counters(4, 3, 0, 1))], True, INGEST.balance) == []
    unbalanced = {**counters(4, 3, 0, 1), "records_in": 5}
    assert compare.metric_problems(clean, [("ingest", unbalanced)], True, INGEST.balance)
    assert compare.metric_problems(clean, [("ingest", counters(12, 9, 1, 2))], True, INGEST.balance)


def test_corpus_outcomes_are_checked_one_by_one():
    cases = [compare.Expectation("#0", "valid", "events:2:0", "a", {"event_id": "a"}),
             compare.Expectation("#1", "schema", "events:2:1"),
             compare.Expectation("#2", "duplicate", "events:2:2", "a")]
    good_valid = compare.index([{"event_id": "a"}], lambda r: (r["event_id"], r))
    good_dead = compare.index([{"k": "events:2:1", "reason": "schema"}], lambda r: (r["k"], r))
    assert compare.corpus_problems(cases, good_valid, good_dead, lambda r: r["reason"]) == []
    wrong_reason = compare.index([{"k": "events:2:1", "reason": "invalid_json"}], lambda r: (r["k"], r))
    assert compare.corpus_problems(cases, good_valid, wrong_reason, lambda r: r["reason"])
    missing = compare.index([], lambda r: (r["event_id"], r))
    assert compare.corpus_problems(cases, missing, good_dead, lambda r: r["reason"])
    dead_dup = compare.index([{"k": "events:2:1", "reason": "schema"}, {"k": "events:2:2", "reason": "schema"}],
                             lambda r: (r["k"], r))
    assert compare.corpus_problems(cases, good_valid, dead_dup, lambda r: r["reason"])


# --- the pipeline suite: change records by idempotency key, stores, order-independent metrics ---------------


def reader(topic: str):
    return next(o for o in PIPELINE.outputs if o.topic == topic)


def test_pipeline_change_records_are_keyed_by_idempotency_key_and_tombstones_skipped():
    merges = reader("person-merges")
    record = orjson.dumps({"kind": "merge", "absorbed": "p-b", "survivor": "p-a", "idempotency_key": "k1"})
    out = compare.index([record, None, record], lambda v: merges.normalize(v, TOPICS))
    assert list(out.records) == ["k1"] and out.duplicates == 1
    profiles = reader("profiles")
    a = orjson.dumps({"kind": "profile", "person_id": "p-a", "event_id": "e1", "version": 5, "attributes": {}})
    b = orjson.dumps({"kind": "profile", "person_id": "p-a", "event_id": "e1", "version": 9, "attributes": {}})
    # versions order writes within one run only: the same change at another version is the same record
    assert compare.diff_outputs("profiles", idx([a], profiles), idx([b], profiles)).ok
    changes = reader("segment-changes")
    assert changes.normalize(orjson.dumps({"key": "c1", "op": "enter"}), TOPICS) == ("c1", {"key": "c1", "op": "enter"})


def test_only_order_independent_metrics_must_match_the_clean_run():
    clean = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 7, "identified": 7, "loop_messages": 30})]
    faulted = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 7, "identified": 7, "loop_messages": 41})]
    assert compare.metric_problems(clean, faulted, False, PIPELINE.balance, PIPELINE.compared_metric) == []
    lost = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 6, "identified": 6, "loop_messages": 30})]
    assert len(compare.metric_problems(clean, lost, False, PIPELINE.balance, PIPELINE.compared_metric)) == 2


def test_store_snapshots_compare_content_and_leave_out_what_expires_between_the_runs():
    now = 1_000_000
    clean = StoreSnapshot({"redis:a": ({"v": "p1"}, None), "redis:live": ({"v": "x"}, now + 1000),
                           "dynamodb:t:k": ({"person_id": "k"}, now + 10**9)}, now)
    later = StoreSnapshot({"redis:a": ({"v": "p1"}, None), "dynamodb:t:k": ({"person_id": "k"}, now + 10**9)},
                          now + 600_000)
    a, b = comparable(clean, later)
    assert compare.diff_outputs("stores", a, b).ok  # redis:live expired before the second snapshot
    changed = StoreSnapshot({**later.entries, "redis:a": ({"v": "p2"}, None)}, later.taken_ms)
    assert compare.diff_outputs("stores", *comparable(clean, changed)).changed == ["redis:a"]
    missing = StoreSnapshot({"redis:a": ({"v": "p1"}, None)}, later.taken_ms)
    assert compare.diff_outputs("stores", *comparable(clean, missing)).lost == ["dynamodb:t:k"]


def test_the_identity_job_must_read_every_valid_event_when_nothing_restarted():
    clean = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 7, "identified": 7})]
    short = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 6, "identified": 6})]
    args = (PIPELINE.balance, PIPELINE.compared_metric, PIPELINE.across)
    assert compare.metric_problems(clean, clean, False, *args) == []
    assert any("events_in 6 != ingest.valid 7" in p for p in compare.metric_problems(clean, short, False, *args))
    assert not any("ingest.valid" in p for p in compare.metric_problems(clean, short, True, *args))


def test_after_a_restart_only_the_jobs_reading_the_recorded_input_stay_within_the_clean_run():
    clean = [("ingest", counters(10, 7, 1, 2)), ("identity", {"events_in": 7, "identified": 7})]
    replayed = [("ingest", counters(4, 3, 0, 1)), ("identity", {"events_in": 9, "identified": 9})]  # copies
    args = (PIPELINE.balance, PIPELINE.compared_metric, PIPELINE.across, PIPELINE.bounded_metric)
    assert compare.metric_problems(clean, replayed, True, *args) == []
    too_many = [("ingest", counters(12, 9, 1, 2)), ("identity", {"events_in": 9, "identified": 9})]
    assert compare.metric_problems(clean, too_many, True, *args)


def test_sessions_are_compared_by_session_and_kind_without_updates_or_versions():
    sessions = reader("sessions")
    close = {"kind": "close", "person_id": "p1", "session_id": "s1", "event_count": 3}
    a = orjson.dumps({**close, "key": "s1:close:3", "version": 3})
    b = orjson.dumps({**close, "key": "s1:close:5", "version": 5})
    update = orjson.dumps({**close, "kind": "update", "key": "s1:update:2", "version": 2})
    assert sessions.normalize(update, TOPICS) is None
    assert compare.diff_outputs("sessions", idx([a, update], sessions), idx([b], sessions)).ok
    other = orjson.dumps({**close, "event_count": 4, "key": "s1:close:4", "version": 4})
    assert compare.diff_outputs("sessions", idx([a], sessions), idx([other], sessions)).changed == ["p1:s1:close"]
