"""Loads raw event records from Parquet into the flat pandas frame the data-quality suite checks.

Each record is first judged by the contract validator (`udfs.contract.EventValidator`) against its reference
time: the file's `sent_ms` column when there is one (the generator's send time, i.e. the Kafka timestamp),
otherwise "now". Rejected records are excluded and counted per reason: with `exclude="dead-letter"` (the
default) every record the ingest job would dead-letter, so the suite checks the valid stream; with
`exclude="unparsable"` only records that are not a JSON object within the size limit, so the suite also
checks the fields of records the validator rejects (a producer's sample: which rules does it break?).
Duplicate event ids are kept unless `dedupe` is set.

Columns: one per checked field (text fields as text, JSON numbers as float, `id_count` for `ids`), plus
`<field>__json`, the field's JSON type (integer, number, string, boolean, null, object, array; null when the
field is absent), and `ts_ms` (the parsed event time), `reference_ms`, `future_skew_ms` (= ts_ms - reference).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from tools.parquet_io import column_names, iter_columns
from udfs.contract import (
    INVALID_JSON,
    NOT_AN_OBJECT,
    NOT_UTF8,
    TOO_LARGE,
    Accepted,
    EventValidator,
    parse_event_time,
)

EXCLUDE_MODES = ("dead-letter", "unparsable")
UNPARSABLE = frozenset({TOO_LARGE, NOT_UTF8, INVALID_JSON, NOT_AN_OBJECT})
_ABSENT = object()


@dataclass(frozen=True)
class Field:
    """A checked event field: its name, JSON path, frame column and how it is flattened."""

    name: str
    path: tuple[str, ...]
    kind: str  # text | number | count
    column: str = ""

    @property
    def value_column(self) -> str:
        """The frame column holding the field's value."""
        return self.column or self.name

    @property
    def type_column(self) -> str:
        """The frame column holding the field's JSON type."""
        return f"{self.name}__json"


FIELDS: tuple[Field, ...] = (
    Field("event_id", ("event_id",), "text"),
    Field("type", ("type",), "text"),
    Field("ts", ("ts",), "text"),
    Field("ids", ("ids",), "count", "id_count"),
    Field("channel", ("channel",), "text"),
    Field("source", ("source",), "text"),
    Field("price", ("props", "price"), "number"),
    Field("quantity", ("props", "quantity"), "number"),
    Field("dwell_ms", ("props", "dwell_ms"), "number"),
    Field("revenue", ("props", "revenue"), "number"),
    Field("currency", ("props", "currency"), "text"),
)


@dataclass
class LoadedFrame:
    """The frame to check and what was left out of it.

    Attributes:
        frame: one row per checked record.
        total: records in the file.
        excluded: records left out, per validator reason code.
        duplicates_removed: records left out because their event id came earlier (with `dedupe`).
        reference: where the reference time came from (for the report).
    """

    frame: pd.DataFrame
    total: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    duplicates_removed: int = 0
    reference: str = ""


def json_type(value: Any) -> str:
    """The JSON Schema type of a parsed JSON value (integral floats are integers, as in the schema)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _lookup(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = event
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _flat_value(kind: str, value: Any) -> Any:
    if value is _ABSENT or value is None:
        return None
    if kind == "count":
        return len(value) if isinstance(value, dict) else None
    if kind == "number":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def flatten(event: dict[str, Any], ts_ms: int | None, reference_ms: int) -> dict[str, Any]:
    """One frame row for a parsed event."""
    row: dict[str, Any] = {}
    for f in FIELDS:
        value = _lookup(event, f.path)
        row[f.value_column] = _flat_value(f.kind, value)
        row[f.type_column] = None if value is _ABSENT else json_type(value)
    row["ts_ms"] = ts_ms
    row["reference_ms"] = reference_ms
    row["future_skew_ms"] = None if ts_ms is None else ts_ms - reference_ms
    return row


def columns() -> list[str]:
    """The frame's columns, in order."""
    names = [c for f in FIELDS for c in (f.value_column, f.type_column)]
    return [*names, "ts_ms", "reference_ms", "future_skew_ms"]


def _parse(raw: bytes, result: Any, exclude: str) -> tuple[dict[str, Any], int | None] | str:
    """The event and its time, or the reason code it is excluded for."""
    if isinstance(result, Accepted):
        return result.event, result.ts_ms
    if exclude == "dead-letter" or result.reason in UNPARSABLE:
        return str(result.reason)
    event = orjson.loads(raw)
    try:
        return event, parse_event_time(event.get("ts"))
    except ValueError:
        return event, None


def load_frame(path: str | Path, exclude: str = "dead-letter", dedupe: bool = False,
               now_ms: int | None = None, reference_column: str = "sent_ms", value_column: str = "value",
               validator: EventValidator | None = None) -> LoadedFrame:
    """Reads a Parquet file of raw records into the frame the suite checks.

    Args:
        path: the Parquet file (a binary or string column of raw values).
        exclude: `dead-letter` or `unparsable` (see the module docstring).
        dedupe: drop records whose event id came earlier in the file.
        now_ms: reference time for rows without one (default: the wall clock).
        reference_column: the column with each record's reference time (Kafka timestamp), if present.
        value_column: the column with the raw values.
        validator: the contract validator (default: the standard one).

    Returns:
        The frame and the counts of what was left out.
    """
    if exclude not in EXCLUDE_MODES:
        raise ValueError(f"exclude must be one of {EXCLUDE_MODES}")
    validator = validator or EventValidator()
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    loaded = LoadedFrame(pd.DataFrame())
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    has_reference = False
    if value_column not in column_names(path):
        raise ValueError(f"{path} has no {value_column!r} column of raw values")
    for batch in iter_columns(path, [value_column, reference_column]):
        for value, reference in zip(batch[value_column], batch[reference_column], strict=True):
            loaded.total += 1
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
            has_reference = has_reference or reference is not None
            ref = int(reference) if reference is not None else now
            parsed = _parse(raw, validator.check(raw, ref), exclude)
            if isinstance(parsed, str):
                loaded.excluded[parsed] += 1
                continue
            row = flatten(*parsed, ref)
            if dedupe and row["event_id"] is not None:
                if row["event_id"] in seen:
                    loaded.duplicates_removed += 1
                    continue
                seen.add(row["event_id"])
            rows.append(row)
    frame = pd.DataFrame(rows, columns=columns())
    for f in FIELDS:
        if f.kind != "text":
            frame[f.value_column] = frame[f.value_column].astype("float64")
    for name in ("ts_ms", "reference_ms", "future_skew_ms"):
        frame[name] = frame[name].astype("float64")
    loaded.frame = frame
    loaded.reference = (f"column {reference_column!r}" if has_reference
                        else f"now ({now}) for every row: the file has no {reference_column!r}")
    return loaded
