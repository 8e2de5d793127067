"""The store layer against real Redis and DynamoDB Local (tier 3): the version guard's permutation
property, TTL alignment, replays, erasure tombstones, large batches, and a Redis outage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.store_ops_strategies import (
    DYNAMO_ALL,
    DYNAMO_KINDS,
    REDIS_ALL,
    REDIS_KINDS,
    TABLE,
    Scenario,
    ops_of,
    replay_of,
    scenarios,
)
from tools.stack import Stack
from udfs.stores.dynamo_codec import from_attributes
from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
from udfs.stores.guard import ApplyResult, ReferenceStore
from udfs.stores.ops import (
    DynamoDelete,
    DynamoErasePartition,
    DynamoPut,
    RedisDelete,
    RedisHash,
    RedisHashUpdate,
    RedisSet,
    StoreOp,
    expires_at_s,
)
from udfs.stores.redis_store import RedisConfig, RedisStore, encode_value
from udfs.stores.retry import RetryPolicy, StoreUnavailable

pytestmark = pytest.mark.e2e
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def rstore(stack: Stack) -> Iterator[RedisStore]:
    store = RedisStore(RedisConfig(url=f"redis://127.0.0.1:{stack.ports.redis}/0", key_prefix="e2e-stores:",
                                   retry=RetryPolicy(max_retries=3, base_backoff_ms=20, max_backoff_ms=100)))
    yield store
    store.close()


@pytest.fixture(scope="module")
def dstore(stack: Stack) -> Iterator[DynamoStore]:
    store = DynamoStore(DynamoConfig(endpoint_url=f"http://127.0.0.1:{stack.ports.dynamodb}", region="us-east-1"))
    yield store
    store.close()


def text(value: Any) -> str:
    encoded = encode_value(value)
    return encoded.decode() if isinstance(encoded, bytes) else encoded


def check_redis(store: RedisStore, model: ReferenceStore) -> None:
    """Every key the model holds reads back the same from Redis: version, and fields or nothing."""
    for (_, key), entry in model.entries.items():
        assert store.stored_version(key) == entry.version, key
        expected = None if entry.data is None else {f: text(v) for f, v in entry.data.items()}
        assert store.get_hash(key) == expected, key
        if expected is not None and "v" in expected:
            assert store.get(key) == expected["v"]


def raw_item(store: DynamoStore, table: str, key: dict[str, str]) -> dict[str, Any] | None:
    raw = store.client.get_item(TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True)
    return from_attributes(raw["Item"]) if "Item" in raw else None


def check_dynamo(store: DynamoStore, model: ReferenceStore, ops: list[StoreOp], now: int) -> None:
    """Every item the model holds reads back the same from DynamoDB: version, tombstone, live item."""
    targets = {op.ident: op for op in ops if isinstance(op, DynamoPut | DynamoDelete)}
    for ident, entry in model.entries.items():
        op = targets[ident]
        stored = raw_item(store, op.table, dict(op.key))
        assert stored is not None and stored["version"] == entry.version, (op, stored)
        assert stored.get("_tombstone", False) is (entry.data is None)
        assert store.get_live(op.table, op.key, now) == entry.data, op


# --- the permutation property on the real stores ---------------------------------------------------------------

@EXAMPLES
@given(scenarios(slots=3, kinds=REDIS_KINDS))
def test_redis_any_permutation_equals_version_order(rstore: RedisStore, scenario: Scenario) -> None:
    now = now_ms()
    in_order, permuted = ops_of(scenario, f"perm:{uuid.uuid4().hex}", now)
    model = ReferenceStore()
    model.apply(in_order, now)
    result = rstore.apply(permuted)  # type: ignore[arg-type]
    assert result.total == len(permuted)
    check_redis(rstore, model)
    assert rstore.apply(permuted) == ApplyResult(skipped=len(permuted))  # type: ignore[arg-type]
    check_redis(rstore, model)


@EXAMPLES
@given(scenarios(slots=3, kinds=DYNAMO_KINDS))
def test_dynamodb_any_permutation_equals_version_order(dstore: DynamoStore, scenario: Scenario) -> None:
    now = now_ms()
    in_order, permuted = ops_of(scenario, f"p-perm-{uuid.uuid4().hex}", now)
    model = ReferenceStore()
    model.apply(in_order, now)
    result = dstore.apply(permuted)  # type: ignore[arg-type]
    assert result.total == len(permuted)
    check_dynamo(dstore, model, permuted, now)
    assert dstore.apply(permuted) == ApplyResult(skipped=len(permuted))  # type: ignore[arg-type]
    check_dynamo(dstore, model, permuted, now)


@EXAMPLES
@given(scenarios(slots=3, kinds=REDIS_ALL))
def test_redis_restart_replays_keep_the_state(rstore: RedisStore, scenario: Scenario) -> None:
    """Every op kind, partial updates and erasures included: ops in version order, then a suffix again."""
    now = now_ms()
    in_order, _ = ops_of(scenario, f"replay:{uuid.uuid4().hex}", now)
    model = ReferenceStore()
    model.apply(in_order, now)
    rstore.apply(in_order)  # type: ignore[arg-type]
    rstore.apply(replay_of(scenario, in_order))  # type: ignore[arg-type]
    check_redis(rstore, model)


@EXAMPLES
@given(scenarios(slots=3, kinds=DYNAMO_ALL))
def test_dynamodb_restart_replays_keep_the_state(dstore: DynamoStore, scenario: Scenario) -> None:
    now = now_ms()
    in_order, _ = ops_of(scenario, f"p-replay-{uuid.uuid4().hex}", now)
    model = ReferenceStore()
    model.apply(in_order, now)
    dstore.apply(in_order)  # type: ignore[arg-type]
    dstore.apply(replay_of(scenario, in_order))  # type: ignore[arg-type]
    check_dynamo(dstore, model, in_order, now)


def test_redis_partial_hash_updates(rstore: RedisStore) -> None:
    key, now = f"upd:{uuid.uuid4().hex}", now_ms()
    result = rstore.apply([RedisHashUpdate(key, {"tag:a": {"x": 1}, "consent": "true"}, [], 10, now + 60_000),
                           RedisHashUpdate(key, {"tag:b": {"x": 2}}, ["tag:a"], 11),
                           RedisHashUpdate(key, {"tag:z": 0}, [], 10)])  # a replay: skipped
    assert result == ApplyResult(applied=2, skipped=1)
    assert rstore.get_hash(key) == {"tag:b": '{"x":2}', "consent": "true"}
    assert 50_000 < rstore.client.pttl("e2e-stores:" + key) <= 60_000  # None kept the key's expiry
    rstore.apply([RedisDelete(key, 12, erase=True), RedisHashUpdate(key, {"tag:c": "1"}, [], 13)])
    assert rstore.get_hash(key) == {"tag:c": "1"} and rstore.client.pttl("e2e-stores:" + key) == -1


# --- TTLs ---------------------------------------------------------------------------------------------------

def test_redis_key_ttl_is_aligned_to_expires_at(rstore: RedisStore) -> None:
    ns, now = uuid.uuid4().hex, now_ms()
    rstore.apply([RedisSet(f"ttl:{ns}:a", "p-1", 1, now + 60_000),
                  RedisHash(f"ttl:{ns}:b", {"f": "1"}, 1, now + 3_600_000),
                  RedisSet(f"ttl:{ns}:c", "p-1", 1), RedisDelete(f"ttl:{ns}:d", 1)])
    pttl = {s: rstore.client.pttl(f"e2e-stores:ttl:{ns}:{s}") for s in "abcd"}
    elapsed = now_ms() - now
    assert 60_000 - elapsed - 50 <= pttl["a"] <= 60_000
    assert 3_600_000 - elapsed - 50 <= pttl["b"] <= 3_600_000
    assert pttl["c"] == -1  # no expiry
    assert 0 < pttl["d"] <= rstore.config.tombstone_ttl_ms  # tombstones are short-lived
    rstore.apply([RedisSet(f"ttl:{ns}:d", "p-2", 2)])  # a newer write over a tombstone keeps no tombstone TTL
    assert rstore.client.pttl(f"e2e-stores:ttl:{ns}:d") == -1 and rstore.get(f"ttl:{ns}:d") == "p-2"


def test_redis_key_vanishes_at_expires_at(rstore: RedisStore) -> None:
    key, now = f"ttl:{uuid.uuid4().hex}", now_ms()
    assert rstore.apply([RedisSet(key, "v", 1, now + 300)]) == ApplyResult(applied=1)
    assert rstore.get(key) == "v"
    time.sleep(0.4)
    assert rstore.get(key) is None and rstore.client.exists("e2e-stores:" + key) == 0
    assert rstore.apply([RedisSet(key, "v", 1, now - 1)]) == ApplyResult(expired=1)  # already past: tombstone
    assert rstore.get(key) is None and rstore.stored_version(key) == 1


def test_dynamodb_expires_at_and_get_live(dstore: DynamoStore) -> None:
    key, now = {"person_id": f"p-ttl-{uuid.uuid4().hex}", "tag": "t"}, now_ms()
    expires = now + 1_200
    dstore.apply([DynamoPut(TABLE, key, {"x": 1.5}, 3, expires)])
    stored = raw_item(dstore, TABLE, key)
    assert stored is not None and stored["expires_at"] == expires_at_s(expires)
    assert dstore.get_live(TABLE, key, now_ms()) == {**key, "x": 1.5, "version": 3,
                                                     "expires_at": expires_at_s(expires)}
    time.sleep((expires_at_s(expires) * 1000 - now_ms()) / 1000 + 0.05)
    assert dstore.get_live(TABLE, key, now_ms()) is None  # past expires_at: invisible ...
    assert raw_item(dstore, TABLE, key) is not None  # ... though DynamoDB Local keeps it
    assert dstore.get_live(TABLE, key, now) is not None  # (it was live before)
    sessions = [DynamoPut("tagstream_sessions", {"person_id": key["person_id"], "session_key": f"{i:013d}#s"},
                          {"n": i}, 1, now + (-1 if i == 1 else 60_000)) for i in range(3)]
    assert dstore.apply(sessions) == ApplyResult(applied=2, expired=1)
    assert [i["n"] for i in dstore.query_live("tagstream_sessions", key["person_id"], now_ms())] == [0, 2]


# --- replays and deletions ------------------------------------------------------------------------------------

def mixed_batch(ns: str, now: int) -> list[StoreOp]:
    return [RedisSet(f"{ns}:a", {"n": 1.5}, 5, now + 60_000), RedisSet(f"{ns}:a", {"n": 0}, 4),
            RedisHash(f"{ns}:b", {"f": "x"}, 2), RedisDelete(f"{ns}:b", 3), RedisHash(f"{ns}:b", {"f": "y"}, 1),
            RedisDelete(f"{ns}:c", 1, erase=True)]


def test_replaying_a_batch_changes_nothing(rstore: RedisStore, dstore: DynamoStore) -> None:
    ns, now = uuid.uuid4().hex, now_ms()
    redis_ops = mixed_batch(ns, now)
    assert rstore.apply(redis_ops) == ApplyResult(applied=2, skipped=2, deleted=2)  # type: ignore[arg-type]
    before = {k: rstore.client.hgetall(f"e2e-stores:{ns}:{k}") for k in "abc"}
    assert rstore.apply(redis_ops).skipped == 5  # type: ignore[arg-type]  # the erasure re-runs (unconditional)
    assert {k: rstore.client.hgetall(f"e2e-stores:{ns}:{k}") for k in "abc"} == before
    key = {"person_id": f"p-{ns}"}
    dynamo_ops = [DynamoPut("tagstream_profiles", key, {"a": 1}, 2), DynamoPut("tagstream_profiles", key, {"a": 0}, 1)]
    assert dstore.apply(dynamo_ops) == ApplyResult(applied=1, skipped=1)
    assert dstore.apply(dynamo_ops) == ApplyResult(skipped=2)
    assert dstore.get_live("tagstream_profiles", key, now)["a"] == 1  # type: ignore[index]


@pytest.mark.parametrize("erase", [False, True])
def test_delete_then_replayed_older_write_stays_deleted(rstore: RedisStore, dstore: DynamoStore,
                                                        erase: bool) -> None:
    ns, now = uuid.uuid4().hex, now_ms()
    rkey, dkey = f"del:{ns}", {"person_id": f"p-del-{ns}"}
    newer = 9 if erase else 5  # an erasure removes even data newer than itself
    rstore.apply([RedisSet(rkey, "p-1", newer)])
    dstore.apply([DynamoPut("tagstream_profiles", dkey, {"a": 1}, newer)])
    assert rstore.apply([RedisDelete(rkey, 6, erase)]) == ApplyResult(deleted=1)
    assert dstore.apply([DynamoDelete("tagstream_profiles", dkey, 6, erase)]) == ApplyResult(deleted=1)
    assert rstore.get(rkey) is None and dstore.get_live("tagstream_profiles", dkey, now) is None
    replay_r = [RedisSet(rkey, "p-1", v) for v in (5, 6)]
    replay_d = [DynamoPut("tagstream_profiles", dkey, {"a": 1}, v) for v in (5, 6)]
    assert rstore.apply(replay_r) == dstore.apply(replay_d) == ApplyResult(skipped=2)
    assert rstore.get(rkey) is None and dstore.get_live("tagstream_profiles", dkey, now) is None
    assert rstore.stored_version(rkey) == 6 and rstore.get_hash(rkey) is None
    rstore.apply([RedisSet(rkey, "p-2", 7)])  # a genuinely newer write is a new life of the key
    dstore.apply([DynamoPut("tagstream_profiles", dkey, {"a": 2}, 7)])
    assert rstore.get(rkey) == "p-2" and dstore.get_live("tagstream_profiles", dkey, now)["a"] == 2  # type: ignore[index]


# --- the jobs' store writer (jobs.operators.ApplyStoreOps) ---------------------------------------------------

class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class _Context:
    """The part of a Flink RuntimeContext the store writer uses: its metric group."""

    def __init__(self) -> None:
        self.counters: dict[str, _Counter] = {}

    def get_metrics_group(self) -> _Context:
        return self

    def add_group(self, name: str) -> _Context:
        return self

    def counter(self, name: str) -> _Counter:
        return self.counters.setdefault(name, _Counter())


def test_store_writer_applies_single_ops_and_arrays_with_one_apply_per_store(stack: Stack, dstore: DynamoStore,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.operators import ApplyStoreOps
    from jobs.runtime import StoreOptions
    from udfs.stores.ops import ops_to_json

    ns, now = uuid.uuid4().hex, now_ms()
    writer, context = ApplyStoreOps(StoreOptions(redis_url=f"redis://127.0.0.1:{stack.ports.redis}/0",
                                                 dynamodb_endpoint=f"http://127.0.0.1:{stack.ports.dynamodb}",
                                                 dynamodb_region="us-east-1")), _Context()
    writer.open(context)
    calls: list[tuple[str, int]] = []
    for name in ("redis", "dynamo"):
        store = getattr(writer, name)
        monkeypatch.setattr(store, "apply", lambda ops, _apply=store.apply, _name=name:
                            calls.append((_name, len(ops))) or _apply(ops))
    key = {"person_id": f"p-writer-{ns}", "tag": "t"}
    try:
        assert list(writer.process_element(orjson.dumps(RedisSet(f"writer:{ns}:single", "x", 1).as_dict()), None)) == []
        batch = [RedisSet(f"writer:{ns}:a", {"n": 1}, 2), DynamoPut(TABLE, key, {"w": 1}, 2),
                 RedisHashUpdate(f"writer:{ns}:b", {"f": "y"}, [], 3), RedisSet(f"writer:{ns}:a", {"n": 0}, 1),
                 DynamoDelete(TABLE, key, 1)]
        assert list(writer.process_element(ops_to_json(batch), None)) == []
        assert list(writer.process_element("[]", None)) == []
        assert calls == [("redis", 1), ("redis", 3), ("dynamo", 2)]
        counts = {name: c.count for name, c in context.counters.items()}
        assert counts == {"store_applied": 4, "store_skipped": 2, "store_deleted": 0, "store_expired": 0}
        reader = RedisStore(RedisConfig(url=f"redis://127.0.0.1:{stack.ports.redis}/0"))
        assert reader.get(f"writer:{ns}:single") == "x" and reader.get(f"writer:{ns}:a") == '{"n":1}'
        assert reader.get_hash(f"writer:{ns}:b") == {"f": "y"}
        reader.close()
        assert dstore.get_live(TABLE, key, now)["w"] == 1  # type: ignore[index]
    finally:
        writer.close()


# --- volume -----------------------------------------------------------------------------------------------

def test_batches_of_a_thousand_ops(rstore: RedisStore, dstore: DynamoStore) -> None:
    ns, now = uuid.uuid4().hex, now_ms()
    redis_ops = [RedisSet(f"bulk:{ns}:{i}", {"i": i}, 1, now + 60_000) for i in range(1000)]
    assert rstore.apply(redis_ops) == ApplyResult(applied=1000)
    assert rstore.apply(redis_ops) == ApplyResult(skipped=1000)
    assert rstore.get(f"bulk:{ns}:999") == '{"i":999}'
    dynamo_ops = [DynamoPut(TABLE, {"person_id": f"p-bulk-{ns}", "tag": f"t{i:04d}"}, {"w": i / 4}, 1)
                  for i in range(1000)]
    assert dstore.apply(dynamo_ops) == ApplyResult(applied=1000)
    live = dstore.query_live(TABLE, f"p-bulk-{ns}", now)
    assert len(live) == 1000 and live[5]["w"] == 1.25


# --- outage (last: it restarts Redis, which keeps no data) -----------------------------------------------------

def test_redis_outage_raises_after_the_retry_budget_and_recovers(stack: Stack, rstore: RedisStore) -> None:
    key = f"outage:{uuid.uuid4().hex}"
    assert rstore.apply([RedisSet(key, "before", 1)]) == ApplyResult(applied=1)
    stack.stop_service("redis")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="after 3 retries"):
            rstore.apply([RedisSet(key, "during", 2)])
        assert time.monotonic() - started < 10
    finally:
        stack.start_service("redis")
    assert rstore.apply([RedisSet(key, "after", 3)]) == ApplyResult(applied=1)  # reconnects, reloads the script
    assert rstore.get(key) == "after"


def test_dynamodb_partition_erasure_removes_a_whole_history(dstore: DynamoStore) -> None:
    table, now = "tagstream_sessions", now_ms()
    person, other = f"p-erase-{uuid.uuid4().hex}", f"p-keep-{uuid.uuid4().hex}"
    puts = [DynamoPut(table, {"person_id": p, "session_key": f"{i:013d}#s"}, {"n": i}, 2, now + 600_000)
            for p in (person, other) for i in range(3)]
    assert dstore.apply(puts) == ApplyResult(applied=6)
    assert dstore.apply([DynamoErasePartition(table, person, 5)]) == ApplyResult(deleted=1)
    assert dstore.query_live(table, person, now_ms()) == []
    assert len(dstore.query_live(table, other, now_ms())) == 3
    assert dstore.apply([puts[0]]) == ApplyResult(skipped=1)  # a replayed older write stays erased
