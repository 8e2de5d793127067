"""What every tagstream job shares: the execution environment, Kafka sources and sinks, metrics, flags.

Jobs import this module; it imports pyflink, so it belongs to `jobs/`, never to `udfs/`.
"""

from __future__ import annotations

import argparse
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Types
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.table import StreamTableEnvironment

REPO_ROOT = Path(__file__).resolve().parent.parent
METRIC_GROUP = "tagstream"

# A raw Kafka record as every job's source yields it (tests build the same rows with an int timestamp).
RAW_RECORD_FIELDS = ["topic", "partition", "offset", "kafka_ts", "value"]
RAW_RECORD_TYPE = Types.ROW_NAMED(
    RAW_RECORD_FIELDS,
    [Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)


@dataclass(frozen=True)
class RuntimeOptions:
    """Execution settings common to all jobs (flags of the same names).

    Attributes:
        parallelism: default operator parallelism (None: the cluster's default).
        checkpoint_interval_ms: checkpoint period; 0 disables checkpointing (tests only).
        python_mode: PyFlink execution mode, `thread` (default; much faster for keyed state) or `process`.
        jars: connector jars to ship with the job (file paths); empty means the cluster provides them.
        python_executable: the Python the TaskManagers run UDFs with (None: the cluster's
            `python.executable`, or `-pyexec` of `flink run`).
    """

    parallelism: int | None = None
    checkpoint_interval_ms: int = 5000
    python_mode: str = "thread"
    jars: tuple[str, ...] = ()
    python_executable: str | None = None


def default_jars() -> tuple[str, ...]:
    """Connector jars found in the setup cache or in `TAGSTREAM_JARS` (os.pathsep-separated)."""
    listed = os.environ.get("TAGSTREAM_JARS")
    if listed:
        return tuple(p for p in listed.split(os.pathsep) if p)
    return tuple(sorted(glob.glob(str(REPO_ROOT / ".cache" / "jars" / "flink" / "*.jar"))))


def create_env(options: RuntimeOptions) -> StreamExecutionEnvironment:
    """Builds the execution environment: checkpointing, state backend, Python mode, shipped code and jars.

    Settings given here are the job's own; the cluster's `flink-conf/config.yaml` supplies the rest
    (checkpoint storage, retention, restart strategy, metrics reporters).
    """
    conf = Configuration()
    conf.set_string("python.execution-mode", options.python_mode)
    # PyFlink 2.2's Python operator chaining copies the upstream uid onto the fused operator, which fails
    # job submission with "Hash collision on user-specified ID" once a Python operator follows a keyed
    # one. Each stage does its Python work in one operator instead.
    conf.set_string("python.operator-chaining.enabled", "false")
    conf.set_string("state.backend.type", "rocksdb")
    if options.python_executable:
        conf.set_string("python.executable", options.python_executable)
    if options.checkpoint_interval_ms > 0:
        conf.set_string("execution.checkpointing.interval", f"{options.checkpoint_interval_ms} ms")
        conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if options.parallelism:
        env.set_parallelism(options.parallelism)
    if options.jars:
        env.add_jars(*(Path(j).resolve().as_uri() for j in options.jars))
    for package in ("udfs", "jobs"):
        env.add_python_file(str(REPO_ROOT / package))
    return env


def kafka_raw_source(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str,
                     properties: dict[str, str] | None = None, name: str = "kafka-source") -> DataStream:
    """Reads a topic as raw records: topic, partition, offset, Kafka timestamp and the value bytes.

    The Table API's Kafka connector with the `raw` format is used because it exposes the record metadata
    and never decodes the value (invalid UTF-8 must reach the validator untouched). Offsets are committed
    on checkpoints; a new consumer group starts from the earliest offset.
    """
    t_env = StreamTableEnvironment.create(env)
    extra = "".join(f",\n  'properties.{k}' = '{_sql_str(v)}'" for k, v in (properties or {}).items())
    table = f"raw_{name.replace('-', '_')}"
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {table} (
          `topic` STRING METADATA VIRTUAL,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
          `value` BYTES
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{_sql_str(topic)}',
          'properties.bootstrap.servers' = '{_sql_str(bootstrap)}',
          'properties.group.id' = '{_sql_str(group_id)}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.isolation.level' = 'read_committed',
          'scan.startup.mode' = 'group-offsets',
          'format' = 'raw'{extra}
        )""")
    # The Kafka timestamp leaves SQL as epoch milliseconds: a TIMESTAMP_LTZ would reach thread-mode Python
    # as an unconverted Java Instant. (TIMESTAMPDIFF returns INT, so minutes, not seconds, avoid 2038.)
    t_env.get_config().set("table.local-time-zone", "UTC")
    rows = t_env.sql_query(
        "SELECT `topic`, `partition`, `offset`, "
        "CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), `kafka_ts`) AS BIGINT) * 60000"
        " + EXTRACT(SECOND FROM `kafka_ts`) * 1000 + EXTRACT(MILLISECOND FROM `kafka_ts`) AS `kafka_ts`, "
        f"`value` FROM {table}")
    return t_env.to_data_stream(rows)


def kafka_string_sink(bootstrap: str, topic: str, exactly_once: bool, transactional_prefix: str,
                      properties: dict[str, str] | None = None) -> KafkaSink:
    """A Kafka sink for UTF-8 string records (JSON documents).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: target topic.
        exactly_once: transactional writes committed on checkpoints (consumers must read_committed); when
            false, at-least-once with low latency — every tagstream consumer de-duplicates by id anyway.
        transactional_prefix: unique per job and sink (required for exactly-once).
        properties: extra Kafka producer properties.
    """
    builder = KafkaSink.builder().set_bootstrap_servers(bootstrap).set_record_serializer(
        KafkaRecordSerializationSchema.builder().set_topic(topic)
        .set_value_serialization_schema(SimpleStringSchema()).build())
    props = {"max.request.size": str(8 * 1024 * 1024), "linger.ms": "5", **(properties or {})}
    if exactly_once:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE) \
            .set_transactional_id_prefix(transactional_prefix)
        props.setdefault("transaction.timeout.ms", str(15 * 60 * 1000))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    for key, value in props.items():
        builder = builder.set_property(key, value)
    return builder.build()


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags every job has (see :class:`RuntimeOptions`)."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--parallelism", type=int, default=None, help="default operator parallelism")
    group.add_argument("--checkpoint-interval", type=parse_duration_ms, default=5000,
                       help="checkpoint period, e.g. 5s (0 disables; default 5s)")
    group.add_argument("--python-mode", choices=("thread", "process"), default="thread",
                       help="PyFlink execution mode (default thread)")
    group.add_argument("--python-executable", default=None,
                       help="Python for the UDF workers (default: the cluster's python.executable)")
    group.add_argument("--jar", action="append", default=None,
                       help="connector jar to ship (repeatable; default: the setup cache or $TAGSTREAM_JARS)")


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the Kafka connection flags every job has. Secrets come from the environment only."""
    group = parser.add_argument_group("kafka")
    group.add_argument("--bootstrap", default=os.environ.get("TAGSTREAM_BOOTSTRAP", "127.0.0.1:9092"),
                       help="Kafka bootstrap servers (default $TAGSTREAM_BOOTSTRAP or 127.0.0.1:9092)")
    group.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                       help="extra Kafka client property (repeatable); for SASL secrets use "
                            "$TAGSTREAM_KAFKA_SASL_JAAS_CONFIG instead of a flag")
    group.add_argument("--exactly-once", action="store_true",
                       help="transactional Kafka writes committed on checkpoints (default: at-least-once)")


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The :class:`RuntimeOptions` given by parsed flags."""
    return RuntimeOptions(parallelism=args.parallelism, checkpoint_interval_ms=args.checkpoint_interval,
                          python_mode=args.python_mode, python_executable=args.python_executable,
                          jars=tuple(args.jar) if args.jar is not None else default_jars())


def kafka_properties(args: argparse.Namespace) -> dict[str, str]:
    """Extra Kafka client properties from flags and the environment."""
    props = {}
    for item in args.kafka_property:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--kafka-property expects KEY=VALUE, got {item!r}")
        props[key] = value
    jaas = os.environ.get("TAGSTREAM_KAFKA_SASL_JAAS_CONFIG")
    if jaas:
        props["sasl.jaas.config"] = jaas
    return props


def parse_duration_ms(text: str) -> int:
    """Parses `500ms`, `5s`, `10m`, `24h`, `7d` or plain milliseconds into milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    text = text.strip().lower()
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
            return int(text[: -len(suffix)]) * units[suffix]
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 500ms, 5s, 10m, 24h, 7d)")
