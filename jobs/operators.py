"""Flink operators shared by tagstream jobs: thin wrappers that hold state and metrics, nothing else."""

from __future__ import annotations

import argparse

from pyflink.common import Types
from pyflink.common.time import Time
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.data_stream import DataStream, KeyedStream
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
from pyflink.java_gateway import get_gateway

from jobs.runtime import METRIC_GROUP, store_options


def state_ttl(ttl_ms: int, update_type: StateTtlConfig.UpdateType = StateTtlConfig.UpdateType.OnCreateAndWrite
              ) -> StateTtlConfig:
    """A processing-time state TTL; expired values are never returned.

    Built from plain Python values only, so it works in a process-mode worker, which has no JVM gateway:
    expired entries are removed by Flink's default background cleanup (RocksDB: the compaction filter with
    its defaults, `state.backend.rocksdb.compaction.filter.*`; heap: incremental cleanup). PyFlink's
    `cleanup_in_rocksdb_compact_filter` would configure the same but builds a Java `Duration` on the way.

    Args:
        ttl_ms: how long a value lives after its last refresh.
        update_type: what refreshes it (default: every write).
    """
    return StateTtlConfig.new_builder(Time.milliseconds(ttl_ms)).set_update_type(update_type) \
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired).build()


class FirstByKey(KeyedProcessFunction):
    """Forwards the payload of the first record per key within a horizon; counts the rest as duplicates.

    Input rows are `(key, payload)`. The horizon is a processing-time state TTL (Flink state TTL is
    processing time only): an id seen again within it is dropped, an id older than it is forgotten, so
    state stays bounded by the ids seen per horizon. In RocksDB, expired entries are removed by the
    compaction filter.

    Args:
        horizon_ms: how long a key is remembered.
        forwarded_metric: name of the counter of forwarded (first-seen) records.
        duplicates_metric: name of the counter of dropped duplicates.
    """

    def __init__(self, horizon_ms: int, forwarded_metric: str, duplicates_metric: str):
        self.horizon_ms = horizon_ms
        self.metric_names = (forwarded_metric, duplicates_metric)

    def open(self, runtime_context: RuntimeContext) -> None:
        descriptor = ValueStateDescriptor("seen", Types.BOOLEAN())
        descriptor.enable_time_to_live(state_ttl(self.horizon_ms))
        self.seen = runtime_context.get_state(descriptor)
        group = runtime_context.get_metrics_group().add_group(METRIC_GROUP)
        self.forwarded = group.counter(self.metric_names[0])
        self.duplicates = group.counter(self.metric_names[1])

    def process_element(self, value, ctx):
        if self.seen.value():
            self.duplicates.inc()
            return
        self.seen.update(True)
        self.forwarded.inc()
        yield value[1]


class ApplyStoreOps(ProcessFunction):
    """Executes store ops against Redis and DynamoDB, one element at a time.

    An element is the JSON of one op (`udfs.stores.ops`) or a JSON array of ops (e.g. everything one
    evaluation writes): an array's Redis ops go in one pipelined round trip (`RedisStore.apply` batches), its
    DynamoDB ops in one `DynamoStore.apply` call. Each element is written synchronously, so everything
    received before a checkpoint barrier is stored before the barrier passes (PyFlink gives Python functions no
    pre-barrier hook to flush a batch). Writes are version-guarded, so a replay after a restart is harmless.
    Nothing is emitted.

    Args:
        options: where to write (`jobs.runtime.StoreOptions`); Redis ops are dropped without a Redis URL.
    """

    def __init__(self, options):
        self.options = options

    def open(self, runtime_context: RuntimeContext) -> None:
        from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
        from udfs.stores.redis_store import RedisConfig, RedisStore

        opts = self.options
        self.redis = RedisStore(RedisConfig(url=opts.redis_url)) if opts.redis_url else None
        self.dynamo = DynamoStore(DynamoConfig(endpoint_url=opts.dynamodb_endpoint, region=opts.dynamodb_region,
                                               table_prefix=opts.dynamodb_table_prefix)) if opts.dynamodb else None
        group = runtime_context.get_metrics_group().add_group(METRIC_GROUP)
        self.counters = {name: group.counter(f"store_{name}") for name in ("applied", "skipped", "deleted", "expired")}

    def close(self) -> None:
        for store in (self.redis, self.dynamo):
            if store is not None:
                store.close()

    def process_element(self, value, ctx):
        from udfs.stores.ops import ops_from_json, split_by_store

        redis_ops, dynamo_ops = split_by_store(ops_from_json(value))
        for store, ops in ((self.redis, redis_ops), (self.dynamo, dynamo_ops)):
            if store is None or not ops:
                continue
            result = store.apply(ops)
            for name, counter in self.counters.items():
                if count := getattr(result, name):
                    counter.inc(count)
        yield from ()


def key_by_first_field(stream: DataStream, value_type: TypeInformation) -> KeyedStream:
    """Keys a stream of `Row(key, value)` by its first field; the keyed function sees `value` only.

    `DataStream.key_by(selector)` runs the selector in an extra Python operator (at the default
    parallelism, behind a rebalance) that builds exactly this `Row(key, value)`. An operator that already
    emits it is keyed here directly with PyFlink's own Java key selector (the same one `key_by` uses): one
    Python operator less per record, and records of a key keep their order from a source of any
    parallelism (which makes late and out-of-order handling deterministic in tests at any parallelism).

    Args:
        stream: rows `Row(key: str, value)`.
        value_type: type of `value`.
    """
    selector = get_gateway().jvm.KeyByKeySelector()
    keyed = stream._j_data_stream.keyBy(selector, Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(keyed, value_type, stream)


def parallelism_of(stream: DataStream) -> int | None:
    """The parallelism set on a stream's operator, or None when it uses the environment's default."""
    parallelism = stream._j_data_stream.getParallelism()
    return parallelism if parallelism > 0 else None


def write_store_ops(store_ops: DataStream, args: argparse.Namespace, job: str) -> None:
    """Applies a job's store ops with :class:`ApplyStoreOps` when its flags name a store.

    Args:
        store_ops: the job's store ops stream.
        args: parsed flags (`runtime.add_store_flags`); no Redis URL and no DynamoDB endpoint/region: no writer.
        job: the job's key, for the operator uid (`<job>-apply-store-ops`).
    """
    if args.redis_url or args.dynamodb_endpoint or args.dynamodb_region:
        store_ops.process(ApplyStoreOps(store_options(args)), output_type=Types.STRING()) \
            .name("apply-store-ops").uid(f"{job}-apply-store-ops")
