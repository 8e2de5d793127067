"""What every tagstream job shares: the execution environment, Kafka sources and sinks, metrics, flags.

Jobs import this module; it imports pyflink, so it belongs to `jobs/`, never to `udfs/`.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Types
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.table import DataTypes, Schema, StreamTableEnvironment
from pyflink.table.expressions import col

from udfs.options import key_values

REPO_ROOT = Path(__file__).resolve().parent.parent
METRIC_GROUP = "tagstream"

# A raw Kafka record as every job's source yields it (tests build the same rows with an int timestamp).
RAW_RECORD_FIELDS = ["topic", "partition", "offset", "kafka_ts", "value"]
RAW_RECORD_TYPE = Types.ROW_NAMED(
    RAW_RECORD_FIELDS,
    [Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)
# A record for `kafka_keyed_sink`: target topic, Kafka key and value, all strings.
KAFKA_RECORD_TYPE = Types.ROW_NAMED(["topic", "key", "value"], [Types.STRING(), Types.STRING(), Types.STRING()])
# A bounded input for `with_event_time`: the record value and its event time.
TIMED_VALUE_TYPE = Types.ROW_NAMED(["value", "ts_ms"], [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.LONG()])


class Level:
    """A metric that goes up and down (a gauge), exported as a Flink counter moved by the differences.

    PyFlink's gauges call back into Python from Flink's metric-query thread; in thread mode (pemja) that
    call is not made on a Python thread and crashed the TaskManager (SIGSEGV in `_PyEvalFramePushAndInit`
    from `MetricGauge.getValue`, seen under the chaos harness's metric polling). A counter's value lives in
    the JVM, so reading it is safe.

    Args:
        counter: the PyFlink counter (`metric_group.counter(name)`).
    """

    def __init__(self, counter) -> None:
        self.counter = counter
        self.value = 0

    def set(self, value: int) -> None:
        """Sets the level."""
        delta = value - self.value
        if delta > 0:
            self.counter.inc(delta)
        elif delta < 0:
            self.counter.dec(-delta)
        self.value = value

    def add(self, delta: int) -> None:
        """Moves the level by `delta`."""
        self.set(self.value + delta)


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
        conf: more Flink settings of the job, applied last (e.g. `state.backend.type` = `hashmap`,
            `python.fn-execution.bundle.size`); tuning and benchmarks (tools/bench).
    """

    parallelism: int | None = None
    checkpoint_interval_ms: int = 5000
    python_mode: str = "thread"
    jars: tuple[str, ...] = ()
    python_executable: str | None = None
    conf: tuple[tuple[str, str], ...] = ()


def default_jars() -> tuple[str, ...]:
    """Connector jars found in the setup cache or in `TAGSTREAM_JARS` (os.pathsep-separated)."""
    listed = os.environ.get("TAGSTREAM_JARS")
    if listed:
        return tuple(p for p in listed.split(os.pathsep) if p)
    return tuple(sorted(glob.glob(str(REPO_ROOT / ".cache" / "jars" / "flink" / "*.jar"))))


BUNDLE_DEFAULTS = {"python.fn-execution.bundle.size": "100", "python.fn-execution.bundle.time": "5"}


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
    # Small Python bundles: a Python operator holds watermarks (hence event-time timers) and, across the
    # loop topics, its downstream jobs' input until its bundle finishes; Flink's default (100,000 records /
    # 1 s) left the TaskManager waiting at a third of a core while the jobs fell behind (`make bench-knobs`,
    # README Benchmark: 100 records / 5 ms gave 2-6x the throughput). `--conf` overrides both.
    for key, value in BUNDLE_DEFAULTS.items():
        conf.set_string(key, value)
    if options.python_executable:
        conf.set_string("python.executable", options.python_executable)
    if options.checkpoint_interval_ms > 0:
        conf.set_string("execution.checkpointing.interval", f"{options.checkpoint_interval_ms} ms")
        conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    for key, value in options.conf:
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if options.parallelism:
        env.set_parallelism(options.parallelism)
    if options.jars:
        env.add_jars(*(Path(j).resolve().as_uri() for j in options.jars))
    for package in ("udfs", "jobs"):
        env.add_python_file(str(REPO_ROOT / package))
    return env


def table_env(env: StreamExecutionEnvironment) -> StreamTableEnvironment:
    """A Table API environment on `env` (UTC session time zone), for Kafka tables and SQL."""
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    return t_env


def kafka_raw_source(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str,
                     properties: dict[str, str] | None = None, name: str = "kafka-source") -> DataStream:
    """Reads a topic as raw records: topic, partition, offset, Kafka timestamp and the value bytes.

    The Table API's Kafka connector with the `raw` format is used because it exposes the record metadata
    and never decodes the value (invalid UTF-8 must reach the validator untouched). Offsets are committed
    on checkpoints; a new consumer group starts from the earliest offset.
    """
    t_env = table_env(env)
    table = _kafka_source_table(t_env, bootstrap, topic, group_id, properties, name)
    # The Kafka timestamp leaves SQL as epoch milliseconds: a TIMESTAMP_LTZ would reach thread-mode Python
    # as an unconverted Java Instant. (TIMESTAMPDIFF returns INT, so minutes, not seconds, avoid 2038.)
    rows = t_env.sql_query(
        "SELECT `topic`, `partition`, `offset`, "
        "CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), `kafka_ts`) AS BIGINT) * 60000"
        " + EXTRACT(SECOND FROM `kafka_ts`) * 1000 + EXTRACT(MILLISECOND FROM `kafka_ts`) AS `kafka_ts`, "
        f"`value` FROM {table}")
    return t_env.to_data_stream(rows)


def kafka_event_source(t_env: StreamTableEnvironment, bootstrap: str, topic: str, group_id: str,
                       event_time: EventTime, properties: dict[str, str] | None = None,
                       name: str = "kafka-events", *, with_key: bool = False,
                       options: dict[str, str] | None = None) -> DataStream:
    """Reads a topic of JSON records as `(value, rowtime)` rows carrying event-time timestamps and watermarks.

    The rowtime is computed in SQL from the JSON field `event_time.field` (epoch ms; the Kafka record time
    when absent or not a number, or always when `field` is None; `event_time.constant_ms` when set), with a
    bounded-out-of-orderness watermark
    generated per partition inside the source and `scan.watermark.idle-timeout`, so that idle partitions
    do not hold the watermark back. `to_data_stream` hands timestamps and watermarks to the next (Python)
    operator: no extra operator assigns them. The `rowtime` column reaches thread-mode Python as a Java
    object; read the timestamp from the context (`ctx.timestamp()`) instead.

    With `with_key`, rows are `(key, value, rowtime)`: the record key as raw bytes (e.g. the name of a
    definition on a compacted topic, whose null value is a tombstone). `options` adds or overrides table
    options, e.g. `{"scan.startup.mode": "earliest-offset"}` for a topic that must always be read whole.
    """
    ts = "`kafka_ts`"
    if event_time.constant_ms is not None:
        ts = f"TO_TIMESTAMP_LTZ(CAST({int(event_time.constant_ms)} AS BIGINT), 3)"
    elif event_time.field is not None:
        path = _sql_str(f"$.{event_time.field}")
        ts = f"COALESCE(TO_TIMESTAMP_LTZ(TRY_CAST(JSON_VALUE(CAST(`value` AS STRING), '{path}') AS BIGINT), 3), {ts})"
    extra_columns = (f"`rowtime` AS {ts}",
                     f"WATERMARK FOR `rowtime` AS `rowtime` - {_interval_sql(event_time.out_of_orderness_ms)}")
    settings = {"scan.watermark.idle-timeout": f"{event_time.idle_timeout_ms} ms", **(options or {})}
    table = _kafka_source_table(t_env, bootstrap, topic, group_id, properties, name, extra_columns, settings,
                                with_key=with_key)
    key = "`key`, " if with_key else ""
    return t_env.to_data_stream(t_env.sql_query(f"SELECT {key}`value`, `rowtime` FROM {table}"))


def with_event_time(t_env: StreamTableEnvironment, rows: DataStream, out_of_orderness_ms: int) -> DataStream:
    """Gives a stream of `(value BYTES, ts_ms BIGINT)` rows the shape and time of :func:`kafka_event_source`.

    For bounded collections (tests, replays): the watermark is generated in SQL like the Kafka source's,
    after every record that moves it by more than the auto-watermark interval, so a late record is late
    deterministically.
    """
    schema = Schema.new_builder().column("value", DataTypes.BYTES()).column("ts_ms", DataTypes.BIGINT()) \
        .column_by_expression("rowtime", "TO_TIMESTAMP_LTZ(ts_ms, 3)") \
        .watermark("rowtime", f"rowtime - {_interval_sql(out_of_orderness_ms)}").build()
    table = t_env.from_data_stream(rows, schema)
    return t_env.to_data_stream(table.select(col("value"), col("rowtime")))


def _kafka_source_table(t_env: StreamTableEnvironment, bootstrap: str, topic: str, group_id: str,
                        properties: dict[str, str] | None, name: str, extra_columns: tuple[str, ...] = (),
                        options: dict[str, str] | None = None, with_key: bool = False) -> str:
    """Creates a temporary raw-format Kafka table with metadata columns (and the raw key); returns its name."""
    table = f"raw_{name.replace('-', '_').replace('.', '_')}"
    key_column = ("`key` BYTES",) if with_key else ()
    columns = ",\n          ".join(("`topic` STRING METADATA VIRTUAL", "`partition` INT METADATA VIRTUAL",
                                     "`offset` BIGINT METADATA VIRTUAL",
                                     "`kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL",
                                     *key_column, "`value` BYTES", *extra_columns))
    if with_key:
        options = {"key.format": "raw", "key.fields": "key", "value.fields-include": "EXCEPT_KEY",
                   **(options or {})}
    settings = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": bootstrap,
                "properties.group.id": group_id, "properties.auto.offset.reset": "earliest",
                "properties.isolation.level": "read_committed", "scan.startup.mode": "group-offsets",
                "format": "raw", **(options or {}),
                **{f"properties.{k}": v for k, v in (properties or {}).items()}}
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} (\n          {columns}\n        ) WITH ({_with(settings)})")
    return table


