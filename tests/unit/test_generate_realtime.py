"""Real-time generation: event time follows a fake wall clock and the rate sizes the population (tier 1).

No test sleeps: the wall clock is a :class:`FakeClock` that moves only when the writer sleeps.
"""

from __future__ import annotations

import gc
import time
from itertools import islice
from types import SimpleNamespace

import orjson
import pytest

from tests.unit.test_generate_io import FakeClock, FakeProducer
from tools import generate_cli
from tools.generate import DUPLICATE, MALFORMED, VALID, GeneratorConfig, Record, generate
from tools.generate_kafka import SendStats, write_kafka
from tools.journeys import JourneyConfig, Person

RATE = 5.0  # records per second
CONFIG = GeneratorConfig(seed=21, bad_fraction=0.03, dup_fraction=0.02).for_rate(RATE)
WALL_START_S = 1_790_000_000.4  # not a whole second: the origin is rounded up to 1_790_000_001_000
RUN_S = 2 * 3600


class WallProducer(FakeProducer):
    """A fake producer that also notes the (fake) wall clock, in epoch ms, at each send."""

    def __init__(self, wall) -> None:
        super().__init__()
        self.wall = wall
        self.sent_at: list[int] = []

    def send(self, topic, value=None, key=None, timestamp_ms=None):
        self.sent_at.append(int(self.wall() * 1000))
        return super().send(topic, value=value, key=key, timestamp_ms=timestamp_ms)


class Run:
    """A real-time run against a fake wall clock: the origin, what was sent (with its record) and when."""

    def __init__(self, config: GeneratorConfig, wall_start_s: float, duration_s: float) -> None:
        clock = FakeClock()
        offset = wall_start_s - clock.now

        def wall() -> float:
            return clock.now + offset

        self.producer = WallProducer(wall)
        config = config.resolved(int(wall() * 1000))  # what `generate` does with the real wall clock
        assert config.origin_ms is not None
        self.origin_ms = config.origin_ms
        self.records: list[Record] = []
        self.stats: SendStats = write_kafka(self._noted(generate(config)), self.producer, max_lead_ms=0,
                                            duration_s=duration_s, clock=clock, wall=wall, sleep=clock.sleep)

    def _noted(self, records):
        for record in records:
            self.records.append(record)
            yield record

    def sends(self) -> list[tuple[int, dict, Record]]:
        """(wall ms at send, what the producer got, the record) for every record sent."""
        records = self.records[:len(self.producer.sent)]  # the writer may draw one past its deadline
        return list(zip(self.producer.sent_at, self.producer.sent, records, strict=True))


@pytest.fixture(scope="module")
def long_run() -> Run:
    return Run(CONFIG, WALL_START_S, RUN_S)


def test_the_population_is_sized_for_the_rate():
    assert RATE <= CONFIG.natural_rate() < RATE * 1.001
    # a person makes an event every ~776 s; 5 % of the records are malformed or duplicates
    assert CONFIG.users == pytest.approx(RATE * 0.95 * 776, rel=0.01)
    assert GeneratorConfig(bad_fraction=0, dup_fraction=0).for_rate(2 * RATE).users > 2 * CONFIG.users


def test_the_origin_is_the_wall_clock_rounded_up_to_a_whole_second(long_run):
    assert long_run.origin_ms == 1_790_000_001_000
    assert GeneratorConfig().resolved(now_ms=1_790_000_000_000).origin_ms == 1_790_000_000_000


def test_no_record_is_sent_before_the_wall_clock_reaches_its_time(long_run):
    sends = long_run.sends()
    assert len(sends) > RATE * RUN_S * 0.8
    for wall_ms, sent, record in sends:
        assert sent["timestamp_ms"] == record.truth["sent_ms"] <= wall_ms
        assert record.truth.get("ts_ms", record.truth["sent_ms"]) <= wall_ms


def test_event_time_stays_within_the_disorder_of_the_wall_clock(long_run):
    late_by = {kind: [] for kind in (VALID, MALFORMED)}
    for wall_ms, sent, record in long_run.sends():
        assert wall_ms - sent["timestamp_ms"] <= 1  # sent when the clock reaches the record's timestamp
        if record.kind in late_by:
            late_by[record.kind].append(wall_ms - record.truth.get("ts_ms", record.truth["sent_ms"]))
    assert min(late_by[VALID]) >= 0 and max(late_by[VALID]) <= CONFIG.max_disorder_ms
    assert max(late_by[VALID]) > CONFIG.max_disorder_ms / 2  # some are late, as configured
    assert max(late_by[MALFORMED]) <= 1
    assert long_run.stats.max_lead_ms == 0 and long_run.stats.max_lag_ms <= 1


