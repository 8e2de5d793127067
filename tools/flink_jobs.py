"""The deployable job suite and how to submit it to a Flink cluster with `flink run -py`.

`python -m tools.flink_jobs submit [JOB ...]` submits (detached) every job, or the named ones, to the
profile's local cluster and waits until each is RUNNING; `list` shows what runs; `cancel` stops them.
A job that already runs under its name is left alone, so submitting twice is harmless.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    """

    key: str
    name: str
    script: str
    args: Callable[[Ports], list[str]]


JOBS: tuple[JobSpec, ...] = (
    JobSpec("ingest", "tagstream-ingest", "jobs/ingest.py", lambda p: ["--bootstrap", p.bootstrap]),
)


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


def submit(stack, spec: JobSpec, extra_args: list[str] | None = None) -> str:
    """Submits one job detached with `flink run -py` unless it already runs; returns its job id."""
    existing = running_jobs(stack.ports).get(spec.name)
    if existing:
        return existing
    python = sys.executable
    args = ["run", "--detached", "-pyclientexec", python, "-pyexec", python,
            "-py", str(REPO_ROOT / spec.script), *spec.args(stack.ports), *(extra_args or [])]
    done = stack.flink(*args)
    output = f"{done.stdout}\n{done.stderr}"
    found = re.search(r"JobID ([0-9a-f]{32})", output)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"flink run {spec.script} failed (exit {done.returncode}):\n{output[-4000:]}")
    job_id = found.group(1)
    wait_running(stack.ports, job_id)
    return job_id


def cancel(ports: Ports, job_id: str) -> None:
    """Cancels a job (its last checkpoint is retained)."""
    rest(ports, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def main(argv: list[str] | None = None) -> int:
    """Command line: submit, list or cancel the job suite on a local stack."""
    from tools.stack import Stack

    parser = argparse.ArgumentParser(prog="flink_jobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("submit", "list", "cancel"))
    parser.add_argument("jobs", nargs="*", help=f"job keys (default all: {', '.join(j.key for j in JOBS)})")
    parser.add_argument("--profile", default=None, help="stack profile (default $TAGSTREAM_PROFILE or dev)")
    args = parser.parse_args(argv)
    stack = Stack(args.profile) if args.profile else Stack()
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