def kafka_string_sink(bootstrap: str, topic: str, exactly_once: bool, transactional_prefix: str,
                      properties: dict[str, str] | None = None) -> KafkaSink:
    """A Kafka sink for UTF-8 string records (JSON documents).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: target topic.
        exactly_once: transactional writes committed on checkpoints (consumers must read_committed); when
            false, at-least-once with low latency: enough where a replay writes the same records again (the
            consumers de-duplicate by id), not where it can write different ones (the identity job).
        transactional_prefix: unique per deployed job and sink (jobs derive it from their consumer group):
            two running jobs with one prefix fence each other's transactions.
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


def _with(settings: dict[str, str]) -> str:
    return ", ".join(f"'{_sql_str(k)}' = '{_sql_str(v)}'" for k, v in settings.items())


def _interval_sql(ms: int) -> str:
    """A SQL day-time interval of `ms` milliseconds (interval literals cap their leading field at 2 digits)."""
    return f"INTERVAL '0.001' SECOND * {int(ms)}"


@dataclass(frozen=True)
class EventTime:
    """How a source derives event time (flags of the same names).

    Attributes:
        field: top-level JSON field holding the event time in epoch ms (None: the Kafka record time).
        out_of_orderness_ms: the watermark trails the highest event time seen by this much.
        idle_timeout_ms: a partition without records for this long stops holding the watermark back; also
            the silence after which an idle clock (`udfs/clock.py`) lets event time follow the wall clock.
        constant_ms: every record's event time, instead of `field` or the record time: for a control stream
            connected with an event stream (e.g. segment definitions), whose watermark must never move the
            event time forward. With the Kafka record time, publishing a definition while the event input is
            idle or behind would set the joint watermark to the wall clock and make the backlog too late; with
            `constant_ms=0` the control stream only holds event time back while it is read (then it goes idle).
    """

    field: str | None = "ts_ms"
    out_of_orderness_ms: int = 5000
    idle_timeout_ms: int = 1000
    constant_ms: int | None = None


def job_parser(prog: str, description: str | None, event_time: bool = False,
               stores: bool = False, exactly_once: bool = False,
               checkpoint_interval_ms: int = 5000) -> argparse.ArgumentParser:
    """A job's flag parser with the flag groups all jobs share (runtime, Kafka) and the optional ones.

    Args:
        prog: the job's name.
        description: the job module's docstring (shown by `--help`).
        event_time: add the event-time flags (:func:`add_event_time_flags`).
        stores: add the Redis / DynamoDB flags (:func:`add_store_flags`).
        exactly_once: the job's default delivery guarantee of its Kafka writes (`--[no-]exactly-once`).
        checkpoint_interval_ms: the job's default checkpoint period (`--checkpoint-interval`).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_flags(parser, checkpoint_interval_ms)
    add_kafka_flags(parser, exactly_once)
    if event_time:
        add_event_time_flags(parser)
    if stores:
        add_store_flags(parser)
    return parser


