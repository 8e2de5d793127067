"""Ingest job: validate raw events against the contract, drop duplicate event ids, dead-letter the rest.

    events (raw bytes) -> validate -> [events.dlq]  (side output: reason, original bytes, origin)
                                   -> key by event_id -> dedupe -> [events.valid]

Run it in a MiniCluster (`python jobs/ingest.py --bootstrap ...`) or on a cluster
(`flink run -py jobs/ingest.py -- --bootstrap ...`). `--help` lists every flag.

Delivery is exactly-once by default (transactional writes committed when a checkpoint completes, every
second by default): a restore re-emits events whose de-duplication state was rolled back, and the identity
job may annotate such a copy with another person id than the first (README "Decisions").
`--no-exactly-once` writes at once.

Metrics (operator metric group `tagstream`), which reconcile exactly:
`records_in` = `valid` + `duplicates` + `dead_lettered` (also per reason: `dead_lettered_<reason>`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, OutputTag, ProcessFunction, RuntimeContext

from jobs import runtime
from jobs.operators import FirstByKey
from udfs.contract import REASONS, Accepted, EventValidator, Origin, ValidatorConfig, epoch_ms

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
_KEYED_EVENT = Types.ROW_NAMED(["event_id", "json"], [Types.STRING(), Types.STRING()])


@dataclass(frozen=True)
class IngestConfig:
    """Settings of the ingest stage.

    Attributes:
        validator: size, time-range and dead-letter payload limits.
        dedupe_horizon_ms: an event id seen again within this (processing-time) horizon is a duplicate.
    """

    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    dedupe_horizon_ms: int = 24 * 3600 * 1000


@dataclass(frozen=True)
class IngestStreams:
    """The ingest stage's outputs: JSON documents as strings."""

    valid: DataStream
    dead_letters: DataStream


class ValidateEvents(ProcessFunction):
    """Checks each raw record; valid ones leave keyed by event id, the others as dead-letter records."""

    def __init__(self, config: ValidatorConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.validator = EventValidator(self.config)
        group = runtime_context.get_metrics_group().add_group(runtime.METRIC_GROUP)
        self.records_in = group.counter("records_in")
        self.dead_lettered = group.counter("dead_lettered")
        self.by_reason = {reason: group.counter(f"dead_lettered_{reason}") for reason in REASONS}

    def process_element(self, value, ctx):
        self.records_in.inc()
        topic, partition, offset, kafka_ts, payload = value[0], value[1], value[2], value[3], value[4]
        raw = bytes(payload) if payload is not None else b""
        origin = Origin(topic, partition, offset, epoch_ms(kafka_ts))
        now_ms = int(time.time() * 1000)
        result = self.validator.check(raw, origin.timestamp_ms if origin.timestamp_ms is not None else now_ms)
        if isinstance(result, Accepted):
            yield Row(result.event_id, result.to_json().decode("utf-8"))
            return
        self.dead_lettered.inc()
        self.by_reason[result.reason].inc()
        record = self.validator.dead_letter(raw, result, origin, now_ms)
        yield DEAD_LETTERS, orjson.dumps(record).decode("utf-8")


def build_ingest(raw: DataStream, config: IngestConfig) -> IngestStreams:
    """Builds the ingest stage on a stream of raw records (rows shaped like `runtime.RAW_RECORD_TYPE`).

    Args:
        raw: raw Kafka records (a Kafka source in production, a bounded collection in tests).
        config: validation and de-duplication settings.

    Returns:
        The valid, de-duplicated events and the dead-letter records, both as JSON strings.
    """
    checked = raw.process(ValidateEvents(config.validator), output_type=_KEYED_EVENT) \
        .name("validate-events").uid("ingest-validate-events")
    valid = checked.key_by(lambda row: row[0], key_type=Types.STRING()) \
        .process(FirstByKey(config.dedupe_horizon_ms, "valid", "duplicates"), output_type=Types.STRING()) \
        .name("dedupe-event-ids").uid("ingest-dedupe-event-ids")
    return IngestStreams(valid=valid, dead_letters=checked.get_side_output(DEAD_LETTERS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the ingest job's flags."""
    parser = runtime.job_parser("ingest", __doc__, exactly_once=True, checkpoint_interval_ms=1000)
    group = parser.add_argument_group("ingest")
    group.add_argument("--input-topic", default="events", help="raw events topic (default events)")
    group.add_argument("--valid-topic", default="events.valid", help="valid events topic (default events.valid)")
    group.add_argument("--dlq-topic", default="events.dlq", help="dead-letter topic (default events.dlq)")
    group.add_argument("--group-id", default="tagstream-ingest", help="Kafka consumer group")
    group.add_argument("--max-event-bytes", type=int, default=ValidatorConfig.max_event_bytes,
                       help="records larger than this are dead-lettered (default 65536)")
    group.add_argument("--max-future", type=runtime.parse_duration_ms, default=ValidatorConfig.max_future_ms,
                       help="event times further ahead of the Kafka record time are dead-lettered (default 24h)")
    group.add_argument("--dedupe-horizon", type=runtime.parse_duration_ms, default=IngestConfig.dedupe_horizon_ms,
                       help="a repeated event_id within this horizon is dropped (default 24h)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Wires the production Kafka source and sinks around :func:`build_ingest` and runs the job."""
    args = parse_args(argv)
    env = runtime.create_env(runtime.runtime_options(args))
    props = runtime.kafka_properties(args)
    raw = runtime.kafka_raw_source(env, args.bootstrap, args.input_topic, args.group_id, props, "events")
    config = IngestConfig(
        validator=ValidatorConfig(max_event_bytes=args.max_event_bytes, max_future_ms=args.max_future),
        dedupe_horizon_ms=args.dedupe_horizon)
    streams = build_ingest(raw, config)
    for stream, topic, name in ((streams.valid, args.valid_topic, "valid"),
                                (streams.dead_letters, args.dlq_topic, "dead-letters")):
        sink = runtime.kafka_string_sink(args.bootstrap, topic, args.exactly_once, f"{args.group_id}-{name}", props)
        stream.sink_to(sink).name(f"kafka-sink-{name}").uid(f"ingest-kafka-sink-{name}")
    env.execute("tagstream-ingest")


if __name__ == "__main__":
    main(sys.argv[1:])
