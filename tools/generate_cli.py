"""Command line of the clickstream generator (`python -m tools.generate`): flags, sources, sinks."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NoReturn

from tools.generate import GeneratorConfig, Record, generate, take
from tools.generate_kafka import KEY_MODES, TIME_MODES, SendStats, make_producer, write_kafka
from tools.journeys import JourneyConfig
from tools.journeys_world import rfc3339
from udfs.topology import PROFILES

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DEFAULTS = GeneratorConfig()
_JOURNEY = JourneyConfig()
_EVERY = f"{1 / _JOURNEY.events_per_person_s():.0f}"  # seconds between a person's events, on average

DESCRIPTION = """\
Synthetic tagstream clickstream: people browsing the web and the app, logging in, buying, changing consent,
synced from a CRM; with malformed records of every dead-letter reason and redeliveries mixed in. Output is
deterministic for a given --seed and --origin (with --realtime: the same records at the same offsets from
the start). Sends to Kafka (default), writes Parquet (--parquet) or prints raw values (--stdout); --replay
sends a Parquet file instead of generating.
"""

EPILOG = f"""\
Kafka record timestamps: with --kafka-time event (default) each record carries its simulated send time, the
reference time the ingest validator judges `ts` against. Without --realtime the simulation usually runs
faster than the wall clock (its natural rate is about users / {_EVERY} records per simulated second with
the default gaps); Kafka >= 4.0 brokers refuse timestamps over 1 h ahead of their clock unless the topic's
message.timestamp.after.max.ms is raised, and ingest dead-letters events over a day ahead. For long runs
use --realtime; for bulk loads start --origin in the past (e.g. now-7d), or use --max-lead 50m (the rate
then drops to the natural rate once 50 min ahead) or --kafka-time wall.

--realtime: event time follows the wall clock for as long as the generator runs. The origin is now; each
record is sent when the wall clock reaches its timestamp (late events up to --disorder-ms after their `ts`),
so event time ~ send time ~ Kafka record time. --rate then sets the population instead of pacing: a person
makes an event every ~{_EVERY} s on average (sessions of --events-per-session steps --event-gap-mean
apart, then a pause of 60 s + --session-gap-mean), so --rate R simulates R x {_EVERY} x (1 - bad - dup)
people (e.g. {_DEFAULTS.for_rate(200).users:,} for 200/s), each taking ~3.7 KB of memory once they have shown
up (0.55 GB for 200/s after a few hours; bounded). Some people are mid-session at the start, so the rate
holds from the first seconds (within ~5 %). A shorter --session-gap-mean needs fewer people (who then come
back sooner, more often within 30 minutes).

examples:
  python -m tools.generate --realtime --rate 200                         # to Kafka in real time until Ctrl-C
  python -m tools.generate --rate 200 --users 2000                       # to Kafka, as fast as the rate says
  python -m tools.generate --count 1000000 --origin 2026-01-01T00:00:00Z --parquet events.parquet
  python -m tools.generate --replay events.parquet --rate 5000 --bootstrap 127.0.0.1:19092
  python -m tools.generate --stdout --count 20 --bad-fraction 0.2
