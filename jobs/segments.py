"""Segments job: segment tags per person in event time, with exact entries and exits, hot-reloaded definitions.

    events.identified ──► parse-events ───┐
    person-merges ──────► parse-merges ───┼─ key by person ─┐
    segments.handoff ───► parse-handoffs ─┘                 ├─► evaluate-segments ─► Kafka: segment-changes,
    segment-definitions ► parse-definitions ─► broadcast ───┘   (udfs/segments)   │   events.late, segments.handoff
                                                                                  └─► store ops ─► apply-store-ops

Each person's `PersonState` (pickled) lives in keyed state; the core's `Engine` applies their events and
says when a tag next changes by time alone, where one event-time timer per person fires `advance`. When the
whole input is silent, an idle clock (`udfs/clock.py`) lets event time follow the wall clock so that exits
still fire about `--idle-timeout` after they are due. Definitions come from the compacted topic
`segment-definitions` (key: name, value: YAML/JSON text, tombstone: removed) into broadcast state; every
subtask recompiles its catalog on each record and persons are reconciled lazily, on their next event or
timer. docs/segments.md explains the semantics.

Input: `--input-topic` defaults to the identity job's `events.identified` (keyed by the resolved
`person_id`; `erase` events there remove the person's tags). Person merges (`person-merges`) are held until
event time reaches them; the absorbed person's retained history, consent and traits then reach the survivor
through the loop topic `segments.handoff` (`udfs/merges.py`, `jobs/merges.py`, shared with the sessions
job), where the engine folds them as if every event had carried the survivor's id.

Run it in a MiniCluster (`python jobs/segments.py --bootstrap ...`) or on a cluster
(`flink run -py jobs/segments.py -- --bootstrap ...`). `--help` lists every flag.

Metrics (operator metric group `tagstream`): `events_in`, `evaluations` (engine calls: events, timers,
idle advances), `entries`, `exits`, `corrections`, `retractions`, `late`, `duplicates`, `idle_advances`,
`invalid_inputs`, `definitions_loaded`, `definition_issues`, the merge notes (`merge_held`, `merged_away`,
`merged`, `forwarded`, `handoff_duplicate`, `handoff_dropped`, `merge_stale`) and the gauge `definitions`
(per subtask; definition metrics count once per subtask); `store_*` in the store writer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import (
    DataStream,
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.datastream.time_domain import TimeDomain

from jobs import runtime
from jobs.merges import add_merge_flags, keyed_messages, merge_sources
from jobs.operators import parallelism_of, state_ttl, write_store_ops
from udfs.clock import NO_TIME, IdleClock
from udfs.contract import ValidatorConfig
from udfs.merges import EVENT, NOTES, Pointer, Result, Slot
from udfs.segments import Engine, Issue, SegmentsConfig, person_id_of, update_catalog
from udfs.segments.keyed import driver
from udfs.segments.published import definition_set
from udfs.segments.state import PersonState
from udfs.state_cache import StateCache
from udfs.stores.ops import ops_to_json

LOG = logging.getLogger("tagstream.segments")
TEXT_PAIR_TYPE = Types.ROW_NAMED(["key", "value"], [Types.STRING(), Types.STRING()])
STORE_OPS = OutputTag("store-ops", Types.STRING())
STORE_TOPIC = ""  # a store op's marker on the evaluation's single output (see `RouteOutputs`)
DEFINITIONS = MapStateDescriptor("segment-definitions", Types.STRING(), Types.STRING())
DAY_MS = 86_400_000
EARLIEST_EVENT_MS = ValidatorConfig().min_ts_ms
COUNTERS = ("events_in", "evaluations", "entries", "exits", "corrections", "retractions", "late", "duplicates",
            "idle_advances", "invalid_inputs", "definitions_loaded", "definition_issues")


@dataclass(frozen=True)
class SegmentTopics:
    """Kafka topics the segments job writes."""

    changes: str = "segment-changes"
    late: str = "events.late"
    handoff: str = "segments.handoff"


@dataclass(frozen=True)
class SegmentsJobConfig:
    """Settings of the segments stage (shipped with the job graph; no secrets).

    Attributes:
        segments: lateness, consent, history, store layout (`udfs.segments.SegmentsConfig`).
        definitions: definitions known without the topic (tests, bootstrapping); published records override
            and remove them by name.
        topics: output topics (records carry their topic to the single keyed Kafka sink).
        idle_timeout_ms: input silence after which event time follows the wall clock (None: never; exits
            then wait for the watermark).
        state_ttl_ms: a person's state is dropped after this long without a write (processing time); longer
            than the longest window of any definition.
        advance_until_ms: event time of a bounded run (the backfill) ends here: watermarks are capped at it and
            timers after it are not advanced, so the final watermark of a bounded input does not end the tags
            that still hold at that time. None (the live job): unbounded.
        max_hops: a merge handoff forwarded more often than this is dropped (merge cycles).
        state_cache_size: persons whose deserialized state each subtask keeps between calls
            (`udfs.state_cache`; ~30 KB each on average with the example definitions); 0: read the state on
            every call.
    """

    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    definitions: tuple[dict, ...] = ()
    topics: SegmentTopics = field(default_factory=SegmentTopics)
    idle_timeout_ms: int | None = 1000
    state_ttl_ms: int = 35 * DAY_MS
    advance_until_ms: int | None = None
    max_hops: int = 8
    state_cache_size: int = 5000


@dataclass(frozen=True)
class SegmentsStreams:
    """The segments stage's outputs.

    Attributes:
        kafka: `(topic, key, value)` rows (`runtime.KAFKA_RECORD_TYPE`): change events and late events, keyed
            by person.
        store_ops: the store ops of one evaluation per element, as a JSON array (`udfs.stores.ops.ops_to_json`),
            in order per person.
    """

    kafka: DataStream
    store_ops: DataStream


def _text(raw) -> str | None:
    if raw is None:
        return None
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")


def parse_definition(value) -> Row:
    """`(key, value, ...)` of a definitions record -> `Row(name, text or None)` (None: tombstone)."""
    return Row(_text(value[0]) or "", _text(value[1]))


@dataclass(slots=True)
class _Person:
    """A person's keyed state as read from Flink (or as last written, from the state cache).

    Attributes:
        state: the engine's state (None: absent, e.g. expired by the state TTL).
        merge: the merge pointer (None: absent).
        timer / idle_timer: the registered event-time and processing-time timers (None: none).
    """

    state: PersonState | None
    merge: Pointer | None
    timer: int | None
    idle_timer: int | None


class _Evaluate:
    """The keyed evaluation shared by both operator flavours (with and without a definitions stream).

    Keyed state: the person's `PersonState` (pickled), the merge pointer, the registered event-time timer
    and the idle clock's processing-time timer; every change is written through, and the most recently used
    persons' values are also kept deserialized (`udfs.state_cache`), so a hit skips reading and unpickling.
    The engine is per subtask and rebuilt from the broadcast state after a restore and on every definitions
    record.
    """

    def __init__(self, config: SegmentsJobConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        # the merge pointer is JSON text: thread mode cannot read back an absent BYTES value
        descriptors = (ValueStateDescriptor("person", Types.PICKLED_BYTE_ARRAY()),
                       ValueStateDescriptor("timer", Types.LONG()), ValueStateDescriptor("idle_timer", Types.LONG()),
                       ValueStateDescriptor("merge", Types.STRING()))
        for descriptor in descriptors:
            descriptor.enable_time_to_live(state_ttl(self.config.state_ttl_ms))
        self.person, self.timer, self.idle_timer, self.merge = (runtime_context.get_state(d) for d in descriptors)
        self.cache: StateCache[_Person] = StateCache(self.config.state_cache_size, self.config.state_ttl_ms // 2)
        self.engine: Engine | None = None
        self.watermark: int | None = None  # the last one seen (a broadcast context has none in thread mode)
        self.clock: IdleClock | None = None
        group = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP)
        self.counters = {name: group.counter(name) for name in (*COUNTERS, *NOTES)}
        self.definitions = runtime.Level(group.counter("definitions"))  # a gauge (see runtime.Level)

    # ---- engine and definitions
    def _published(self, ctx) -> list[tuple[str, str]]:
        return []

    def _engine(self, ctx, watermark: int | None) -> Engine:
        self.watermark = watermark
        if self.engine is None:
            self.counters["definition_issues"].inc(len(self._reload(ctx, watermark)))
        assert self.engine is not None
        return self.engine

    def _reload(self, ctx, watermark: int | None) -> list[Issue]:
        """Recompiles the catalog from the published and the configured definitions; returns (and logs) the
        definitions rejected (a rejected change keeps the previous version)."""
        previous = self.engine.catalog if self.engine is not None else None
        docs, issues = definition_set(self._published(ctx), self.config.definitions,
                                      previous.docs if previous else None)
        catalog, compile_issues = update_catalog(previous, docs, updated_at=watermark or 0)
        for issue in (*issues, *compile_issues):
            LOG.warning("segment definition %s rejected (kept version %s): %s", issue.name, issue.kept_version,
                        issue.message)
        self.engine = self.engine.with_catalog(catalog) if self.engine is not None else \
            Engine(catalog, self.config.segments)
        self.definitions.set(len(catalog.segments) + len(catalog.placements))
        return [*issues, *compile_issues]

    # ---- keyed input and timers
    def _on_message(self, value, ctx):
        kind, body = value[1], value[2]
        timers = ctx.timer_service()
        watermark, wall = _watermark(timers), timers.current_processing_time()
        if (clock := self._clock(wall)) is not None:
            clock.on_input(watermark, wall)
        if kind == EVENT:
            self.counters["events_in"].inc()
        engine = self._engine(ctx, self._known(watermark))
        key = ctx.get_current_key()
        person = self._read(key, wall)
        try:
            result = driver(engine, self.config.max_hops).handle(self._slot(engine, key, person), kind, body,
                                                                  self._known(watermark))
        except (ValueError, KeyError, TypeError):  # contract events and our own records; count, never crash
            self.cache.drop(key)  # the engine may have changed the cached state before failing
            self.counters["invalid_inputs"].inc()
            return
        yield from self._finish(ctx, result, key, person, wall)

    def _on_timer(self, timestamp: int, ctx):
        timers = ctx.timer_service()
        watermark, wall = _watermark(timers), timers.current_processing_time()
        key = ctx.get_current_key()
        person = self._read(key, wall)
        if person.state is None and person.merge is None:  # expired by the state TTL
            self.timer.clear()
            self.idle_timer.clear()
            return
        engine = self._engine(ctx, self._known(watermark))
        slot = self._slot(engine, key, person)
        now: int | None = timestamp
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.idle_timer.clear()
            person.idle_timer = None
            now = self._idle_now(slot.state, watermark, wall)
            if now is None:
                return
            self.counters["idle_advances"].inc()
        else:
            self.timer.clear()
            person.timer = None
        until = self.config.advance_until_ms
        if until is not None:
            if timestamp > until and ctx.time_domain() != TimeDomain.PROCESSING_TIME:
                return  # after the end of a bounded run: the tag still holds at its end
            now = min(now, until)
        result = driver(engine, self.config.max_hops).on_time(slot, now, self._known(watermark))
        yield from self._finish(ctx, result, key, person, wall)

    def _idle_now(self, state, watermark: int, wall: int) -> int | None:
        """The idle clock's event time for a processing-time timer (None without an idle clock)."""
        clock = self._clock(wall)
        if clock is None:
            return None
        clock.observe(state.frontier, wall)
        return clock.now(watermark, wall)

    def _known(self, watermark: int) -> int | None:
        """The watermark (capped at `advance_until_ms`), or None before the first one (Long.MIN_VALUE)."""
        if watermark <= NO_TIME:
            return None
        until = self.config.advance_until_ms
        return watermark if until is None else min(watermark, until)

    def _clock(self, wall_ms: int) -> IdleClock | None:
        if self.clock is None and self.config.idle_timeout_ms:
            self.clock = IdleClock(self.config.idle_timeout_ms, wall_ms)
        return self.clock

    def _read(self, key: str, wall: int) -> _Person:
        """The person's keyed state: from the state cache, else read from Flink (each value once)."""
        cached = self.cache.get(key, wall)
        if cached is not None:
            return cached
        pointer = self.merge.value()
        return _Person(self.person.value(), Pointer.from_dict(orjson.loads(pointer)) if pointer is not None else None,
                       self.timer.value(), self.idle_timer.value())

    @staticmethod
    def _slot(engine: Engine, key: str, person: _Person) -> Slot:
        return Slot(person.state if person.state is not None else engine.new_state(key),
                    person.merge if person.merge is not None else Pointer())

    def _finish(self, ctx, result: Result, key: str, person: _Person, wall: int):
        """Writes the person's state through (and to the cache), emits the records, counts, and schedules."""
        slot = result.slot
        self.person.update(slot.state)
        merge: Pointer | None = None
        if slot.merge != Pointer():
            merge = slot.merge
            self.merge.update(orjson.dumps(slot.merge.to_dict()).decode("utf-8"))
        elif person.merge is not None:
            self.merge.clear()
        topics = self.config.topics
        person_id = slot.state.person_id
        counts = dict.fromkeys(("evaluations", "entries", "exits", "corrections", "retractions", "late",
                                "duplicates"), 0)
        counts["evaluations"] = 1
        ops = []
        for out in result.outputs:
            for change in out.changes:
                _count(change, counts)
                yield Row(topics.changes, person_id, orjson.dumps(change).decode("utf-8"))
            for late in out.late:
                yield Row(topics.late, person_id, orjson.dumps(late).decode("utf-8"))
            counts["late"] += len(out.late)
            counts["duplicates"] += out.duplicates
            ops += out.redis
            ops += out.dynamo
        if ops:
            yield Row(STORE_TOPIC, person_id, ops_to_json(ops))
        for target, record in result.handoffs:
            yield Row(topics.handoff, target, orjson.dumps(record).decode("utf-8"))
        for note in result.notes:
            counts[note] = counts.get(note, 0) + 1
        for name, count in counts.items():
            if count:
                self.counters[name].inc(count)
        person = _Person(slot.state, merge, person.timer, person.idle_timer)
        self._schedule(ctx, result.wakeup, slot.state.frontier, person)
        self.cache.put(key, person, wall)

    def _schedule(self, ctx, wake: int | None, frontier: int, person: _Person) -> None:
        """One event-time timer at the next wakeup and, with the idle clock, one processing-time timer at the
        wall time the idle clock reaches it; whichever fires first advances the person (twice is harmless).
        Updates `person`'s timers.

        The idle clock observes the person's clock (`frontier`, the newest event time applied): without it, a
        burst of events read before any watermark (the definitions input carries none) would leave the clock
        nothing to extrapolate from, and the person's exits would wait for input."""
        timers = ctx.timer_service()
        registered = person.timer
        if registered != wake:
            if registered is not None:
                timers.delete_event_time_timer(registered)
            if wake is None:
                self.timer.clear()
            else:
                timers.register_event_time_timer(wake)
                self.timer.update(wake)
            person.timer = wake
        if self.clock is None:
            return
        wall = timers.current_processing_time()
        if frontier >= EARLIEST_EVENT_MS:  # not the empty state's
            self.clock.observe(frontier, wall)
        due = self.clock.wall_time_for(wake) if wake is not None else None
        due = max(due, wall + 1) if due is not None else None
        idle = person.idle_timer
        if due == idle:
            return
        if idle is not None:
            timers.delete_processing_time_timer(idle)
        if due is None:
            self.idle_timer.clear()
        else:
            timers.register_processing_time_timer(due)
            self.idle_timer.update(due)
        person.idle_timer = due


