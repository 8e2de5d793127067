"""The benchmark harness's pure parts: statistics, the sustained verdict, the workload, the naive rules,
the report (ratios, targets, JSON, plots, README section). No timing is asserted anywhere."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.bench import report
from tools.bench.config import MODES, config_for
from tools.bench.load import Probe
from tools.bench.naive import NaiveSegments
from tools.bench.stats import commit_rate, percentile, rate, slope, summary, sustained
from tools.bench.workload import PROBE_SEGMENT, probe_event, probe_field, probe_key, template_lines
from udfs.segments import SegmentsConfig, person_id_of
from udfs.segments.records import redis_key


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 0.0, 20.0], 100) == 20.0
    assert summary([3.0, 1.0, 2.0]) == {"count": 3, "p50": 2.0, "p95": pytest.approx(2.9), "p99": pytest.approx(2.98),
                                        "max": 3.0}


@given(st.lists(st.floats(-1e6, 1e6), min_size=1), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_and_within_the_sample(values, q1, q2):
    low, high = sorted((q1, q2))
    assert min(values) <= percentile(values, low) <= percentile(values, high) <= max(values)


def test_slope_and_rate():
    assert slope([(0, 5), (1, 7), (2, 9)]) == pytest.approx(2.0)
    assert slope([(1, 5)]) == 0.0
    assert rate([(0, 100), (10, 600)]) == 50.0
    assert rate([(3, 1)]) == 0.0


def test_a_step_is_sustained_when_lag_stays_within_a_commit_interval():
    flat = [(t, 4000.0 if t % 5 else 0.0) for t in range(30)]  # sawtooth of offsets committed every 5 s
    assert sustained(flat, 1000, 5, 10, 10).sustained


def test_growing_lag_or_lost_probes_are_not_sustained():
    growing = [(t, 800.0 * t) for t in range(30)]
    verdict = sustained(growing, 1000, 5, 10, 10)
    assert not verdict.sustained and any("grows" in r for r in verdict.reasons)
    assert not sustained([(0, 0.0), (10, 0.0)], 1000, 5, 10, 9).sustained


def test_templates_become_valid_events_once_stamped():
    lines = list(template_lines(50, seed=3, users=20))
    assert len(lines) == 50
    for line in lines:
        key, rest = line.split("\t")
        event = orjson.loads('{"event_id":"x-1","ts":1,"ts_ms":1,' + rest)
        assert event["event_id"] == "x-1" and event["ts_ms"] == 1 and event["type"] and event["ids"]
        assert "\n" not in rest and key


def test_a_probe_shows_under_the_person_the_jobs_derive():
    event = orjson.loads(probe_event("r1", 7, 1_000))
    assert event["type"] == "search" and event["props"]["bench_probe"] == 7 and event["ts_ms"] == 1_000
    person = person_id_of(event)
    assert person is not None
    assert probe_key("r1", 7) == redis_key(person, SegmentsConfig())
    assert probe_key("r1", 7) != probe_key("r1", 8)
    assert probe_field() == f"tag:{PROBE_SEGMENT}"


def test_probe_latency_and_exit_error():
    probe = Probe(1, "k", sent_ms=1_000, entered_ms=1_040, exited_ms=3_300)
    assert probe.latency_ms == 40 and probe.exit_error_ms(2_000) == 300
    assert Probe(2, "k", 5).latency_ms is None and Probe(2, "k", 5).exit_error_ms(2_000) is None


def test_naive_rules():
    rules = NaiveSegments()

    def event(etype: str, ts: int, **props):
        return {"type": etype, "ts_ms": ts, "ids": {"user_id": "u1"}, "props": props}

    assert rules.on_event(event("search", 0)) is None
    assert rules.on_event(event("search", 60_000)) is None
    field, value, expires = rules.on_event(event("search", 120_000))
    assert field == "tag:frequent_searcher" and value["entered_at"] == 120_000 and expires == 600_000
    assert rules.on_event(event("search", 700_000)) is None  # the first two left the window
    assert rules.on_event(event("product_view", 5, product_id="p1"))[0] == "tag:viewed_product:p1"
    assert rules.on_event(event("search", 9, bench_probe=1))[2] == 9 + 2_000
    assert rules.on_event({"type": "search", "ts_ms": 1, "ids": {}}) is None


def test_modes_and_overrides():
    assert config_for("quick", steps=(1,), step_s=None).steps == (1,)
    assert config_for("quick").step_s == MODES["quick"].step_s
    assert MODES["knobs"].knobs and not MODES["full"].knobs


def _step(offered: int, throughput: float, ok: bool, p50: float, p99: float) -> dict:
    lat = {"count": 10, "p50": p50, "p95": p99, "p99": p99, "max": p99}
    return {"offered_rate": offered, "produced": {"rate": offered}, "throughput": throughput, "sustained": ok,
            "latency_ms": lat, "exit_error_ms": {"p50": 500.0, "p99": 900.0},
            "processes": {"taskmanager": {"cpu_pct": 150.0, "rss_mb": 900.0}}}


def _result() -> dict:
    return {
        "config": {"baseline_rate": 1000, "knob_rate": 5000},
        "meta": {"started": "2026-01-01 00:00:00", "command": "make bench", "wall_s": 600.0,
                 "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 8}, "load_average_start": [1, 1, 1],
                 "load_average_end": [2, 2, 2]},
        "tagstream": {"steps": [_step(1000, 990, True, 40, 80), _step(5000, 2500, False, 900, 4000)],
                      "capacity": 2500.0, "max_sustained_rate": 1000, "exit_error_ms": {"p99": 900.0}},
        "twin": {"capacity": 20000.0, "producer_bound": True, "latency_step": _step(1000, 1000, True, 700, 900)},
        "naive": {"capacity": 1000.0, "latency_step": _step(1000, 1000, True, 10, 20)},
        "state": {"persons_loaded": 10, "target_persons": 10, "load_s": 1.0, "load_rate": 10.0,
                  "checkpoints": {"latest_state_size_bytes": 2**20, "duration_ms": {"p50": 10, "max": 20}}},
    }


def test_ratios_and_targets():
    result = _result()
    result["ratios"] = report.ratios(result)
    assert result["ratios"]["throughput_tagstream_over_twin"] == 0.12
    assert result["ratios"]["throughput_tagstream_over_naive"] == 2.5
    assert result["ratios"]["latency_p99_tagstream_over_naive"] == 4.0
    met = {t["target"].split(",")[0].split(" vs")[0]: t["met"] for t in report.targets(result)}
    assert met == {"sustained throughput": False, "p99 event-to-tag latency at 5": False, "throughput": False,
                   "exit time after window end": True}


def test_json_plots_and_readme_section(tmp_path: Path):
    result = _result()
    result["ratios"], result["targets"] = report.ratios(result), report.targets(result)
    path = report.write_json(result, tmp_path, "20260101-000000")
    assert orjson.loads(path.read_bytes())["tagstream"]["capacity"] == 2500.0
    plots = report.plot(result, tmp_path, "20260101-000000")
    assert [p.name for p in plots] == ["bench-20260101-000000-latency.png", "bench-20260101-000000-throughput.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    assert report.latest(tmp_path, "bench") == (orjson.loads(path.read_bytes()), path.name)
    knobs = {"config": {"knob_rate": 5000, "step_s": 25.0},
             "meta": {**result["meta"], "load_average_start": [3, 3, 3], "load_average_end": [4, 4, 4]},
             "knobs": {"variants": {"default": {"doc": "d", "steps": [_step(5000, 2000, False, 100, 200)]},
                                    "broken": {"doc": "x", "error": "boom"}},
                       "redis_batching": {"1": 1000.0, "100": 20000.0}}}
    section = report.readme_section(result, path.name, [p.name for p in plots], knobs, "bench-knobs-x.json")
    assert section.startswith(report.README_START) and section.endswith(report.README_END)
    assert "| 5,000 | 5,000 | 2,500 | no |" in section and "**no**" in section and "boom" in section
    assert "load average [3, 3, 3] at the start and [4, 4, 4] at the end (other work shared the cores" in section
    assert "| default | d | 2,000 | - | 100 | 200 | 150 | 1,333 |" in section
    assert "100 per element: 20,000 ops/s" in section
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nold\n{report.README_END}\n\n## next\n", encoding="utf-8")
    report.update_readme(readme, section)
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.endswith("## next\n") and "bench-20260101-000000-latency.png" in text
    with pytest.raises(ValueError):
        report.update_readme(_no_markers(tmp_path), section)


def _no_markers(tmp_path: Path) -> Path:
    path = tmp_path / "plain.md"
    path.write_text("# plain\n", encoding="utf-8")
    return path


def test_a_step_shorter_than_two_commit_intervals_is_judged_by_its_end_lag_only():
    short = [(0.0, 0.0), (1.0, 100.0), (2.0, 200.0), (3.0, 300.0)]  # nothing committed yet
    assert sustained(short, 100, 5, 1, 1).sustained
    assert not sustained(short, 10, 5, 1, 1).sustained  # 300 > 10 * (5 + 3)


def test_commit_rate_ignores_the_sawtooth():
    points = [(0.0, 0.0), (1.0, 0.0), (2.0, 1000.0), (3.0, 1000.0), (4.0, 1000.0), (5.0, 1000.0), (6.0, 1000.0),
              (7.0, 6000.0), (8.0, 6000.0)]
    assert commit_rate(points) == 1000.0  # 5000 records between the jumps at 2 s and 7 s
    assert commit_rate([(0.0, 0.0), (4.0, 400.0)]) == 100.0


def test_profile_summary_counts_inclusive_and_self_samples():
    from tools.bench.profile import summarize

    lines = ["thread-1;run (a.py:1);engine (b.py:2);pickle (c.py:3) 30",
             "thread-1;run (a.py:1);engine (b.py:2) 10", "thread-2;poll (k.py:9) 60", "garbage"]
    top = summarize(lines)
    assert top["samples"] == 100
    assert top["inclusive_pct"]["engine"] == 40.0 and top["inclusive_pct"]["poll"] == 60.0
    assert top["self_pct"] == {"poll": 60.0, "pickle": 30.0, "engine": 10.0}
