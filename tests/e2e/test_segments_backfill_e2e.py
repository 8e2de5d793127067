"""The segments backfill end to end (tier 3): definitions published with the CLI, a Parquet history written
with pyarrow, `flink run` of jobs/segments_backfill.py to completion (`tools.flink_jobs.run_backfill`, what
`make segments-backfill` runs), then the warmed tags in the real Redis and DynamoDB Local."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.resolve import lookup, parse_query
from tests.e2e.test_segments_e2e import event, now_ms
from tools import segments_cli
from tools.flink_jobs import run_backfill
from tools.kafka_io import private_topics
from udfs.identity.config import load_identity_config
from udfs.identity.pii import PiiHasher
from udfs.segments import person_id_of
from udfs.segments.definitions import EXAMPLES_DIR

pytestmark = pytest.mark.e2e


def test_backfill_warms_redis_and_dynamodb(stack, stores, tmp_path: Path):
    bootstrap = stack.ports.bootstrap
    topic = private_topics(bootstrap, "segment-definitions", partitions=1)["segment-definitions"]
    examples = [EXAMPLES_DIR / f"{name}.yaml" for name in ("viewed_product", "recent_purchaser")]
    assert segments_cli.main(["--bootstrap", bootstrap, "--topic", topic, "apply", *map(str, examples)]) == 0
    run = uuid.uuid4().hex[:6]
    user = f"u-{run}"
    person = person_id_of({"ids": {"user_id": user}})
    as_of = now_ms()
    history = [event(f"{run}-v1", user, as_of - 120_000, "product_view", product_id="p1"),  # until as_of + 3 min
               event(f"{run}-v0", user, as_of - 600_000, "product_view", product_id="p0"),  # exited before as_of
               event(f"{run}-b1", user, as_of - 86_400_000, "purchase", revenue=20),       # 7 days from then
               event(f"{run}-v9", user, as_of + 60_000, "product_view", product_id="p9"),   # after the end
               b"not an event"]
    path = tmp_path / "history.parquet"
    pq.write_table(pa.table({"value": pa.array(history, pa.binary())}), path)

    output = run_backfill(stack, [path], ["--definitions-topic", topic, "--as-of", str(as_of)])
    assert "5 records read, 3 events kept, skipped: 1 after_as_of, 1 invalid_json" in output, output[-2000:]

    redis, dynamo = stores
    identity = load_identity_config()
    found = lookup(parse_query(f"user_id:{user}", identity, PiiHasher(b"x" * 16)), redis, None, now_ms(), identity)
    assert found is not None and found.source == "redis"
    tags = found.view["tags"]
    assert set(tags) == {"viewed_product:p1", "recent_purchaser"}, orjson.dumps(found.view)
    assert (tags["viewed_product:p1"]["entered_at"], tags["viewed_product:p1"]["expires_at"]) == \
        (as_of - 120_000, as_of + 180_000)
    assert tags["recent_purchaser"]["expires_at"] == as_of - 86_400_000 + 7 * 86_400_000
    items = {i["tag"]: i for i in dynamo.query_live("tagstream_segments", person, now_ms())}
    assert set(items) == set(tags)
    assert items["viewed_product:p1"]["expires_at_ms"] == as_of + 180_000
