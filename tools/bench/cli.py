"""`python -m tools.bench`: the benchmark (see the README section "Benchmark").

Modes: default (`make bench`, <= 20 min): tagstream load steps, the JVM-only twin and the naive consumer,
1M persons of RocksDB state; `--quick` (a few minutes); `--smoke` (seconds of load: `make test` checks the
harness works); `--knobs` (`make bench-knobs`: one overload step per tuning variant). Results go to
`bench/results/bench-<UTC timestamp>.json` (knobs: `bench-knobs-...`) with PNG plots; a full run also
rewrites the README's Benchmark section.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.bench import report
from tools.bench.config import config_for
from tools.bench.runner import baseline_phase, knobs_phase, prepare, state_phase, tagstream_phase
from tools.bench.systems import KNOBS
from tools.flink_jobs import REPO_ROOT
from tools.stack import Stack

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel, Python and Java versions of this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "java": java[0] if java else None}


def git_commit() -> str | None:
    """The checkout's commit (None outside git)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT,
                          check=False)
    return done.stdout.strip() or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="a few minutes")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="seconds of load")
    mode.add_argument("--knobs", action="store_const", const="knobs", dest="mode", help="tuning variants")
    parser.add_argument("--profile", default="bench", help="stack profile (default bench)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go (bench/results)")
    parser.add_argument("--steps", type=lambda s: tuple(int(x) for x in s.split(",")), default=None,
                        help="offered loads of tagstream, comma-separated events/s")
    parser.add_argument("--step-seconds", type=float, default=None, dest="step_s")
    parser.add_argument("--state-persons", type=int, default=None, help="0 skips the state phase")
    parser.add_argument("--no-baselines", action="store_false", dest="baselines", default=None)
    parser.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=None,
                        help=f"with --knobs: which variants (default all: {','.join(k.name for k in KNOBS)})")
    parser.add_argument("--knob-rate", type=int, default=None, help="with --knobs: offered load of each step")
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                        help="rewrite the README section (default: only for a full run)")
    parser.add_argument("--keep-stack", action="store_true", help="leave a stack this run started running")
    args = parser.parse_args(argv)
    args.mode = args.mode or ("quick" if os.environ.get("BENCH_QUICK") == "1" else "full")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; 0 when it completed (targets missed or not)."""
    args = parse_args(argv)
    cfg = config_for(args.mode, steps=args.steps, step_s=args.step_s, state_persons=args.state_persons,
                     baselines=args.baselines, variants=args.variants, knob_rate=args.knob_rate)
    stack = Stack(args.profile)
    reuse = stack.healthy()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    t0 = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg)}
    try:
        ctx = prepare(stack, cfg, stack.run_dir / "bench")
        if cfg.knobs:
            result["knobs"] = knobs_phase(ctx)
        if cfg.steps:
            result["tagstream"] = tagstream_phase(ctx)
        if cfg.baselines:
            for kind in ("twin", "naive"):
                result[kind] = baseline_phase(ctx, kind)
        if cfg.state_persons:
            result["state"] = state_phase(ctx)
    finally:
        if not reuse and not args.keep_stack:
            stack.down()
    result["meta"] = {"started": started, "wall_s": round(time.monotonic() - t0, 1), "mode": cfg.mode,
                      "command": "make bench" if cfg.mode == "full" else f"python -m tools.bench --{cfg.mode}",
                      "argv": sys.argv[1:] if argv is None else argv, "commit": git_commit(), "machine": machine(),
                      "profile": args.profile, "load_average_start": load_start,
                      "load_average_end": [round(x, 2) for x in os.getloadavg()],
                      "latency_method": "stamped probe events (send time) and a Redis keyspace-notification reader "
                                        "(the twin: the first output record keyed by the probe's person)"}
    result["ratios"] = report.ratios(result)
    result["targets"] = report.targets(result)
    prefix = "bench-knobs" if cfg.knobs else "bench"
    path = report.write_json(result, args.out_dir, stamp, prefix)
    plots = report.plot(result, args.out_dir, stamp, prefix)
    print(f"results: {path}; plots: {', '.join(str(p) for p in plots)}")
    for t in result["targets"]:
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']}: {t['measured']} (goal {t['goal']})")
    if args.readme if args.readme is not None else cfg.mode == "full":
        refresh_readme(args.out_dir)
    return 0


def refresh_readme(out_dir: Path) -> None:
    """Rewrites the README section from the latest main result and the latest knobs result."""
    main_result = report.latest(out_dir, "bench")
    if main_result is None:
        return
    knobs = report.latest(out_dir, "bench-knobs")
    result, name = main_result
    stamp = name.removeprefix("bench-").removesuffix(".json")
    plots = [p.name for p in sorted(out_dir.glob(f"bench-{stamp}-*.png"))]
    if knobs:
        plots += [p.name for p in sorted(out_dir.glob(f"{knobs[1].removesuffix('.json')}-*.png"))]
    section = report.readme_section(result, name, plots, knobs[0] if knobs else None, knobs[1] if knobs else None)
    report.update_readme(REPO_ROOT / "README.md", section)
