"""The generator's writers and CLI: Parquet round trip, Kafka writer (fake producer), pacing (tier 1)."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools.generate import MALFORMED, VALID, GeneratorConfig, Record, generate, take
from tools.generate_cli import build_parser, main, parse_duration_ms, parse_origin
from tools.generate_kafka import SendStats, TokenBucket, record_key, replay_parquet, write_kafka
from tools.parquet_io import UNKNOWN_KIND, iter_columns, read_metadata, read_parquet, write_parquet

ORIGIN = 1_790_000_000_000
CONFIG = GeneratorConfig(seed=3, users=40, origin_ms=ORIGIN, bad_fraction=0.1, dup_fraction=0.05)


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return list(take(generate(CONFIG), 1500))


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_callback(self, callback) -> None:
        if self.error is None:
            callback("metadata")

    def add_errback(self, errback) -> None:
        if self.error is not None:
            errback(self.error)


class FakeProducer:
    """Records what would have been sent; fails sends whose value matches `fail_on`."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.sent: list[dict] = []
        self.flushed = 0
        self.fail_on = fail_on

    def send(self, topic, value=None, key=None, timestamp_ms=None):
        self.sent.append({"topic": topic, "value": value, "key": key, "timestamp_ms": timestamp_ms})
        failed = self.fail_on is not None and self.fail_on in value
        return FakeFuture(InvalidTimestampError("ahead of the broker clock") if failed else None)

    def flush(self) -> None:
        self.flushed += 1


class InvalidTimestampError(Exception):
    pass


# -- Parquet --------------------------------------------------------------------------------------------

def test_parquet_round_trip_gives_the_same_records(tmp_path, records):
    path = tmp_path / "events.parquet"
    assert write_parquet(records, path, metadata=CONFIG.as_dict(), row_group_rows=400) == len(records)
    assert list(read_parquet(path, batch_rows=333)) == records
    assert read_metadata(path) == orjson.loads(orjson.dumps(CONFIG.as_dict()))
    assert pq.ParquetFile(path).metadata.num_row_groups == 4


def test_parquet_columns_are_null_where_a_record_is_malformed(tmp_path, records):
    path = tmp_path / "events.parquet"
    write_parquet(records, path)
    table = pq.read_table(path)
    for row, record in zip(table.to_pylist(), records, strict=True):
        assert row["value"] == record.value and row["kind"] == record.kind
        assert row["sent_ms"] == record.truth["sent_ms"] and row["person"] == record.truth["person"]
        if record.kind == MALFORMED:
            assert row["event_id"] is row["ts_ms"] is None
            assert row["reason"] == record.truth["reason"]
        else:
            assert (row["event_id"], row["type"], row["ts_ms"]) == tuple(
                record.truth[k] for k in ("event_id", "type", "ts_ms"))


def test_a_file_with_only_raw_values_reads_as_unknown_records(tmp_path):
    path = tmp_path / "sample.parquet"
    pq.write_table(pa.table({"value": ['{"a": 1}', None]}), path)
    assert list(read_parquet(path)) == [Record(b'{"a": 1}', UNKNOWN_KIND, {}), Record(b"", UNKNOWN_KIND, {})]
    assert next(iter_columns(path, ["value", "sent_ms"]))["sent_ms"] == [None, None]
    assert read_metadata(path) is None


def test_an_empty_record_set_still_writes_a_readable_file(tmp_path):
    path = tmp_path / "empty.parquet"
    assert write_parquet([], path) == 0
    assert list(read_parquet(path)) == []


# -- Kafka ----------------------------------------------------------------------------------------------

def test_person_keys_keep_each_persons_records_together(records):
    producer = FakeProducer()
    stats = write_kafka(records, producer)
    keys = defaultdict(set)
    for sent, record in zip(producer.sent, records, strict=True):
        keys[record.truth["person"]].add(sent["key"])
        assert sent["timestamp_ms"] == record.truth["sent_ms"] and sent["topic"] == "events"
    assert all(len(k) == 1 and None not in k for k in keys.values())
    assert stats.sent == stats.acked == len(records) and stats.failed == 0 and producer.flushed == 1
    assert stats.by_kind[VALID] and stats.bytes == sum(len(r.value) for r in records)


def test_record_keys_wall_time_and_a_count(records):
    producer = FakeProducer()
    write_kafka(records, producer, topic="raw", count=100, key_mode="record", time_mode="wall")
    assert len(producer.sent) == 100
    for sent, record in zip(producer.sent, records[:100], strict=True):
        assert sent["timestamp_ms"] is None and sent["topic"] == "raw"
        assert sent["key"] == record_key(record, "record")
        if record.kind == VALID:
            ids = orjson.loads(record.value)["ids"]
            assert sent["key"] == (ids.get("user_id") or ids.get("device_id") or ids["anonymous_id"]).encode()


def test_no_keys(records):
    producer = FakeProducer()
    write_kafka(records[:10], producer, key_mode="none")
    assert {sent["key"] for sent in producer.sent} == {None}


def test_delivery_errors_are_counted_and_explained(records):
    valid = [r for r in records if r.kind == VALID][:20]
    producer = FakeProducer(fail_on=valid[3].value)
    stats = write_kafka(valid, producer)
    assert (stats.acked, stats.failed) == (19, 1)
    assert stats.errors == {"InvalidTimestampError": 1}
    assert "message.timestamp.after.max.ms" in stats.summary()


