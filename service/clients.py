"""The lookup's store clients and identity rules, created on first use (service and CLI share them)."""

from __future__ import annotations

from service.config import LookupConfig
from service.resolve import LazyHasher, Query, parse_query
from udfs.identity.config import IdentityConfig, load_identity_config
from udfs.stores.dynamo_store import DynamoConfig, DynamoStore
from udfs.stores.redis_store import RedisConfig, RedisStore


class Clients:
    """The service's store clients and identity rules, created on first use and shared by requests."""

    def __init__(self, config: LookupConfig) -> None:
        self.config = config
        self._redis: RedisStore | None = None
        self._dynamo: DynamoStore | None = None
        self._identity: IdentityConfig | None = None
        self.hasher = LazyHasher()

    @property
    def redis(self) -> RedisStore:
        """The Redis reader (`udfs.stores`: skips tombstones)."""
        if self._redis is None:
            self._redis = RedisStore(RedisConfig(url=self.config.redis_url))
        return self._redis

    @property
    def dynamo(self) -> DynamoStore | None:
        """The DynamoDB reader, or None when the fallback is off."""
        if self._dynamo is None and self.config.dynamodb:
            self._dynamo = DynamoStore(DynamoConfig(endpoint_url=self.config.dynamodb_endpoint,
                                                    region=self.config.dynamodb_region))
        return self._dynamo

    @property
    def identity(self) -> IdentityConfig:
        """The identity job's identifier rules (`flink-conf/identity.yaml`)."""
        if self._identity is None:
            self._identity = load_identity_config()
        return self._identity

    def query(self, text: str) -> Query:
        """Parses a lookup id (see `service.resolve.parse_query`)."""
        return parse_query(text, self.identity, self.hasher)

    def close(self) -> None:
        """Closes the store clients."""
        for store in (self._redis, self._dynamo):
            if store is not None:
                store.close()