def test_the_requested_rate_is_honoured_over_a_long_run(long_run):
    def rate(start_s: int, end_s: int) -> float:
        start, end = long_run.origin_ms + start_s * 1000, long_run.origin_ms + end_s * 1000
        return sum(start <= sent["timestamp_ms"] < end for sent in long_run.producer.sent) / (end_s - start_s)

    assert rate(0, RUN_S - 10) == pytest.approx(RATE, rel=0.08)
    assert rate(0, 600) == pytest.approx(RATE, rel=0.15)  # from the start: people are mid-session already
    kinds = {kind: sum(r.kind == kind for r in long_run.records) for kind in (MALFORMED, DUPLICATE)}
    assert kinds[MALFORMED] / len(long_run.records) == pytest.approx(CONFIG.bad_fraction, abs=0.01)
    assert kinds[DUPLICATE] / len(long_run.records) == pytest.approx(CONFIG.dup_fraction, abs=0.01)


def _relative(record: Record, origin_ms: int) -> tuple:
    """A record with its times relative to the origin and its absolute timestamps left out."""
    truth = {k: v - origin_ms if k in ("sent_ms", "ts_ms") else v for k, v in record.truth.items()}
    if record.kind == MALFORMED:  # its bytes are built around the absolute send time
        return record.kind, truth
    event = orjson.loads(record.value)
    del event["ts"]
    return record.kind, truth, event


def test_runs_differ_only_by_their_origin():
    duration_s = 900
    first, again, later = (Run(CONFIG, start, duration_s)
                           for start in (WALL_START_S, WALL_START_S, WALL_START_S + 86_400 * 40 + 0.77))
    assert first.records == again.records
    assert later.origin_ms != first.origin_ms

    def relative(run: Run) -> list[tuple]:  # the records of the first 14 minutes
        return [_relative(r, run.origin_ms) for r in run.records
                if r.truth["sent_ms"] - run.origin_ms < 840_000]

    assert relative(first) == relative(later) and len(relative(first)) > RATE * duration_s / 2


def _census() -> tuple[int, int]:
    """(objects the garbage collector tracks, of which people), after a collection."""
    gc.collect()
    objects = gc.get_objects()
    return len(objects), sum(isinstance(o, Person) for o in objects)


def test_memory_stays_bounded_over_a_long_run():
    # Busy people (short pauses) who often ask to be erased: many sessions and newcomers per slot.
    journey = JourneyConfig(session_gap_mean_s=600, erase_probability=0.05)
    config = GeneratorConfig(seed=4, users=80, origin_ms=1_790_000_000_000, journey=journey)
    records, newest, checkpoints = generate(config), 0, []
    for _ in range(3):
        for record in islice(records, 10_000):
            newest = max(newest, int(record.truth["person"][1:]))
        checkpoints.append(_census())
    assert record.truth["sent_ms"] - config.origin_ms > 6 * 3_600_000  # hours of simulated time
    assert newest > 2 * config.users  # and newcomers took over erased slots
    assert all(people <= config.users for _, people in checkpoints)
    (first, _), *later = checkpoints
    assert all(objects - first < 1000 for objects, _ in later)  # a leak of one object a record: 10,000


# -- CLI ------------------------------------------------------------------------------------------------

def test_cli_realtime_sizes_the_population_and_sends_at_the_wall_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(generate_cli, "make_producer", lambda *args, **kwargs: SimpleNamespace(close=list))
    monkeypatch.setattr(generate_cli, "write_kafka", lambda records, producer, **options: calls.append(
        (records, options)) or SendStats())
    assert generate_cli.main(["--realtime", "--rate", "20", "--seed", "7", "--bad-fraction", "0.03",
                              "--dup-fraction", "0.02"]) == 0
    (records, options), = calls
    assert options["rate"] == 0 and options["max_lead_ms"] == 0  # paced by the wall clock alone
    drawn_ms = time.time() * 1000
    assert next(records).truth["sent_ms"] >= drawn_ms  # the origin is the wall clock at the first draw

    args = generate_cli.build_parser().parse_args(["--realtime", "--rate", "200", "--session-gap-mean", "60"])
    config = generate_cli.config_from(args, now_ms=1_790_000_000_000)
    assert config.origin_ms is None and config.journey.session_gap_mean_s == 60
    assert config.natural_rate() == pytest.approx(200, rel=1e-3)


@pytest.mark.parametrize("clash", [["--users", "10"], ["--origin", "now-1d"], ["--max-lead", "50m"],
                                   ["--kafka-time", "wall"], ["--stdout"], ["--rate", "0"]])
def test_cli_realtime_refuses_what_contradicts_it(clash):
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(["--realtime", *clash])
    assert exit_info.value.code == 2
