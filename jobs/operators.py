"""Flink operators shared by tagstream jobs: thin wrappers that hold state and metrics, nothing else."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.common.time import Time
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from jobs.runtime import METRIC_GROUP


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
        ttl = StateTtlConfig.new_builder(Time.milliseconds(self.horizon_ms)) \
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite) \
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired) \
            .cleanup_in_rocksdb_compact_filter(1000).build()
        descriptor.enable_time_to_live(ttl)
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