def add_runtime_flags(parser: argparse.ArgumentParser, checkpoint_interval_ms: int = 5000) -> None:
    """Adds the flags every job has (see :class:`RuntimeOptions`)."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--parallelism", type=int, default=None, help="default operator parallelism")
    group.add_argument("--checkpoint-interval", type=parse_duration_ms, default=checkpoint_interval_ms,
                       help=f"checkpoint period, e.g. 5s (0 disables; default {checkpoint_interval_ms / 1000:g}s)")
    group.add_argument("--python-mode", choices=("thread", "process"), default="thread",
                       help="PyFlink execution mode (default thread)")
    group.add_argument("--python-executable", default=None,
                       help="Python for the UDF workers (default: the cluster's python.executable)")
    group.add_argument("--jar", action="append", default=None,
                       help="connector jar to ship (repeatable; default: the setup cache or $TAGSTREAM_JARS)")
    group.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                       help="extra Flink setting of the job, applied last (repeatable), e.g. "
                            "state.backend.type=hashmap or python.fn-execution.bundle.size=100")


def add_kafka_flags(parser: argparse.ArgumentParser, exactly_once: bool = False) -> None:
    """Adds the Kafka connection flags every job has (`exactly_once`: the job's default delivery guarantee).
    Secrets come from the environment only."""
    group = parser.add_argument_group("kafka")
    group.add_argument("--bootstrap", default=os.environ.get("TAGSTREAM_BOOTSTRAP", "127.0.0.1:9092"),
                       help="Kafka bootstrap servers (default $TAGSTREAM_BOOTSTRAP or 127.0.0.1:9092)")
    group.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                       help="extra Kafka client property (repeatable); for SASL secrets use "
                            "$TAGSTREAM_KAFKA_SASL_JAAS_CONFIG instead of a flag")
    group.add_argument("--exactly-once", action=argparse.BooleanOptionalAction, default=exactly_once,
                       help="transactional Kafka writes, visible to read_committed consumers when a checkpoint "
                            "completes; --no-exactly-once: at-least-once, visible at once (default: "
                            f"{'exactly-once' if exactly_once else 'at-least-once'})")


def add_event_time_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the event-time flags of jobs that work in event time (see :class:`EventTime`)."""
    group = parser.add_argument_group("event time")
    group.add_argument("--out-of-orderness", type=parse_duration_ms, default=EventTime.out_of_orderness_ms,
                       help="watermark delay behind the highest event time seen per partition (default 5s)")
    group.add_argument("--idle-timeout", type=parse_duration_ms, default=EventTime.idle_timeout_ms,
                       help="silence after which a partition stops holding the watermark back and, when the "
                            "whole input is silent, event time follows the wall clock (default 1s)")


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The :class:`RuntimeOptions` given by parsed flags.

    Raises:
        SystemExit: exactly-once writes without checkpoints (they would never be committed).
    """
    if getattr(args, "exactly_once", False) and args.checkpoint_interval <= 0:
        raise SystemExit("--exactly-once commits Kafka writes on checkpoints: give a --checkpoint-interval > 0 "
                         "or pass --no-exactly-once")
    return RuntimeOptions(parallelism=args.parallelism, checkpoint_interval_ms=args.checkpoint_interval,
                          python_mode=args.python_mode, python_executable=args.python_executable,
                          jars=tuple(args.jar) if args.jar is not None else default_jars(),
                          conf=tuple(key_values(args.conf, "--conf").items()))


def kafka_properties(args: argparse.Namespace) -> dict[str, str]:
    """Extra Kafka client properties from flags and the environment."""
    props = key_values(args.kafka_property, "--kafka-property")
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


def kafka_string_source(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str,
                        properties: dict[str, str] | None = None, name: str = "kafka-source") -> DataStream:
    """Reads a topic of UTF-8 records (JSON documents written by tagstream jobs) as strings.

    Built on :func:`kafka_raw_source`; the decoding operator is named `decode-<name>` (uid likewise).
    """
    raw = kafka_raw_source(env, bootstrap, topic, group_id, properties, name)
    return raw.map(lambda row: bytes(row[4]).decode("utf-8"), output_type=Types.STRING()) \
        .name(f"decode-{name}").uid(f"decode-{name}")


@dataclass(frozen=True)
class StoreOptions:
    """Where a job's store writer writes (flags of the same names); secrets come from the environment.

    Attributes:
        redis_url: `redis://host:port/db` (password from `TAGSTREAM_REDIS_PASSWORD`), None: no Redis.
        dynamodb_endpoint: DynamoDB endpoint URL (DynamoDB Local), None: AWS's.
        dynamodb_region: AWS region (credentials from the boto3 chain).
        dynamodb: write DynamoDB ops (False: they are dropped).
        dynamodb_table_prefix: prefixed to every DynamoDB table name (isolated copies of the tables).
    """

    redis_url: str | None = None
    dynamodb_endpoint: str | None = None
    dynamodb_region: str | None = None
    dynamodb: bool = True
    dynamodb_table_prefix: str = ""


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the Redis / DynamoDB flags of jobs that write to the stores (see :class:`StoreOptions`)."""
    group = parser.add_argument_group("stores")
    group.add_argument("--redis-url", default=os.environ.get("TAGSTREAM_REDIS_URL"),
                       help="Redis URL, e.g. redis://127.0.0.1:6379/0 (default $TAGSTREAM_REDIS_URL; unset: no "
                            "store writes); the password comes from $TAGSTREAM_REDIS_PASSWORD")
    group.add_argument("--dynamodb-endpoint", default=os.environ.get("TAGSTREAM_DYNAMODB_ENDPOINT"),
                       help="DynamoDB endpoint, e.g. http://127.0.0.1:8000 for DynamoDB Local "
                            "(default $TAGSTREAM_DYNAMODB_ENDPOINT, else AWS); credentials: the boto3 chain")
    group.add_argument("--dynamodb-region", default=os.environ.get("AWS_REGION"),
                       help="AWS region of DynamoDB (default $AWS_REGION)")
    group.add_argument("--no-dynamodb", action="store_true", help="do not write DynamoDB (Redis only)")
    group.add_argument("--dynamodb-table-prefix", default="", metavar="PREFIX",
                       help="prefix of every DynamoDB table name (default none: tagstream_profiles, ...), for "
                            "isolated copies of the tables in one account")


def store_options(args: argparse.Namespace) -> StoreOptions:
    """The :class:`StoreOptions` given by parsed flags."""
    return StoreOptions(redis_url=args.redis_url, dynamodb_endpoint=args.dynamodb_endpoint,
                        dynamodb_region=args.dynamodb_region, dynamodb=not args.no_dynamodb,
                        dynamodb_table_prefix=args.dynamodb_table_prefix)


def kafka_keyed_sink(env: StreamExecutionEnvironment, records: DataStream, bootstrap: str, exactly_once: bool,
                     transactional_prefix: str, properties: dict[str, str] | None = None,
                     name: str = "kafka-sink", *, topics: Sequence[str] = ()) -> None:
    """Produces `(topic, key, value)` string rows (:data:`KAFKA_RECORD_TYPE`) to their topics, keyed.

    PyFlink's DataStream `KafkaSink` can only serialize the whole element as the key, so keyed records go
    through the Table API's Kafka connector: the writable `topic` metadata column picks the topic, `raw`
    key and value formats carry the strings (value None: a tombstone). Kafka partitions by the key, so one
    key's records stay in order. Delivery as :func:`kafka_string_sink`. The sink shows in the Flink UI as
    `kafka_sink_<name>`; Table operators get generated ids, not `uid`s.

    `topics` lists every topic the rows may name: the connector requires its `topic` option even when the
    metadata column picks the topic, and then only writes to topics of that list.
    """
    if not topics:
        raise ValueError("kafka_keyed_sink needs topics=[...]: every topic the `topic` column may name")
    t_env = table_env(env)
    table = f"kafka_sink_{name.replace('-', '_').replace('.', '_')}"
    props = {"max.request.size": str(8 * 1024 * 1024), "linger.ms": "5", **(properties or {})}
    settings = {"connector": "kafka", "topic": ";".join(topics), "properties.bootstrap.servers": bootstrap,
                "key.format": "raw", "key.fields": "key", "value.format": "raw",
                "value.fields-include": "EXCEPT_KEY",
                "sink.delivery-guarantee": "exactly-once" if exactly_once else "at-least-once"}
    if exactly_once:
        settings["sink.transactional-id-prefix"] = transactional_prefix
        props.setdefault("transaction.timeout.ms", str(15 * 60 * 1000))
    settings.update({f"properties.{k}": v for k, v in props.items()})
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} (`topic` STRING METADATA, `key` STRING, `value` STRING) "
                      f"WITH ({_with(settings)})")
    statements = t_env.create_statement_set()
    statements.add_insert(table, t_env.from_data_stream(records))
    statements.attach_as_datastream()
