"""Data quality of an event file: `python -m tools.dq FILE.parquet` runs the GX suite over its events.

The file is a generator Parquet file (tools/parquet_io.py) or any Parquet file with a column of raw values.
Records the ingest validator would dead-letter are left out first and counted per reason; duplicates stay
(so a redelivery fails `event_id is unique`) unless `--dedupe`. Prints one line per expectation and exits
0 when all pass, 1 when one fails, 2 on a usage or input error. See tools/dq_frame.py and tools/dq_suite.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from tools.dq_frame import EXCLUDE_MODES, LoadedFrame, load_frame
from tools.dq_suite import DEFAULT_FUTURE_TOLERANCE_MS, CheckResult, DQSuite


@dataclass
class DQReport:
    """Everything the CLI prints."""

    path: str
    total: int
    checked: int
    excluded: dict[str, int]
    exclude_mode: str
    duplicates_removed: int
    dedupe: bool
    reference: str
    checks: list[CheckResult]

    @property
    def success(self) -> bool:
        """Whether every expectation passed."""
        return all(check.success for check in self.checks)

    def to_json(self) -> bytes:
        """The report as JSON."""
        return orjson.dumps({**asdict(self), "success": self.success}, default=str,
                            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def check_file(path: str | Path, suite: DQSuite | None = None, exclude: str = "dead-letter",
               dedupe: bool = False, now_ms: int | None = None, reference_column: str = "sent_ms",
               value_column: str = "value",
               future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS) -> DQReport:
    """Loads a file (see :func:`tools.dq_frame.load_frame`) and runs the suite over it.

    Args:
        path: the Parquet file.
        suite: a built suite to reuse (default: one built after the file loaded, with `future_tolerance_ms`).
        exclude, dedupe, now_ms, reference_column, value_column: as for `load_frame`.
        future_tolerance_ms: how far an event time may lie after its reference (when `suite` is None).
    """
    loaded: LoadedFrame = load_frame(path, exclude=exclude, dedupe=dedupe, now_ms=now_ms,
                                     reference_column=reference_column, value_column=value_column)
    suite = suite or DQSuite(future_tolerance_ms)
    return DQReport(path=str(path), total=loaded.total, checked=len(loaded.frame),
                    excluded=dict(sorted(loaded.excluded.items())), exclude_mode=exclude,
                    duplicates_removed=loaded.duplicates_removed, dedupe=dedupe, reference=loaded.reference,
                    checks=suite.run(loaded.frame))


def _example(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)  # numeric columns are float64; show whole numbers as such
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_line(check: CheckResult, checked: int, max_examples: int) -> str:
    status = "PASS" if check.success else "FAIL"
    if check.error:
        detail = f"error: {check.error}"
    elif check.unexpected_count is not None:
        detail = f"{check.unexpected_count} of {checked} unexpected"
        if check.unexpected_count:
            distinct = list(dict.fromkeys(map(_example, check.examples)))
            examples = ", ".join(distinct[:max_examples])
            detail += f" ({100 * check.unexpected_count / max(checked, 1):.2f}%), e.g. {examples}"
    else:
        detail = f"observed {check.observed}"
    return f"  {status}  {check.label:<58} {detail}"


def format_report(report: DQReport, max_examples: int = 5) -> str:
    """The report as readable text."""
    excluded = sum(report.excluded.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in report.excluded.items()) or "none"
    why = "would be dead-lettered" if report.exclude_mode == "dead-letter" else "not JSON objects"
    lines = [
        f"tagstream data quality: {report.path}",
        f"  {report.total} records: {report.checked} checked, {excluded} excluded ({why}: {reasons})",
        f"  duplicates: {f'{report.duplicates_removed} removed (--dedupe)' if report.dedupe else 'kept'}",
        f"  reference time for the future-time check: {report.reference}",
        "",
        *(_check_line(check, report.checked, max_examples) for check in report.checks),
        "",
    ]
    failed = sum(not check.success for check in report.checks)
    lines.append(f"{'PASSED' if report.success else 'FAILED'}: {len(report.checks) - failed} of "
                 f"{len(report.checks)} expectations met")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `--help` documents every flag."""
    p = argparse.ArgumentParser(prog="python -m tools.dq", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="Parquet file with a column of raw event values")
    p.add_argument("--dedupe", action="store_true",
                   help="drop records whose event_id came earlier (default: keep them, so that "
                   "`event_id is unique` reports redeliveries)")
    p.add_argument("--exclude", choices=EXCLUDE_MODES, default="dead-letter",
                   help="leave out every record the validator rejects (dead-letter, default) or only "
                   "those that are not JSON objects within the size limit (unparsable: the suite then "
                   "reports which contract rules a producer's records break)")
    p.add_argument("--future-tolerance", type=float, default=DEFAULT_FUTURE_TOLERANCE_MS / 1000, metavar="S",
                   help="how many seconds an event time may lie after its record's reference time "
                   "(default %(default)g)")
    p.add_argument("--reference-column", default="sent_ms",
                   help="column with each record's reference time in epoch ms, e.g. its Kafka timestamp "
                   "(default %(default)s, the generator's send time); rows without one use --now-ms")
    p.add_argument("--now-ms", type=int, help="reference time for rows without one (default: the wall clock)")
    p.add_argument("--value-column", default="value", help="column with the raw values (default %(default)s)")
    p.add_argument("--examples", type=int, default=5, help="unexpected values shown per expectation")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the data-quality CLI; returns 0 (all expectations met), 1 (some failed) or 2 (bad input)."""
    args = build_parser().parse_args(argv)
    try:
        report = check_file(args.file, exclude=args.exclude, dedupe=args.dedupe, now_ms=args.now_ms,
                            reference_column=args.reference_column, value_column=args.value_column,
                            future_tolerance_ms=int(args.future_tolerance * 1000))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(report.to_json() + b"\n")
    else:
        print(format_report(report, args.examples))
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
