"""Sessions job: a person's events cut into sessions in event time, live and closed, in Kafka and the stores.

    events.identified ─► parse-events ───┐
    person-merges ─────► parse-merges ───┼─► key by person ─► sessionize ─► Kafka: sessions, events.late,
    sessions.handoff ──► parse-handoffs ─┘   (udfs/sessions)       │          sessions.handoff (loop)
                                                                   └─► store ops ─► apply-store-ops (Redis, DynamoDB)

A session is a run of a person's events with no gap longer than `--gap`, split at `--max-duration` (or a
local day / campaign boundary). Event time comes from the events' `ts_ms` with a watermark per Kafka
partition; when the whole input is silent, an idle clock (`udfs/clock.py`) lets event time follow the wall
clock so sessions still close. Input is the identity job's `events.identified` (events keyed by canonical
person id; its `erase` events delete the person's sessions). Person merges (`person-merges`) are held until
event time reaches them, then hand the absorbed person's state to the survivor through the loop topic
`sessions.handoff` (`udfs/merges.py`, `jobs/merges.py`, shared with the segments job). docs/sessions.md
explains it all.

Run it in a MiniCluster (`python jobs/sessions.py --bootstrap ...`) or on a cluster
(`flink run -py jobs/sessions.py -- --bootstrap ...`). `--help` lists every flag.

Metrics (operator metric group `tagstream`): `open_sessions` (gauge, per subtask since it started),
`events_in`, `opened`, `updated`, `closed`, `corrections`, `late` (and `late_too_late`, `late_evicted`),
`merged` (handoffs folded into a survivor), `merged_away`, `merge_held`, `forwarded`, `handoff_duplicate`,
`handoff_dropped`, `merge_stale`, `idle_closed` (closes made by the idle clock), `invalid_inputs`;
`store_*` in the store writer.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.datastream.time_domain import TimeDomain

from jobs import runtime
from jobs.merges import add_merge_flags, keyed_messages, merge_sources
from jobs.operators import state_ttl, write_store_ops
from udfs.clock import IdleClock
from udfs.merges import EVENT, NOTES
from udfs.persons import person_id_of
from udfs.sessions.config import HOUR_MS, SessionConfig
from udfs.sessions.keyed import KeyedSessions, SessionsResult, Slot, open_sessions, slot_from_json, slot_to_json
from udfs.sessions.records import CLOSE, LATE, SESSION_KINDS

STORE_OPS = OutputTag("store-ops", Types.STRING())
KIND_METRICS = {"open": "opened", "update": "updated", "close": "closed", "correction": "corrections", LATE: "late"}
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class SessionTopics:
    """Kafka topics the sessions job writes."""

    sessions: str = "sessions"
    late: str = "events.late"
    handoff: str = "sessions.handoff"


@dataclass(frozen=True)
class SessionsJobConfig:
    """Settings of the sessions stage.

    Attributes:
        sessions: gap, splits, lateness, bounds, store layout (`udfs.sessions.config`).
        topics: output topics (records carry their topic to the single keyed Kafka sink).
        idle_timeout_ms: input silence after which event time follows the wall clock (None: never; time
            then only moves with watermarks).
        state_ttl_ms: a person's state is dropped after this long without a write (processing time). It
            must outlive the Redis `recent` key (`recent_ttl_ms`): a lost state restarts the version of the
            person's Redis writes, which the stores would skip until the old keys expire.
        max_hops: a handoff forwarded more often than this is dropped (merge cycles).
    """

    sessions: SessionConfig = field(default_factory=SessionConfig)
    topics: SessionTopics = field(default_factory=SessionTopics)
    idle_timeout_ms: int | None = 1000
    state_ttl_ms: int = 31 * DAY_MS
    max_hops: int = 8

    def __post_init__(self) -> None:
        cfg = self.sessions
        horizon = max(cfg.gap_ms + cfg.allowed_lateness_ms + (cfg.max_duration_ms or 0), cfg.recent_ttl_ms)
        if self.state_ttl_ms <= horizon:
            raise ValueError(f"state_ttl_ms ({self.state_ttl_ms}) must exceed gap + lateness + max duration "
                             f"and the Redis recent_ttl_ms ({horizon})")


@dataclass(frozen=True)
class SessionStreams:
    """The sessions stage's outputs.

    Attributes:
        kafka: `(topic, key, value)` rows (`runtime.KAFKA_RECORD_TYPE`): session records, late events and
            handoffs, keyed by person.
        store_ops: one store op per element, as JSON (`udfs.stores.ops`), in order per person.
    """

    kafka: DataStream
    store_ops: DataStream


class Sessionize(KeyedProcessFunction):
    """Holds each person's `Slot` and runs `udfs.sessions.keyed.KeyedSessions` on messages and timers.

    Timers: an event-time timer at the wakeup the core asks for and, with the idle clock, a processing-time
    timer at the wall time the idle clock would reach it; whichever fires first advances the person to the
    effective time (firing twice is harmless). Emits `runtime.KAFKA_RECORD_TYPE` rows and, on the side,
    store ops.
    """

    def __init__(self, config: SessionsJobConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        cfg = self.config
        self.logic = KeyedSessions(cfg.sessions, cfg.max_hops)
        # JSON text: thread mode cannot read back an absent BYTES value (PyFlink 2.2 converts None).
        slot = ValueStateDescriptor("slot", Types.STRING())
        idle_timer = ValueStateDescriptor("idle_timer", Types.LONG())
        for descriptor in (slot, idle_timer):
            descriptor.enable_time_to_live(state_ttl(cfg.state_ttl_ms))
        self.slot = runtime_context.get_state(slot)
        self.idle_timer = runtime_context.get_state(idle_timer)
        self.clock: IdleClock | None = None  # created on first use: it needs the task's wall clock
        group = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP)
        names = (*KIND_METRICS.values(), *NOTES, "events_in", "idle_closed", "late_too_late", "late_evicted")
        self.counters = {name: group.counter(name) for name in names}
        self.open_count = runtime.Level(group.counter("open_sessions"))  # a gauge (see runtime.Level)

    def process_element(self, value, ctx):
        person, kind, body = value[0], value[1], value[2]
        timers = ctx.timer_service()
        watermark, wall = timers.current_watermark(), timers.current_processing_time()
        clock = self._clock(wall)
        if clock is not None:
            clock.on_input(watermark, wall)
        if kind == EVENT:
            self.counters["events_in"].inc()
        data = self.slot.value()
        slot = slot_from_json(data) if data is not None else self.logic.new_slot(person)
        yield from self._finish(ctx, person, slot, self.logic.handle(slot, kind, body, watermark))

    def on_timer(self, timestamp: int, ctx):
        person = ctx.get_current_key()
        timers = ctx.timer_service()
        wall, watermark = timers.current_processing_time(), timers.current_watermark()
        data = self.slot.value()
        if data is None:  # expired by the state TTL: nothing to advance
            self.idle_timer.clear()
            return
        slot = slot_from_json(data)
        clock = self._clock(wall)
        now = watermark
        if clock is not None:
            clock.observe(slot.state.watermark, wall)  # e.g. a time reached before a restore
            now = clock.now(watermark, wall)
        idle = ctx.time_domain() == TimeDomain.PROCESSING_TIME
        if idle:
            self.idle_timer.clear()
        result = self.logic.on_time(slot, now, watermark)
        if idle:
            self.counters["idle_closed"].inc(sum(1 for e in result.outputs for o in e.outputs if o.kind == CLOSE))
        yield from self._finish(ctx, person, slot, result)

    def _clock(self, wall_ms: int) -> IdleClock | None:
        if self.clock is None and self.config.idle_timeout_ms:
            self.clock = IdleClock(self.config.idle_timeout_ms, wall_ms)
        return self.clock

    def _finish(self, ctx, person: str, old: Slot, result: SessionsResult):
        self.slot.update(slot_to_json(result.slot))
        self.open_count.add(open_sessions(result.slot) - open_sessions(old))
        topics = self.config.topics
        for emitted in result.outputs:
            for output in emitted.outputs:
                self.counters[KIND_METRICS[output.kind]].inc()
                if output.kind == LATE:
                    self.counters[f"late_{output.record['reason']}"].inc()
                topic = topics.sessions if output.kind in SESSION_KINDS else topics.late
                yield Row(topic, str(output.record.get("person_id") or person), _json(output.record))
        for target, record in result.handoffs:
            yield Row(topics.handoff, target, _json(record))
        for emitted in result.outputs:
            for op in emitted.store_ops:
                yield STORE_OPS, _json(op.as_dict())
        for note in result.notes:
            self.counters[note].inc()
        self._schedule(ctx, self.logic.wakeup(old), result.wakeup)

    def _schedule(self, ctx, old_wakeup: int | None, wakeup: int | None) -> None:
        timers = ctx.timer_service()
        if old_wakeup is not None and old_wakeup != wakeup:
            timers.delete_event_time_timer(old_wakeup)
        if wakeup is not None:
            timers.register_event_time_timer(wakeup)
        if self.clock is None:
            return
        wall = timers.current_processing_time()
        due = None
        if wakeup is not None:  # no event time known yet (no watermark): look again once idle
            due = self.clock.wall_time_for(wakeup) or wall + self.clock.idle_timeout_ms
            due = max(due, wall + 1)
        registered = self.idle_timer.value()
        if due == registered:
            return
        if registered is not None:
            timers.delete_processing_time_timer(registered)
        if due is None:
            self.idle_timer.clear()
        else:
            timers.register_processing_time_timer(due)
            self.idle_timer.update(due)


def _json(doc) -> str:
    return orjson.dumps(doc).decode("utf-8")


def build_sessions(events: DataStream, config: SessionsJobConfig, merges: DataStream | None = None,
                   handoffs: DataStream | None = None) -> SessionStreams:
    """Builds the sessions stage.

    Every input is a stream of rows whose first field is a JSON record (bytes or str) and whose elements
    carry event-time timestamps and watermarks (`runtime.kafka_event_source`, or `runtime.with_event_time`
    on a bounded collection).

    Args:
        events: `events.identified` (or `events.valid`) records.
        config: sessionization, topics, idle clock and state settings.
        merges: `person-merges` records (None: no person merges).
        handoffs: the loop topic's records (None: no loop; handoffs still leave in `kafka`).

    Returns:
        The Kafka records (sessions, late events, handoffs) and the store ops.
    """
    kafka = keyed_messages("sessions", person_id_of, events, merges, handoffs) \
        .process(Sessionize(config), output_type=runtime.KAFKA_RECORD_TYPE) \
        .name("sessionize").uid("sessions-sessionize")
    return SessionStreams(kafka=kafka, store_ops=kafka.get_side_output(STORE_OPS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the sessions job's flags."""
    defaults = SessionConfig()
    parser = runtime.job_parser("sessions", __doc__, event_time=True, stores=True)
    topics = parser.add_argument_group("topics")
    topics.add_argument("--events-topic", default="events.identified",
                        help="input events (default events.identified: the identity job's output, keyed by the "
                             "canonical person_id; events.valid keys by the primary identifier instead)")
    topics.add_argument("--sessions-topic", default=SessionTopics.sessions, help="session records (default sessions)")
    topics.add_argument("--late-topic", default=SessionTopics.late, help="too-late events (default events.late)")
    topics.add_argument("--group-id", default="tagstream-sessions", help="Kafka consumer group")
    add_merge_flags(topics, SessionTopics.handoff)
    group = parser.add_argument_group("sessions")
    group.add_argument("--gap", type=runtime.parse_duration_ms, default=defaults.gap_ms,
                       help="inactivity gap that ends a session (default 30m)")
    group.add_argument("--max-duration", type=runtime.parse_duration_ms, default=defaults.max_duration_ms,
                       help="a session is split when an event comes this long after its start (default 4h; 0: never)")
    group.add_argument("--day-boundary", default=None, metavar="TZ",
                       help="also split sessions at local midnight of this IANA time zone (default: off)")
    group.add_argument("--split-on-campaign", action="store_true",
                       help="also split sessions when the utm_campaign changes (default: off)")
    group.add_argument("--lateness", type=runtime.parse_duration_ms, default=defaults.allowed_lateness_ms,
                       help="events up to this far behind the watermark are still placed (corrections); older "
                            "ones go to the late topic (default 10m)")
    group.add_argument("--recent", type=int, default=defaults.recent_closed,
                       help="closed-session summaries kept per person in Redis (default 10)")
    group.add_argument("--no-updates", action="store_true", help="emit no `update` record per event")
    group.add_argument("--state-ttl", type=runtime.parse_duration_ms, default=SessionsJobConfig.state_ttl_ms,
                       help="a person's state is dropped after this long without activity; must exceed the "
                            "30 d lifetime of the Redis recent list (default 31d)")
    group.add_argument("--no-idle-clock", action="store_true",
                       help="event time moves only with watermarks (sessions wait for input to close)")
    return parser.parse_args(argv)


