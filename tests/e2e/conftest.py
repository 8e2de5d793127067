"""Fixtures of the end-to-end tier: the `test`-profile local stack (Kafka, Redis, DynamoDB Local, Flink)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tools.stack import Stack
from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
from udfs.stores.redis_store import RedisConfig, RedisStore

# The e2e tier only talks to DynamoDB Local, which accepts any credentials; boto3 needs some.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The `test` stack (or $TAGSTREAM_TEST_PROFILE's), healthy, with every topic and table of udfs.topology.

    Reuses a stack that is already up (e.g. `make up PROFILE=test` while iterating) and leaves it running;
    otherwise starts one and stops it at the end of the session.
    """
    stack = Stack(os.environ.get("TAGSTREAM_TEST_PROFILE", "test"))
    reuse = stack.healthy()
    stack.up()  # also (re)creates topics and tables when reusing
    yield stack
    if not reuse:
        stack.down()


@contextmanager
def store_clients(stack: Stack) -> Iterator[tuple[RedisStore, DynamoStore]]:
    """Store clients (as the jobs use them) for the stack's Redis and DynamoDB Local."""
    redis = RedisStore(RedisConfig(url=stack.redis_url))
    dynamo = DynamoStore(DynamoConfig(endpoint_url=stack.dynamodb_endpoint, region="us-east-1"))
    try:
        yield redis, dynamo
    finally:
        redis.close()
        dynamo.close()


@pytest.fixture
def stores(stack) -> Iterator[tuple[RedisStore, DynamoStore]]:
    """Store clients (as the jobs use them) for the stack's Redis and DynamoDB Local."""
    with store_clients(stack) as clients:
        yield clients
