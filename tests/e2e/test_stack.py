"""The local stack itself: every service answers, topics and tables exist, data round-trips (tier 3)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from tools.stack import Stack
from udfs.topology import TABLES, TOPICS

pytestmark = pytest.mark.e2e


def test_every_service_is_up(stack: Stack) -> None:
    status = stack.status()
    assert set(status) == {"kafka", "redis", "dynamodb", "jobmanager", "taskmanager"}
    assert {name for name, s in status.items() if not s["up"]} == set()
    assert all(s["pid"] for s in status.values())


def test_every_topic_exists_with_its_partitions(stack: Stack) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.ports.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([t.name for t in TOPICS])}
    finally:
        admin.close()
    for topic in TOPICS:
        assert topic.name in described, topic.name
        assert len(described[topic.name]["partitions"]) >= topic.partitions, topic.name


def test_kafka_round_trip(stack: Stack) -> None:
    topic = "events.valid"
    marker = uuid.uuid4().hex.encode()
    big = b"x" * (3 * 1024 * 1024)  # over the 1 MiB default, under the 4 MiB limit of `events`
    producer = KafkaProducer(bootstrap_servers=stack.ports.bootstrap, acks="all", max_request_size=5 << 20)
    try:
        meta = producer.send(topic, key=marker, value=marker).get(timeout=30)
        producer.send("events", value=big).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=stack.ports.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        deadline = time.monotonic() + 30
        values: list[bytes] = []
        while not values and time.monotonic() < deadline:
            values = [r.value for records in consumer.poll(timeout_ms=1000).values() for r in records]
        assert values[:1] == [marker]
    finally:
        consumer.close()


def test_redis_set_get(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    key = f"tagstream:test:{uuid.uuid4().hex}"
    try:
        client.set(key, "v", ex=60)
        assert client.get(key) == b"v"
    finally:
        client.delete(key)
        client.close()


def test_every_table_exists_with_ttl(stack: Stack) -> None:
    client = stack.dynamodb_client()
    names = set(client.list_tables()["TableNames"])
    for table in TABLES:
        assert table.name in names
        described = client.describe_table(TableName=table.name)["Table"]
        keys = {k["KeyType"]: k["AttributeName"] for k in described["KeySchema"]}
        assert keys["HASH"] == table.hash_key
        assert keys.get("RANGE") == table.range_key
        if table.ttl_attribute:
            ttl = client.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
            assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": table.ttl_attribute}


def test_dynamodb_put_get(stack: Stack) -> None:
    client = stack.dynamodb_client()
    table = TABLES[0]
    key = {table.hash_key: {"S": f"test-{uuid.uuid4().hex}"}}
    if table.range_key:
        key[table.range_key] = {"S": "k"}
    client.put_item(TableName=table.name, Item={**key, "v": {"N": "1"}})
    try:
        item = client.get_item(TableName=table.name, Key=key, ConsistentRead=True)["Item"]
        assert item["v"] == {"N": "1"}
    finally:
        client.delete_item(TableName=table.name, Key=key)


def test_flink_reports_slots(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.flink_ui_url}/overview", timeout=5) as resp:
        overview = json.load(resp)
    assert overview["taskmanagers"] >= 1
    assert overview["slots-total"] >= 8
    assert overview["slots-available"] >= 1


def test_flink_cli_reaches_the_cluster(stack: Stack) -> None:
    done = stack.flink("list", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stack.connector_jars(), "no connector jar in .cache/jars/flink"
