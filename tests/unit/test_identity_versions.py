"""Store-write versions follow event time and never regress; the link log is compacted and stays bounded."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.identity.config import load_identity_config
from udfs.identity.engine import IdentityService
from udfs.identity.graph import IdentityGraph, Link, canonical_keys, partition
from udfs.identity.pii import PiiHasher
from udfs.identity.records import VERSION_SLOTS_PER_MS, next_version
from udfs.stores.guard import ReferenceStore
from udfs.stores.ops import StoreOp

HASHER = PiiHasher(b"unit-test-key-0123456789")
T0 = 1_700_000_000_000
NOW = T0 + 3_600_000
ID_POOL = [("user_id", f"u{i}") for i in range(3)] + [("device_id", f"d{i}") for i in range(3)] + \
          [("anonymous_id", f"a{i}") for i in range(4)]

events_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=3),
              st.sampled_from(["page_view", "login", "identify"])),
    min_size=1, max_size=30)


def as_events(spec: list[Any]) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i:02d}", "type": etype, "ts": T0 + ts * 1000, "ids": dict(ids),
             **({"traits": {"plan": f"p{ts % 3}"}} if etype == "identify" else {})}
            for i, (ts, ids, etype) in enumerate(spec)]


def store_ops(outputs: list[Any]) -> list[StoreOp]:
    return [o for o in outputs if hasattr(o, "ident")]


def test_next_version_packs_event_time_and_never_decreases() -> None:
    assert next_version(0, T0) == T0 * VERSION_SLOTS_PER_MS
    assert next_version(T0 * VERSION_SLOTS_PER_MS, T0) == T0 * VERSION_SLOTS_PER_MS + 1  # same ms: counter
    assert next_version(T0 * VERSION_SLOTS_PER_MS + 5, T0 - 1000) == T0 * VERSION_SLOTS_PER_MS + 6  # late event
    assert next_version(0, 9_000_000_000_000) < 2**53  # exact in JSON, Lua and DynamoDB until 2255


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_strategy)
def test_versions_per_store_key_strictly_increase_and_follow_event_time(spec: list[Any]) -> None:
    svc = IdentityService.from_files(HASHER)
    last: dict[tuple[str, ...], int] = {}
    for event in as_events(spec):
        for op in store_ops(svc.process(event)):
            assert op.version >= event["ts"] * VERSION_SLOTS_PER_MS, "a version below its event's time"
            assert op.version > last.get(op.ident, -1) or op.version == last[op.ident], (
                f"{op.ident}: version {op.version} after {last[op.ident]}")
            last[op.ident] = op.version


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_strategy, st.integers(0, 30))
def test_a_restore_replaying_events_from_a_checkpoint_changes_no_store(spec: list[Any], cut: int) -> None:
    events = as_events(spec)
    cut = min(cut, len(events))
    svc = IdentityService.from_files(HASHER)
    store = ReferenceStore()
    for event in events[:cut]:
        store.apply(store_ops(svc.process(event)), NOW)
    checkpoint = copy.deepcopy(svc)
    first = [op for event in events[cut:] for op in store_ops(svc.process(event))]
    store.apply(first, NOW)
    held = dict(store.entries)
    replayed = [op for event in events[cut:] for op in store_ops(checkpoint.process(event))]
    assert replayed == first, "the replay after a restore computed other versions or contents"
    result = store.apply(replayed, NOW)
    assert store.entries == held and result.applied == 0


def test_an_identifier_seen_again_after_its_erasure_is_written_at_once() -> None:
    # With per-component counters the new component's first versions were below the erasure's tombstone
    # and skipped until it expired; event-time versions are above it.
    svc = IdentityService.from_files(HASHER)
    store = ReferenceStore()
    store.apply(store_ops(svc.process({"event_id": "e1", "type": "login", "ts": T0,
                                       "ids": {"user_id": "u1", "device_id": "d1"}})), NOW)
    store.apply(store_ops(svc.process({"event_id": "e2", "type": "erase", "ts": T0 + 1000,
                                       "ids": {"user_id": "u1"}})), NOW)
    alias = ("redis", "tagstream:alias:user_id:u1")
    assert store.live(alias) is None
    result = store.apply(store_ops(svc.process({"event_id": "e3", "type": "page_view", "ts": T0 + 2000,
                                                "ids": {"user_id": "u1"}})), NOW)
    assert result.applied and store.live(alias) == {"v": svc.lookup("user_id:u1")}


links_strategy = st.lists(
    st.tuples(st.integers(0, 10), st.lists(st.sampled_from(ID_POOL), min_size=2, max_size=3, unique=True)),
    min_size=1, max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(links_strategy, st.randoms(use_true_random=False))
def test_compacted_link_log_derives_the_same_persons_in_any_order(spec: list[Any], rnd: Any) -> None:
    config = load_identity_config()
    config = replace(config, identifier_types={n: replace(t, max_per_person=2 if n == "anonymous_id" else 1)
                                               for n, t in config.identifier_types.items()})
    links = [Link(f"e{i:02d}", ts, canonical_keys([f"{t}:{v}" for t, v in ids], config))
             for i, (ts, ids) in enumerate(spec)]
    rnd.shuffle(links)
    graph = IdentityGraph()
    for link in links:
        graph.add_link(link, config)
    full_seen: dict[str, tuple[int, str]] = {}
    for link in links:
        for key in link.keys:
            full_seen[key] = min(full_seen.get(key, (link.ts_ms, link.event_id)), (link.ts_ms, link.event_id))
    full = partition(full_seen, {lk.event_id: lk for lk in links}, config)
    compacted = graph.partition(config)
    assert graph.first_seen == full_seen
    assert (compacted.person_of, compacted.members, compacted.founding) == \
        (full.person_of, full.members, full.founding)
    assert set(compacted.refusals) <= set(full.refusals)
    assert {(r.anchor, r.refused) for r in compacted.refusals} == {(r.anchor, r.refused) for r in full.refusals}
    assert len(graph.links) == len({lk.keys for lk in links}), "one link per distinct identifier tuple"
    kept = {lk.keys: lk for lk in graph.links.values()}
    for link in links:
        assert (kept[link.keys].ts_ms, kept[link.keys].event_id) <= (link.ts_ms, link.event_id)
    assert graph.partition(config) == partition(graph.first_seen, graph.links, config)  # cache = replay
    assert IdentityGraph.from_dict(graph.to_dict()).links == graph.links


def test_repeated_logins_keep_one_link_and_a_bounded_state() -> None:
    svc = IdentityService.from_files(HASHER)
    for i in range(500):
        svc.process({"event_id": f"login-{i}", "type": "login", "ts": T0 + i * 60_000,
                     "ids": {"user_id": "u1", "device_id": "d1"}})
    (component,) = svc.components.values()
    assert list(component.graph.links) == ["login-0"]
    assert len(component.to_bytes()) < 1000
    # an old state with repeated links is compacted when it is loaded
    data = component.graph.to_dict()
    data["l"] = data["l"] + [["login-x", T0 + 1, ["user_id:u1", "device_id:d1"], {}]]
    assert list(IdentityGraph.from_dict(data).links) == ["login-0"]
