"""The systems a benchmark runs, each on private topics of one run: tagstream (identity -> segments ->
Redis), the JVM-only Flink SQL twin, the naive Python consumer, and the segments job alone (state scale)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools import segments_cli
from tools.bench.workload import PROBE_DEFINITION
from tools.flink_jobs import JOBS, REPO_ROOT, JobSpec, cancel, operator_metrics, submit
from tools.kafka_io import private_topics
from udfs.segments.definitions import EXAMPLES_DIR

TAGSTREAM_TOPICS = ("events.valid", "identity-loop", "events.identified", "person-merges", "profiles", "erasures",
                    "segment-changes", "events.late", "segments.handoff")
IDENTITY_ROLES = {"identified": "events.identified", "merges": "person-merges", "review": "person-merges",
                  "profiles": "profiles", "erasures": "erasures"}
TWIN = JobSpec("twin", "tagstream-bench-twin", "tools/bench/twin_job.py", lambda p: ["--bootstrap", p.bootstrap])
NAIVE_DB = 1  # the naive consumer writes the same key layout to its own Redis database


def job(key: str) -> JobSpec:
    """The deployable job of this key (tools.flink_jobs.JOBS)."""
    return next(j for j in JOBS if j.key == key)


@dataclass(frozen=True)
class Knob:
    """A tuning variant of the tagstream jobs.

    Attributes:
        name: short name (JSON key, plot label).
        doc: what it changes.
        job_flags: extra flags of both jobs (`--python-mode`, `--parallelism`, `--conf KEY=VALUE`, ...).
        stores: store flags of both jobs on top of the suite's own (`--no-dynamodb` by default: Redis only, as
            DynamoDB Local says nothing about DynamoDB; empty: Redis and DynamoDB Local).
    """

    name: str
    doc: str
    job_flags: tuple[str, ...] = ()
    stores: tuple[str, ...] = ("--no-dynamodb",)


DEFAULT = Knob("default", "thread mode, parallelism 1, RocksDB, the jobs' bundles (100 records / 5 ms), Redis, "
               "identity exactly-once (checkpoints every 1 s)")
KNOBS: tuple[Knob, ...] = (
    DEFAULT,
    Knob("process-mode", "Python UDFs in separate worker processes (Beam runner) instead of pemja threads",
         ("--python-mode", "process")),
    Knob("bundle-flink-default", "Flink's default Python bundles, python.fn-execution.bundle.size=100000, "
         "bundle.time=1000 ms (the jobs use 100 records / 5 ms)",
         ("--conf", "python.fn-execution.bundle.size=100000", "--conf", "python.fn-execution.bundle.time=1000")),
    Knob("buffer-timeout-5ms", "execution.buffer-timeout.interval=5 ms instead of 100 ms (network buffers flushed "
         "sooner: lower latency, more small buffers)", ("--conf", "execution.buffer-timeout.interval=5ms")),
    Knob("parallelism-2", "both jobs at parallelism 2", ("--parallelism", "2")),
    Knob("heap-state", "HashMap (heap) state backend instead of RocksDB", ("--conf", "state.backend.type=hashmap")),
    Knob("identity-at-least-once", "identity writes at-least-once (--no-exactly-once): visible at once instead of "
         "when its checkpoint completes; a failover can annotate a replayed event twice (docs/identity.md)",
         ("--no-exactly-once",)),
    Knob("with-dynamodb", "store writers also write DynamoDB Local (synchronous, in the store writer)", (), ()),
)


@dataclass
class Deployment:
    """A running system: its topics, Flink job ids (or process), consumer groups and where probes show.

    Attributes:
        name: system name. topics: logical -> private topic. input_topic: where load and probes go.
        groups: consumer group -> the topic it reads (lag). tail_group: the group whose progress is the
            system's throughput. job_ids: Flink jobs. process: the naive consumer's process.
        commit_interval_s: how often its groups commit offsets.
    """

    name: str
    topics: dict[str, str]
    input_topic: str
    groups: dict[str, str]
    tail_group: str
    job_ids: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    commit_interval_s: float = 5.0
    started_s: dict[str, float] = field(default_factory=dict)

    def stop(self, stack) -> None:
        """Cancels its jobs (checkpoints are retained) or stops its process."""
        for job_id in self.job_ids.values():
            with contextlib.suppress(Exception):  # already gone
                cancel(stack.ports, job_id)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_topic(bootstrap: str, topic: str, timeout_s: float = 30) -> None:
    """Waits until a freshly created topic's partitions show in the metadata clients see."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic) and time.monotonic() < deadline:
            time.sleep(0.5)
            consumer.topics()  # refreshes the metadata
    finally:
        consumer.close()


def publish_definitions(bootstrap: str, topic: str, run_dir: Path, with_examples: bool = True) -> int:
    """Publishes the example definitions and the probe segment to a definitions topic; returns how many."""
    wait_topic(bootstrap, topic)
    probe = run_dir / "bench_probe.yaml"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(PROBE_DEFINITION, encoding="utf-8")
    files = [*(sorted(EXAMPLES_DIR.glob("*.yaml")) if with_examples else []), probe]
    code = segments_cli.main(["--bootstrap", bootstrap, "--topic", topic, "apply", *map(str, files)])
    if code != 0:
        raise RuntimeError(f"publishing the definitions failed (exit {code})")
    return len(segments_cli.published(bootstrap, topic))


def _timed_submit(stack, spec: JobSpec, flags: list[str], flink_options: list[str] | None = None) -> tuple[str, float]:
    start = time.monotonic()
    job_id = submit(stack, spec, flags, flink_options, reuse=False)
    return job_id, time.monotonic() - start


