"""The segments stage in a MiniCluster at parallelism 1 and 2, on bounded collections with event time.

Watermarks are generated in SQL after every record (`runtime.with_event_time`) and each person's records reach
the keyed operator in source order, so lateness is deterministic at any parallelism. At the end of a bounded
input the final watermark fires every pending event-time timer: exits happen with no further input.
"""

from __future__ import annotations

import time

import orjson
import pytest
from pyflink.common import Row

from jobs.runtime import KAFKA_RECORD_TYPE, TIMED_VALUE_TYPE, table_env, with_event_time
from jobs.segments import TEXT_PAIR_TYPE, SegmentsJobConfig, SegmentsStreams, build_segments
from udfs.segments import SegmentsConfig, load_files, person_id_of
from udfs.segments.config import MINUTE_MS
from udfs.segments.definitions import EXAMPLES_DIR
from udfs.segments.published import definition_text
from udfs.segments.records import redis_key

pytestmark = pytest.mark.pipeline

BASE = 1_795_000_000_000
SEGMENTS = SegmentsConfig(allowed_lateness_ms=MINUTE_MS)
FREQUENT, VIEWED = (load_files([EXAMPLES_DIR / f"{name}.yaml"])[0] for name in ("frequent_searcher", "viewed_product"))


def at(minute: float) -> int:
    return BASE + int(minute * MINUTE_MS)


def ev(event_id: str, user: str, minute: float, etype: str = "search", **props) -> dict:
    return {"event_id": event_id, "type": etype, "ts": at(minute), "ts_ms": at(minute), "channel": "web",
            "ids": {"user_id": user}, "props": props}


def person(user: str) -> str:
    return person_id_of({"ids": {"user_id": user}})


def timed(t_env, env, docs: list[dict], time_field: str):
    rows = env.from_collection([Row(orjson.dumps(d), d[time_field]) for d in docs], type_info=TIMED_VALUE_TYPE)
    return with_event_time(t_env, rows, 0)


def run(env, events: list[dict], config: SegmentsJobConfig,
        definitions: list[tuple[str, str | None]] | None = None, merges: list[dict] | None = None,
        handoffs: list[dict] | None = None) -> tuple[list[tuple[str, str, dict]], list[dict]]:
    """Runs the stage; returns the Kafka records as (topic, key, value) and the store ops."""
    t_env = table_env(env)
    published = None
    if definitions is not None:
        published = env.from_collection([Row(k, v) for k, v in definitions], type_info=TEXT_PAIR_TYPE) \
            .map(lambda row: time.sleep(4 if row[0] == definitions[0][0] else 0) or Row(row[0], row[1]),
                 output_type=TEXT_PAIR_TYPE).set_parallelism(1)  # in order, the first one after the events
    return collect(build_segments(timed(t_env, env, events, "ts_ms"), published, config,
                                  timed(t_env, env, merges, "ts") if merges else None,
                                  timed(t_env, env, handoffs, "ts") if handoffs else None))


def collect(streams: SegmentsStreams) -> tuple[list[tuple[str, str, dict]], list[dict]]:
    """Runs the job of the stage's streams; returns the Kafka records as (topic, key, value) and the store ops
    (the stage emits them as one JSON array per evaluation)."""
    ops = streams.store_ops.map(lambda op: Row("store", "", op), output_type=KAFKA_RECORD_TYPE)
    with streams.kafka.union(ops).execute_and_collect() as results:
        records = [(r[0], r[1], orjson.loads(r[2])) for r in results]
    batches = [r[2] for r in records if r[0] == "store"]
    assert all(isinstance(batch, list) and batch for batch in batches)  # one non-empty array per evaluation
    return [r for r in records if r[0] != "store"], [op for batch in batches for op in batch]


def changes(records, who: str | None = None) -> list[tuple[str, str, int, str]]:
    """(tag, op, ts, cause) of the change records (of one person), in time order."""
    found = [(v["tag"], v["op"], v["ts_ms"], v["reason"]["cause"]) for t, k, v in records
             if t == "segment-changes" and (who is None or k == who)]
    return sorted(found, key=lambda c: (c[2], c[0], c[1]))


