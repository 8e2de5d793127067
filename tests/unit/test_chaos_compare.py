"""The chaos comparator: loss, changes and conflicts fail; at-least-once duplicates are counted (tier 1)."""

from __future__ import annotations

import orjson

from tools.chaos import compare
from tools.chaos.stores import StoreSnapshot, comparable
from tools.chaos.suite import INGEST, PIPELINE, Persons

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


def test_changed_records_report_which_fields_differ():
    clean = idx([valid("a", n=1, same=0), valid("b", n=2, same=0), valid("c")])
    faulted = idx([valid("a", n=5, same=0), valid("b", same=0, extra=True), valid("c")])
    diff = compare.diff_outputs("v", clean, faulted, sample_size=1)
    assert diff.changed == ["a", "b"]
    assert diff.changed_fields == {"extra": 1, "n": 2}
    assert diff.changed_sample == [{"key": "a", "clean": {"n": 1}, "faulted": {"n": 5}}]
    assert compare.field_diff({"n": 2}, {"extra": True}) == ({"extra": "<missing>", "n": 2},
                                                              {"extra": True, "n": "<missing>"})
    assert compare.field_diff([1], [2]) == ({".": [1]}, {".": [2]})
    assert compare.field_diff("x", "x") == ({}, {})


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
    erasures = reader("erasures")
    record = orjson.dumps({"idempotency_key": "c1"})
    out = compare.index([record, None, record], lambda v: erasures.normalize(v, TOPICS))
    assert list(out.records) == ["c1"] and out.duplicates == 1


def merge_record(absorbed: str, survivor: str, ts: int, key: str = "") -> bytes:
    return orjson.dumps({"kind": "merge", "absorbed": absorbed, "survivor": survivor, "ts": ts,
                         "idempotency_key": key or f"{absorbed}>{survivor}@{ts}"})


def test_person_ids_resolve_through_the_runs_own_merges():
    persons = Persons.from_merges([
        merge_record("p-t", "p-a", 5), None, orjson.dumps({"kind": "review", "absorbed": "p-x", "survivor": "p-y"}),
        merge_record("p-a", "p-b", 7),  # a chain
        merge_record("p-c", "p-d", 1), merge_record("p-d", "p-c", 3),  # a re-key that swapped the two back
    ])
    assert [persons.root(p) for p in ("p-t", "p-a", "p-b", "p-x", "p-c", "p-d")] == [
        "p-b", "p-b", "p-b", "p-x", "p-c", "p-c"]
    assert persons.absorbed("p-t") and not persons.absorbed("p-b") and not persons.absorbed("p-c")
    assert Persons.from_merges([merge_record("p-a", "p-b", 1), merge_record("p-b", "p-a", 1)]).root("p-a") in (
        "p-a", "p-b")  # a cycle ends


def identified(event_id: str, person: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "person_id": person, "type": "page_view"})


def test_each_event_is_compared_by_the_person_it_ended_in():
    events = reader("events.identified")
    clean = events.index([identified("e1", "p-a"), identified("e2", "p-a")], TOPICS)
    # the faulted run annotated e1 with a transient person it merged into p-a later
    merged = Persons.from_merges([merge_record("p-t", "p-a", 1)])
    faulted = events.index([identified("e1", "p-t"), identified("e2", "p-a")], TOPICS, merged)
    assert compare.diff_outputs("events.identified", clean, faulted).ok
    assert events.index([identified("e1", "p-t")], TOPICS).records == {"e1": "p-t"}  # never merged: a difference
    twice = events.index([identified("e1", "p-a"), identified("e1", "p-z")], TOPICS, merged)
    assert twice.conflicts == ["e1"]  # one event ending in two persons


def profile(person: str, event_id: str, version: int, **attributes) -> bytes:
    return orjson.dumps({"kind": "profile", "person_id": person, "event_id": event_id, "version": version,
                         "updated_ts": version, "changed": sorted(attributes), "attributes": attributes})


def test_profiles_are_compared_as_the_latest_profile_of_each_final_person():
    profiles = reader("profiles")
    clean = profiles.index([profile("p-a", "e1", 1, tier="gold"), profile("p-a", "e2", 2, tier="gold", city="X")],
                           TOPICS)
    assert clean.records == {"p-a": {"person_id": "p-a", "attributes": {"tier": "gold", "city": "X"}}}
    # another order: a transient person held e2's change; the survivor's last change came from e1
    faulted = profiles.index([profile("p-t", "e2", 1, city="X"), profile("p-a", "e1", 9, tier="gold", city="X")],
                             TOPICS, Persons.from_merges([merge_record("p-t", "p-a", 1)]))
    assert compare.diff_outputs("profiles", clean, faulted).ok
    stale = profiles.index([profile("p-a", "e1", 1, tier="gold")], TOPICS)
    assert compare.diff_outputs("profiles", clean, stale).changed == ["p-a"]


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


