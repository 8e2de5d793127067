"""The segments backfill in a MiniCluster at p1/p2: a Parquet file written with pyarrow -> the bounded run ->
its store ops applied to the version-guarded reference stores (`udfs.stores.guard.ReferenceStore`, the model
the real Redis and DynamoDB writers are tested against) -> the warmed view as of the run's end. Then the edge:
a live event after the backfill, and the backfill applied again (or late), never regress what the live job
wrote."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.runtime import TIMED_VALUE_TYPE, table_env, with_event_time
from jobs.segments import SegmentsJobConfig, build_segments
from jobs.segments_backfill import backfill_config, build_backfill, read_history
from tests.pipeline.test_segments_pipeline import FREQUENT, SEGMENTS, VIEWED, at, collect, ev, person
from udfs.segments.history import AFTER_AS_OF
from udfs.segments.records import redis_key
from udfs.segments.views import view_from_hash, view_from_items
from udfs.stores.guard import ReferenceStore
from udfs.stores.ops import op_from_dict
from udfs.stores.redis_store import encode_value

pytestmark = pytest.mark.pipeline

AS_OF = at(10)
DEFINITIONS = [VIEWED, FREQUENT]


def history_file(path: Path) -> Path:
    """A Parquet file of raw events in no particular order, with one malformed row and one after AS_OF."""
    events = [ev("a-v2", "a", 8, "product_view", product_id="p2"), ev("a-s1", "a", 2), ev("a-v1", "a", 0,
              "product_view", product_id="p1"), ev("a-s3", "a", 4), ev("a-s2", "a", 3),
              ev("b-v3", "b", 9, "product_view", product_id="p3"), ev("b-late", "b", 11, "product_view",
                                                                      product_id="p4")]
    values = [orjson.dumps(e) for e in events] + [b"{not json"]
    pq.write_table(pa.table({"value": pa.array(values, pa.binary()),
                             "note": pa.array(["history"] * len(values))}), path)
    return path


def apply(store: ReferenceStore, ops: list[dict], now_ms: int) -> None:
    store.apply([op_from_dict(op) for op in ops], now_ms)


def text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def view(store: ReferenceStore, who: str, now_ms: int) -> dict:
    """The lookup's view of a person from the reference Redis (as `RedisStore` would return the hash)."""
    data = store.live(("redis", redis_key(who, SEGMENTS))) or {}
    return view_from_hash(who, {k: text(encode_value(v)) for k, v in data.items()}, now_ms)


def items(store: ReferenceStore, who: str, now_ms: int) -> dict:
    """The lookup's view of a person from the reference DynamoDB items."""
    found = [e.data for ident, e in store.entries.items()
             if ident[0] == "dynamodb" and e.data is not None and e.data.get("person_id") == who]
    return view_from_items(who, found, now_ms)


def backfill(env, tmp_path: Path) -> list[dict]:
    history = read_history([history_file(tmp_path / "history.parquet")], AS_OF)
    assert (history.read, len(history.events)) == (8, 6)
    assert history.skipped == {AFTER_AS_OF: 1, "invalid_json": 1}
    records, ops = collect(build_backfill(env, history, backfill_config(DEFINITIONS, AS_OF, SEGMENTS)))
    assert records and all(t == "segment-changes" for t, *_ in records)  # counted, never published
    assert max(v["ts_ms"] for *_, v in records) <= AS_OF  # event time stopped at the run's end
    return ops


def live_run(env, events: list[dict], until_ms: int) -> list[dict]:
    """The live job's pipeline on a few events, its event time at `until_ms` (still running then)."""
    rows = env.from_collection([(orjson.dumps(e), e["ts_ms"]) for e in events], type_info=TIMED_VALUE_TYPE)
    config = SegmentsJobConfig(SEGMENTS, definitions=tuple(DEFINITIONS), idle_timeout_ms=None,
                               advance_until_ms=until_ms)
    return collect(build_segments(with_event_time(table_env(env), rows, 0), None, config))[1]


def test_backfill_warms_the_view_and_items_as_of_its_end(env, tmp_path):
    ops = backfill(env, tmp_path)
    store = ReferenceStore()
    apply(store, ops, AS_OF)

    a, b = view(store, person("a"), AS_OF), view(store, person("b"), AS_OF)
    assert set(a["tags"]) == {"viewed_product:p2", "frequent_searcher"}  # p1 exited at 5 min, before the end
    assert (a["tags"]["frequent_searcher"]["entered_at"], a["tags"]["frequent_searcher"]["expires_at"]) == \
        (at(4), at(12))
    assert a["tags"]["viewed_product:p2"]["expires_at"] == at(13) and a["consent"] is True
    assert set(b["tags"]) == {"viewed_product:p3"}  # not p4: after the end
    assert items(store, person("a"), AS_OF)["tags"] == a["tags"]
    assert items(store, person("b"), AS_OF)["tags"] == b["tags"]
    # readers drop what expires after the end, as the job would have
    assert set(view(store, person("a"), at(12.5))["tags"]) == {"viewed_product:p2"}


def test_a_live_event_after_the_backfill_is_not_regressed_by_it(env, tmp_path):
    backfilled = backfill(env, tmp_path)
    live = live_run(env, [ev("a-live", "a", 11, "product_view", product_id="p1")], at(11.5))
    now = at(11.5)

    # backfill, then the live job: the live tag joins the warmed ones
    store = ReferenceStore()
    apply(store, backfilled, AS_OF)
    apply(store, live, now)
    warmed_then_live = view(store, person("a"), now)
    assert set(warmed_then_live["tags"]) == {"viewed_product:p1", "viewed_product:p2", "frequent_searcher"}
    assert warmed_then_live["tags"]["viewed_product:p1"]["entered_at"] == at(11)
    # the backfill again (a re-run, or its writer replaying after a restart): its exit of p1 at 5 min and
    # every other older write are skipped, in Redis and DynamoDB
    assert apply(store, backfilled, now) is None and view(store, person("a"), now) == warmed_then_live
    assert items(store, person("a"), now)["tags"]["viewed_product:p1"]["entered_at"] == at(11)

    # the live job first, the backfill late: the person's view stays the live one (one key, newer version);
    # the backfill still adds the memberships the live job never wrote to DynamoDB
    late = ReferenceStore()
    apply(late, live, now)
    apply(late, backfilled, now)
    assert set(view(late, person("a"), now)["tags"]) == {"viewed_product:p1"}
    assert set(items(late, person("a"), now)["tags"]) == {"viewed_product:p1", "viewed_product:p2",
                                                          "frequent_searcher"}
    assert set(view(late, person("b"), now)["tags"]) == {"viewed_product:p3"}