def test_a_rate_paces_the_writer(records):
    clock = FakeClock()
    progress: list[int] = []
    stats = write_kafka(records, FakeProducer(), rate=200, count=1000, clock=clock, sleep=clock.sleep,
                        progress=lambda s: progress.append(s.sent), progress_every_s=1.0)
    assert stats.elapsed_s == pytest.approx((1000 - 20) / 200, rel=0.01)  # less the initial burst of 20
    assert len(progress) == 4  # at 1, 2, 3 and 4 s


def test_a_duration_stops_the_writer(records):
    clock = FakeClock()
    stats = write_kafka(records, FakeProducer(), rate=100, duration_s=2.0, clock=clock, sleep=clock.sleep)
    assert stats.sent == pytest.approx(210, abs=3)  # 2 s at 100/s plus the burst of 10


def test_ctrl_c_stops_the_writer_cleanly(records):
    def interrupted():
        yield from records[:5]
        raise KeyboardInterrupt

    producer = FakeProducer()
    stats = write_kafka(interrupted(), producer)
    assert stats.interrupted and stats.sent == 5 and producer.flushed == 1


def test_max_lead_holds_records_until_the_wall_clock_catches_up(records):
    clock = FakeClock()
    offset = records[0].truth["sent_ms"] / 1000 - clock.now  # the wall clock starts at the first send time

    stats = write_kafka(records, FakeProducer(), max_lead_ms=0, clock=clock, sleep=clock.sleep,
                        wall=lambda: clock.now + offset, warn=pytest.fail)
    span_s = (records[-1].truth["sent_ms"] - records[0].truth["sent_ms"]) / 1000
    assert stats.held_s == pytest.approx(span_s, abs=0.01)
    assert stats.elapsed_s == pytest.approx(span_s, abs=0.01)
    assert stats.max_lead_ms == 0


def test_a_simulation_running_ahead_of_the_wall_clock_is_warned_about_once(records):
    warnings: list[str] = []
    frozen_wall = records[0].truth["sent_ms"] / 1000
    stats = write_kafka(records, FakeProducer(), wall=lambda: frozen_wall, warn=warnings.append)
    assert stats.max_lead_ms == records[-1].truth["sent_ms"] - records[0].truth["sent_ms"] > 3_600_000
    assert len(warnings) == 1 and "message.timestamp.after.max.ms" in warnings[0]
    assert stats.held_s == 0 and "ahead of the wall clock" in stats.summary()


def test_token_bucket_keeps_the_average_rate_and_allows_a_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=50, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        bucket.acquire()
    assert clock.now == 100.0  # the burst is free
    for _ in range(5000):
        bucket.acquire()
    assert clock.now - 100.0 == pytest.approx(5.0, rel=0.01)
    unlimited = TokenBucket(rate=0, clock=clock, sleep=clock.sleep)
    before = clock.now
    for _ in range(10_000):
        unlimited.acquire()
    assert clock.now == before


def test_replay_sends_a_parquet_file_as_it_was_generated(tmp_path, records):
    path = tmp_path / "events.parquet"
    write_parquet(records, path)
    direct, replayed = FakeProducer(), FakeProducer()
    write_kafka(records, direct)
    stats = replay_parquet(path, replayed, rate=0)
    assert replayed.sent == direct.sent and isinstance(stats, SendStats)


# -- CLI ------------------------------------------------------------------------------------------------

def test_cli_writes_the_same_parquet_twice(tmp_path, capsys):
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in paths:
        assert main(["--parquet", str(path), "--count", "300", "--seed", "5", "--users", "20",
                     "--origin", "2026-01-01T00:00:00Z", "--bad-fraction", "0.2"]) == 0
    first, second = (list(read_parquet(p)) for p in paths)
    assert first == second and len(first) == 300
    assert read_metadata(paths[0])["seed"] == 5 and read_metadata(paths[0])["origin_ms"] == 1_767_225_600_000
    assert "--origin 1767225600000 repeats this run" in capsys.readouterr().err


def test_cli_replays_a_parquet_file_to_stdout(tmp_path, capsysbinary, records):
    path = tmp_path / "events.parquet"
    write_parquet(records[:50], path)
    assert main(["--replay", str(path), "--stdout", "--count", "10"]) == 0
    assert capsysbinary.readouterr().out == b"".join(r.value + b"\n" for r in records[:10])


def test_cli_help_documents_every_flag():
    text = build_parser().format_help()
    for flag in ("--seed", "--users", "--count", "--duration", "--rate", "--bad-fraction", "--dup-fraction",
                 "--bootstrap", "--topic", "--parquet", "--replay", "--origin", "--disorder-ms", "--key",
                 "--kafka-time", "--stdout"):
        assert flag in text
    actions = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert all(a.help for a in actions)


def test_cli_needs_a_bound_for_parquet(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--parquet", str(tmp_path / "x.parquet")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("now", 1_000_000_000_000), ("now-2d", 1_000_000_000_000 - 2 * 86_400_000),
    ("now+90m", 1_000_005_400_000),
    ("1767225600000", 1_767_225_600_000), ("2026-01-01T00:00:00Z", 1_767_225_600_000),
    ("2026-01-01T01:00:00+01:00", 1_767_225_600_000),
])
def test_parse_origin(text, expected):
    assert parse_origin(text, now_ms=1_000_000_000_000) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-01-01T00:00:00", "now-2y"])
def test_parse_origin_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_origin(text, now_ms=0)


@pytest.mark.parametrize(("text", "expected"),
                         [("0", 0), ("90s", 90_000), ("50m", 3_000_000), ("2h", 7_200_000)])
def test_parse_duration(text, expected):
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1y", "-1m", "m"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_duration_ms(text)
