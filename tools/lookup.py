"""Look a person's segments up by any identifier, and follow their changes.

    python -m tools.lookup --profile dev user_id:u-42            # current tags, placements, consent (JSON)
    python -m tools.lookup --profile dev email:ada@shop.io   # hashed with $TAGSTREAM_PII_KEY (stack's key)
    python -m tools.lookup --profile dev p-1f3… --follow         # then one JSON line per change, until Ctrl-C

The same resolution and readers as the lookup service (`service/`), without needing it to run: the id is
resolved through the identity job's alias keys, the view read from Redis (DynamoDB when Redis has none), and
`--follow` tails the person's partition of `segment-changes` (`--after PARTITION:OFFSET` resumes). Exit
status: 0 found, 1 unknown person, 2 malformed id or unreachable store.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from service.app import now_ms
from service.changes import ChangeTail
from service.clients import Clients
from service.config import add_flags, config_from_args
from service.resolve import MalformedId, lookup, stream_person
from udfs.identity.pii import PiiKeyMissing


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tools.lookup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("id", help="p-… or TYPE:VALUE, e.g. user_id:u-42")
    parser.add_argument("--follow", action="store_true", help="then print the person's changes as they happen")
    parser.add_argument("--after", default=None, metavar="PARTITION:OFFSET",
                        help="with --follow: resume after this change id (default: from now)")
    add_flags(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.profile:
        from service.__main__ import use_stack_secrets

        use_stack_secrets(args.profile)
    clients = Clients(config)
    try:
        query = clients.query(args.id)
        found = lookup(query, clients.redis, clients.dynamo, now_ms(), clients.identity)
        if found is None:
            print(f"unknown: no segments known for {args.id!r}", file=sys.stderr)
        else:
            print(orjson.dumps(found.as_dict(query), option=orjson.OPT_INDENT_2).decode(), flush=True)
        if not args.follow:
            return 0 if found is not None else 1
        person = stream_person(query, clients.redis, clients.identity)
        with ChangeTail(config.bootstrap, config.changes_topic, person, args.after, config.kafka_options) as tail:
            print(f"following {person} (partition {tail.partition.partition} from offset {tail.start_offset}); "
                  "Ctrl-C stops", file=sys.stderr, flush=True)
            while True:
                for change in tail.poll(config.poll_timeout_ms):
                    print(orjson.dumps({"id": change.event_id, **change.record}).decode(), flush=True)
    except (MalformedId, PiiKeyMissing, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        clients.close()


if __name__ == "__main__":
    sys.exit(main())