def job_config(args: argparse.Namespace) -> SessionsJobConfig:
    """The :class:`SessionsJobConfig` given by parsed flags."""
    sessions = SessionConfig(gap_ms=args.gap, max_duration_ms=args.max_duration or None,
                             allowed_lateness_ms=args.lateness, day_boundary_tz=args.day_boundary,
                             split_on_campaign=args.split_on_campaign, recent_closed=args.recent,
                             emit_updates=not args.no_updates)
    topics = SessionTopics(sessions=args.sessions_topic, late=args.late_topic, handoff=args.handoff_topic)
    return SessionsJobConfig(sessions=sessions, topics=topics, state_ttl_ms=args.state_ttl,
                             idle_timeout_ms=None if args.no_idle_clock else args.idle_timeout)


def main(argv: list[str] | None = None) -> None:
    """Wires the Kafka sources and sinks and the store writer around :func:`build_sessions` and runs the job."""
    args = parse_args(argv)
    env = runtime.create_env(runtime.runtime_options(args))
    t_env = runtime.table_env(env)
    props = runtime.kafka_properties(args)
    events = runtime.kafka_event_source(t_env, args.bootstrap, args.events_topic, args.group_id,
                                        runtime.EventTime("ts_ms", args.out_of_orderness, args.idle_timeout), props,
                                        "events")
    merges, handoffs = merge_sources(t_env, args, props)
    streams = build_sessions(events, job_config(args), merges, handoffs)
    runtime.kafka_keyed_sink(env, streams.kafka, args.bootstrap, args.exactly_once, f"{args.group_id}-outputs", props,
                             "sessions-records", topics=[args.sessions_topic, args.late_topic, args.handoff_topic])
    write_store_ops(streams.store_ops, args, "sessions")
    env.execute("tagstream-sessions")


if __name__ == "__main__":
    main(sys.argv[1:])