"""


def parse_origin(text: str, now_ms: int) -> int:
    """Parses an event-time origin: `now`, `now-2d` / `now+90m` (s, m, h, d, w), RFC 3339, or epoch ms.

    Raises:
        ValueError: for anything else, or RFC 3339 text without an offset.
    """
    text = text.strip()
    relative = re.fullmatch(r"now(?:([+-])(\d+)([smhdw]))?", text)
    if relative:
        sign, amount, unit = relative.groups()
        delta = int(amount) * _UNITS_MS[unit] if amount else 0
        return now_ms - delta if sign == "-" else now_ms + delta
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise ValueError(f"bad origin {text!r}: use now, now-2d, RFC 3339 or epoch ms") from None
    if parsed.tzinfo is None:
        raise ValueError(f"origin {text!r} needs a UTC offset (e.g. Z)")
    return int(parsed.timestamp() * 1000)


def parse_duration_ms(text: str) -> int:
    """Parses a duration such as `0`, `90s`, `50m`, `2h`, `1d` into milliseconds."""
    match = re.fullmatch(r"(\d+)([smhdw]?)", text.strip())
    if not match or (match.group(2) == "" and match.group(1) != "0"):
        raise ValueError(f"bad duration {text!r}: use e.g. 0, 90s, 50m, 2h, 1d")
    return int(match.group(1)) * _UNITS_MS.get(match.group(2), 0)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `--help` documents every flag."""
    p = argparse.ArgumentParser(prog="python -m tools.generate", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to generate")
    g.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default %(default)s)")
    g.add_argument("--users", type=int, help=f"number of people (default {_DEFAULTS.users}; with --realtime "
                   "it follows from --rate)")
    g.add_argument("--origin", default="now", help="event time of the start: now, now-2d, now+1h, RFC 3339 "
                   "(2026-01-01T00:00:00Z) or epoch ms (default now; printed, so a run can be repeated)")
    g.add_argument("--bad-fraction", type=_fraction, default=_DEFAULTS.bad_fraction,
                   help="share of malformed records, all dead-letter reasons (default %(default)s)")
    g.add_argument("--dup-fraction", type=_fraction, default=_DEFAULTS.dup_fraction,
                   help="share of redelivered duplicates of recent valid records (default %(default)s)")
    g.add_argument("--disorder-ms", type=int, default=_DEFAULTS.max_disorder_ms,
                   help="the most a valid event is sent after its event time (default %(default)s)")
    g.add_argument("--disorder-fraction", type=float, default=_DEFAULTS.disorder_fraction,
                   help="share of valid events sent late, by up to --disorder-ms (default %(default)s)")
    g.add_argument("--session-gap-mean", type=float, default=_JOURNEY.session_gap_mean_s, metavar="S",
                   help="mean pause between a person's sessions in seconds, on top of a minimum of "
                   f"{_JOURNEY.session_gap_min_s:.0f} s (default %(default)s: about a fifth under 30 min)")
    g.add_argument("--event-gap-mean", type=float, default=_JOURNEY.event_gap_mean_s, metavar="S",
                   help="mean think time between events of a session in seconds (default %(default)s)")
    g.add_argument("--events-per-session", type=float, default=_JOURNEY.events_per_session,
                   help="mean browsing steps per session (default %(default)s)")
    g.add_argument("--catalogue-size", type=int, default=_JOURNEY.catalogue_size,
                   help="number of products (default %(default)s)")
    g.add_argument("--erase-probability", type=float, default=_JOURNEY.erase_probability,
                   help="chance a session ends with an erase request (default %(default)s)")
    g.add_argument("--replay", metavar="PATH",
                   help="send the records of this Parquet file instead of generating")

    g = p.add_argument_group("how much")
    g.add_argument("--count", type=int, help="stop after this many records (all kinds)")
    g.add_argument("--duration", type=float, metavar="S", help="stop after this many seconds")
    g.add_argument("--realtime", action="store_true", help="Kafka only: event time follows the wall clock "
                   "(origin now, each record sent at its timestamp) and --rate sets the number of people; "
                   "for runs of any length (see below; not with --origin, --users, --max-lead or "
                   "--kafka-time wall)")

    g = p.add_argument_group("where to (default: Kafka, until Ctrl-C / SIGTERM)")
    g.add_argument("--parquet", metavar="PATH",
                   help="write a Parquet file instead (needs --count or --duration)")
    g.add_argument("--stdout", action="store_true", help="print raw values instead, one per line")
    g.add_argument("--bootstrap", default=PROFILES["dev"].bootstrap, help="Kafka bootstrap servers (default "
                   "%(default)s, the dev stack)")
    g.add_argument("--topic", default="events", help="Kafka topic (default %(default)s)")
    g.add_argument("--rate", type=float, default=100.0,
                   help="Kafka records per second, 0 = as fast as possible (default %(default)s; Parquet and "
                   "stdout are written as fast as possible); with --realtime: the rate the population is "
                   "sized for")
    g.add_argument("--burst", type=float,
                   help="token-bucket burst size (default a tenth of a second's records)")
    g.add_argument("--key", choices=KEY_MODES, default="person",
                   help="Kafka key: person = the person's first id (their records share a partition), "
                   "record = the record's own id, none (default %(default)s)")
    g.add_argument("--kafka-time", choices=TIME_MODES, default="event",
                   help="Kafka record timestamp: event = simulated send time, wall = producer clock "
                   "(default %(default)s; see below)")
    g.add_argument("--max-lead", metavar="DURATION",
                   help="with --kafka-time event, hold records until their timestamp is at most this far "
                   "ahead of the wall clock, e.g. 50m (under Kafka's default 1 h limit; the rate then falls "
                   "to the simulation's natural rate) or 0 (real time); units s, m, h, d (default: never)")
    g.add_argument("--linger-ms", type=int, default=20, help="producer linger.ms (default %(default)s)")
    g.add_argument("--batch-bytes", type=int, default=256 * 1024,
                   help="producer batch.size (default %(default)s)")
    g.add_argument("--compression", choices=("gzip", "lz4", "zstd", "snappy"), help="producer compression")
    g.add_argument("--progress-every", type=float, default=5.0, metavar="S",
                   help="print Kafka progress to stderr every S seconds, 0 = never (default %(default)s)")
    return p


