"""Names and shapes of everything tagstream keeps outside Flink: Kafka topics, DynamoDB tables, local ports.

One registry, read by the stack tooling (to create topics and tables idempotently), by the jobs (for
default topic names) and by the docs. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topic:
    """A Kafka topic tagstream reads or writes.

    Attributes:
        name: topic name.
        partitions: partition count when tagstream creates it.
        config: topic-level configs (e.g. cleanup.policy).
        doc: what flows through it.
    """

    name: str
    partitions: int
    doc: str
    config: dict[str, str] = field(default_factory=dict)


# Raw events may be large (they are dead-lettered when over the validator's limit, but they must reach it).
_LARGE = {"max.message.bytes": str(4 * 1024 * 1024)}

TOPICS: tuple[Topic, ...] = (
    Topic("events", 4, "Raw input events, one JSON object per record (schemas/event.schema.json).", _LARGE),
    Topic("events.valid", 4, "Valid, de-duplicated events with the derived ts_ms, keyed by nothing (jobs key_by)."),
    Topic("events.dlq", 1, "Dead-letter records: original bytes, reason, source topic/partition/offset "
          "(schemas/dead-letter.schema.json).", _LARGE),
    Topic("events.late", 1, "Events later than a job's allowed lateness, with the job and the reason."),
    Topic("segment-definitions", 1, "Segment definitions by name (compacted; hot reload).",
          {"cleanup.policy": "compact"}),
    Topic("segment-changes", 4, "Segment entry/exit change events."),
    Topic("sessions", 4, "Session open/update/close/correction records."),
    Topic("person-merges", 4, "Identity merges: absorbed person -> surviving person."),
    Topic("profiles", 4, "Profile changelog."),
    Topic("erasures", 1, "Erasure audit records, without PII."),
    Topic("events.identified", 4, "Valid events annotated with their canonical person_id (PII hashed or omitted), "
          "keyed by person (jobs/identity.py)."),
    Topic("sessions.handoff", 4, "Internal loop of the sessions job: an absorbed person's state handed to the "
          "survivor after a merge.", {"retention.ms": str(24 * 3600 * 1000)}),
    Topic("segments.handoff", 4, "Internal loop of the segments job: an absorbed person's retained history, "
          "consent and traits handed to the survivor after a merge.", {"retention.ms": str(24 * 3600 * 1000)}),
    Topic("identity-loop", 4, "Internal loopback of the identity job's keyed stages (carries matching features: "
          "restricted ACLs, short retention).", {"retention.ms": str(24 * 3600 * 1000)}),
)


def topic(name: str) -> Topic:
    """Returns the registered topic with this name."""
    for t in TOPICS:
        if t.name == name:
            return t
    raise KeyError(f"no topic {name!r} in udfs.topology.TOPICS")


@dataclass(frozen=True)
class Table:
    """A DynamoDB table tagstream writes.

    Attributes:
        name: table name.
        hash_key: partition key attribute (string).
        range_key: sort key attribute (string), if any.
        ttl_attribute: epoch-seconds attribute used for expiry (readers filter on it too: DynamoDB Local
            never expires items, and DynamoDB itself deletes them only eventually).
        doc: what an item is.
    """

    name: str
    hash_key: str
    doc: str
    range_key: str | None = None
    ttl_attribute: str | None = "expires_at"


TABLES: tuple[Table, ...] = (
    Table("tagstream_segments", "person_id", "One item per (person, tag): current segment membership.", "tag"),
    Table("tagstream_sessions", "person_id", "Session history per person, sorted by start.", "session_key"),
    Table("tagstream_profiles", "person_id", "One merged profile per person.", None),
)


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one local stack."""

    kafka: int
    kafka_controller: int
    redis: int
    dynamodb: int
    flink_rest: int
    prometheus_first: int

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers."""
        return f"127.0.0.1:{self.kafka}"

    @property
    def prometheus_range(self) -> str:
        """Port range for the Flink Prometheus reporter (one port per JobManager/TaskManager)."""
        return f"{self.prometheus_first}-{self.prometheus_first + 3}"


# `dev` is the stack `make up` / `make demo` start; `test` is the one `make test` starts and stops, on other
# ports so the two can run side by side.
PROFILES: dict[str, Ports] = {
    "dev": Ports(kafka=9092, kafka_controller=9093, redis=6379, dynamodb=8000, flink_rest=8081,
                 prometheus_first=9249),
    "test": Ports(kafka=19092, kafka_controller=19093, redis=16379, dynamodb=18000, flink_rest=18081,
                  prometheus_first=19249),
    # Extra isolated stacks for running test suites in parallel (TAGSTREAM_TEST_PROFILE=test2 make test).
    "test2": Ports(kafka=29092, kafka_controller=29093, redis=26379, dynamodb=28000, flink_rest=28081,
                   prometheus_first=29249),
    "test3": Ports(kafka=39092, kafka_controller=39093, redis=36379, dynamodb=38000, flink_rest=38081,
                   prometheus_first=39249),
    "test4": Ports(kafka=49092, kafka_controller=49093, redis=46379, dynamodb=48000, flink_rest=48081,
                   prometheus_first=49249),
    "test5": Ports(kafka=59092, kafka_controller=59093, redis=56379, dynamodb=58000, flink_rest=58081,
                   prometheus_first=59249),
    # `make bench` runs on its own stack so a benchmark never shares services with a demo or a test run.
    "bench": Ports(kafka=11092, kafka_controller=11093, redis=11379, dynamodb=11000, flink_rest=11081,
                   prometheus_first=11249),
}