def wait_definitions(stack, job_id: str, expected: int, timeout_s: float = 300) -> bool:
    """Waits until the segments job has read `expected` definition records (its metrics say so); False when
    it has not after `timeout_s` (on a saturated machine the metrics lag: the probe warm-up decides then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = operator_metrics(stack.ports, job_id)
        if metrics.get("definitions_loaded", 0) + metrics.get("definition_issues", 0) >= expected:
            return True
        time.sleep(2)
    return False


def segments_flags(topics: dict[str, str], run: str, checkpoint_s: float, knob: Knob) -> list[str]:
    """Flags of the segments job on a run's topics (reading the identity job's events.identified)."""
    return ["--input-topic", topics["events.identified"], "--definitions-topic", topics["segment-definitions"],
            "--changes-topic", topics["segment-changes"], "--late-topic", topics["events.late"],
            "--merges-topic", topics["person-merges"], "--handoff-topic", topics["segments.handoff"],
            "--group-id", f"bench-segments-{run}", "--out-of-orderness", "500ms", "--idle-timeout", "1s",
            "--checkpoint-interval", f"{int(checkpoint_s * 1000)}ms", *knob.job_flags, *knob.stores]


def start_tagstream(stack, run: str, run_dir: Path, knob: Knob = DEFAULT, checkpoint_s: float = 5.0,
                    log: Callable[[str], None] = print) -> Deployment:
    """Identity and segments on fresh private topics, definitions published; returns when both run."""
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, *TAGSTREAM_TOPICS, partitions=4)
    topics.update(private_topics(bootstrap, "segment-definitions", partitions=1))
    expected = publish_definitions(bootstrap, topics["segment-definitions"], run_dir)
    deployment = Deployment("tagstream", topics, topics["events.valid"],
                            {f"bench-identity-{run}": topics["events.valid"],
                             f"bench-segments-{run}": topics["events.identified"]},
                            f"bench-segments-{run}", commit_interval_s=checkpoint_s)
    identity_flags = ["--input-topic", topics["events.valid"], "--loop-topic", topics["identity-loop"],
                      "--group-id", f"bench-identity-{run}",  # its own checkpoint interval: exactly-once latency
                      *[a for role, t in IDENTITY_ROLES.items() for a in ("--topic", f"{role}={topics[t]}")],
                      *knob.job_flags, *knob.stores]
    try:
        for key, flags in (("identity", identity_flags),
                           ("segments", segments_flags(topics, run, checkpoint_s, knob))):
            log(f"  submitting {key} ({knob.name})")
            deployment.job_ids[key], deployment.started_s[key] = _timed_submit(stack, job(key), flags)
        if not wait_definitions(stack, deployment.job_ids["segments"], expected):
            log(f"  the segments job's metrics do not show {expected} definitions yet; the warm-up decides")
    except BaseException:
        deployment.stop(stack)
        raise
    return deployment


def start_segments_only(stack, run: str, run_dir: Path, checkpoint_s: float = 10.0,
                        restore_from: str | None = None, topics: dict[str, str] | None = None) -> Deployment:
    """The segments job alone (state-scale runs): input straight on its own `events.identified` topic."""
    bootstrap = stack.ports.bootstrap
    fresh = topics is None
    if topics is None:
        topics = private_topics(bootstrap, "events.identified", "segment-changes", "events.late", "person-merges",
                                "segments.handoff", partitions=4)
        topics.update(private_topics(bootstrap, "segment-definitions", partitions=1))
        publish_definitions(bootstrap, topics["segment-definitions"], run_dir)
    group = f"bench-segments-{run}"
    deployment = Deployment("segments-only", topics, topics["events.identified"],
                            {group: topics["events.identified"]}, group, commit_interval_s=checkpoint_s)
    options = ["-s", restore_from] if restore_from else None
    job_id, took = _timed_submit(stack, job("segments"), segments_flags(topics, run, checkpoint_s, DEFAULT),
                                 options)
    deployment.job_ids["segments"], deployment.started_s["segments"] = job_id, took
    if fresh:
        wait_definitions(stack, job_id, 1)
    return deployment


def start_twin(stack, run: str, checkpoint_s: float = 5.0) -> Deployment:
    """The Flink SQL twin on fresh topics (input like events.valid, output to Kafka)."""
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", "twin-changes", partitions=4)
    group = f"bench-twin-{run}"
    deployment = Deployment("twin", topics, topics["events.valid"], {group: topics["events.valid"]}, group,
                            commit_interval_s=checkpoint_s)
    flags = ["--input-topic", topics["events.valid"], "--output-topic", topics["twin-changes"], "--group-id", group,
             "--checkpoint-interval", f"{int(checkpoint_s * 1000)}ms"]
    deployment.job_ids["twin"], deployment.started_s["twin"] = _timed_submit(stack, TWIN, flags)
    return deployment


def start_naive(stack, run: str, commit_s: float = 1.0) -> Deployment:
    """The naive consumer (`tools/bench/naive.py`) in its own process, on fresh topics."""
    bootstrap = stack.ports.bootstrap
    topics = private_topics(bootstrap, "events.valid", partitions=4)
    group = f"bench-naive-{run}"
    redis_url = f"redis://127.0.0.1:{stack.ports.redis}/{NAIVE_DB}"
    process = subprocess.Popen([sys.executable, "-m", "tools.bench.naive", "--bootstrap", bootstrap, "--topic",
                                topics["events.valid"], "--group-id", group, "--redis-url", redis_url,
                                "--commit-interval", str(commit_s)], cwd=REPO_ROOT)
    return Deployment("naive", topics, topics["events.valid"], {group: topics["events.valid"]}, group,
                      process=process, commit_interval_s=commit_s)
