"""Settings of the lookup service and its CLI (flags, environment, local stack profiles)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from udfs.options import key_values
from udfs.topology import PROFILES


@dataclass(frozen=True)
class LookupConfig:
    """Where the lookup service reads. Secrets come from the environment only.

    Attributes:
        redis_url: Redis of the segments view hashes and the identity job's alias keys
            (`redis://host:port/db`; password from `TAGSTREAM_REDIS_PASSWORD`).
        dynamodb_endpoint: DynamoDB endpoint URL (DynamoDB Local), None: AWS's. Read when Redis has no view.
        dynamodb_region: AWS region of DynamoDB (credentials from the boto3 chain).
        dynamodb: fall back to DynamoDB when Redis has nothing (False: Redis only).
        bootstrap: Kafka bootstrap servers of the change stream.
        changes_topic: the segments job's change records, keyed by person id.
        kafka_options: extra keyword arguments of the kafka-python consumer (e.g. `security_protocol`).
        heartbeat_s: an SSE comment is sent after this much silence, so proxies keep the stream open.
        poll_timeout_ms: one Kafka poll of a stream (also how soon a closed stream notices).
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    dynamodb_endpoint: str | None = None
    dynamodb_region: str | None = None
    dynamodb: bool = True
    bootstrap: str = "127.0.0.1:9092"
    changes_topic: str = "segment-changes"
    kafka_options: dict[str, str] = field(default_factory=dict)
    heartbeat_s: float = 15.0
    poll_timeout_ms: int = 500

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> LookupConfig:
        """The settings for a local stack profile (`dev`, `test`, ...) of `udfs.topology.PROFILES`."""
        ports = PROFILES[profile]
        return cls(**{"redis_url": f"redis://127.0.0.1:{ports.redis}/0",
                      "dynamodb_endpoint": f"http://127.0.0.1:{ports.dynamodb}", "dynamodb_region": "us-east-1",
                      "bootstrap": ports.bootstrap, **overrides})


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of :class:`LookupConfig` (defaults from the same environment variables as the jobs)."""
    group = parser.add_argument_group("stores and Kafka")
    group.add_argument("--profile", choices=sorted(PROFILES), default=None,
                       help="a local stack profile: its Redis, DynamoDB Local and Kafka (overrides the flags below)")
    group.add_argument("--redis-url", default=os.environ.get("TAGSTREAM_REDIS_URL", LookupConfig.redis_url),
                       help="Redis URL (default $TAGSTREAM_REDIS_URL or %(default)s); password from "
                            "$TAGSTREAM_REDIS_PASSWORD")
    group.add_argument("--dynamodb-endpoint", default=os.environ.get("TAGSTREAM_DYNAMODB_ENDPOINT"),
                       help="DynamoDB endpoint (default $TAGSTREAM_DYNAMODB_ENDPOINT, else AWS)")
    group.add_argument("--dynamodb-region", default=os.environ.get("AWS_REGION"),
                       help="AWS region of DynamoDB (default $AWS_REGION)")
    group.add_argument("--no-dynamodb", action="store_true", help="never fall back to DynamoDB")
    group.add_argument("--bootstrap", default=os.environ.get("TAGSTREAM_BOOTSTRAP", LookupConfig.bootstrap),
                       help="Kafka bootstrap servers (default $TAGSTREAM_BOOTSTRAP or %(default)s)")
    group.add_argument("--changes-topic", default=LookupConfig.changes_topic,
                       help="the segments job's change topic (default %(default)s)")
    group.add_argument("--kafka-option", action="append", default=[], metavar="KEY=VALUE",
                       help="extra kafka-python consumer option, e.g. security_protocol=SSL (repeatable)")


def config_from_args(args: argparse.Namespace) -> LookupConfig:
    """The :class:`LookupConfig` given by parsed flags (see :func:`add_flags`)."""
    options = key_values(args.kafka_option, "--kafka-option")
    common = {"dynamodb": not args.no_dynamodb, "changes_topic": args.changes_topic, "kafka_options": options}
    if args.profile:
        return LookupConfig.for_profile(args.profile, **common)
    return LookupConfig(redis_url=args.redis_url, dynamodb_endpoint=args.dynamodb_endpoint,
                        dynamodb_region=args.dynamodb_region, bootstrap=args.bootstrap, **common)
