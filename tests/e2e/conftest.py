"""Fixtures of the end-to-end tier: the `test`-profile local stack (Kafka, Redis, DynamoDB Local, Flink)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tools.stack import Stack


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
