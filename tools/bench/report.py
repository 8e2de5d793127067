"""Results of a run: ratios and targets (pure), the JSON file, PNG plots and the README section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def step_at(phase: dict[str, Any] | None, offered: float) -> dict[str, Any] | None:
    """The step of a tagstream phase at this offered load, if it ran."""
    return next((s for s in (phase or {}).get("steps", []) if s["offered_rate"] == offered), None)


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """tagstream / twin and tagstream / naive: throughput (capacity) and latency at the baselines' load."""
    ts = result.get("tagstream") or {}
    out: dict[str, Any] = {}
    at_rate = step_at(ts, result["config"]["baseline_rate"])
    for kind in ("twin", "naive"):
        base = result.get(kind)
        if not base:
            continue
        out[f"throughput_tagstream_over_{kind}"] = _ratio(ts.get("capacity"), base.get("capacity"))
        for q in ("p50", "p99"):
            out[f"latency_{q}_tagstream_over_{kind}"] = _ratio(_get(at_rate, "latency_ms", q),
                                                                _get(base, "latency_step", "latency_ms", q))
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for this machine, each with the measured value and whether it is met."""
    ts = result.get("tagstream") or {}
    r = result.get("ratios") or {}
    at5k = step_at(ts, 5000)
    p99_5k = _get(at5k, "latency_ms", "p99") if at5k and at5k["sustained"] else None
    exit_p99 = _get(ts, "exit_error_ms", "p99")
    rows = [
        ("sustained throughput, identity -> segments -> Redis", ">= 20,000 events/s (aim 50,000)",
         ts.get("max_sustained_rate"), (ts.get("max_sustained_rate") or 0) >= 20_000),
        ("p99 event-to-tag latency at 5,000 events/s", "<= 100 ms (aim <= 50 ms at 10,000/s)", p99_5k,
         p99_5k is not None and p99_5k <= 100),
        ("throughput vs the JVM-only twin", ">= 0.5x", r.get("throughput_tagstream_over_twin"),
         (r.get("throughput_tagstream_over_twin") or 0) >= 0.5),
        ("throughput vs the naive consumer", ">= 3x", r.get("throughput_tagstream_over_naive"),
         (r.get("throughput_tagstream_over_naive") or 0) >= 3),
        ("exit time after window end, p99", "<= 1,000 ms", exit_p99, exit_p99 is not None and exit_p99 <= 1000),
    ]
    return [{"target": name, "goal": goal, "measured": value, "met": met} for name, goal, value, met in rows]


def write_json(result: dict[str, Any], out_dir: Path, stamp: str, prefix: str = "bench") -> Path:
    """Writes `<out_dir>/<prefix>-<stamp>.json` and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{prefix}-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def plot(result: dict[str, Any], out_dir: Path, stamp: str, prefix: str = "bench") -> list[Path]:
    """Latency percentiles vs offered load, and throughput vs the baselines (PNG, matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ts = result.get("tagstream")
    if ts and ts.get("steps"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        steps = [s for s in ts["steps"] if s["latency_ms"]["count"]]
        for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
            ax.plot([s["offered_rate"] for s in steps], [s["latency_ms"][q] for s in steps], style,
                    label=f"tagstream {q}")
        for kind, marker in (("naive", "x"), ("twin", "D")):
            step = _get(result, kind, "latency_step")
            if step and step["latency_ms"]["count"]:
                ax.scatter([step["offered_rate"]] * 2, [step["latency_ms"]["p50"], step["latency_ms"]["p99"]],
                           marker=marker, label=f"{kind} p50/p99")
        for s in ts["steps"]:
            if not s["sustained"]:
                ax.axvline(s["offered_rate"], color="red", alpha=0.3, label="not sustained")
        ax.set(xscale="log", yscale="log", xlabel="offered load (events/s)",
               ylabel="send -> readable in the store (ms)", title="End-to-end latency vs offered load")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / f"{prefix}-{stamp}-latency.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    bars = [(name, value) for name, value in (
        ("tagstream", _get(result, "tagstream", "capacity")), ("JVM twin", _get(result, "twin", "capacity")),
        ("naive", _get(result, "naive", "capacity")))
        if value] + [(f"knob: {k}", v.get("capacity")) for k, v in (_get(result, "knobs", "variants") or {}).items()
                     if v.get("capacity")]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(bars) + 1.5))
        ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="tab:blue")
        for i, (_, value) in enumerate(bars[::-1]):
            ax.text(value, i, f" {value:,.0f}", va="center", fontsize=8)
        ax.set(xlabel="events/s consumed under overload", title="Throughput vs the baselines")
        fig.tight_layout()
        paths.append(out_dir / f"{prefix}-{stamp}-throughput.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = round(value, 2) if abs(value) < 10 else round(value, 1) if abs(value) < 100 else round(value)
    return f"{value:,}{unit}" if isinstance(value, int | float) else f"{value}{unit}"


def _top(shares: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The n largest shares (the JSON keeps keys sorted by name)."""
    return sorted(shares.items(), key=lambda kv: -kv[1])[:n]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]


