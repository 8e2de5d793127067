"""The phases of a benchmark run: tagstream load steps, the two baselines, state scale, tuning knobs."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.config import BenchConfig
from tools.bench.load import LoadProducer, ProbeSender
from tools.bench.probes import KafkaProbeReader, RedisProbeReader
from tools.bench.profile import StepProfile
from tools.bench.sampling import LagSampler, ProcSampler, checkpoint_stats, initialization_s
from tools.bench.stats import commit_rate, summary, sustained
from tools.bench.systems import (
    DEFAULT,
    KNOBS,
    NAIVE_DB,
    Deployment,
    Knob,
    start_naive,
    start_segments_only,
    start_tagstream,
    start_twin,
)
from tools.bench.workload import PROBE_WINDOW_MS, ensure_templates, probe_field, probe_key, probe_user, state_templates
from udfs.segments import person_id_of

STACK_PROCESSES = ("kafka", "redis", "dynamodb", "jobmanager", "taskmanager")


@dataclass
class Context:
    """What every phase needs: the stack, the run's id and directory, the template pool, the sizes."""

    stack: Any
    cfg: BenchConfig
    run_dir: Path
    templates: Path
    log: Callable[[str], None] = print
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def bootstrap(self) -> str:
        """The stack's Kafka."""
        return str(self.stack.ports.bootstrap)

    def pids(self, extra: dict[str, Callable[[], int | None]] | None = None) -> dict[str, Callable[[], int | None]]:
        """Processes to sample: the stack's services, this harness, and `extra`."""
        pids: dict[str, Callable[[], int | None]] = {name: self.stack.services[name].pid for name in STACK_PROCESSES}
        pids["bench-harness"] = os.getpid
        pids.update(extra or {})
        return pids


def fresh_taskmanager(stack) -> None:
    """Restarts the TaskManager: every PyFlink job leaves classes in its metaspace (about 25 job submissions
    exhaust the default 256 MB and kill it), and a fresh one makes RSS figures comparable between runs."""
    stack.stop_service("taskmanager")
    stack.start_service("taskmanager")


def prepare(stack, cfg: BenchConfig, run_dir: Path, log: Callable[[str], None] = print) -> Context:
    """Starts the stack with a fresh TaskManager and builds (or reuses) the template pool."""
    stack.up()
    if cfg.fresh_taskmanager:
        fresh_taskmanager(stack)
    log(f"templates: {cfg.pool_events} generator events")
    return Context(stack, cfg, run_dir, ensure_templates(run_dir.parent / "templates", cfg.pool_events), log)


