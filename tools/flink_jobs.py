"""The deployable job suite and how to submit it to a Flink cluster with `flink run -py`.

`python -m tools.flink_jobs submit [JOB ...]` submits (detached) every job, or the named ones, to the
profile's local cluster and waits until each is RUNNING; `list` shows what runs; `cancel` stops them;
`backfill FILE.parquet ... [--as-of T]` runs the bounded segments backfill to completion.
A job that already runs under its name is left alone, so submitting twice is harmless.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from udfs.identity.pii import PII_KEY_ENV
from udfs.topology import Ports

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class JobSpec:
    """A deployable job.

    Attributes:
        key: short name used on the command line.
        name: the Flink job name (as `env.execute(name)` sets it).
        script: the job's Python file, relative to the repo root.
        args: the job's flags for a local stack with these ports.
        secrets: environment variables holding secrets the job's client and TaskManagers need (deployment
            files must wire each from a secret store; tests/static checks it).
    """

    key: str
    name: str
    script: str
    args: Callable[[Ports], list[str]]
    secrets: tuple[str, ...] = ()


JOBS: tuple[JobSpec, ...] = (
    JobSpec("ingest", "tagstream-ingest", "jobs/ingest.py", lambda p: ["--bootstrap", p.bootstrap]),
    JobSpec("identity", "tagstream-identity", "jobs/identity.py",
            lambda p: ["--bootstrap", p.bootstrap, "--redis-url", f"redis://127.0.0.1:{p.redis}/0",
                       "--dynamodb-endpoint", f"http://127.0.0.1:{p.dynamodb}", "--dynamodb-region", "us-east-1"],
            secrets=(PII_KEY_ENV,)),
    # Sessions and segments read the identity job's output: events keyed by the canonical person id.
    JobSpec("sessions", "tagstream-sessions", "jobs/sessions.py",
            lambda p: ["--bootstrap", p.bootstrap, "--events-topic", "events.identified", "--redis-url", f"redis://127.0.0.1:{p.redis}/0",
                       "--dynamodb-endpoint", f"http://127.0.0.1:{p.dynamodb}", "--dynamodb-region", "us-east-1"]),
    JobSpec("segments", "tagstream-segments", "jobs/segments.py",
            lambda p: ["--bootstrap", p.bootstrap, "--input-topic", "events.identified", "--redis-url", f"redis://127.0.0.1:{p.redis}/0",
                       "--dynamodb-endpoint", f"http://127.0.0.1:{p.dynamodb}", "--dynamodb-region", "us-east-1"]),
)


# The bounded segments backfill (jobs/segments_backfill.py): run to completion by `backfill`, never left running.
BACKFILL = JobSpec("segments-backfill", "tagstream-segments-backfill", "jobs/segments_backfill.py",
                   lambda p: ["--bootstrap", p.bootstrap, "--redis-url", f"redis://127.0.0.1:{p.redis}/0",
                              "--dynamodb-endpoint", f"http://127.0.0.1:{p.dynamodb}", "--dynamodb-region",
                              "us-east-1"])


def rest(ports: Ports, path: str, method: str = "GET") -> dict:
    """Calls the Flink REST API of the local cluster and returns the decoded JSON answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{ports.flink_rest}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else {}


def running_jobs(ports: Ports) -> dict[str, str]:
    """Maps the name of every RUNNING (or starting) job to its id."""
    jobs = rest(ports, "/jobs/overview")["jobs"]
    return {j["name"]: j["jid"] for j in jobs if j["state"] in ("RUNNING", "CREATED", "INITIALIZING")}


def last_exception(ports: Ports, job_id: str) -> str:
    """The job's most recent exception (root cause lines only), or '' if it has none."""
    entries = rest(ports, f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries", [])
    if not entries:
        return ""
    trace = entries[0].get("stacktrace", "")
    causes = [line for line in trace.splitlines() if line.startswith("Caused by") or not line.startswith("\t")]
    return "\n".join(causes[-6:])


def wait_running(ports: Ports, job_id: str, timeout_s: float = 180) -> None:
    """Waits until the job and all its tasks run; raises with the job's exception if it fails."""
    deadline = time.monotonic() + timeout_s
    state = "?"
    while time.monotonic() < deadline:
        job = rest(ports, f"/jobs/{job_id}")
        state = job["state"]
        if state in ("FAILED", "CANCELED", "FINISHED"):
            cause = rest(ports, f"/jobs/{job_id}/exceptions").get("root-exception", "")
            raise RuntimeError(f"job {job_id} is {state}: {str(cause)[:2000]}")
        if state == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"]):
            return
        time.sleep(1)
    raise TimeoutError(f"job {job_id} is still {state} after {timeout_s:.0f} s")


def submit(stack, spec: JobSpec, extra_args: list[str] | None = None, flink_options: list[str] | None = None,
           reuse: bool = True) -> str:
    """Submits one job detached with `flink run -py` unless it already runs; returns its job id.

    Args:
        stack: the local stack (tools.stack.Stack).
        spec: the job.
        extra_args: more job flags (after the spec's own).
        flink_options: `flink run` options, e.g. ["-s", savepoint, "-p", "2"].
        reuse: return the id of a job already running under the spec's name instead of submitting
            (False: submit another instance, e.g. on private topics).
    """
    existing = running_jobs(stack.ports).get(spec.name) if reuse else None
    if existing:
        return existing
    python = sys.executable
    args = ["run", "--detached", *(flink_options or []), "-pyclientexec", python, "-pyexec", python,
            "-py", str(REPO_ROOT / spec.script), *spec.args(stack.ports), *(extra_args or [])]
    done = stack.flink(*args)
    output = f"{done.stdout}\n{done.stderr}"
    found = re.search(r"JobID ([0-9a-f]{32})", output)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"flink run {spec.script} failed (exit {done.returncode}):\n{output[-4000:]}")
    job_id = found.group(1)
    try:
        wait_running(stack.ports, job_id)
    except BaseException:  # e.g. not running in time: leave nothing behind that the caller cannot name
        with contextlib.suppress(Exception):
            cancel(stack.ports, job_id)
        raise
    return job_id


