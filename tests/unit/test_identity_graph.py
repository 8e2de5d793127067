"""Identity graph: linking, survivor rule, merge protection, blocked values, refusals, state round trip."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.identity.config import IdentifierType, load_identity_config
from udfs.identity.engine import ComponentState, IdentityService
from udfs.identity.graph import IdentityGraph, Link, key_type, partition, person_id_for
from udfs.identity.pii import PiiHasher
from udfs.identity.records import KafkaRecord
from udfs.stores.ops import RedisSet

HASHER = PiiHasher(b"unit-test-key-0123456789")
T0 = 1_700_000_000_000


def service(**limits: int) -> IdentityService:
    svc = IdentityService.from_files(HASHER)
    if limits:
        types = {n: replace(t, max_per_person=limits.get(n, t.max_per_person))
                 for n, t in svc.config.identifier_types.items()}
        svc.settings = replace(svc.settings, config=replace(svc.config, identifier_types=types))
    return svc


def ev(eid: str, ts: int, etype: str = "page_view", **ids: str) -> dict[str, Any]:
    return {"event_id": eid, "type": etype, "ts": T0 + ts, "ids": ids}


def merges(outputs: list[Any], kind: str) -> list[dict[str, Any]]:
    return [o.value for o in outputs
            if isinstance(o, KafkaRecord) and o.topic == "person-merges" and o.value["kind"] == kind]


def test_new_identifier_gets_a_person_at_once_and_the_event_is_annotated() -> None:
    svc = service()
    out = svc.process(ev("e1", 0, anonymous_id="a1"))
    pid = svc.lookup("anonymous_id:a1")
    assert pid == person_id_for("anonymous_id:a1")
    identified = [o for o in out if isinstance(o, KafkaRecord) and o.topic == "events.identified"]
    assert identified[0].value["person_id"] == pid and identified[0].key == pid
    assert RedisSet("tagstream:alias:anonymous_id:a1", pid, version=T0 * 1000) in out  # event time, packed


def test_two_identifiers_link_and_every_lookup_resolves_to_the_survivor() -> None:
    svc = service()
    svc.process(ev("e1", 0, anonymous_id="a1"))
    svc.process(ev("e2", 5, user_id="u1"))
    out = svc.process(ev("e3", 10, "login", anonymous_id="a1", user_id="u1"))
    survivor = person_id_for("anonymous_id:a1")  # seen first
    assert svc.lookup("anonymous_id:a1") == svc.lookup("user_id:u1") == survivor
    merge = merges(out, "merge")
    assert len(merge) == 1
    assert merge[0]["absorbed"] == person_id_for("user_id:u1") and merge[0]["survivor"] == survivor
    assert merge[0]["reason"] == "identifier_link" and merge[0]["event_id"] == "e3"
    assert merge[0]["evidence"]["identifier_types"] == ["anonymous_id", "user_id"]
    aliases = [o for o in out if isinstance(o, RedisSet)]
    assert ("tagstream:alias:user_id:u1", survivor) in [(o.key, o.value) for o in aliases]
    assert {o.version for o in aliases} == {(T0 + 10) * 1000}  # the united component's next version
    # a redelivery changes nothing
    again = svc.process(ev("e3", 10, "login", anonymous_id="a1", user_id="u1"))
    assert not merges(again, "merge")


def test_survivor_rule_first_time_then_type_priority_then_value() -> None:
    svc = service()
    svc.process(ev("e1", 0, device_id="d1", user_id="u1"))  # same first time: user_id has priority
    assert svc.lookup("device_id:d1") == person_id_for("user_id:u1")
    svc2 = service()
    svc2.process(ev("e1", 0, anonymous_id="b"))
    svc2.process(ev("e2", 0, anonymous_id="a"))
    svc2.process(ev("e3", 5, anonymous_id="b", device_id="z"))  # device: stronger type, but seen later
    svc2.process(ev("e4", 5, anonymous_id="a", device_id="z"))
    assert svc2.lookup("device_id:z") == person_id_for("anonymous_id:a")  # same time and type: lowest key


def test_merge_record_idempotency_key_is_stable_across_runs() -> None:
    keys = []
    for _ in range(2):
        svc = service()
        svc.process(ev("e1", 0, anonymous_id="a1"))
        svc.process(ev("e2", 1, user_id="u1"))
        keys.append(merges(svc.process(ev("e3", 2, anonymous_id="a1", user_id="u1")), "merge"))
    assert keys[0] == keys[1] and keys[0][0]["idempotency_key"]


def test_late_event_rekeys_the_person_to_the_earlier_identifier() -> None:
    svc = service()
    svc.process(ev("e2", 100, anonymous_id="a1", user_id="u1"))
    assert svc.lookup("user_id:u1") == person_id_for("user_id:u1")  # same time: user_id wins
    out = svc.process(ev("e1", 0, anonymous_id="a1"))  # a1 was in fact seen earlier
    assert svc.lookup("user_id:u1") == person_id_for("anonymous_id:a1")
    merge = merges(out, "merge")
    assert merge and merge[0]["reason"] == "survivor_rekey"
    assert merge[0]["absorbed"] == person_id_for("user_id:u1")


def test_limit_refuses_the_weaker_link_and_records_it() -> None:
    svc = service()
    svc.process(ev("e1", 0, "login", user_id="u1", device_id="shared"))
    out = svc.process(ev("e2", 10, "login", user_id="u2", device_id="shared"))
    assert svc.lookup("device_id:shared") == svc.lookup("user_id:u1")
    assert svc.lookup("user_id:u2") != svc.lookup("user_id:u1")
    refused = merges(out, "refused")
    assert len(refused) == 1
    assert refused[0]["reason"] == "limit:user_id" and refused[0]["anchor_type"] == "user_id"
    assert refused[0]["refused_type"] == "device_id" and refused[0]["event_id"] == "e2"
    assert refused[0]["survivor"] == svc.lookup("user_id:u2")
    annotated = [o.value for o in out if isinstance(o, KafkaRecord) and o.topic == "events.identified"]
    assert annotated[0]["person_id"] == svc.lookup("user_id:u2")  # the event belongs to its anchor


def test_device_limit() -> None:
    svc = service(device_id=2)
    for i in range(4):
        svc.process(ev(f"e{i}", i, user_id="u1", device_id=f"d{i}"))
    pid = svc.lookup("user_id:u1")
    assert [svc.lookup(f"device_id:d{i}") == pid for i in range(4)] == [True, True, False, False]
    assert {r.reason for r in svc.refusals()} == {"limit:device_id"}


@pytest.mark.parametrize("value", ["unknown", "NULL", " undefined ", "0", "0000", "test@example.com",
                                   "someone@example.org", "ffffffff", "{{user_id}}"])
def test_blocked_values_never_link(value: str) -> None:
    svc = service()
    id_type = "email" if "@" in value else "anonymous_id"
    svc.process(ev("e1", 0, user_id="u1", **{id_type: value}))
    svc.process(ev("e2", 1, user_id="u2", **{id_type: value}))
    assert svc.lookup("user_id:u1") != svc.lookup("user_id:u2")
    assert all(key_type(k) == "user_id" for k in svc.mapping())


def test_events_with_only_blocked_identifiers_resolve_to_nobody() -> None:
    svc = service()
    assert svc.process(ev("e1", 0, anonymous_id="undefined")) == []
    assert svc.mapping() == {}


def test_user_defined_identifier_types_use_the_default_rule() -> None:
    svc = service()
    svc.process(ev("e1", 0, crm_id="C-1", user_id="u1"))
    assert svc.lookup("crm_id:C-1") == svc.lookup("user_id:u1")
    assert svc.config.type_rule("crm_id") == IdentifierType("crm_id", 60, 10, "trim", False)


def test_component_limit_refuses_growth() -> None:
    svc = service()
    svc.settings = replace(svc.settings, config=replace(svc.config, max_component_identifiers=3))
    svc.process(ev("e1", 0, user_id="u1", device_id="d1", anonymous_id="a1"))
    svc.process(ev("e2", 1, user_id="u2", anonymous_id="a2"))
    out = svc.process(ev("e3", 2, device_id="d1", anonymous_id="a2"))
    refused = merges(out, "refused")
    assert refused and refused[0]["reason"] == "component_limit"
    assert svc.lookup("anonymous_id:a2") == svc.lookup("user_id:u2")


def test_component_state_round_trips_and_merges_as_a_crdt() -> None:
    svc = service()
    for i, ids in enumerate([{"anonymous_id": "a1", "user_id": "u1"}, {"user_id": "u1", "device_id": "d1"}]):
        svc.process({"event_id": f"e{i}", "type": "identify", "ts": T0 + i, "ids": ids,
                     "traits": {"plan": "gold", "interests": ["x"]}})
    (state,) = svc.components.values()
    again = ComponentState.from_bytes(state.to_bytes())
    assert again.to_dict() == state.to_dict()
    assert again.graph.partition(svc.config) == state.graph.partition(svc.config)
    merged = ComponentState.from_bytes(state.to_bytes())
    merged.merge(again, svc.settings.policies)  # idempotent
    assert merged.to_dict() == state.to_dict()


# --- properties ---------------------------------------------------------------------------------

ID_POOL = [("user_id", f"u{i}") for i in range(3)] + [("device_id", f"d{i}") for i in range(4)] + \
          [("anonymous_id", f"a{i}") for i in range(5)] + [("email", f"p{i}@shop.io") for i in range(2)]

link_events = st.lists(
    st.tuples(st.integers(0, 20), st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=4)),
    min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link_events)
def test_limits_are_never_exceeded_and_refusals_explain_every_unlinked_pair(spec: list[Any]) -> None:
    svc = service(user_id=1, device_id=2, email=1, anonymous_id=3)
    for i, (ts, ids) in enumerate(spec):
        svc.process({"event_id": f"e{i}", "type": "login", "ts": T0 + ts, "ids": dict(ids)})
    for comp in svc.components.values():  # the incremental partition equals a full replay
        replayed = partition(comp.graph.first_seen, comp.graph.links, svc.config)
        assert comp.graph.partition(svc.config) == replayed
    persons: dict[str, list[str]] = {}
    for key, pid in svc.mapping().items():
        persons.setdefault(pid, []).append(key)
    for keys in persons.values():
        counts = Counter(key_type(k) for k in keys)
        for id_type, n in counts.items():
            assert n <= (svc.config.type_rule(id_type).max_per_person or n)
    # every pair of identifiers an event named together is either in one person or covered by a refusal (of
    # that event, or of the earliest event naming the same identifiers: the link log keeps one per tuple)
    named = {f"e{i}": frozenset(k for t, v in dict(ids).items() if (k := svc.key_of(t, v)))
             for i, (_, ids) in enumerate(spec)}
    refused = {named[r.event_id] for r in svc.refusals()}
    for keys in named.values():
        if len({svc.lookup(k) for k in keys}) > 1:
            assert keys in refused


def test_partition_is_a_function_of_the_link_set() -> None:
    config = load_identity_config()
    links = [Link(f"e{i}", i % 3, ("user_id:u1", f"device_id:d{i}")) for i in range(8)]
    graph_a, graph_b = IdentityGraph(), IdentityGraph()
    for link in links:
        graph_a.add_link(link)
    for link in reversed(links):
        graph_b.add_link(link)
    assert graph_a.partition(config) == graph_b.partition(config)
    assert partition(graph_a.first_seen, graph_a.links, config).refusals  # 8 devices > limit 5
