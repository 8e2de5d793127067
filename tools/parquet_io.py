"""Generated records to and from Parquet, for replays and benchmarks (pyarrow is imported lazily).

One row per record: `value` (the raw bytes, exactly as sent), `kind`, and for convenience `event_id`, `type`,
`ts_ms` (null for malformed records), `sent_ms`, `person`, `reason` (malformed only) and `truth` (the whole
ground truth as JSON). The generator config is kept in the file's metadata under `tagstream.generator`.
A file made elsewhere needs only the `value` column (binary or string) to be replayed or checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tools.generate import Record

if TYPE_CHECKING:
    import pyarrow as pa

METADATA_KEY = b"tagstream.generator"
UNKNOWN_KIND = "unknown"  # kind of a row from a file that has no `kind` column
_TRUTH_COLUMNS = ("event_id", "type", "ts_ms", "sent_ms", "person", "reason")


def parquet_schema(metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The schema of a generator Parquet file (with the generator config as metadata, when given)."""
    import pyarrow as pa

    schema = pa.schema([
        ("value", pa.binary()), ("kind", pa.string()), ("event_id", pa.string()), ("type", pa.string()),
        ("ts_ms", pa.int64()), ("sent_ms", pa.int64()), ("person", pa.string()), ("reason", pa.string()),
        ("truth", pa.string()),
    ])
    return schema.with_metadata({METADATA_KEY: orjson.dumps(metadata)}) if metadata is not None else schema


def write_parquet(records: Iterable[Record], path: str | Path, metadata: dict[str, Any] | None = None,
                  row_group_rows: int = 50_000) -> int:
    """Writes records to a Parquet file, streaming (one row group per `row_group_rows` records).

    Args:
        records: the records (a finite iterable).
        path: the file to (over)write.
        metadata: kept in the file's metadata under `tagstream.generator` (e.g. `GeneratorConfig.as_dict()`).
        row_group_rows: rows per row group.

    Returns:
        The number of records written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(metadata)
    written = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= row_group_rows:
                writer.write_table(pa.Table.from_pydict(_columns(batch), schema=schema))
                written += len(batch)
                batch = []
        if batch or not written:
            writer.write_table(pa.Table.from_pydict(_columns(batch), schema=schema))
            written += len(batch)
    return written


def _columns(batch: list[Record]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"value": [r.value for r in batch], "kind": [r.kind for r in batch]}
    for name in _TRUTH_COLUMNS:
        columns[name] = [r.truth.get(name) for r in batch]
    columns["truth"] = [orjson.dumps(r.truth).decode() for r in batch]
    return columns


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The generator config stored in a Parquet file, or None."""
    import pyarrow.parquet as pq

    stored = pq.read_schema(str(path)).metadata or {}
    return orjson.loads(stored[METADATA_KEY]) if METADATA_KEY in stored else None


def column_names(path: str | Path) -> list[str]:
    """The column names of a Parquet file."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(str(path)).names)


def iter_columns(path: str | Path, columns: list[str],
                 batch_rows: int = 10_000) -> Iterator[dict[str, list[Any]]]:
    """Yields batches of a Parquet file as {column: python values}; missing columns come as all-None."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(str(path))
    present = [c for c in columns if c in source.schema_arrow.names]
    for batch in source.iter_batches(batch_size=batch_rows, columns=present):
        data = {name: batch.column(name).to_pylist() for name in present}
        for name in columns:
            data.setdefault(name, [None] * batch.num_rows)
        yield data


def read_parquet(path: str | Path, batch_rows: int = 10_000) -> Iterator[Record]:
    """Yields the records of a Parquet file in order (a file with only `value` gives kind `unknown`)."""
    for data in iter_columns(path, ["value", "kind", "truth"], batch_rows):
        for value, kind, truth in zip(data["value"], data["kind"], data["truth"], strict=True):
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
            yield Record(raw, kind or UNKNOWN_KIND, orjson.loads(truth) if truth else {})
