"""The data-quality suite: frames from Parquet, expectations from the contract, GX runs, the CLI (tier 1)."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from tools.dq import check_file, format_report, main
from tools.dq_frame import columns, flatten, json_type, load_frame
from tools.dq_suite import DQSuite, suite_spec
from tools.generate import DUPLICATE, MALFORMED, VALID, GeneratorConfig, Record, generate, take
from tools.parquet_io import write_parquet
from udfs.contract import event_types

ORIGIN = 1_790_000_000_000
CONFIG = GeneratorConfig(seed=5, users=50, origin_ms=ORIGIN, bad_fraction=0.05, dup_fraction=0.03)
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def suite() -> DQSuite:
    return DQSuite()  # imports great_expectations once for the module


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return list(take(generate(CONFIG), 2000))


@pytest.fixture(scope="module")
def generated(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("dq") / "generated.parquet"
    write_parquet(records, path)
    return path


def _unique_file(tmp_path, records, extra: list[tuple[dict, int]]):
    """The valid records without duplicates, plus extra (event, reference ms) records."""
    rows = [r for r in records if r.kind == VALID]
    rows += [Record(orjson.dumps(event), VALID, {"sent_ms": ref}) for event, ref in extra]
    path = tmp_path / "sample.parquet"
    write_parquet(rows, path)
    return path


def _product_view(records) -> tuple[dict, int]:
    record = next(r for r in records if r.kind == VALID and r.truth["type"] == "product_view")
    event = orjson.loads(record.value)
    event["event_id"] = "hand-made-1"
    return event, record.truth["sent_ms"]


def failed(report) -> list[tuple[str, str | None]]:
    return [(check.expectation, check.column) for check in report.checks if not check.success]


# -- the suite over generator output --------------------------------------------------------------------

def test_generator_output_without_duplicates_passes(suite, generated, records):
    report = check_file(generated, suite, dedupe=True)
    kinds = Counter(r.kind for r in records)
    assert failed(report) == [] and report.success
    assert report.total == len(records)
    assert sum(report.excluded.values()) == kinds[MALFORMED]
    assert report.excluded == dict(Counter(r.truth["reason"] for r in records if r.kind == MALFORMED))
    assert report.duplicates_removed == kinds[DUPLICATE] and report.checked == kinds[VALID]


def test_duplicates_fail_the_uniqueness_expectation_only(suite, generated):
    report = check_file(generated, suite)
    assert failed(report) == [("expect_column_values_to_be_unique", "event_id")]
    assert "FAIL  event_id is unique" in format_report(report)


def test_a_negative_price_is_dead_lettered_or_fails_the_price_range(suite, tmp_path, records):
    event, ref = _product_view(records)
    event["props"]["price"] = -5.0
    path = _unique_file(tmp_path, records, [(event, ref)])
    assert load_frame(path).excluded == {"schema": 1}  # by default: left out, as the ingest would
    report = check_file(path, suite, exclude="unparsable")
    assert failed(report) == [("expect_column_values_to_be_between", "price")]
    price = next(c for c in report.checks if not c.success)
    assert price.unexpected_count == 1 and price.examples == [-5.0]


def test_an_event_time_in_the_future_fails_the_future_expectation(suite, tmp_path, records):
    event, ref = _product_view(records)
    event["ts"] = ref + 2 * HOUR_MS  # the validator allows a day; the suite tolerates 5 minutes
    path = _unique_file(tmp_path, records, [(event, ref)])
    report = check_file(path, suite)
    assert report.excluded == {}
    assert failed(report) == [("expect_column_values_to_be_between", "future_skew_ms")]


def test_without_a_reference_column_every_row_is_judged_against_now(suite, tmp_path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "values.parquet"
    values = [r.value for r in records if r.kind == VALID]
    pq.write_table(pa.table({"value": values}), path)
    newest = max(r.truth["ts_ms"] for r in records if r.kind == VALID)
    assert (load_frame(path, now_ms=newest).frame["future_skew_ms"] <= 0).all()
    report = check_file(path, suite, now_ms=newest - HOUR_MS)  # an hour earlier: the newest are "future"
    assert failed(report) == [("expect_column_values_to_be_between", "future_skew_ms")]
    assert "for every row" in report.reference


# -- frames and the suite definition (no GX) ------------------------------------------------------------

def test_frame_has_a_type_column_per_field_and_parsed_times(generated):
    loaded = load_frame(generated, dedupe=True)
    frame = loaded.frame
    assert list(frame.columns) == columns()
    assert set(frame["type__json"]) == {"string"} and set(frame["ts__json"]) <= {"string", "integer"}
    assert (frame["future_skew_ms"] <= 0).all() and frame["ts_ms"].notna().all()
    assert str(frame["price"].dtype) == "float64"


def test_flatten_keeps_wrong_types_visible():
    row = flatten({"event_id": 42, "type": "page_view", "ts": True, "ids": [], "props": {"price": "9.99"}},
                  ts_ms=None, reference_ms=0)
    assert row["event_id"] == "42" and row["event_id__json"] == "integer"
    assert row["ts__json"] == "boolean" and row["id_count"] is None and row["ids__json"] == "array"
    assert row["price"] is None and row["price__json"] == "string"
    assert row["channel"] is None and row["channel__json"] is None and row["future_skew_ms"] is None


@pytest.mark.parametrize(("value", "expected"), [
    (None, "null"), (True, "boolean"), (3, "integer"), (3.0, "integer"), (3.5, "number"), ("x", "string"),
    ({}, "object"), ([], "array")])
def test_json_type(value, expected):
    assert json_type(value) == expected


def test_the_suite_reads_its_bounds_from_the_contract():
    specs = suite_spec(future_tolerance_ms=60_000)
    assert len({s.label for s in specs}) == len(specs)
    kwargs = {(s.expectation, s.kwargs.get("column")): s.kwargs for s in specs}
    assert kwargs[("ExpectColumnValuesToBeInSet", "type")]["value_set"] == list(event_types())
    assert kwargs[("ExpectColumnValuesToBeBetween", "dwell_ms")] == {
        "column": "dwell_ms", "min_value": 0, "max_value": 86_400_000}
    assert kwargs[("ExpectColumnValuesToBeBetween", "price")]["min_value"] == 0
    assert kwargs[("ExpectColumnValueLengthsToBeBetween", "event_id")]["max_value"] == 128
    assert kwargs[("ExpectColumnValuesToBeBetween", "future_skew_ms")] == {
        "column": "future_skew_ms", "max_value": 60_000}
    for required in ("event_id", "type", "ts", "ids"):
        assert ("ExpectColumnValuesToNotBeNull", f"{required}__json") in kwargs


# -- CLI ------------------------------------------------------------------------------------------------

def test_cli_exit_codes_and_report(generated, capsys, tmp_path):
    assert main([str(generated)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  event_id is unique" in out and "FAILED:" in out
    assert main([str(generated), "--dedupe", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["success"] and report["duplicates_removed"] > 0
    assert main([str(tmp_path / "missing.parquet")]) == 2
