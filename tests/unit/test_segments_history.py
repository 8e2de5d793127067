"""The backfill's history preparation: contract validation, the cut at `as_of`, event-time order."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from udfs.segments.history import AFTER_AS_OF, EMPTY, prepare_history

BASE = 1_795_000_000_000


def raw(event_id: str, ts: int, as_text: bool = False) -> bytes | str:
    value = orjson.dumps({"event_id": event_id, "type": "search", "ts": ts, "channel": "web",
                          "ids": {"user_id": "u"}, "props": {}})
    return value.decode() if as_text else value


def test_valid_events_up_to_as_of_are_kept_in_time_order_and_the_rest_counted():
    values = [raw("c", BASE + 30), raw("a", BASE + 10, as_text=True), raw("late", BASE + 101), b"{x", None, b"",
              b'{"event_id": "n", "type": "nope"}', raw("b", BASE + 10), raw("edge", BASE + 100)]
    history = prepare_history(values, BASE + 100)
    assert [orjson.loads(e)["event_id"] for e, _ in history.events] == ["a", "b", "c", "edge"]
    assert [ts for _, ts in history.events] == [BASE + 10, BASE + 10, BASE + 30, BASE + 100]
    assert all(orjson.loads(e)["ts_ms"] == ts for e, ts in history.events)  # as events.valid carries it
    assert history.read == 9
    assert history.skipped == {AFTER_AS_OF: 1, EMPTY: 2, "invalid_json": 1, "unknown_type": 1}
    assert history.summary() == ("9 records read, 4 events kept, skipped: 1 after_as_of, 2 empty_value, "
                                 "1 invalid_json, 1 unknown_type")


@given(st.lists(st.integers(0, 50), max_size=30), st.randoms())
def test_the_order_of_the_files_does_not_matter(offsets, rnd):
    values = [raw(f"e{i}", BASE + o) for i, o in enumerate(offsets)]
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert prepare_history(shuffled, BASE + 40).events == prepare_history(values, BASE + 40).events


def test_the_backfill_submission_passes_only_flags_the_backfill_knows():
    from jobs.segments_backfill import parse_args
    from tools.flink_jobs import BACKFILL
    from udfs.topology import PROFILES

    args = parse_args([*BACKFILL.args(PROFILES["dev"]), "history.parquet"])
    assert args.redis_url and args.dynamodb_endpoint and [str(f) for f in args.files] == ["history.parquet"]


def test_backfill_command_line_takes_options_between_command_and_files(monkeypatch, tmp_path):
    import tools.flink_jobs as flink_jobs
    import tools.stack

    calls = []
    monkeypatch.setattr(tools.stack, "Stack", lambda profile=None: profile)
    monkeypatch.setattr(flink_jobs, "run_backfill",
                        lambda stack, files, extra: calls.append((stack, files, extra)) or "")
    argv = ["backfill", "--profile", "test3", "--as-of", "1795000000000", "a.parquet", "b.parquet"]
    assert flink_jobs.main(argv) == 0
    assert calls == [("test3", [Path("a.parquet"), Path("b.parquet")], ["--as-of", "1795000000000"])]


def test_definitions_may_be_files_and_directories(tmp_path):
    from jobs.segments_backfill import _yaml_files, parse_args
    from udfs.segments.definitions import EXAMPLES_DIR

    args = parse_args(["--definitions", str(EXAMPLES_DIR), "--definitions", "x.yaml", "h.parquet"])
    files = _yaml_files(args.definitions)
    assert files[-1] == Path("x.yaml") and len(files) == len(list(EXAMPLES_DIR.glob("*.yaml"))) + 1
    assert [str(f) for f in args.files] == ["h.parquet"]


def test_identified_events_keep_their_person():
    value = orjson.dumps({"event_id": "i1", "type": "search", "ts": BASE, "channel": "web",
                          "ids": {"email": "0" * 32}, "person_id": "p-survivor", "props": {}})
    (event, _), = prepare_history([value], BASE).events
    assert orjson.loads(event)["person_id"] == "p-survivor"
