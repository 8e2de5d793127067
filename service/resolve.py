"""From "any identifier" to a person's current segments.

A query is a person id (`p-…`) or a typed identifier `TYPE:VALUE` (`user_id:u-42`, `email:a@b.c`). An
identifier is normalized and, for email and phone, HMAC-hashed exactly as the identity job does
(`udfs.identity.observe.identifier_key`, key from `TAGSTREAM_PII_KEY`), then resolved through the identity
job's alias key (`tagstream:alias:{type}:{value}` -> surviving person). Without an alias (the identity job
does not run, or has not seen the identifier yet) the identifier's own person id is used
(`p-` + SHA-256 of the typed key: the id the identity job gives a person the identifier founds, and the key
the segments job derives from `user_id` / `anonymous_id` / `device_id` on `events.valid`).

Reads: one Redis round trip fetches the alias and the view of the identifier's own person together; only an
alias pointing elsewhere (a merged person) costs a second one. When Redis has no view, DynamoDB
(`query_live`) is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from udfs.identity.config import IdentityConfig
from udfs.identity.graph import person_id_for
from udfs.identity.observe import identifier_key
from udfs.identity.pii import PiiHasher
from udfs.identity.records import alias_key
from udfs.segments import SegmentsConfig
from udfs.segments.records import redis_key
from udfs.segments.views import view_from_hash, view_from_items
from udfs.stores.dynamo_store import DynamoStore
from udfs.stores.redis_store import RedisStore

ID_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # identifier types of the event contract
PERSON_ID = re.compile(r"^p-[A-Za-z0-9_.\-]{1,126}$")
MAX_QUERY = 512


class MalformedId(ValueError):
    """The text is neither a person id nor a usable `TYPE:VALUE` identifier (HTTP 400)."""


@dataclass(frozen=True)
class Query:
    """A parsed lookup.

    Attributes:
        text: what was asked.
        person_id: set for a person-id query.
        typed_key: `type:value` as the identity job keys it (hashed for email / phone), for an identifier.
    """

    text: str
    person_id: str | None = None
    typed_key: str | None = None

    @property
    def own_person(self) -> str:
        """The person asked for, or the person the identifier would found."""
        return self.person_id if self.person_id is not None else person_id_for(str(self.typed_key))


def parse_query(text: str, identity: IdentityConfig, hasher: PiiHasher) -> Query:
    """Parses a lookup id.

    Args:
        text: `p-…` or `TYPE:VALUE`.
        identity: identifier rules (normalization, hashed types, blocklists) of the identity job.
        hasher: the identity job's PII hasher (e.g. :class:`LazyHasher`, which needs its key only when an
            email or phone is looked up).

    Raises:
        MalformedId: with the reason.
        PiiKeyMissing: an email or phone lookup without `TAGSTREAM_PII_KEY`.
    """
    if not text or len(text) > MAX_QUERY:
        raise MalformedId(f"an id is 1 to {MAX_QUERY} characters")
    if text.startswith("p-"):
        if not PERSON_ID.match(text):
            raise MalformedId(f"{text[:80]!r} is not a person id (p- then 1-126 of [A-Za-z0-9_.-])")
        return Query(text, person_id=text)
    id_type, sep, value = text.partition(":")
    if not sep or not ID_TYPE.match(id_type):
        raise MalformedId(f"{text[:80]!r} is neither a person id (p-…) nor TYPE:VALUE with TYPE like user_id")
    key, reason = identifier_key(id_type, value, identity, hasher)
    if key is None:
        raise MalformedId(f"the {id_type} value is not usable ({reason})")
    return Query(text, typed_key=key)


class LazyHasher(PiiHasher):
    """The identity job's hasher with its key read from the environment on first use, so a service without
    `TAGSTREAM_PII_KEY` still answers every lookup but those of hashed types (email, phone)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = env
        self._hasher: PiiHasher | None = None

    def digest(self, domain: str, value: str) -> str:
        """The keyed hash (see `PiiHasher.digest`).

        Raises:
            PiiKeyMissing: the key is not configured.
        """
        if self._hasher is None:
            self._hasher = PiiHasher.from_env(self._env)
        return self._hasher.digest(domain, value)


@dataclass(frozen=True)
class Found:
    """A lookup's answer.

    Attributes:
        view: the person's view (`person_id`, `as_of`, `consent`, `tags`, `placements`), expired tags dropped.
        resolved_via: `person_id`, `alias` (the identity job's alias key) or `identifier` (no alias: the
            identifier's own person).
        source: `redis`, `dynamodb`, or `none` (a person the identity job knows, with no segment state).
        redis_round_trips: Redis round trips made.
    """

    view: dict[str, Any]
    resolved_via: str
    source: str
    redis_round_trips: int

    def as_dict(self, query: Query) -> dict[str, Any]:
        """The JSON answer of the service."""
        return {**self.view, "query": query.text, "resolved_via": self.resolved_via, "source": self.source}


def lookup(query: Query, redis: RedisStore, dynamo: DynamoStore | None, now_ms: int, identity: IdentityConfig,
           segments: SegmentsConfig | None = None) -> Found | None:
    """The current segments of the person a query names, or None when nothing knows them.

    Args:
        query: a parsed id.
        redis: view hashes and alias keys.
        dynamo: read when Redis holds no view (None: Redis only).
        now_ms: wall clock: tags expired then are dropped.
        identity: alias key layout.
        segments: view key layout and table.
    """
    segments = segments or SegmentsConfig()
    own = query.own_person
    aliases = [alias_key(identity, query.typed_key)] if query.typed_key is not None else []
    values, (fields,) = redis.read(aliases, [redis_key(own, segments)])
    alias = values[0] if values else None
    trips, person = 1, alias or own
    via = "person_id" if query.person_id is not None else "alias" if alias else "identifier"
    if person != own:
        fields, trips = redis.get_hash(redis_key(person, segments)), 2
    if fields is not None:
        return Found(view_from_hash(person, fields, now_ms), via, "redis", trips)
    items = dynamo.query_live(segments.dynamo_table, person, now_ms) if dynamo is not None else []
    if items:
        return Found(view_from_items(person, items, now_ms), via, "dynamodb", trips)
    if alias:
        return Found(view_from_hash(person, {}, now_ms), via, "none", trips)
    return None


def stream_person(query: Query, redis: RedisStore, identity: IdentityConfig) -> str:
    """The person whose change stream a query follows: the alias's person, else the query's own."""
    if query.typed_key is None:
        return query.own_person
    return redis.get(alias_key(identity, query.typed_key)) or query.own_person
