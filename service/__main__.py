"""Runs the lookup service with uvicorn.

    python -m service --profile dev                  # the local dev stack, http://127.0.0.1:8090
    python -m service --host 0.0.0.0 --port 8090 --bootstrap kafka:29092 --redis-url redis://redis:6379/0 \\
        --dynamodb-endpoint http://dynamodb:8000 --dynamodb-region us-east-1

Endpoints: `GET /persons/{id}/segments`, `GET /persons/{id}/segments/stream` (Server-Sent Events),
`GET /healthz`; `GET /docs` has the OpenAPI page. Email and phone lookups need `TAGSTREAM_PII_KEY` (the
identity job's); the local stack's is `.run/<profile>/pii.key`, which `--profile` reads.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from service.app import create_app
from service.config import add_flags, config_from_args

DEFAULT_PORT = 8090


def use_stack_secrets(profile: str) -> None:
    """Sets the local stack's PII key and DynamoDB Local's dummy credentials (unless already set)."""
    from tools.stack import Stack

    env = Stack(profile, log=lambda _: None).flink_env()
    for name in ("TAGSTREAM_PII_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, env[name])


def build_parser() -> argparse.ArgumentParser:
    """The service's flags (tests/static checks the deployment files' arguments with it)."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default %(default)s)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default %(default)s)")
    add_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and serves until interrupted."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.profile:
        use_stack_secrets(args.profile)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
