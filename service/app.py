"""The lookup service: a person's current segments, and a Server-Sent Events stream of their changes.

    GET /persons/{id}/segments          current tags (params, entry, expiry), placements, consent
    GET /persons/{id}/segments/stream   SSE: `ready`, then one `segment_change` event per change record
    GET /healthz                        200 when Redis answers (and how many streams are open), else 503

`{id}` is a person id (`p-…`) or any identifier `TYPE:VALUE` (`user_id:u-42`, `email:a@b.c`), resolved as
`service/resolve.py` describes. Answers: 400 for a malformed id, 404 when no store knows the person, 503 when
a store is unreachable or an email / phone is asked without `TAGSTREAM_PII_KEY`.

Stream: events carry the change record as JSON `data` and `partition:offset` as `id`; a client reconnecting
with `Last-Event-ID` resumes right after it (browsers' EventSource do this by themselves). The first event,
`ready`, says which person and partition offset the stream starts at: everything the job writes from then on
is delivered. A comment line is sent after `heartbeat_s` of silence. A client that disconnects ends the
Kafka consumer within one poll (`poll_timeout_ms`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import FastAPI, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from kafka.errors import KafkaError
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.changes import ChangeTail
from service.clients import Clients
from service.config import LookupConfig
from service.resolve import MalformedId, lookup, stream_person
from udfs.identity.pii import PiiKeyMissing
from udfs.stores.retry import StoreError

T = TypeVar("T")


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _answer(call: Callable[[], T]) -> T:
    """Runs a lookup step, mapping the known failures to HTTP errors."""
    try:
        return call()
    except MalformedId as exc:
        raise HTTPException(400, str(exc)) from exc
    except PiiKeyMissing as exc:
        raise HTTPException(503, f"email and phone lookups are not configured: {exc}") from exc
    except (StoreError, RedisError, KafkaError, LookupError) as exc:  # a store or Kafka is unreachable
        raise HTTPException(503, f"{type(exc).__name__}: {exc}") from exc


def create_app(config: LookupConfig, clients: Clients | None = None) -> FastAPI:
    """The lookup service's ASGI app.

    Args:
        config: where to read.
        clients: shared clients (default: created from `config` on first use, closed at shutdown).
    """
    shared = clients or Clients(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        shared.close()

    app = FastAPI(title="tagstream lookup", summary="A person's current segments and their changes",
                  lifespan=lifespan)

    streams = {"open": 0}  # change streams being served (each holds a Kafka consumer)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """200 when Redis answers a PING, else 503; `streams`: change streams open now."""
        try:
            shared.redis.client.ping()
        except Exception as exc:  # any client error means not ready
            raise HTTPException(503, f"Redis: {exc}") from exc
        return {"status": "ok", "streams": streams["open"]}

    @app.get("/persons/{person:path}/segments/stream")
    async def stream(person: str, last_event_id: str | None = Header(None)) -> EventSourceResponse:
        """Server-Sent Events of the person's segment changes from now on (or after `Last-Event-ID`)."""
        query = _answer(lambda: shared.query(person))
        person_id = await run_in_threadpool(_answer, lambda: stream_person(query, shared.redis, shared.identity))
        tail = await run_in_threadpool(_answer, lambda: ChangeTail(
            config.bootstrap, config.changes_topic, person_id, last_event_id, config.kafka_options))
        return EventSourceResponse(_events(tail, config.poll_timeout_ms, streams), ping=config.heartbeat_s)

    @app.get("/persons/{person:path}/segments")
    def segments(person: str) -> dict[str, Any]:
        """The person's current tags (expired ones dropped), placement decisions and consent."""
        query = _answer(lambda: shared.query(person))
        found = _answer(lambda: lookup(query, shared.redis, shared.dynamo, now_ms(), shared.identity))
        if found is None:
            raise HTTPException(404, f"no segments known for {person[:80]!r}")
        return found.as_dict(query)

    return app


async def _events(tail: ChangeTail, poll_timeout_ms: int, streams: dict[str, int]) -> AsyncIterator[ServerSentEvent]:
    """The SSE events of a tail; closes its consumer when the client goes away (`streams["open"]` counts)."""
    streams["open"] += 1
    try:
        ready = {"person_id": tail.person_id, "partition": tail.partition.partition, "offset": tail.start_offset}
        yield ServerSentEvent(orjson.dumps(ready).decode(), event="ready")
        while True:
            for change in await anyio.to_thread.run_sync(tail.poll, poll_timeout_ms):
                yield ServerSentEvent(orjson.dumps(change.record).decode(), id=change.event_id,
                                      event=str(change.record.get("kind", "segment_change")))
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(tail.close)
        streams["open"] -= 1
