"""`python -m tools.chaos`: run chaos scenarios on a local stack, write a JSON report, print a table."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from tools.chaos.scenarios import ALL_SCENARIOS, Outcome, control_input, fault_scenarios, run_scenarios
from tools.chaos.suite import SUITES
from tools.stack import Stack

RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"
# The pipeline's change streams, summed in the table (each is compared by idempotency key in the report).
CHANGE_OUTPUTS = ("profiles", "erasures", "sessions", "segment-changes")


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a text table."""
    rows: list[tuple[str, ...]] = [("scenario", "result", "time", "restarts", "valid (dup)", "dlq (dup)",
                                    "changes (dup)", "stores", "problems")]
    for o in outcomes:
        cells = []
        for name in ("events.valid", "events.dlq"):
            out = o.outputs.get(name) or o.outputs.get(f"{name} (control)") or {}
            distinct = out.get("distinct", out.get("expected", "-"))
            cells.append(f"{distinct} ({out.get('duplicates', '-')})")
        changes = [out for name, out in o.outputs.items() if name in CHANGE_OUTPUTS]
        cells.append(f"{sum(c.get('distinct', c.get('expected', 0)) for c in changes)} "
                     f"({sum(c.get('duplicates', 0) for c in changes)})" if changes else "-")
        stores = o.outputs.get("stores") or {}
        cells.append(str(stores.get("distinct", stores.get("expected", "-"))))
        rows.append((o.scenario, "PASS" if o.ok else "FAIL", f"{o.duration_s:.0f}s", str(o.restarts), *cells,
                     "; ".join(o.problems)[:80] or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    """Runs the scenarios; exit code 0 when all pass."""
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__)
    parser.add_argument("--scenarios", nargs="+", choices=ALL_SCENARIOS, default=list(ALL_SCENARIOS))
    parser.add_argument("--quick", action="store_true",
                        help="smaller input (1200 records, a corpus of ~1070 cases), one TaskManager kill, 5 s outages")
    parser.add_argument("--profile", default="test", help="stack profile (default test)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="pipeline",
                        help="pipeline: ingest -> identity -> sessions, segments with Redis and DynamoDB (default); "
                             "ingest: the ingest job alone")
    parser.add_argument("--records", type=int, help="control stream length (default 4000, quick 1200)")
    parser.add_argument("--outage", type=float, help="Redis/DynamoDB outage seconds (default 30, quick 5)")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running at the end")
    args = parser.parse_args(argv)
    records = args.records or (1200 if args.quick else 4000)
    outage = args.outage if args.outage is not None else (5.0 if args.quick else 30.0)
    faults = fault_scenarios(outage, kills=1 if args.quick else 3)

    stack = Stack(args.profile)
    was_up = stack.healthy()
    started = time.time()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"chaos-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"

    def write(outcomes: list[Outcome], complete: bool) -> dict[str, Any]:
        """Writes the report (after every scenario, so that an interrupted run leaves what it measured)."""
        report = {"suite": args.suite, "profile": args.profile, "records": records, "outage_s": outage,
                  "quick": args.quick, "started": started, "duration_s": time.time() - started,
                  "complete": complete, "planned": ["baseline", *args.scenarios],
                  "ok": complete and all(o.ok for o in outcomes), "scenarios": [asdict(o) for o in outcomes]}
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return report

    stack.up()
    try:
        items, truths = control_input(records)
        outcomes = run_scenarios(stack, SUITES[args.suite], args.scenarios, items, truths, faults,
                                 corpus_scale=70 if args.quick else 100, on_outcome=partial(write, complete=False),
                                 chunks=6 if args.quick else 10, pause_s=1.0 if args.quick else 2.0)
    finally:
        if not (was_up or args.keep_stack):
            stack.down()
    report = write(outcomes, True)
    print(table(outcomes))
    print(f"report: {path} ({report['duration_s']:.0f} s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
