"""The chaos comparator: loss, changes and conflicts fail; at-least-once duplicates are counted (tier 1)."""

from __future__ import annotations

import orjson

from tools.chaos import compare
from tools.chaos.suite import INGEST

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