def _count(change: dict, counts: dict[str, int]) -> None:
    """Counts a change record as an entry, exit, correction or retraction."""
    if change["retraction"]:
        counts["retractions"] += 1
        return
    counts["entries" if change["op"] == "enter" else "exits"] += 1
    if change["correction"]:
        counts["corrections"] += 1


def _watermark(timers) -> int:
    """The operator's watermark, or NO_TIME while no event time is known: the definitions input carries event
    time 0 (see `main`), and no event is before the contract's earliest time (`ValidatorConfig.min_ts_ms`)."""
    watermark = timers.current_watermark()
    return watermark if watermark >= EARLIEST_EVENT_MS else NO_TIME


class RouteOutputs(ProcessFunction):
    """Splits the evaluation's output: Kafka records stay, store ops (topic `STORE_TOPIC`) go to the side
    output `STORE_OPS`. (PyFlink 2.2's thread mode drops side outputs of a keyed broadcast function's timers,
    so the evaluation emits everything on its main output.)"""

    def process_element(self, value, ctx):
        if value[0] == STORE_TOPIC:
            yield STORE_OPS, value[2]
        else:
            yield value


class EvaluateSegments(_Evaluate, KeyedProcessFunction):
    """The evaluation with a fixed definition set (`SegmentsJobConfig.definitions`)."""

    def process_element(self, value, ctx):
        yield from self._on_message(value, ctx)

    def on_timer(self, timestamp: int, ctx):
        yield from self._on_timer(timestamp, ctx)


