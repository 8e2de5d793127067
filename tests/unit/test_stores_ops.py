"""Store ops and the version guard (udfs/stores): construction, keys, batching, the decision rule and the
permutation property the Redis Lua script and the DynamoDB conditions implement (tier 1, no I/O)."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store_ops_strategies import (
    DYNAMO_ALL,
    DYNAMO_KINDS,
    REDIS_ALL,
    REDIS_KINDS,
    Scenario,
    Spec,
    build,
    ops_of,
    replay_of,
    scenarios,
)
from udfs.stores.guard import ApplyResult, Outcome, ReferenceStore, decide
from udfs.stores.keys import build_key, key_part
from udfs.stores.ops import (
    DynamoDelete,
    DynamoErasePartition,
    DynamoPut,
    RedisDelete,
    RedisHash,
    RedisHashUpdate,
    RedisSet,
    chunks,
    expires_at_s,
    group_by_ident,
    op_from_dict,
    ops_from_json,
    ops_to_json,
    split_by_store,
)

NOW = 1_800_000_000_000
T = "tagstream_segments"
K = {"person_id": "p-1", "tag": "t"}


# --- construction ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [-1, True, 1.5, "3", 2**53, None])
def test_versions_must_be_exact_non_negative_ints(version: object) -> None:
    with pytest.raises(ValueError, match="version"):
        RedisSet("k", "v", version)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="version"):
        DynamoDelete(T, K, version)  # type: ignore[arg-type]


def test_invalid_ops_are_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        RedisDelete("", 1)
    with pytest.raises(ValueError, match="expires_at_ms"):
        RedisSet("k", "v", 1, -5)
    with pytest.raises(ValueError, match="hash field names"):
        RedisHash("k", {"_v": "x"}, 1)  # reserved for the store
    with pytest.raises(ValueError, match="hash field names"):
        RedisHashUpdate("k", {}, ["_t"], 1)
    with pytest.raises(ValueError, match="hash field values"):
        RedisHash("k", {"n": 1}, 1)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="DynamoDB key"):
        DynamoPut(T, {"person_id": ""}, {}, 1)
    with pytest.raises(ValueError, match="disagree"):
        DynamoPut(T, K, {"version": 2}, 1)
    with pytest.raises(ValueError, match="disagree"):
        DynamoPut(T, K, {"person_id": "p-2"}, 1)
    with pytest.raises(ValueError, match="disagree"):
        DynamoPut(T, K, {"expires_at": 10}, 1, expires_at_ms=12_000)
    with pytest.raises(ValueError, match="no expires_at_ms"):
        DynamoPut(T, K, {"expires_at": 10}, 1)


def test_expires_at_seconds_round_up() -> None:
    assert [expires_at_s(ms) for ms in (0, 1, 999, 1000, 1001)] == [0, 1, 1, 1, 2]
    DynamoPut(T, K, {**K, "version": 3, "expires_at": 13}, 3, expires_at_ms=12_001)  # agreeing copies are fine


def test_ops_name_their_kind_and_target() -> None:
    assert (RedisHash.kind, RedisHash.op, DynamoDelete.kind, DynamoDelete.op) == (
        "redis", "replace_hash", "dynamodb", "delete")
    assert RedisSet("k", 1, 1).ident == RedisDelete("k", 2).ident == ("redis", "k")
    assert DynamoPut(T, K, {}, 1).ident == DynamoDelete(T, dict(reversed(K.items())), 2).ident


op_strategy = st.one_of(
    st.builds(RedisSet, st.text(min_size=1), st.one_of(st.text(), st.dictionaries(st.text(), st.integers())),
              st.integers(0, 2**53 - 1), st.none() | st.integers(0, 2**45)),
    st.builds(RedisHash, st.text(min_size=1), st.dictionaries(st.from_regex(r"[a-z:]{1,8}", fullmatch=True),
                                                              st.text()), st.integers(0, 99)),
    st.builds(RedisHashUpdate, st.text(min_size=1), st.dictionaries(st.sampled_from("abc"), st.integers()),
              st.lists(st.sampled_from("xy")), st.integers(0, 99), st.none() | st.integers(0, 2**45)),
    st.builds(RedisDelete, st.text(min_size=1), st.integers(0, 99), st.booleans()),
    st.builds(DynamoPut, st.just(T), st.just(K), st.dictionaries(st.sampled_from("abc"), st.floats(0, 9)),
              st.integers(0, 99), st.none() | st.integers(0, 2**45)),
    st.builds(DynamoDelete, st.just(T), st.just(K), st.integers(0, 99), st.booleans()),
    st.builds(DynamoErasePartition, st.just(T), st.text(min_size=1), st.integers(0, 99)),
)


@given(op_strategy)
def test_json_form_round_trips(op: object) -> None:
    assert op_from_dict(op.as_dict()) == op  # type: ignore[attr-defined]


def _json_encodable(op: object) -> bool:
    try:
        orjson.dumps(op.as_dict())  # type: ignore[attr-defined]
    except TypeError:  # integers beyond 64 bits: no op of a job carries one
        return False
    return True


json_ops = op_strategy.filter(_json_encodable)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(json_ops, max_size=8))
def test_a_batch_round_trips_as_one_json_array_and_splits_by_store_in_order(ops: list) -> None:
    text = ops_to_json(ops)
    assert text.startswith("[")
    assert ops_from_json(text) == ops
    redis, dynamo = split_by_store(ops)
    assert redis == [op for op in ops if op.kind == "redis"]
    assert dynamo == [op for op in ops if op.kind == "dynamodb"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(json_ops)
def test_a_single_op_object_still_parses_as_a_batch_of_one(op: object) -> None:
    assert ops_from_json(orjson.dumps(op.as_dict())) == [op]  # type: ignore[attr-defined]


def test_plain_dict_shapes_of_the_segments_core_parse() -> None:
    """The shapes udfs/segments/records.py emits: redis `set` without kind, put without key."""
    view = op_from_dict({"op": "set", "key": "tagstream:segments:p-1", "value": {"tags": {}}, "version": 7})
    assert view == RedisSet("tagstream:segments:p-1", {"tags": {}}, 7)
    item = {"person_id": "p-1", "tag": "t", "segment": "s", "version": 5, "expires_at": 13, "expires_at_ms": 12_001}
    assert op_from_dict({"op": "put", "table": T, "item": item}) == DynamoPut(T, K, item, 5, 12_001)
    assert op_from_dict({"op": "delete", "table": T, "key": K, "version": 6}) == DynamoDelete(T, K, 6)
    legacy = {"person_id": "p-1", "tag": "t", "version": 5, "expires_at": 13}
    assert op_from_dict({"op": "put", "table": T, "item": legacy}).expires_at_ms == 13_000  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        op_from_dict({"op": "put", "table": "nope", "item": legacy})
    update = {"op": "hupdate", "key": "tagstream:segments:p", "set": {"tag:a": {"x": 1}}, "del": ["tag:b"],
              "version": 9}
    assert op_from_dict(update) == RedisHashUpdate("tagstream:segments:p", {"tag:a": {"x": 1}}, ["tag:b"], 9)
    assert op_from_dict({"op": "del", "key": "k", "version": 3}) == RedisDelete("k", 3, erase=True)


# --- keys -------------------------------------------------------------------------------------------------

def test_safe_key_parts_are_kept_and_others_digested() -> None:
    assert key_part("p-0123abcdef") == "p-0123abcdef"
    assert key_part("550e8400-e29b-41d4-a716-446655440000") == "550e8400-e29b-41d4-a716-446655440000"
    assert build_key("tagstream:alias:{id_type}:{id_value}", id_type="user_id", id_value="u1") == (
        "tagstream:alias:user_id:u1")
    for raw in ("a:b", "x*", "{tag}", "", "ä", "a b", "a" * 129, "~abc"):
        part = key_part(raw)
        assert re.fullmatch(r"~[0-9a-f]{32}", part), raw


@given(st.text(), st.text())
def test_key_parts_are_safe_and_injective(a: str, b: str) -> None:
    part = key_part(a)
    assert re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}|~[0-9a-f]{32}", part)
    assert (part == key_part(b)) == (a == b)


# --- batching ---------------------------------------------------------------------------------------------

@given(st.lists(st.integers(), max_size=50), st.integers(1, 12))
def test_chunks_cover_everything_in_order(items: list[int], size: int) -> None:
    parts = list(chunks(items, size))
    assert [x for p in parts for x in p] == items
    assert all(1 <= len(p) <= size for p in parts)
    with pytest.raises(ValueError):
        list(chunks(items, 0))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 9)), max_size=30))
def test_groups_keep_per_key_order(pairs: list[tuple[str, int]]) -> None:
    ops = [RedisSet(k, i, v) for i, (k, v) in enumerate(pairs)]
    groups = group_by_ident(ops)
    assert sorted(op.value for g in groups for op in g) == list(range(len(ops)))
    for group in groups:
        assert len({op.key for op in group}) == 1
        assert [op.value for op in group] == sorted(op.value for op in group)


# --- the guard --------------------------------------------------------------------------------------------

def test_decide() -> None:
    put, later = RedisSet("k", "v", 5), RedisSet("k", "v", 5, expires_at_ms=NOW)
    assert decide(None, put, NOW) is Outcome.APPLIED
    assert decide(4, put, NOW) is Outcome.APPLIED
    assert decide(5, put, NOW) is Outcome.SKIPPED  # a replay
    assert decide(6, put, NOW) is Outcome.SKIPPED  # older
    assert decide(None, later, NOW) is Outcome.EXPIRED  # expiry is exclusive: gone at expires_at_ms
    assert decide(None, later, NOW - 1) is Outcome.APPLIED
    assert decide(5, DynamoDelete(T, K, 5), NOW) is Outcome.SKIPPED
    assert decide(4, DynamoDelete(T, K, 5), NOW) is Outcome.DELETED
    assert decide(None, RedisDelete("k", 5), NOW) is Outcome.DELETED  # a tombstone even for an absent key
    assert decide(9, RedisDelete("k", 5, erase=True), NOW) is Outcome.DELETED  # erasure: unconditional


def test_apply_result_counts() -> None:
    result = ApplyResult.of([Outcome.APPLIED, Outcome.SKIPPED, Outcome.SKIPPED, Outcome.EXPIRED])
    assert result == ApplyResult(applied=1, skipped=2, deleted=0, expired=1)
    assert (result + ApplyResult(deleted=3)).total == 7


@settings(max_examples=300)
@given(st.one_of(scenarios(kinds=REDIS_KINDS), scenarios(kinds=DYNAMO_KINDS)))
def test_any_permutation_equals_version_order_and_replays_change_nothing(scenario: Scenario) -> None:
    in_order, permuted = ops_of(scenario, "ns", NOW)
    expected, actual = ReferenceStore(), ReferenceStore()
    expected.apply(in_order, NOW)
    actual.apply(permuted, NOW)
    assert actual.entries == expected.entries
    assert actual.apply(permuted, NOW) == ApplyResult(skipped=len(permuted))
    assert actual.entries == expected.entries


def test_erasure_beats_newer_data_and_older_replays_stay_deleted() -> None:
    store = ReferenceStore()
    store.apply([RedisSet("k", "a", 9)], NOW)
    assert store.apply([RedisDelete("k", 5, erase=True)], NOW) == ApplyResult(deleted=1)
    assert store.live(("redis", "k")) is None
    assert store.apply([RedisSet("k", "a", 4), RedisSet("k", "a", 5)], NOW) == ApplyResult(skipped=2)
    assert store.apply([RedisSet("k", "b", 6)], NOW) == ApplyResult(applied=1)  # a new life of the key
    assert store.live(("redis", "k")) == {"v": "b"}


@settings(max_examples=300)
@given(st.one_of(scenarios(kinds=REDIS_ALL), scenarios(kinds=DYNAMO_ALL)), st.data())
def test_replays_after_in_order_application_change_nothing(scenario: Scenario, data: st.DataObject) -> None:
    """With every op kind (partial updates and erasures too): replaying any suffix in order (a restart from
    a checkpoint) keeps the state; without erasures, so does replaying any ops in any order."""
    in_order, _ = ops_of(scenario, "ns", NOW)
    expected, actual = ReferenceStore(), ReferenceStore()
    expected.apply(in_order, NOW)
    actual.apply(in_order, NOW)
    actual.apply(replay_of(scenario, in_order), NOW)
    assert actual.entries == expected.entries
    plain = [op for op in in_order if not getattr(op, "erase", False)]
    if plain:
        again = data.draw(st.lists(st.sampled_from(plain), max_size=10))
        fresh = ReferenceStore()
        fresh.apply(plain, NOW)
        before = dict(fresh.entries)
        assert fresh.apply(again, NOW) == ApplyResult(skipped=len(again))
        assert fresh.entries == before


def test_partial_hash_updates_merge_fields_and_revive_tombstones() -> None:
    store = ReferenceStore()
    store.apply([RedisHashUpdate("k", {"a": 1, "b": 2}, [], 1), RedisHashUpdate("k", {"c": 3}, ["a"], 2)], NOW)
    assert store.live(("redis", "k")) == {"b": 2, "c": 3}
    store.apply([RedisDelete("k", 3), RedisHashUpdate("k", {"d": 4}, [], 4)], NOW)
    assert store.live(("redis", "k")) == {"d": 4}  # a tombstone holds no fields to merge with


def test_a_partly_applied_batch_can_be_reapplied_whole() -> None:
    batch = [RedisSet("k", "a", 3), RedisDelete("k", 4, erase=True), RedisSet("k", "b", 5), RedisSet("j", 1, 1)]
    once, retried = ReferenceStore(), ReferenceStore()
    once.apply(batch, NOW)
    retried.apply(batch[:3], NOW)  # the connection died after three ops
    retried.apply(batch, NOW)
    assert retried.entries == once.entries


def test_build_makes_the_ops_a_scenario_names() -> None:
    spec = Spec(0, 3, "put", 1, "past")
    (op,), _ = ops_of(Scenario((spec,), (0,)), "ns", NOW)
    assert op == build(spec, "ns", NOW)
    assert isinstance(op, DynamoPut) and op.expires_at_ms == NOW - 60_000
    assert op.key == {"person_id": "ns", "tag": "t0"}


def test_partition_erasure_erases_every_item_of_the_partition_and_only_those() -> None:
    table = "tagstream_sessions"
    puts = [DynamoPut(table, {"person_id": p, "session_key": k}, {}, 3) for p, k in (("p-1", "a"), ("p-1", "b"),
                                                                                      ("p-2", "a"))]
    store = ReferenceStore()
    store.apply(puts, NOW)
    erase = DynamoErasePartition(table, "p-1", 4)
    assert erase.erase and store.apply([erase], NOW) == ApplyResult(deleted=1)
    assert [store.live(p.ident) is None for p in puts] == [True, True, False]
    assert store.apply([puts[0]], NOW) == ApplyResult(skipped=1)  # a replayed older write stays erased
    assert store.apply([DynamoPut(table, dict(puts[0].key), {}, 5)], NOW) == ApplyResult(applied=1)  # a new life
    with pytest.raises(ValueError):
        DynamoErasePartition(table, "", 1)
