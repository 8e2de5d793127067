"""Identity & profiles job: a canonical person id on every event, merged profiles, consent and erasure.

    events.valid ─► ingest-events ─┐                                  ┌─► identity-loop (Kafka, read back)
                                   ├─► key by route_key ─► identity-stages ─► outputs: events.identified,
    identity-loop ─► route-loop ───┘   (directory | component | blocks)        person-merges, profiles, erasures
                                                                           └─► store ops ─► apply-store-ops
                                                                                            (Redis, DynamoDB)

The three keyed stages of `udfs/identity/routing.py` run in one keyed operator (keys: `route_key`); messages
a stage sends to the same Flink key are handled at once, messages to other keys travel through the loopback
topic `identity-loop` (Flink has no Python iteration). docs/identity.md, "Flink topology", explains the design.

Run it in a MiniCluster (`python jobs/identity.py --bootstrap ...`) or on a cluster
(`flink run -py jobs/identity.py -- --bootstrap ...`); `--help` lists every flag. The HMAC key of PII
comes from `TAGSTREAM_PII_KEY` only (client and TaskManagers); the job fails at once without it.

Delivery is exactly-once by default (transactional writes to every topic, the loop included, committed
when a checkpoint completes; checkpoints every second by default): which person an event is annotated with
depends on the order the stages saw their messages, and a restore replays them in another order, so with
at-least-once writes (`--no-exactly-once`: outputs visible at once, not at the next checkpoint) a TaskManager
failure can deliver a replayed event under two person ids (docs/identity.md, "Delivery").

Metrics (operator metric group `tagstream`): `events_in`, `identified`, `links`, `merges`, `splits`,
`refused_merges`, `review_candidates`, `erasures`, `loop_messages`, `local_messages`, `kafka_outputs`,
`store_ops`, the gauges `pending_observations`, `pending_claims`, `component_size_max`, `component_links_max`,
`component_state_bytes_max` (and `store_applied`, `store_skipped`, `store_deleted`, `store_expired` in the
store writer).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from jobs import runtime
from jobs.operators import key_by_first_field, state_ttl, write_store_ops
from udfs.identity.config import (
    IDENTITY_CONFIG_PATH,
    PROFILE_POLICIES_PATH,
    IdentityConfig,
    ProfilePolicies,
    load_identity_config,
    load_profile_policies,
)
from udfs.identity.engine import Settings
from udfs.identity.gauges import StageGauges, pending_work
from udfs.identity.pii import PII_KEY_ENV, PiiHasher, PiiKeyMissing
from udfs.identity.records import DEFAULT_TOPICS, IDENTIFIED, KafkaRecord, topic_name
from udfs.identity.routing import BLOCKS, COMPONENT, DIRECTORY, Block, Entry, Message, Slot, ingest, step
from udfs.state_cache import StateCache
from udfs.stores.ops import ops_to_json

KAFKA_OUTPUTS = OutputTag("kafka-records", runtime.KAFKA_RECORD_TYPE)
STORE_OPS = OutputTag("store-ops", Types.STRING())
# a message with the Flink key of its stage instance (`route_key`), keyed in the JVM (`key_by_first_field`)
ROUTED_TYPE = Types.ROW_NAMED(["key", "message"], [Types.STRING(), Types.STRING()])
ROUTE_SEP = "\x1f"
_DAY_MS = 86_400_000
_STATE_CLASSES = {DIRECTORY: Entry, COMPONENT: Slot, BLOCKS: Block}
# kind of a `person-merges` / `erasures` record -> counter
_KIND_METRICS = {"merge": "merges", "split": "splits", "refused": "refused_merges",
                 "review": "review_candidates", "erasure": "erasures"}


@dataclass(frozen=True)
class IdentityJobConfig:
    """Settings of the identity stages (parsed on the client, shipped with the job graph; no secrets).

    Attributes:
        identity: identifier types, limits, matching, topics, stores (`flink-conf/identity.yaml`).
        policies: profile attribute policies (`flink-conf/profile-policies.yaml`).
        forward_ttl_ms: state TTL of a component's forward pointer (messages in flight must find it).
        state_cache_size: stage instances whose deserialized state each subtask keeps between calls
            (`udfs.state_cache`); 0: read the state on every message.
        state_cache_max_age_ms: a cached state is read from Flink again (which refreshes its TTL) when it
            was last read or written longer ago than this: an idle state expires between its TTL minus
            this and its TTL after its last use.
    """

    identity: IdentityConfig = field(default_factory=load_identity_config)
    policies: ProfilePolicies = field(default_factory=load_profile_policies)
    forward_ttl_ms: int = _DAY_MS
    state_cache_size: int = 5000
    state_cache_max_age_ms: int = 3_600_000

    def stage_ttl_ms(self) -> dict[str, int]:
        """Idle-state TTL per stage: directory entries live as long as tombstones or profiles, components
        and blocks as long as profiles (forward pointers are short-lived: :attr:`forward_ttl_ms`)."""
        profile_ms = max(self.identity.stores.profile_ttl_days, 1) * _DAY_MS
        tombstone_ms = max(self.identity.erase_tombstone_days, 1) * _DAY_MS
        return {DIRECTORY: max(profile_ms, tombstone_ms), COMPONENT: profile_ms, BLOCKS: profile_ms}


@dataclass(frozen=True)
class IdentityStreams:
    """The identity stage's outputs.

    Attributes:
        loop: messages to other keys (JSON strings): produce them to the loopback topic, which feeds the
            `loop` input of :func:`build_identity`.
        kafka: Kafka records as `(topic, key, value)` rows (`runtime.KAFKA_RECORD_TYPE`), keyed by person;
            value None is a tombstone (`profiles` of absorbed or erased persons).
        store_ops: store ops as JSON arrays (`udfs.stores.ops.ops_to_json`: every op of one input element, in
            order), for `jobs.operators.ApplyStoreOps`.
    """

    loop: DataStream
    kafka: DataStream
    store_ops: DataStream


def load_settings(config: IdentityJobConfig) -> Settings:
    """The core's settings, with the PII key from the environment.

    Raises:
        PiiKeyMissing: `TAGSTREAM_PII_KEY` is unset or too short.
    """
    return Settings(config.identity, config.policies, PiiHasher.from_env())


def route_key(stage: str, key: str) -> str:
    """The Flink key of a stage instance.

    A directory entry is keyed by its identifier and a component `c:<identifier>` by the same identifier,
    so that the directory of a component's founding identifier and the component share a Flink key: the
    messages between them (most events: `route` to the directory, `apply` to the component) are handled in
    one call instead of a loopback round trip. Other instances are keyed `stage \\x1f key` (an identifier
    key `type:value` never contains `\\x1f` before its `:`, so the two forms never collide).
    """
    if stage == DIRECTORY:
        return key
    if stage == COMPONENT and key.startswith("c:"):
        return key[2:]
    return f"{stage}{ROUTE_SEP}{key}"


def _text(value) -> str:
    """A message or event as text: given as a string (tests) or as a raw Kafka record (`kafka_raw_source`)."""
    return value if isinstance(value, str) else bytes(value[4]).decode("utf-8")


def _routed(message: Message) -> Row:
    return Row(route_key(message.stage, message.key), message.to_bytes().decode("utf-8"))


class IngestEvents(ProcessFunction):
    """Observes each valid event (stateless) and emits its first messages (to the directory of its anchor)
    as :data:`ROUTED_TYPE` rows. Events are strings or raw Kafka records (decoded here: no extra operator)."""

    def __init__(self, config: IdentityJobConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.settings = load_settings(self.config)
        group = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP)
        self.events_in = group.counter("events_in")
        self.unreadable = group.counter("unreadable_events")

    def process_element(self, value, ctx):
        self.events_in.inc()
        try:
            event = orjson.loads(_text(value))
            # serialized here: an event nested close to orjson's depth limit cannot be wrapped into a message
            messages = [_routed(msg) for msg in ingest(event, self.settings)]
        except (ValueError, KeyError, TypeError):  # events.valid holds contract events; count, never crash
            self.unreadable.inc()
            return
        yield from messages


class RouteLoop(ProcessFunction):
    """Gives each loopback message (a string, or a raw Kafka record) the Flink key of its stage instance."""

    def process_element(self, value, ctx):
        text = _text(value)
        data = orjson.loads(text)
        yield Row(route_key(data["stage"], data["key"]), text)


def _ttl_state(name: str, ttl_ms: int) -> ValueStateDescriptor:
    descriptor = ValueStateDescriptor(name, Types.STRING())
    descriptor.enable_time_to_live(state_ttl(ttl_ms, StateTtlConfig.UpdateType.OnReadAndWrite))
    return descriptor


class IdentityStages(KeyedProcessFunction):
    """One instance per `(stage, key)`: loads the stage state, calls the core's `step`, stores the state.

    State is JSON text in a `ValueState` per stage (a key only ever uses its stage's), with idle TTLs
    (:meth:`IdentityJobConfig.stage_ttl_ms`). Messages to other keys leave on the main output (the loop);
    Kafka records and store ops on the side outputs :data:`KAFKA_OUTPUTS` and :data:`STORE_OPS`.
    """

    def __init__(self, config: IdentityJobConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.settings = load_settings(self.config)
        self.identified_topic = topic_name(self.config.identity, IDENTIFIED)
        ttls = self.config.stage_ttl_ms()
        self.states = {stage: runtime_context.get_state(_ttl_state(stage, ttl)) for stage, ttl in ttls.items()}
        self.forward = runtime_context.get_state(_ttl_state("forward", self.config.forward_ttl_ms))
        group = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP)
        self.counters = {name: group.counter(name) for name in (
            "identified", "links", "loop_messages", "local_messages", "kafka_outputs", "store_ops",
            *_KIND_METRICS.values())}
        self.work = StageGauges()
        self.levels = {name: runtime.Level(group.counter(name)) for name in self.work.values()}
        self.cache: StateCache[tuple[Any, str]] = StateCache(self.config.state_cache_size,
                                                            self.config.state_cache_max_age_ms)

    def _load(self, stage: str, key: str) -> tuple[Any, str | None]:
        """A stage instance's state and its stored JSON text (None: nothing stored), from the state cache
        (the objects last read or written: nothing else writes this key's state) or read from Flink."""
        cached = self.cache.get(f"{stage}{ROUTE_SEP}{key}", _now_ms())
        if cached is not None:
            return cached
        raw = self.states[stage].value()
        if raw is None and stage == COMPONENT:
            raw = self.forward.value()
        state = _STATE_CLASSES[stage].from_dict(orjson.loads(raw)) if raw is not None else None
        if raw is not None:
            self.cache.put(f"{stage}{ROUTE_SEP}{key}", (state, raw), _now_ms())
        return state, raw

    def _store(self, stage: str, key: str, state, loaded, raw: str | None) -> int:
        """Stores a stage instance's state unless its JSON text is `raw` (of the `loaded` state); returns the
        size of its JSON text (0 when cleared)."""
        cache_key = f"{stage}{ROUTE_SEP}{key}"
        data = state.to_dict()
        if data == _STATE_CLASSES[stage]().to_dict():  # nothing left (e.g. after an erasure)
            self.cache.drop(cache_key)
            if raw is not None:
                self.states[stage].clear()
                if stage == COMPONENT:
                    self.forward.clear()
            return 0
        text = orjson.dumps(data).decode("utf-8")
        if text == raw:  # unchanged: a cached object changed in place still equals it, another one is dropped
            if state is not loaded:
                self.cache.drop(cache_key)
            return len(text)
        if stage == COMPONENT and state.forward is not None:  # short-lived pointer, state dropped
            self.states[stage].clear()
            self.forward.update(text)
        else:
            self.states[stage].update(text)
        self.cache.put(cache_key, (state, text), _now_ms())
        return len(text)

    def process_element(self, value, ctx):
        msg = Message.from_bytes(value.encode("utf-8"))
        here = route_key(msg.stage, msg.key)
        queue = deque([msg])
        counts = dict.fromkeys(self.counters, 0)  # counters move once per element: each move crosses to the JVM
        store_ops: list = []
        while queue:  # messages to another stage instance of this Flink key are handled here, in order
            msg = queue.popleft()
            messages, outputs = self._handle(msg, counts)
            for out in messages:
                if route_key(out.stage, out.key) == here:
                    counts["local_messages"] += 1
                    queue.append(out)
                else:
                    counts["loop_messages"] += 1
                    yield out.to_bytes().decode("utf-8")
            for out in outputs:
                if isinstance(out, KafkaRecord):
                    self._count(out, counts)
                    value_json = None if out.value is None else orjson.dumps(out.value).decode("utf-8")
                    yield KAFKA_OUTPUTS, Row(out.topic, out.key, value_json)
                else:
                    store_ops.append(out)
        if store_ops:  # one element (a JSON array, written in order in one round trip per store)
            counts["store_ops"] += len(store_ops)
            yield STORE_OPS, ops_to_json(store_ops)
        for name, count in counts.items():
            if count:
                self.counters[name].inc(count)
        for name, level in self.work.values().items():
            self.levels[name].set(level)

    def _handle(self, msg: Message, counts: dict[str, int]) -> tuple[list[Message], list]:
        """Runs one message through its stage (state loaded and stored); returns its messages and outputs."""
        loaded, raw = self._load(msg.stage, msg.key)
        links_before = _link_count(loaded)
        work_before = pending_work(loaded)
        try:
            state, messages, outputs = step(loaded, msg, self.settings)
        except Exception:
            self.cache.drop(f"{msg.stage}{ROUTE_SEP}{msg.key}")  # the step may have changed the cached state
            raise
        size = self._store(msg.stage, msg.key, state, loaded, raw)
        if msg.stage == COMPONENT:
            self.work.observe(state, work_before, size)
        shipped = len(msg.body["slot"]["state"]["g"]["l"]) if msg.kind == "ship" and msg.body["slot"]["state"] else 0
        counts["links"] += max(_link_count(state) - links_before - shipped, 0)  # shipped links are not new
        return messages, outputs

    def _count(self, record: KafkaRecord, counts: dict[str, int]) -> None:
        counts["kafka_outputs"] += 1
        if record.value is None:
            return
        if record.topic == self.identified_topic:
            counts["identified"] += 1
            return
        metric = _KIND_METRICS.get(record.value.get("kind"))
        if metric:
            counts[metric] += 1


def _now_ms() -> int:
    return int(time.time() * 1000)


def _link_count(state) -> int:
    inner = getattr(state, "state", None)
    return len(inner.graph.links) if inner is not None else 0


def build_identity(events: DataStream, loop: DataStream, config: IdentityJobConfig) -> IdentityStreams:
    """Builds the keyed identity stages on valid events and the loopback messages.

    Args:
        events: valid contract events (`events.valid`) as JSON strings or raw Kafka records
            (`runtime.kafka_raw_source`, decoded by the ingest operator).
        loop: the messages of :attr:`IdentityStreams.loop`, read back (raw records of a Kafka topic in
            production, strings of any feedback in tests).
        config: identity configuration.

    Returns:
        The loop messages, the Kafka records and the store ops.
    """
    first = events.process(IngestEvents(config), output_type=ROUTED_TYPE) \
        .name("ingest-events").uid("identity-ingest-events")
    looped = loop.process(RouteLoop(), output_type=ROUTED_TYPE).name("route-loop").uid("identity-route-loop")
    staged = key_by_first_field(first.union(looped), Types.STRING()) \
        .process(IdentityStages(config), output_type=Types.STRING()) \
        .name("identity-stages").uid("identity-stages")
    return IdentityStreams(loop=staged, kafka=staged.get_side_output(KAFKA_OUTPUTS),
                           store_ops=staged.get_side_output(STORE_OPS))


def require_pii_key() -> None:
    """Fails with a clear message when `TAGSTREAM_PII_KEY` is missing or too short."""
    try:
        PiiHasher.from_env()
    except PiiKeyMissing as exc:
        raise SystemExit(f"identity job: {exc} (environment variable {PII_KEY_ENV})") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the identity job's flags."""
    parser = runtime.job_parser("identity", __doc__, stores=True, exactly_once=True, checkpoint_interval_ms=1000)
    group = parser.add_argument_group("identity")
    group.add_argument("--input-topic", default="events.valid", help="valid events topic (default events.valid)")
    group.add_argument("--loop-topic", default="identity-loop",
                       help="internal loopback topic of the keyed stages (default identity-loop; short retention, "
                            "restricted ACLs: it carries matching features)")
    group.add_argument("--topic", action="append", default=[], metavar="ROLE=TOPIC",
                       help="output topic of a role: identified, merges, review, profiles, erasures (repeatable; "
                            "defaults from identity.yaml: events.identified, person-merges, profiles, erasures)")
    group.add_argument("--group-id", default="tagstream-identity",
                       help="Kafka consumer group (default tagstream-identity; the loop reads as <group>-loop)")
    group.add_argument("--identity-config", type=Path, default=IDENTITY_CONFIG_PATH,
                       help="identity.yaml: identifier types, limits, matching (read by the client, "
                            "shipped with the job)")
    group.add_argument("--profile-policies", type=Path, default=PROFILE_POLICIES_PATH,
                       help="profile-policies.yaml: attribute policies (read by the client, shipped with the job)")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> IdentityJobConfig:
    """The :class:`IdentityJobConfig` of parsed flags (`--topic` overrides identity.yaml's topics)."""
    identity = load_identity_config(args.identity_config)
    topics = dict(identity.topics)
    for item in args.topic:
        role, sep, name = item.partition("=")
        if not sep or role not in DEFAULT_TOPICS or not name:
            raise SystemExit(f"--topic expects ROLE=TOPIC with ROLE in {sorted(DEFAULT_TOPICS)}, got {item!r}")
        topics[role] = name
    return IdentityJobConfig(replace(identity, topics=topics), load_profile_policies(args.profile_policies))


def main(argv: list[str] | None = None) -> None:
    """Wires Kafka (events, loopback, outputs) and the stores around :func:`build_identity` and runs the job."""
    args = parse_args(argv)
    require_pii_key()
    config = job_config(args)
    env = runtime.create_env(runtime.runtime_options(args))
    props = runtime.kafka_properties(args)
    events = runtime.kafka_raw_source(env, args.bootstrap, args.input_topic, args.group_id, props, "events")
    loop = runtime.kafka_raw_source(env, args.bootstrap, args.loop_topic, f"{args.group_id}-loop", props,
                                    "identity-loop")
    streams = build_identity(events, loop, config)
    loop_sink = runtime.kafka_string_sink(args.bootstrap, args.loop_topic, args.exactly_once,
                                          f"{args.group_id}-loop", props)
    streams.loop.sink_to(loop_sink).name("kafka-sink-loop").uid("identity-kafka-sink-loop")
    topics = sorted({topic_name(config.identity, role) for role in DEFAULT_TOPICS})
    runtime.kafka_keyed_sink(env, streams.kafka, args.bootstrap, args.exactly_once, f"{args.group_id}-outputs", props,
                             "identity-outputs", topics=topics)
    write_store_ops(streams.store_ops, args, "identity")
    env.execute("tagstream-identity")


if __name__ == "__main__":
    main(sys.argv[1:])