def test_count_enters_on_the_event_and_exits_at_window_end_without_input(env):
    check_count_enters_and_exits(env)


def test_process_mode_runs_the_stage(process_env):
    # Process-mode workers have no JVM gateway: state TTLs and everything else opened there must not need one.
    check_count_enters_and_exits(process_env)


def check_count_enters_and_exits(env) -> None:
    """A count segment enters on the event that completes it and exits at its window end without input."""
    config = SegmentsJobConfig(SEGMENTS, definitions=(FREQUENT,))
    events = [ev("a1", "a", 0), ev("a2", "a", 1), ev("b1", "b", 1.5, "page_view"), ev("a3", "a", 2),
              ev("b2", "b", 4, "search")]
    records, ops = run(env, events, config)

    a = person("a")
    assert changes(records, a) == [("frequent_searcher", "enter", at(2), "event"),
                                   ("frequent_searcher", "exit", at(10), "time")]
    assert changes(records, person("b")) == []
    assert all(t == "segment-changes" and k == v["person_id"] for t, k, v in records)
    (enter,) = [v for *_, v in records if v["op"] == "enter"]
    assert enter["expires_at_ms"] == at(10) and enter["reason"]["event_id"] == "a3"
    view = redis_key(a, SEGMENTS)
    hash_ops = [op for op in ops if op["kind"] == "redis" and op["key"] == view]
    assert any("tag:frequent_searcher" in op.get("fields", {}) for op in hash_ops)
    assert "tag:frequent_searcher" in hash_ops[-1]["remove"]
    assert [op["op"] for op in ops if op["kind"] == "dynamodb"] == ["put", "delete"]


def test_parameterized_tags_per_product(env):
    config = SegmentsJobConfig(SEGMENTS, definitions=(VIEWED,))
    events = [ev("v1", "c", 0, "product_view", product_id="p1"), ev("v2", "c", 1, "product_view", product_id="p2"),
              ev("v3", "c", 3, "product_view", product_id="p1")]
    records, _ = run(env, events, config)

    assert changes(records) == [("viewed_product:p1", "enter", at(0), "event"),
                                ("viewed_product:p2", "enter", at(1), "event"),
                                ("viewed_product:p2", "exit", at(6), "time"),
                                ("viewed_product:p1", "exit", at(8), "time")]
    assert {v["params"]["product_id"] for *_, v in records} == {"p1", "p2"}


def test_definition_published_later_is_evaluated_against_history(env):
    config = SegmentsJobConfig(SEGMENTS, definitions=(FREQUENT,))
    events = [ev("s1", "d", 0), ev("s2", "d", 0.5), ev("v1", "d", 1, "product_view", product_id="p9"),
              ev("s3", "d", 1.5)]
    removed = {**FREQUENT, "name": "gone"}
    records, _ = run(env, events, config, [("viewed_product", definition_text(VIEWED)),
                                           ("gone", definition_text(removed)), ("gone", None),
                                           ("broken", "kind: segment\nname: broken\ncondition: {}\n")])

    got = changes(records)
    assert ("frequent_searcher", "enter", at(1.5), "event") in got
    assert ("frequent_searcher", "exit", at(10), "time") in got
    (enter,) = [c for c in got if c[0] == "viewed_product:p9" and c[1] == "enter"]
    # published after the events (held back): evaluated against the retained history when the person's
    # next timer reconciles them; the view started after the person's clock, and still exits exactly
    assert enter[3] == "definition_added" and at(1.5) < enter[2] < at(6)
    assert ("viewed_product:p9", "exit", at(6), "time") in got
    assert not [c for c in got if c[0].startswith(("gone", "broken"))]


def test_too_late_event_goes_to_events_late(env):
    config = SegmentsJobConfig(SEGMENTS, definitions=(FREQUENT,))
    events = [ev("e1", "e", 0), ev("f1", "f", 10, "page_view"), ev("e2", "e", 2), ev("e3", "e", 9.5)]
    records, _ = run(env, events, config)

    late = [v for t, _, v in records if t == "events.late"]
    assert [(v["event_id"], v["reason"], v["person_id"], v["watermark"]) for v in late] == [
        ("e2", "too_late", person("e"), at(10))]
    assert changes(records) == []


