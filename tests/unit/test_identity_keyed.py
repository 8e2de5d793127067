"""The keyed stages (directory / component / blocks) converge to the single-process reference.

A tiny in-memory "cluster" delivers messages one at a time in a random order (any interleaving, even
between messages to the same key — stronger than Kafka's per-partition order) and stores component state
serialized between steps, as RocksDB would.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.identity import route_key
from udfs.identity.engine import IdentityService, Settings
from udfs.identity.gauges import StageGauges, pending_work
from udfs.identity.pii import PiiHasher
from udfs.identity.records import KafkaRecord, Output
from udfs.identity.routing import BLOCKS, COMPONENT, DIRECTORY, Message, Slot, ingest, step

HASHER = PiiHasher(b"unit-test-key-0123456789")
T0 = 1_700_000_000_000


def reference() -> IdentityService:
    svc = IdentityService.from_files(HASHER)
    types = {n: replace(t, max_per_person={"user_id": 1, "device_id": 2}.get(n, t.max_per_person))
             for n, t in svc.config.identifier_types.items()}
    matching = replace(svc.config.matching, upper_threshold=10.0, lower_threshold=5.0, min_fields=2)
    config = replace(svc.config, identifier_types=types, matching=matching)
    svc.settings = replace(svc.settings, config=config)
    return svc


class Cluster:
    """Runs the keyed stages with a message queue delivered in the order `rnd` picks."""

    def __init__(self, settings: Settings, rnd: random.Random | None = None):
        self.settings, self.rnd = settings, rnd
        self.states: dict[tuple[str, str], Any] = {}
        self.queue: list[Message] = []
        self.outputs: list[Output] = []
        self.steps = 0
        self.gauges = StageGauges()  # what the wrapper's component-stage gauges would read
        self.pending_seen = 0
        self.same_key_at_once = False
        self.calls = 0
        self.inputs: list[Message] = []  # messages of input events (through the network, not the loop)
        self.written: list[Message] = []  # messages to the loop topic

    def send(self, event: dict[str, Any]) -> None:
        messages = ingest(event, self.settings)
        self.queue += messages
        self.inputs += messages

    def run(self, limit: int | None = None) -> None:
        """Delivers queued messages in the order `rnd` picks until none is left (or after `limit` calls)."""
        stop = None if limit is None else self.calls + limit
        while self.queue and (stop is None or self.calls < stop):
            i = self.rnd.randrange(len(self.queue)) if self.rnd else 0
            self.call(self.queue.pop(i))

    def call(self, first: Message) -> None:
        """Delivers a message; with `same_key_at_once`, its messages to the same Flink key are handled in the
        same call, as the wrapper does, and only the others go to the loop (`written`)."""
        here = route_key(first.stage, first.key)
        local = deque([first])
        self.calls += 1
        while local:
            msg = Message.from_bytes(local.popleft().to_bytes())
            where = (msg.stage, msg.key)
            state = self.states.get(where)
            if state is not None:  # what the wrapper keeps is bytes
                state = type(state).from_dict(orjson.loads(orjson.dumps(state.to_dict())))
            before = pending_work(state)
            self.states[where], messages, outputs = step(state, msg, self.settings)
            if msg.stage == COMPONENT:
                self.gauges.observe(self.states[where], before, len(orjson.dumps(self.states[where].to_dict())))
                self.pending_seen = max(self.pending_seen, self.gauges.pending_observations)
            for out in messages:
                if self.same_key_at_once and route_key(out.stage, out.key) == here:
                    local.append(out)
                else:
                    self.queue.append(out)
                    self.written.append(out)
            self.outputs += outputs
            self.steps += 1
            assert self.steps < 100_000, "the protocol does not terminate"

    def live(self) -> dict[str, Slot]:
        return {k: s for (stage, k), s in self.states.items() if stage == COMPONENT and s.forward is None}

    def view(self) -> IdentityService:
        svc = IdentityService(self.settings.config, self.settings.policies, self.settings.hasher)
        svc.components = {k: s.state for k, s in self.live().items() if s.state is not None}
        svc.directory = {key: k for k, state in svc.components.items() for key in state.graph.first_seen}
        return svc


def resolve(cluster: Cluster, component: str) -> str:
    seen = 0
    while (slot := cluster.states[(COMPONENT, component)]).forward is not None:
        component, seen = slot.forward, seen + 1
        assert seen < 50
    return component


ID_POOL = [("user_id", "u1"), ("user_id", "u2"), ("email", "ann@shop.io"), ("phone", "+49 171 2345678"),
           ("device_id", "d1"), ("device_id", "d2"), ("device_id", "d3"), ("anonymous_id", "a1"),
           ("anonymous_id", "a2"), ("anonymous_id", "a3"), ("anonymous_id", "a4")]


@st.composite
def events(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 12))):
        ids = dict(draw(st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=3)))
        event: dict[str, Any] = {"event_id": f"k{i:02d}", "type": "login", "ts": T0 + draw(st.integers(0, 5)),
                                 "source": draw(st.sampled_from(["crm", "web"])), "ids": ids}
        if draw(st.booleans()):
            event["type"] = "identify"
            event["traits"] = {"first_name": draw(st.sampled_from(["Anna", "Ana"])), "last_name": "Weber",
                               "dob": "1985-03-04", "plan": draw(st.sampled_from(["free", "gold"]))}
        out.append(event)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.randoms(use_true_random=False))
def test_keyed_stages_in_any_delivery_order_converge_to_the_reference(spec: list[Any], rnd: Any) -> None:
    svc = reference()
    for e in spec:
        svc.process(e)
    cluster = Cluster(svc.settings, rnd)
    for e in spec:
        cluster.send(e)
    cluster.run()
    view = cluster.view()
    assert view.mapping() == svc.mapping()
    assert view.profiles() == svc.profiles()
    assert view.refusals() == svc.refusals()
    assert not any(s.pending for s in cluster.live().values())  # every observation was applied
    # the pending-work gauges return to zero at quiescence; the size gauges saw the largest component
    assert (cluster.gauges.pending_observations, cluster.gauges.pending_claims) == (0, 0)
    live = [s.state for s in cluster.live().values() if s.state is not None]
    assert cluster.gauges.component_size_max >= max((len(c.graph.first_seen) for c in live), default=0)
    assert cluster.gauges.component_links_max >= max((len(c.graph.links) for c in live), default=0)
    if any(len(e["ids"]) > 1 for e in spec):
        assert cluster.pending_seen > 0  # linking events of new identifiers wait for their claims
    for comp, slot in cluster.live().items():  # every identifier's directory entry leads to its component
        for key in slot.state.graph.first_seen if slot.state else ():
            entry = cluster.states[(DIRECTORY, key)]
            assert entry.component is not None and resolve(cluster, entry.component) == comp


def test_keyed_erasure_leaves_nothing_in_any_stage() -> None:
    svc = reference()
    cluster = Cluster(svc.settings)
    spec = [
        {"event_id": "e1", "type": "identify", "ts": T0,
         "ids": {"anonymous_id": "a1", "email": "ann@shop.io"},
         "traits": {"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-02", "plan": "gold"}},
        {"event_id": "e2", "type": "identify", "ts": T0 + 1, "ids": {"anonymous_id": "a2"},
         "traits": {"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-02"}},
        {"event_id": "e3", "type": "login", "ts": T0 + 2, "ids": {"anonymous_id": "a9", "user_id": "u7"}},
    ]
    for e in spec:
        cluster.send(e)
    cluster.run()
    person, other = cluster.view().lookup("anonymous_id:a2"), cluster.view().lookup("user_id:u7")
    assert person == cluster.view().lookup("anonymous_id:a1")  # linked by the probabilistic match
    cluster.send({"event_id": "x1", "type": "erase", "ts": T0 + 10,
                  "ids": {"email": "ANN@shop.io", "user_id": "u7"}})
    cluster.run()
    audits = [o.value for o in cluster.outputs if isinstance(o, KafkaRecord) and o.topic == "erasures"]
    assert sorted(a["person_id"] for a in audits) == sorted([person, other])
    assert cluster.view().mapping() == {}
    for (stage, _), state in cluster.states.items():
        if stage == DIRECTORY:
            assert state.component is None and state.tombstone == T0 + 10
        elif stage == BLOCKS:
            assert not state.records
    # a replay of an older event stays erased
    cluster.send(spec[0])
    cluster.run()
    assert cluster.view().mapping() == {}


def test_keyed_component_limit() -> None:
    svc = reference()
    limited = replace(svc.settings, config=replace(svc.config, max_component_identifiers=6))

    def login(eid: str, ts: int, device: str, anon: str) -> dict[str, Any]:
        return {"event_id": eid, "type": "login", "ts": T0 + ts,
                "ids": {"device_id": device, "anonymous_id": anon}}

    hub = [login(f"h{i}", i, "d1", f"a{i}") for i in range(10)]
    hub2 = [login(f"g{i}", i, "d2", f"b{i}") for i in range(4)]
    bridge = login("x", 50, "d1", "b1")
    for seed in [None, *range(8)]:  # sequential delivery, then random interleavings
        cluster = Cluster(limited, random.Random(seed) if seed is not None else None)
        for event in [*hub, *hub2, bridge]:
            cluster.send(event)
        cluster.run()
        assert len(cluster.view().mapping()) == 16  # every identifier has a person, refused or not
        assert not any(s.pending for s in cluster.live().values())
        refused = [o.value for o in cluster.outputs if isinstance(o, KafkaRecord)
                   and o.topic == "person-merges" and o.value["kind"] == "refused"]
        assert refused and {r["reason"] for r in refused} == {"component_limit"}
        if seed is None:  # decided one message at a time, the limit is exact
            assert max(len(s.state.graph.first_seen) for s in cluster.live().values() if s.state) <= 6


def test_the_deepest_event_the_contract_accepts_fits_in_every_message_and_output() -> None:
    from udfs.contract import MAX_NESTING_DEPTH, nesting_depth

    nested: Any = 1
    for _ in range(MAX_NESTING_DEPTH - 2):
        nested = [nested]
    event = {"event_id": "deep", "type": "page_view", "ts": T0, "ids": {"anonymous_id": "a1"}, "props": {"x": nested}}
    assert nesting_depth(event) == MAX_NESTING_DEPTH
    cluster = Cluster(reference().settings)
    cluster.send(event)  # Cluster serializes every message (to_bytes) as the loop topic does
    cluster.run()
    for out in cluster.outputs:  # and every output as the sinks do
        orjson.dumps(out.as_dict())
    assert any(isinstance(o, KafkaRecord) and o.value and o.value.get("event_id") == "deep" for o in cluster.outputs)



Snapshot = tuple[dict[tuple[str, str], Any], list[Message], int]


def checkpoint(cluster: Cluster) -> Snapshot:
    """Stage states (serialized), the loop messages not consumed yet and the loop topic's length.

    The barrier follows the input events read so far: their calls complete before the snapshot.
    """
    for msg in [m for m in cluster.queue if any(m is i for i in cluster.inputs)]:
        cluster.queue.remove(msg)
        cluster.call(msg)
    states = {k: type(s).from_dict(orjson.loads(orjson.dumps(s.to_dict()))) for k, s in cluster.states.items()}
    return states, list(cluster.queue), len(cluster.written)


def fail_over(cluster: Cluster, snapshot: Snapshot, replay: list[dict[str, Any]]) -> None:
    """A TaskManager failure with at-least-once sinks: states go back to the checkpoint, the loop source
    re-reads what it had not consumed at the checkpoint plus every message the failed attempt wrote after
    it, and the input since the checkpoint is replayed (its messages are written again)."""
    states, unconsumed, written = snapshot
    cluster.states = states
    cluster.queue = [*unconsumed, *cluster.written[written:]]
    for event in replay:
        cluster.send(event)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.randoms(use_true_random=False), st.data())
def test_a_failover_with_redelivered_loop_messages_converges_to_the_reference(
        spec: list[Any], rnd: Any, data: st.DataObject) -> None:
    svc = reference()
    for e in spec:
        svc.process(e)
    cut = data.draw(st.integers(0, len(spec)), label="events before the checkpoint")
    cluster = Cluster(svc.settings, rnd)
    cluster.same_key_at_once = True
    for e in spec[:cut]:
        cluster.send(e)
    cluster.run(limit=data.draw(st.integers(0, 60), label="steps before the checkpoint"))
    snapshot = checkpoint(cluster)
    for e in spec[cut:]:
        cluster.send(e)
    cluster.run(limit=data.draw(st.integers(0, 200), label="steps before the failure"))
    fail_over(cluster, snapshot, spec[cut:])
    cluster.run()
    view = cluster.view()
    assert view.mapping() == svc.mapping()
    assert view.profiles() == svc.profiles()
    assert view.refusals() == svc.refusals()
    assert not any(s.pending for s in cluster.live().values())