def config_from(args: argparse.Namespace, now_ms: int) -> GeneratorConfig:
    """The generator config the flags describe (origin resolved against `now_ms`; unset with --realtime)."""
    journey = JourneyConfig(session_gap_mean_s=args.session_gap_mean, event_gap_mean_s=args.event_gap_mean,
                            events_per_session=args.events_per_session, catalogue_size=args.catalogue_size,
                            erase_probability=args.erase_probability)
    cfg = GeneratorConfig(seed=args.seed, users=args.users or _DEFAULTS.users,
                          origin_ms=None if args.realtime else parse_origin(args.origin, now_ms),
                          bad_fraction=args.bad_fraction, dup_fraction=args.dup_fraction,
                          max_disorder_ms=args.disorder_ms, disorder_fraction=args.disorder_fraction,
                          journey=journey)
    return cfg.for_rate(args.rate) if args.realtime else cfg


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _terminate(_signum: int, _frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def _to_stdout(records: Iterator[Record]) -> int:
    out, n = sys.stdout.buffer, 0
    try:
        for record in records:
            out.write(record.value + b"\n")
            n += 1
        out.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
    return n


def _to_kafka(records: Iterator[Record], args: argparse.Namespace) -> int:
    pace = "in real time" if args.realtime else f"at {args.rate:g}/s" if args.rate > 0 else "at full speed"
    _log(f"sending to {args.bootstrap} topic {args.topic} {pace} (Ctrl-C to stop)")
    producer = make_producer(args.bootstrap, args.topic, linger_ms=args.linger_ms,
                             batch_bytes=args.batch_bytes, compression=args.compression)

    def progress(stats: SendStats) -> None:
        _log(f"  {stats.summary()}")

    try:
        stats = write_kafka(records, producer, topic=args.topic, rate=0 if args.realtime else args.rate,
                            burst=args.burst, count=args.count, duration_s=args.duration, key_mode=args.key,
                            time_mode=args.kafka_time, max_lead_ms=args.max_lead_ms, warn=_log,
                            progress=progress if args.progress_every > 0 else None,
                            progress_every_s=args.progress_every or 5.0)
    finally:
        producer.close()
    _log(("interrupted: " if stats.interrupted else "done: ") + stats.summary())
    return 1 if stats.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Runs the generator CLI; returns the exit code (1 when records could not be delivered)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parquet and args.count is None and args.duration is None:
        parser.error("--parquet needs --count or --duration")
    if args.realtime:
        clashes = [flag for flag, given in (
            ("--origin", args.origin != "now"), ("--users", args.users), ("--max-lead", args.max_lead),
            ("--kafka-time wall", args.kafka_time == "wall"), ("--parquet", args.parquet),
            ("--stdout", args.stdout), ("--replay", args.replay)) if given]
        if clashes:
            parser.error(f"--realtime sends to Kafka from now on, for a population sized by --rate: drop "
                         f"{', '.join(clashes)}")
    try:
        cfg = config_from(args, int(time.time() * 1000))
        args.max_lead_ms = None if args.max_lead is None else parse_duration_ms(args.max_lead)
        if args.realtime:
            args.max_lead_ms = 0  # hold each record until the wall clock reaches its timestamp
    except ValueError as err:
        parser.error(str(err))
    signal.signal(signal.SIGTERM, _terminate)
    metadata: dict[str, Any] | None
    if args.replay:
        from tools.parquet_io import read_metadata, read_parquet

        source: Iterator[Record] = read_parquet(args.replay)
        metadata = read_metadata(args.replay)
        _log(f"replaying {args.replay}")
    else:
        source, metadata = generate(cfg), cfg.as_dict()
        origin = ("the wall clock (real time)" if cfg.origin_ms is None else
                  f"{rfc3339(cfg.origin_ms)} (--origin {cfg.origin_ms} repeats this run)")
        _log(f"generating: seed {cfg.seed}, {cfg.users} users (natural rate {cfg.natural_rate():.1f}/s), "
             f"origin {origin}, bad {cfg.bad_fraction}, dup {cfg.dup_fraction}")
    try:
        if args.parquet:
            from tools.parquet_io import write_parquet

            n = write_parquet(take(source, args.count, args.duration), args.parquet, metadata=metadata)
            _log(f"wrote {n} records to {args.parquet}")
            return 0
        if args.stdout:
            _to_stdout(take(source, args.count, args.duration))
            return 0
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    return _to_kafka(source, args)


if __name__ == "__main__":
    sys.exit(main())