def test_person_merge_moves_tags_to_the_survivor_through_the_handoff_loop(env):
    config = SegmentsJobConfig(SEGMENTS, definitions=(VIEWED,))
    absorbed, survivor = "p-absorbed", "p-survivor"
    events = [{**ev("a1", "a", 0, "product_view", product_id="x"), "person_id": absorbed},
              {**ev("b1", "b", 1, "page_view"), "person_id": survivor},
              {**ev("a2", "a", 1.5, "page_view"), "person_id": absorbed}]
    merges = [{"kind": "merge", "absorbed": absorbed, "survivor": survivor, "ts": at(2), "idempotency_key": "m-1"},
              {"kind": "refused", "absorbed": survivor, "survivor": absorbed, "ts": at(2), "idempotency_key": "r-1"},
              {"kind": "review", "persons": [absorbed, survivor], "ts": at(2), "idempotency_key": "v-1"}]

    # Pass 1: at the merge's time the absorbed person's tag exits (cause merge) and its history is handed off
    records, ops = run(env, events, config, merges=merges)
    assert changes(records, absorbed) == [("viewed_product:x", "enter", at(0), "event"),
                                          ("viewed_product:x", "exit", at(2), "merge")]
    assert changes(records, survivor) == []  # refused and review records move nothing
    handoffs = [v for t, k, v in records if t == "segments.handoff"]
    assert [(h["type"], h["from"], h["to"], h["id"]) for h in handoffs] == [("state", absorbed, survivor, "m-1")]
    assert [row[1] for row in handoffs[0]["state"]["events"]] == ["a1", "a2"]
    view_ops = [o for o in ops if o["kind"] == "redis" and o["key"] == redis_key(absorbed, SEGMENTS)]
    assert view_ops[-1]["op"] == "delete" and not view_ops[-1]["erase"]

    # Pass 2: the loop brings the handoff (twice: at-least-once) to the survivor, which holds the tag as if
    # it had viewed the product itself
    for handoff in handoffs:
        handoff["ts"] = at(2)
    records, ops = run(env, [events[1]], config, handoffs=handoffs + handoffs)
    assert changes(records, survivor) == [("viewed_product:x", "enter", at(0), "merge"),
                                          ("viewed_product:x", "exit", at(5), "time")]
    (enter,) = [v for t, k, v in records if t == "segment-changes" and v["op"] == "enter"]
    assert enter["reason"]["from"] == absorbed and enter["correction"]


def test_the_state_cache_changes_no_record_and_no_store_op(env):
    """Persons interleaved with timers, a late event, a duplicate and an invalid input give the same records
    and store ops with every state read from Flink (cache off) and with a cache of one person (evicted at
    every switch of person), so a cache hit returns exactly what Flink state holds."""
    events = [ev("a1", "a", 0), ev("b1", "b", 0.5, "product_view", product_id="p1"), ev("a2", "a", 1),
              ev("c1", "c", 1.2), ev("a3", "a", 2), ev("b2", "b", 2.5, "product_view", product_id="p2"),
              {"event_id": "bad", "ts_ms": at(2.6), "ts": at(2.6), "ids": {"user_id": "a"}},  # no type
              ev("a3", "a", 2), ev("c2", "c", 3), ev("b3", "b", 12, "page_view"), ev("a4", "a", 5),
              ev("c3", "c", 13)]
    runs = []
    for size in (0, 1):
        records, ops = run(env, events, SegmentsJobConfig(SEGMENTS, definitions=(FREQUENT, VIEWED),
                                                          state_cache_size=size))
        runs.append((sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records),
                     sorted(orjson.dumps(o, option=orjson.OPT_SORT_KEYS) for o in ops)))
    assert runs[0] == runs[1]
    records, _ = run(env, events, SegmentsJobConfig(SEGMENTS, definitions=(FREQUENT, VIEWED)))
    assert sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records) == runs[0][0]
    assert ("frequent_searcher", "exit", at(10), "time") in changes(records, person("a"))
    assert [v["event_id"] for t, _, v in records if t == "events.late"] == ["a4"]
