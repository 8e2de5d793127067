"""Segments backfill: a bounded run of the segments pipeline over historical Parquet files, warming Redis and
DynamoDB before (or while) the live job runs.

    python jobs/segments_backfill.py --redis-url redis://127.0.0.1:6379/0 \\
        --dynamodb-endpoint http://127.0.0.1:8000 --dynamodb-region us-east-1 history/*.parquet
    make segments-backfill FILES="history/*.parquet"            # on the stack of PROFILE (dev)

The files hold one raw event per row in a `value` column (binary or text; `tools/parquet_io.py` writes such
files, other columns are ignored). They are read with pyarrow in the client, validated with the event
contract (`udfs/segments/history.py`: rejected records are counted, not applied), cut at `--as-of` (default:
now) and sorted by event time; then `jobs/segments.py`'s own `build_segments` evaluates them with the
published definitions (or `--definitions FILES`) and the store writer applies the Redis and DynamoDB ops.
Event time stops at `--as-of`: tags that still hold then are written with their exact expiry (readers drop
them when it passes), exits before it are applied. Change records are not published (the history's changes
are not news); the job's metrics count them.

Continuing live: every store write carries the person's event-time version (`docs/segments.md`, "Store
writes"), so writes of the live job for events after `--as-of` always win over the backfill's, and a backfill
run again later never regresses them (its writes are older: skipped). Limits: the live job's state does not
include the history (a window that spans `--as-of` sees only the live events after it, and a tag the live job
never re-derives keeps its backfilled field until its own expiry); run the backfill over the history the live
job will not read (before its Kafka start), with `--as-of` at that start. All rows go through the client's
memory (`from_collection`): split very large histories by person, not by time (a person's windows must see
all their history in one run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from pyflink.common import Row
from pyflink.datastream import StreamExecutionEnvironment

from jobs import runtime
from jobs.operators import write_store_ops
from jobs.segments import SegmentsJobConfig, SegmentsStreams, build_segments
from udfs.contract import parse_event_time
from udfs.segments import SegmentsConfig, load_files
from udfs.segments.history import History, prepare_history
from udfs.segments.published import definition_set


def build_backfill(env: StreamExecutionEnvironment, history: History, config: SegmentsJobConfig) -> SegmentsStreams:
    """The segments stage over prepared history (`config.advance_until_ms`: the run's end).

    Raises:
        ValueError: an empty history (a bounded collection needs a record) or a config without an end.
    """
    if not history.events:
        raise ValueError("the history holds no event to backfill")
    if config.advance_until_ms is None or config.idle_timeout_ms is not None:
        raise ValueError("a backfill needs advance_until_ms and no idle clock")
    rows = env.from_collection([Row(raw, ts) for raw, ts in history.events], type_info=runtime.TIMED_VALUE_TYPE)
    events = runtime.with_event_time(runtime.table_env(env), rows, 0)  # sorted: nothing is late
    return build_segments(events, None, config)


def backfill_config(definitions: list[dict], as_of_ms: int, segments: SegmentsConfig | None = None
                    ) -> SegmentsJobConfig:
    """The segments stage's settings for a backfill ending at `as_of_ms`."""
    return SegmentsJobConfig(segments=segments or SegmentsConfig(), definitions=tuple(definitions),
                             idle_timeout_ms=None, advance_until_ms=as_of_ms)


def read_history(files: list[Path], as_of_ms: int) -> History:
    """Reads the `value` column of Parquet files with pyarrow and prepares it (`prepare_history`).

    Raises:
        SystemExit: a file that does not exist or has no `value` column.
    """
    from tools.parquet_io import column_names, iter_columns

    def values():
        for path in files:
            for batch in iter_columns(path, ["value"]):
                yield from batch["value"]

    for path in files:
        if not path.is_file():
            raise SystemExit(f"no such file: {path}")
        if "value" not in column_names(path):
            raise SystemExit(f"{path} has no `value` column (one raw event per row)")
    return prepare_history(values(), as_of_ms)


def published_definitions(bootstrap: str, topic: str) -> list[dict]:
    """The definitions published on the compacted topic (what the live job evaluates)."""
    from tools.segments_cli import published

    docs, issues = definition_set(published(bootstrap, topic).items())
    for issue in issues:
        print(f"warning: published definition {issue.name} is unreadable: {issue.message}", file=sys.stderr)
    return [dict(d) for d in docs]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the backfill's flags."""
    parser = runtime.job_parser("segments-backfill", __doc__, stores=True)
    parser.add_argument("files", nargs="+", type=Path, help="Parquet files with a `value` column of raw events")
    group = parser.add_argument_group("backfill")
    group.add_argument("--as-of", type=_time_ms, default=None,
                       help="end of the history: epoch ms or RFC 3339 (default: now); later events are skipped")
    group.add_argument("--definitions", type=Path, action="append", default=None, metavar="PATH",
                       help="a definition file or directory of *.yaml (repeatable; default: those published on "
                            "--definitions-topic)")
    group.add_argument("--definitions-topic", default="segment-definitions",
                       help="compacted definitions topic read when --definitions is not given")
    return parser.parse_args(argv)


def _yaml_files(paths: list[Path]) -> list[Path]:
    return [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]


def _time_ms(text: str) -> int:
    try:
        return parse_event_time(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> None:
    """Reads the history, runs the bounded pipeline with the store writer, and waits for it to finish."""
    args = parse_args(argv)
    if not (args.redis_url or args.dynamodb_endpoint or args.dynamodb_region):
        raise SystemExit("nothing to warm: give --redis-url and/or --dynamodb-endpoint / --dynamodb-region")
    as_of = args.as_of if args.as_of is not None else time.time_ns() // 1_000_000
    definitions = [dict(d) for d in load_files(_yaml_files(args.definitions))] if args.definitions else \
        published_definitions(args.bootstrap, args.definitions_topic)
    if not definitions:
        raise SystemExit("no segment definitions: publish some (make segments-apply) or pass --definitions")
    history = read_history(args.files, as_of)
    print(f"segments backfill as of {as_of}: {history.summary()}", flush=True)
    if not history.events:
        raise SystemExit("nothing to backfill")
    env = runtime.create_env(runtime.runtime_options(args))
    streams = build_backfill(env, history, backfill_config(definitions, as_of))
    write_store_ops(streams.store_ops, args, "segments-backfill")
    env.execute("tagstream-segments-backfill")


if __name__ == "__main__":
    main(sys.argv[1:])