def run_backfill(stack, files: list[Path], extra_args: list[str] | None = None, timeout_s: float = 3600) -> str:
    """Runs the segments backfill over Parquet files on the stack's cluster and waits until it finished.

    Returns:
        The client's output (the history summary and the job's result).

    Raises:
        RuntimeError: the run failed.
    """
    python = sys.executable
    done = stack.flink("run", "-pyclientexec", python, "-pyexec", python, "-py", str(REPO_ROOT / BACKFILL.script),
                       *BACKFILL.args(stack.ports), *(extra_args or []), *[str(f.resolve()) for f in files],
                       timeout=timeout_s)
    output = f"{done.stdout}\n{done.stderr}"
    if done.returncode != 0:
        raise RuntimeError(f"flink run {BACKFILL.script} failed (exit {done.returncode}):\n{output[-4000:]}")
    return output


def stop_with_savepoint(stack, job_id: str, directory: Path, timeout_s: float = 300) -> str:
    """Stops a job gracefully with `flink stop --savepointPath`; returns the savepoint's path."""
    done = stack.flink("stop", "--savepointPath", str(directory), job_id, timeout=timeout_s)
    found = re.search(r"Savepoint completed\. Path: (\S+)", f"{done.stdout}\n{done.stderr}")
    if done.returncode != 0 or not found:
        output = f"{done.stdout}\n{done.stderr}"
        raise RuntimeError(f"flink stop {job_id} failed (exit {done.returncode}):\n{output[-4000:]}")
    return found.group(1)


def operator_metrics(ports: Ports, job_id: str, group: str = "tagstream") -> dict[str, int]:
    """Sums the job's counters of one operator metric group over all vertices and subtasks."""
    totals: dict[str, int] = {}
    marker = f".{group}."
    for vertex in rest(ports, f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        names = [m["id"] for m in rest(ports, base) if marker in m["id"]]
        if not names:
            continue
        for metric in rest(ports, f"{base}?get={','.join(names)}&agg=sum"):
            totals[metric["id"].split(marker, 1)[1]] = int(float(metric["sum"]))
    return totals


def num_restarts(ports: Ports, job_id: str) -> int:
    """How often the job restarted (its `numRestarts` metric; the exception history if that is missing)."""
    got = rest(ports, f"/jobs/{job_id}/metrics?get=numRestarts")
    if got:
        return int(float(got[0]["value"]))
    return len(rest(ports, f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries", []))


def cancel(ports: Ports, job_id: str) -> None:
    """Cancels a job (its last checkpoint is retained)."""
    rest(ports, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def main(argv: list[str] | None = None) -> int:
    """Command line: submit, list or cancel the job suite on a local stack."""
    from tools.stack import Stack

    parser = argparse.ArgumentParser(prog="flink_jobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("submit", "list", "cancel", "backfill"))
    parser.add_argument("jobs", nargs="*", help=f"job keys (default all: {', '.join(j.key for j in JOBS)}); for "
                                                "backfill: the Parquet files")
    parser.add_argument("--as-of", default=None, help="backfill: end of the history (default: now)")
    parser.add_argument("--profile", default=None, help="stack profile (default $TAGSTREAM_PROFILE or dev)")
    args = parser.parse_intermixed_args(argv)  # options may come between the command and the files
    stack = Stack(args.profile) if args.profile else Stack()
    if args.command == "backfill":
        if not args.jobs:
            parser.error("backfill needs Parquet files")
        as_of = ["--as-of", args.as_of] if args.as_of else []
        print(run_backfill(stack, [Path(f) for f in args.jobs], as_of).strip())
        return 0
    specs = [j for j in JOBS if not args.jobs or j.key in args.jobs]
    if args.command == "submit":
        for spec in specs:
            print(f"{spec.key}: RUNNING as {submit(stack, spec)}")
    elif args.command == "list":
        for name, job_id in running_jobs(stack.ports).items():
            print(f"{name}\t{job_id}")
    else:
        running = running_jobs(stack.ports)
        for spec in specs:
            if spec.name in running:
                cancel(stack.ports, running[spec.name])
                print(f"{spec.key}: cancelled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