def _load_note(meta: dict[str, Any]) -> str:
    """A warning when other work shared the cores (1-minute load above the core count at either end)."""
    loads = [meta["load_average_start"][0], meta["load_average_end"][0]]
    if max(loads) <= meta["machine"]["cores"]:
        return ""
    return " (other work shared the cores: treat the figures as a lower bound)"


def readme_section(result: dict[str, Any], json_name: str, plots: list[str], knobs: dict[str, Any] | None,
                   knobs_name: str | None) -> str:
    """The README's "Benchmark" section (between markers) for a result (and the latest knobs result)."""
    meta, ts = result["meta"], result.get("tagstream") or {}
    lines = [README_START, "", f"Latest run: `bench/results/{json_name}` ({meta['started']} UTC, "
             f"`{meta['command']}`, {meta['wall_s'] / 60:.1f} min) on {meta['machine']['cpu']} "
             f"({meta['machine']['cores']} cores, {meta['machine']['memory_gb']} GB), load average "
             f"{meta['load_average_start']} at the start and {meta['load_average_end']} at the end"
             f"{_load_note(meta)}.", ""]
    lines += ["**Targets** (issue 6):", ""]
    lines += _table(["target", "goal", "measured", "met"],
                    [[t["target"], t["goal"], _fmt(t["measured"]), "yes" if t["met"] else "**no**"]
                     for t in result.get("targets", [])])
    lines += ["", "**tagstream load steps** (identity -> segments -> Redis, thread mode, p1, RocksDB):", ""]
    lines += _table(["offered/s", "produced/s", "consumed/s", "sustained", "p50 ms", "p95 ms", "p99 ms",
                     "exit err p50 ms", "exit err p99 ms", "TaskManager CPU %", "TaskManager RSS MB"],
                    [[s["offered_rate"], s["produced"]["rate"], s["throughput"], s["sustained"],
                      s["latency_ms"]["p50"], s["latency_ms"]["p95"], s["latency_ms"]["p99"],
                      _get(s, "exit_error_ms", "p50"), _get(s, "exit_error_ms", "p99"),
                      _get(s, "processes", "taskmanager", "cpu_pct"), _get(s, "processes", "taskmanager", "rss_mb")]
                     for s in ts.get("steps", [])])
    profiled = [s for s in ts.get("steps", []) if s.get("taskmanager_profile", {}).get("samples")]
    if profiled:
        prof = profiled[-1]["taskmanager_profile"]
        lines += ["", f"**Where the TaskManager's Python time goes** (py-spy, {prof['samples']:,} busy samples "
                  f"during the {profiled[-1]['offered_rate']:,}/s step; share of samples with the function on the "
                  "stack): " + ", ".join(f"`{k}` {v}%" for k, v in _top(prof["inclusive_pct"], 12))
                  + "; on top of the stack: " + ", ".join(f"`{k}` {v}%" for k, v in _top(prof["self_pct"], 6)) + "."]
    base_rows = []
    for kind, label in (("tagstream", "tagstream"), ("twin", "JVM-only Flink SQL twin"),
                        ("naive", "naive kafka-python + redis-py")):
        data = result.get(kind)
        if not data:
            continue
        lat = _get(step_at(ts, result["config"]["baseline_rate"]), "latency_ms") if kind == "tagstream" \
            else _get(data, "latency_step", "latency_ms")
        base_rows.append([label, data.get("capacity"), _get(lat, "p50"), _get(lat, "p99"),
                          "lower bound (kept up with the producer)" if data.get("producer_bound") else ""])
    if base_rows:
        lines += ["", f"**Baselines** (same input; latency at {result['config']['baseline_rate']:,} events/s; "
                  "throughput = events/s consumed under maximum offered load):", ""]
        lines += _table(["system", "throughput/s", "p50 ms", "p99 ms", "note"], base_rows)
        lines += ["", "Ratios: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in (result.get("ratios") or {}).items())
                  + "."]
    state = result.get("state")
    if state:
        ck = state.get("checkpoints") or {}
        lines += ["", f"**State scale** (segments job alone, RocksDB, incremental checkpoints): "
                  f"{_fmt(state.get('persons_loaded'))} of {_fmt(state.get('target_persons'))} persons loaded in "
                  f"{_fmt(state.get('load_s'))} s ({_fmt(state.get('load_rate'))}/s); state size "
                  f"{_fmt((ck.get('latest_state_size_bytes') or 0) / 2**20)} MB, checkpoint duration p50 "
                  f"{_fmt(_get(ck, 'duration_ms', 'p50'))} ms / max {_fmt(_get(ck, 'duration_ms', 'max'))} ms; "
                  f"state restore (slowest subtask INITIALIZING -> RUNNING) "
                  f"{_fmt(state.get('restore_initialization_s'))} s from the checkpoint vs "
                  f"{_fmt(state.get('fresh_initialization_s'))} s for the fresh job; `flink run` to RUNNING "
                  f"{_fmt(state.get('restore_submit_s'))} s vs {_fmt(state.get('fresh_submit_s'))} s."]
    if knobs:
        kmeta = knobs.get("meta") or {}
        lines += ["", f"**Tuning knobs** (`bench/results/{knobs_name}`, {kmeta.get('started', '?')} UTC, "
                  f"`make bench-knobs`: one step of {_fmt(knobs['config']['step_s'])} s at "
                  f"{knobs['config']['knob_rate']:,} events/s offered per variant, each on fresh topics; load average "
                  f"{kmeta.get('load_average_start')} at the start and {kmeta.get('load_average_end')} at the end"
                  f"{_load_note(kmeta) if kmeta else ''}; consumed = events/s through the whole path (segments), "
                  "identity = events/s its first job consumed):", ""]
        rows = []
        for name, v in knobs["knobs"]["variants"].items():
            step = (v.get("steps") or [{}])[0]
            cpu = _get(step, "processes", "taskmanager", "cpu_pct")
            rows.append([name, v.get("doc", ""), v.get("error", "")[:60] or step.get("throughput"),
                         step.get("head_throughput"), _get(step, "latency_ms", "p50"),
                         _get(step, "latency_ms", "p99"), cpu,
                         round(step["throughput"] * 100 / cpu, 1) if cpu and step.get("throughput") else None,
                         step.get("load_average")])
        lines += _table(["variant", "what", "consumed/s", "identity/s", "p50 ms", "p99 ms", "TaskManager CPU %",
                         "consumed per TaskManager CPU-s", "load average after"], rows)
        batching = knobs["knobs"].get("redis_batching") or {}
        lines += ["", "Redis write batching (the store writer's element path: ops serialized as one JSON array, "
                  "parsed, applied in one pipelined `RedisStore.apply`; no Flink): " + ", ".join(
                      f"{b} per element: {_fmt(v)} ops/s" for b, v in batching.items()) + "."]
    lines += [""] + [f"![{p}](bench/results/{p})" for p in plots] + ["", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, section: str) -> None:
    """Replaces the text between the bench markers (they must exist) with `section`."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text:
        raise ValueError(f"{readme} has no {README_START} marker")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    readme.write_text(pattern.sub(lambda _: section, text), encoding="utf-8")


def latest(out_dir: Path, prefix: str) -> tuple[dict[str, Any], str] | None:
    """The newest `<prefix>-*.json` result in `out_dir` and its file name."""
    files = sorted(out_dir.glob(f"{prefix}-2*.json"))
    return (orjson.loads(files[-1].read_bytes()), files[-1].name) if files else None