class EvaluateSegmentsWithDefinitions(_Evaluate, KeyedBroadcastProcessFunction):
    """The evaluation with definitions from a broadcast stream of `Row(name, text or None)` records.

    The broadcast state maps each name to its latest text ('' once removed, so a removal also overrides a
    definition of `SegmentsJobConfig.definitions`).
    """

    def _published(self, ctx) -> list[tuple[str, str]]:
        return sorted(ctx.get_broadcast_state(DEFINITIONS).items())

    def process_element(self, value, ctx):
        yield from self._on_message(value, ctx)

    def on_timer(self, timestamp: int, ctx):
        yield from self._on_timer(timestamp, ctx)

    def process_broadcast_element(self, value, ctx):
        name, text = value[0], value[1]
        if not name:
            self.counters["definition_issues"].inc()
            return
        ctx.get_broadcast_state(DEFINITIONS).put(name, text or "")
        rejected = [i for i in self._reload(ctx, self.watermark) if i.name == name]
        self.counters["definition_issues" if rejected else "definitions_loaded"].inc()
        yield from ()


def build_segments(events: DataStream, definitions: DataStream | None, config: SegmentsJobConfig,
                   merges: DataStream | None = None, handoffs: DataStream | None = None) -> SegmentsStreams:
    """Builds the segments stage.

    Every input but `definitions` is a stream of rows whose first field is a JSON record (bytes or str)
    carrying event-time timestamps and watermarks (`runtime.kafka_event_source`, or
    `runtime.with_event_time` on a bounded collection).

    Args:
        events: `events.identified` (or `events.valid`) records.
        definitions: rows `(name, text)` (bytes or str; text None: removed), e.g. the keyed
            `segment-definitions` source; None: only `config.definitions`.
        config: definitions, lateness, topics, idle clock and state settings.
        merges: `person-merges` records (None: no person merges).
        handoffs: the loop topic's records (None: no loop; handoffs still leave in `kafka`).

    Returns:
        The Kafka records (changes, late events, handoffs) and the store ops.
    """
    keyed = keyed_messages("segments", partial(person_id_of, config=config.segments), events, merges, handoffs)
    if definitions is None:
        evaluated = keyed.process(EvaluateSegments(config), output_type=runtime.KAFKA_RECORD_TYPE)
    else:
        published = definitions.map(parse_definition, output_type=TEXT_PAIR_TYPE) \
            .name("parse-definitions").uid("segments-parse-definitions").set_parallelism(1)
        evaluated = keyed.connect(published.broadcast(DEFINITIONS)) \
            .process(EvaluateSegmentsWithDefinitions(config), output_type=runtime.KAFKA_RECORD_TYPE)
    evaluated = evaluated.name("evaluate-segments").uid("segments-evaluate")
    routed = evaluated.process(RouteOutputs(), output_type=runtime.KAFKA_RECORD_TYPE) \
        .name("route-outputs").uid("segments-route-outputs")
    if (parallelism := parallelism_of(evaluated)) is not None:
        routed = routed.set_parallelism(parallelism)  # forward: each person's outputs stay in order
    return SegmentsStreams(kafka=routed, store_ops=routed.get_side_output(STORE_OPS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the segments job's flags."""
    defaults = SegmentsConfig()
    parser = runtime.job_parser("segments", __doc__, event_time=True, stores=True)
    topics = parser.add_argument_group("topics")
    topics.add_argument("--input-topic", default="events.identified",
                        help="input events (default events.identified: the identity job's output, keyed by the "
                             "canonical person_id; events.valid keys by an identifier-derived id instead)")
    topics.add_argument("--definitions-topic", default="segment-definitions",
                        help="compacted topic of definitions by name, always read from the start "
                             "(default segment-definitions; tools/segments_cli.py apply publishes to it)")
    topics.add_argument("--changes-topic", default=SegmentTopics.changes,
                        help="change events (default segment-changes)")
    topics.add_argument("--late-topic", default=SegmentTopics.late, help="too-late events (default events.late)")
    topics.add_argument("--group-id", default="tagstream-segments", help="Kafka consumer group")
    add_merge_flags(topics, SegmentTopics.handoff)
    group = parser.add_argument_group("segments")
    group.add_argument("--lateness", type=runtime.parse_duration_ms, default=defaults.allowed_lateness_ms,
                       help="events up to this far behind the watermark are applied (corrections); older ones go "
                            "to the late topic (default 5m)")
    group.add_argument("--min-history", type=runtime.parse_duration_ms, default=defaults.min_history_ms,
                       help="raw events of every type are kept this long, so an added definition sees recent "
                            "history (default 1h)")
    group.add_argument("--state-ttl", type=runtime.parse_duration_ms, default=SegmentsJobConfig.state_ttl_ms,
                       help="a person's state is dropped after this long without activity; longer than the "
                            "longest window (default 35d)")
    group.add_argument("--state-cache-size", type=int, default=SegmentsJobConfig.state_cache_size,
                       help="persons per subtask whose state is also kept deserialized between calls (written "
                            "through; ~30 KB each with the example definitions; 0: off; default 5000)")
    group.add_argument("--no-idle-clock", action="store_true",
                       help="event time moves only with watermarks (exits wait for input)")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> SegmentsJobConfig:
    """The :class:`SegmentsJobConfig` given by parsed flags."""
    segments = SegmentsConfig(allowed_lateness_ms=args.lateness, min_history_ms=args.min_history)
    topics = SegmentTopics(args.changes_topic, args.late_topic, args.handoff_topic)
    return SegmentsJobConfig(segments=segments, topics=topics,
                             idle_timeout_ms=None if args.no_idle_clock else args.idle_timeout,
                             state_ttl_ms=args.state_ttl, state_cache_size=args.state_cache_size)


def main(argv: list[str] | None = None) -> None:
    """Wires the Kafka sources and sinks and the store writer around :func:`build_segments` and runs the job."""
    args = parse_args(argv)
    env = runtime.create_env(runtime.runtime_options(args))
    t_env = runtime.table_env(env)
    props = runtime.kafka_properties(args)
    events = runtime.kafka_event_source(
        t_env, args.bootstrap, args.input_topic, args.group_id,
        runtime.EventTime("ts_ms", args.out_of_orderness, args.idle_timeout), props, "events")
    # The compacted definitions topic is read whole on every fresh start (a restore resumes from the
    # checkpoint). Its records carry event time 0, so its watermark never moves the evaluation's event time
    # (their Kafka record times would: a publication while the events were idle made the backlog too late);
    # it goes idle while the topic is silent, so it holds event time back only while definitions are read.
    definitions = runtime.kafka_event_source(
        t_env, args.bootstrap, args.definitions_topic, f"{args.group_id}-definitions",
        runtime.EventTime(None, 0, args.idle_timeout, constant_ms=0), props, "definitions", with_key=True,
        options={"scan.startup.mode": "earliest-offset"})
    merges, handoffs = merge_sources(t_env, args, props)
    streams = build_segments(events, definitions, job_config(args), merges, handoffs)
    runtime.kafka_keyed_sink(env, streams.kafka, args.bootstrap, args.exactly_once, f"{args.group_id}-outputs", props,
                             "segments-records", topics=[args.changes_topic, args.late_topic, args.handoff_topic])
    write_store_ops(streams.store_ops, args, "segments")
    env.execute("tagstream-segments")


if __name__ == "__main__":
    main(sys.argv[1:])