def session(kind: str, sid: str, version: int, **body) -> bytes:
    return orjson.dumps({"kind": kind, "key": f"{sid}:{kind}:{version}", "version": version, "person_id": "p1",
                         "session_id": sid, "status": "closed" if kind != "open" else "open", **body})


def test_sessions_are_compared_as_the_final_sessions_a_consumer_keeps():
    sessions = reader("sessions")
    clean = [session("open", "s1", 1, start_ms=10), session("close", "s1", 2, start_ms=10, events=3)]
    # A restart: s2 opened first (an event of s1 arrived after it), then a correction merged s2 into s1;
    # a replayed copy of the open record; versions differ.
    faulted = [session("open", "s2", 1, start_ms=20), session("open", "s2", 1, start_ms=20),
               session("correction", "s1", 4, start_ms=10, events=3, replaces=[{"session_id": "s2"}],
                       cause="late_event")]
    diff = compare.diff_outputs("sessions", sessions.index(clean, TOPICS), sessions.index(faulted, TOPICS))
    assert diff.ok, diff
    assert list(sessions.index(faulted, TOPICS).records) == ["p1:s1"]
    fewer = [session("open", "s1", 1, start_ms=10), session("close", "s1", 2, start_ms=10, events=2)]
    assert compare.diff_outputs("sessions", sessions.index(clean, TOPICS),
                                sessions.index(fewer, TOPICS)).changed_fields == {"events": 1}
    lost = [session("open", "s1", 1, start_ms=10)]  # the close never came: the session is still open
    assert not compare.diff_outputs("sessions", sessions.index(clean, TOPICS), sessions.index(lost, TOPICS)).ok


def change(key: str, op: str, ts: int, tag: str = "t1", retracts: str | None = None, **extra) -> bytes:
    return orjson.dumps({"kind": "segment_change", "key": key, "person_id": "p1", "tag": tag, "op": op,
                         "ts_ms": ts, "retraction": retracts is not None, "retracts": retracts,
                         "correction": False, **extra})


def test_segment_changes_are_compared_as_the_memberships_a_consumer_derives():
    changes = reader("segment-changes")
    clean = [change("k1", "enter", 10), change("k2", "exit", 50)]
    # A restart: k2 was first computed at 40, retracted once late evidence arrived, then re-emitted at 50 as a
    # correction; k1 replayed.
    faulted = [change("k1", "enter", 10), change("k3", "exit", 40), change("r3", "exit", 40, retracts="k3"),
               change("k1", "enter", 10), change("k2", "exit", 50, correction=True)]
    assert compare.diff_outputs("s", changes.index(clean, TOPICS), changes.index(faulted, TOPICS)).ok
    assert changes.index(clean, TOPICS).records == {"p1:t1": [[10, 50]]}
    lost_exit = compare.diff_outputs("s", changes.index(clean, TOPICS), changes.index(clean[:1], TOPICS))
    assert lost_exit.changed == ["p1:t1"]
    unpaired = changes.index([change("k1", "enter", 10), change("k4", "enter", 20)], TOPICS)
    assert list(unpaired.records) == ["p1:invalid"]


def test_late_events_are_compared_by_job_and_event_without_the_watermark():
    late = reader("events.late")
    record = {"kind": "late", "key": "segments:e1", "job": "segments", "reason": "too_late", "event_id": "e1",
              "ts_ms": 5, "watermark": 400_000, "detail": "event time 5 is before watermark 400000 - ..."}
    clean = late.index([orjson.dumps(record)], TOPICS)
    later = late.index([orjson.dumps({**record, "watermark": 900_000, "detail": "..."}), None], TOPICS)
    assert compare.diff_outputs("events.late", clean, later).ok
    assert compare.diff_outputs("events.late", clean, late.index([], TOPICS)).lost == ["segments:e1"]


def test_what_stays_under_a_merged_away_person_is_not_compared_the_survivors_view_is():
    sessions, changes = reader("sessions"), reader("segment-changes")
    moved = Persons.from_merges([merge_record("p1", "p-s", 1)])
    leftover = [session("close", "s9", 2, start_ms=10, events=1)]  # p1's closed session, left under its id
    assert sessions.index(leftover, TOPICS, moved).records == {}
    assert list(sessions.index(leftover, TOPICS).records) == ["p1:s9"]
    assert changes.index([change("k1", "enter", 10), change("k2", "exit", 50)], TOPICS, moved).records == {}