def measure_step(ctx: Context, dep: Deployment, reader, sender: ProbeSender, offered: float, seconds: float,
                 name: str, extra_pids: dict[str, Callable[[], int | None]] | None = None,
                 exits: bool = True) -> dict[str, Any]:
    """Offers `offered` events/s (0: as fast as the producer goes) for `seconds` and measures everything.

    Returns throughput (the tail consumer group's committed offsets per second while the load ran), lag per
    group, the verdict, probe latency and exit error percentiles, CPU/RSS per process and the load average.
    """
    ctx.log(f"  step {name}: {offered or 'max'} events/s for {seconds:.0f} s")
    lag = LagSampler(ctx.bootstrap, dep.groups).start()
    producer = LoadProducer(ctx.stack.layout.jars / "kafka", ctx.bootstrap, dep.input_topic, ctx.templates, offered,
                            seconds, f"{ctx.run}-{dep.name}-{name}")
    procs = ProcSampler(ctx.pids({"load-producer": lambda: producer.pid if producer.process.poll() is None else None,
                                  **(extra_pids or {})})).start()
    started_ms = producer.wait_started()
    tm = ctx.stack.services["taskmanager"].pid()
    profile = StepProfile(tm, seconds, ctx.run_dir / f"py-spy-{dep.name}-{name.replace('/', '')}.txt") \
        if tm and dep.name == "tagstream" else None
    sender.start(name)
    try:
        sent = producer.result(timeout_s=seconds + 180)
        # Probes keep flowing (uncounted) while the step's last ones settle: a watermark-driven system (the
        # twin) only emits once later events move event time past them.
        sender.phase = f"{name}:settle"
        _wait_probes([p for p in sender.probes if p.phase == name], exits, ctx.cfg.settle_s)
    finally:
        sender.stop()
    lag.stop()
    procs.stop()
    start, end = started_ms / 1000 - lag.start_wall, sent["end_ms"] / 1000 - lag.start_wall  # load was offered
    in_window = {g: [p for p in lag.lag(g) if start <= p[0] <= end] for g in dep.groups}
    committed = [p for p in lag.committed(dep.tail_group) if start <= p[0] <= end]
    head_group = next(iter(dep.groups))
    head_committed = [p for p in lag.committed(head_group) if start <= p[0] <= end]
    probes = [p for p in sender.probes if p.phase == name]
    seen = [p for p in probes if p.latency_ms is not None]
    verdicts = {g: sustained(points, sent["rate"] or offered, dep.commit_interval_s, 0, 0)
                for g, points in in_window.items()}
    probe_verdict = sustained([], sent["rate"], dep.commit_interval_s, len(probes), len(seen))
    reasons = [f"{g}: {r}" for g, v in verdicts.items() for r in v.reasons] + list(probe_verdict.reasons)
    step: dict[str, Any] = {
        "name": name, "offered_rate": offered, "produced": sent, "load_window_s": [round(start, 1), round(end, 1)],
        "throughput": round(commit_rate(committed), 1), "head_throughput": round(commit_rate(head_committed), 1),
        "sustained": not reasons, "not_sustained_because": reasons,
        "lag_end": {g: (points[-1][1] if points else None) for g, points in in_window.items()},
        "lag": {g: [(round(t, 1), int(v)) for t, v in lag.lag(g)] for g in dep.groups},
        "latency_ms": summary([float(p.latency_ms) for p in seen if p.latency_ms is not None]),
        "probes": {"sent": len(probes), "seen": len(seen)},
        "processes": procs.summary(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if profile is not None and (top := profile.top()) is not None:
        step["taskmanager_profile"] = top
    if exits:
        errors = [float(e) for p in seen if (e := p.exit_error_ms(PROBE_WINDOW_MS)) is not None]
        step["exit_error_ms"] = summary(errors)
        step["exit_errors_raw_ms"] = errors
    ctx.log(f"    produced {sent['rate']:.0f}/s, consumed {step['throughput']:.0f}/s, "
            f"sustained={step['sustained']}, latency p50/p99 {step['latency_ms']['p50']}/{step['latency_ms']['p99']} "
            f"ms" + ("" if step["sustained"] else f" ({'; '.join(reasons)[:200]})"))
    return step


def _wait_probes(probes: list, exits: bool, timeout_s: float) -> None:
    """Waits until every probe was seen (and seen gone, with `exits`), or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(
            p.entered_ms is not None and (p.exited_ms is not None or not exits) for p in probes):
        time.sleep(0.1)


def warm_up(ctx: Context, reader, sender: ProbeSender, timeout_s: float = 420) -> float:
    """Sends probes until the first one is seen (the pipeline runs end to end); returns the seconds it took."""
    start = time.monotonic()
    sender.start("warm-up")
    try:
        while time.monotonic() - start < timeout_s:
            if any(p.latency_ms is not None for p in sender.probes):
                return round(time.monotonic() - start, 1)
            time.sleep(0.5)
    finally:
        sender.stop()
    raise TimeoutError(f"no probe reached the store within {timeout_s:.0f} s of warm-up")


def _redis_reader(ctx: Context, db: int = 0) -> RedisProbeReader:
    reader = RedisProbeReader(f"redis://127.0.0.1:{ctx.stack.ports.redis}/{db}", probe_field())
    reader.start()
    return reader


def _sender(ctx: Context, dep: Deployment, reader, phase: str, key_of: Callable[[str, int], str]) -> ProbeSender:
    run = f"{ctx.run}-{phase}"
    return ProbeSender(ctx.bootstrap, dep.input_topic, run, ctx.cfg.probe_rate, lambda n: key_of(run, n), reader.expect)


def _probe_person(run: str, n: int) -> str:
    return str(person_id_of({"ids": {"user_id": probe_user(run, n)}}))


def tagstream_phase(ctx: Context, knob: Knob = DEFAULT, rates: tuple[int, ...] | None = None) -> dict[str, Any]:
    """identity -> segments -> Redis at increasing offered loads until one is not sustained."""
    ctx.log(f"tagstream ({knob.name})")
    dep = start_tagstream(ctx.stack, f"{ctx.run}-{knob.name}", ctx.run_dir, knob, ctx.cfg.checkpoint_s, ctx.log)
    reader = _redis_reader(ctx)
    try:
        sender = _sender(ctx, dep, reader, f"ts-{knob.name}", probe_key)
        out: dict[str, Any] = {"knob": knob.name, "doc": knob.doc, "submit_s": dep.started_s,
                               "warm_up_s": warm_up(ctx, reader, sender), "steps": []}
        for offered in rates if rates is not None else ctx.cfg.steps:
            step = measure_step(ctx, dep, reader, sender, offered, ctx.cfg.step_s, f"{offered}/s")
            out["steps"].append(step)
            if not step["sustained"]:
                break
        out["checkpoints"] = {key: checkpoint_stats(ctx.stack.ports, job_id) for key, job_id in dep.job_ids.items()}
    finally:
        reader.stop()
        dep.stop(ctx.stack)
    sustained_steps = [s for s in out["steps"] if s["sustained"]]
    out["max_sustained_rate"] = max((s["offered_rate"] for s in sustained_steps), default=0)
    out["capacity"] = max((s["throughput"] for s in out["steps"]), default=0.0)
    out["exit_error_ms"] = summary([v for s in sustained_steps for v in _exit_errors(s)])
    return out


def _exit_errors(step: dict[str, Any]) -> list[float]:
    return list(step.get("exit_errors_raw_ms", []))


def baseline_phase(ctx: Context, kind: str) -> dict[str, Any]:
    """The twin or the naive consumer: latency at `baseline_rate`, throughput under maximum load."""
    ctx.log(f"baseline {kind}")
    dep = start_twin(ctx.stack, ctx.run, ctx.cfg.checkpoint_s) if kind == "twin" else start_naive(ctx.stack, ctx.run)
    reader: Any
    if kind == "twin":
        reader = KafkaProbeReader(ctx.bootstrap, dep.topics["twin-changes"])
        reader.start()
        key_of: Callable[[str, int], str] = _probe_person
    else:
        reader, key_of = _redis_reader(ctx, NAIVE_DB), probe_key
    extra = {"naive-consumer": lambda: dep.process.pid if dep.process and dep.process.poll() is None else None} \
        if dep.process else {}
    try:
        sender = _sender(ctx, dep, reader, kind, key_of)
        out: dict[str, Any] = {"submit_s": dep.started_s, "warm_up_s": warm_up(ctx, reader, sender)}
        out["latency_step"] = measure_step(ctx, dep, reader, sender, ctx.cfg.baseline_rate, ctx.cfg.step_s,
                                           "latency", extra, exits=kind == "naive")
        out["saturation_step"] = measure_step(ctx, dep, reader, sender, 0, ctx.cfg.saturation_s, "saturation",
                                              extra, exits=False)
        if kind == "twin":
            out["checkpoints"] = checkpoint_stats(ctx.stack.ports, dep.job_ids["twin"])
    finally:
        reader.stop()
        dep.stop(ctx.stack)
    sat = out["saturation_step"]
    out["capacity"] = sat["throughput"]
    out["producer_bound"] = bool(sat["sustained"])  # it kept up with the producer: capacity is a lower bound
    return out


def state_phase(ctx: Context) -> dict[str, Any]:
    """Loads `state_persons` persons into the segments job's RocksDB state; checkpoint size and duration,
    restore time from the retained checkpoint."""
    cfg = ctx.cfg
    ctx.log(f"state scale: {cfg.state_persons} persons")
    if cfg.fresh_taskmanager:
        fresh_taskmanager(ctx.stack)
    run = f"{ctx.run}-state"
    dep = start_segments_only(ctx.stack, run, ctx.run_dir, checkpoint_s=10.0)
    out: dict[str, Any] = {"target_persons": cfg.state_persons, "fresh_submit_s": dep.started_s["segments"],
                           "fresh_initialization_s": initialization_s(ctx.stack.ports, dep.job_ids["segments"])}
    try:
        lag = LagSampler(ctx.bootstrap, dep.groups).start()
        producer = LoadProducer(ctx.stack.layout.jars / "kafka", ctx.bootstrap, dep.input_topic,
                                state_templates(ctx.run_dir), 0, cfg.state_load_s, f"{run}", cfg.state_persons)
        procs = ProcSampler(ctx.pids()).start()
        start = time.monotonic()
        out["produced"] = producer.result(timeout_s=cfg.state_load_s + 180)
        while time.monotonic() - start < cfg.state_load_s:
            samples = lag.samples[dep.tail_group]
            if samples and samples[-1][1] >= out["produced"]["sent"]:
                break
            time.sleep(2)
        procs.stop()
        out["load_s"] = round(time.monotonic() - start, 1)
        out["load_rate"] = round(commit_rate(lag.committed(dep.tail_group)), 1)
        out["processes"] = procs.summary()
        job_id = dep.job_ids["segments"]
        before = checkpoint_stats(ctx.stack.ports, job_id)["counts"].get("completed", 0)
        deadline = time.monotonic() + 120
        stats = checkpoint_stats(ctx.stack.ports, job_id)
        while stats["counts"].get("completed", 0) < before + 1 and time.monotonic() < deadline:
            time.sleep(1)
            stats = checkpoint_stats(ctx.stack.ports, job_id)
        out["checkpoints"] = stats
        time.sleep(1)  # the checkpoint's offsets are committed right after it completes
        lag.stop()  # takes a last sample
        out["persons_loaded"] = lag.samples[dep.tail_group][-1][1] if lag.samples[dep.tail_group] else 0
    finally:
        dep.stop(ctx.stack)
    path = out["checkpoints"].get("latest_path")
    if path:
        time.sleep(3)
        restored = start_segments_only(ctx.stack, run, ctx.run_dir, 10.0, restore_from=path, topics=dep.topics)
        try:
            out["restore_submit_s"] = restored.started_s["segments"]
            out["restore_initialization_s"] = initialization_s(ctx.stack.ports, restored.job_ids["segments"])
            out["restored"] = checkpoint_stats(ctx.stack.ports, restored.job_ids["segments"]).get("restored")
        finally:
            restored.stop(ctx.stack)
    return out


def knobs_phase(ctx: Context) -> dict[str, Any]:
    """Each tuning variant: one step at `knob_rate`; plus Redis write batching measured on the store layer."""
    out: dict[str, Any] = {"variants": {}}
    for knob in (k for k in KNOBS if not ctx.cfg.variants or k.name in ctx.cfg.variants):
        try:
            out["variants"][knob.name] = tagstream_phase(ctx, knob, (ctx.cfg.knob_rate,))
        except Exception as exc:  # one variant failing must not lose the others
            ctx.log(f"  {knob.name} failed: {exc}")
            out["variants"][knob.name] = {"knob": knob.name, "doc": knob.doc, "error": str(exc)[:2000]}
    out["redis_batching"] = redis_batching(ctx)
    return out


def redis_batching(ctx: Context, ops: int = 5000) -> dict[str, float]:
    """Redis store ops written per second by ops per store-writer element (1: what the jobs emit today).

    Each element takes the path `jobs.operators.ApplyStoreOps` gives it: a JSON array of ops serialized,
    parsed, split by store and applied in one `RedisStore.apply` (one pipelined round trip); Flink's own cost
    per element (a Python -> JVM crossing) comes on top, so batching gains at least this much in a job.
    """
    from tools.bench_stores import measure, redis_ops
    from udfs.stores.ops import ops_from_json, ops_to_json, split_by_store
    from udfs.stores.redis_store import RedisConfig, RedisStore

    store = RedisStore(RedisConfig(url=ctx.stack.redis_url))

    def element(batch):  # what one element costs the writer, from the emitting side's serialization on
        return store.apply(split_by_store(ops_from_json(ops_to_json(batch)))[0])

    try:
        return {str(batch): round(measure(element, redis_ops(ops, time.time_ns() // 1_000_000), batch))
                for batch in (1, 10, 100, 1000)}
    finally:
        store.close()
