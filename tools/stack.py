"""The local tagstream stack: Kafka (KRaft), Redis, DynamoDB Local and a Flink standalone cluster.

Usage:
    python -m tools.stack {up,down,status} [--profile dev|test]

The profile (default: $TAGSTREAM_PROFILE, else `dev`) picks the ports (udfs.topology.PROFILES) and the run
directory `.run/<profile>/`, so `dev` and `test` stacks can run side by side. As a library::

    stack = Stack("test")
    stack.up()                      # idempotent; creates the topics and tables of udfs.topology
    stack.flink("list")             # bin/flink against this cluster
    stack.stop_service("taskmanager", force=True); stack.start_service("taskmanager")
    stack.down()
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.stack_proc import StackError, port_bindable, port_holder, wait_until
from tools.stack_services import SERVICE_TYPES, DynamoDB, Layout, Service
from udfs.topology import PROFILES, TABLES, TOPICS, Ports

__all__ = ["Stack", "StackError", "default_profile"]

MIN_FREE_DISK = 2 * 1024**3


def default_profile() -> str:
    """$TAGSTREAM_PROFILE, else `dev`."""
    return os.environ.get("TAGSTREAM_PROFILE") or "dev"


class Stack:
    """One profile's local stack.

    Args:
        profile: a key of udfs.topology.PROFILES; default from `default_profile()`.
        log: where progress lines go (default: print to stdout); pass `lambda _: None` for silence.
    """

    def __init__(self, profile: str | None = None, log: Callable[[str], None] = print) -> None:
        profile = profile or default_profile()
        if profile not in PROFILES:
            raise StackError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        self.profile = profile
        self.layout = Layout(profile)
        self._log = log
        self.services: dict[str, Service] = {t.name: t(self.layout) for t in SERVICE_TYPES}

    # ----------------------------------------------------------------------------------- addresses

    @property
    def ports(self) -> Ports:
        """Loopback ports of this stack."""
        return self.layout.ports

    @property
    def run_dir(self) -> Path:
        """`.run/<profile>/`: data, logs, pid files, rendered configs."""
        return self.layout.run_dir

    @property
    def dynamodb_endpoint(self) -> str:
        """endpoint_url for boto3."""
        return f"http://127.0.0.1:{self.ports.dynamodb}"

    @property
    def redis_url(self) -> str:
        """URL for redis.Redis.from_url."""
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    @property
    def flink_ui_url(self) -> str:
        """Flink web UI and REST API."""
        return f"http://127.0.0.1:{self.ports.flink_rest}"

    def dynamodb_client(self) -> Any:
        """A boto3 DynamoDB client for this stack (dummy credentials, region us-east-1)."""
        ddb = self.services["dynamodb"]
        assert isinstance(ddb, DynamoDB)
        return ddb.client()

    # ------------------------------------------------------------------------------------- flink

    def flink_env(self) -> dict[str, str]:
        """Environment to run `<pyflink>/bin/flink` (or the daemon scripts) against this cluster."""
        return self.layout.flink_env()

    def flink(self, *args: str, timeout: float | None = None, capture: bool = True
              ) -> subprocess.CompletedProcess[str]:
        """Runs `<pyflink>/bin/flink <args>` against this cluster (does not raise on failure).

        Args:
            *args: CLI arguments, e.g. ("run", "-d", "-py", "jobs/x.py").
            timeout: seconds before the CLI is killed.
            capture: capture stdout/stderr (as text) instead of inheriting them.
        """
        return subprocess.run([str(self.layout.flink_home / "bin" / "flink"), *args],
                              env=self.flink_env(), cwd=self.layout.repo, text=True,
                              capture_output=capture, timeout=timeout, check=False)

    def connector_jars(self) -> list[Path]:
        """Jars jobs need on their classpath (the Kafka SQL connector), for pipeline.jars or `-j`."""
        return sorted((self.layout.jars / "flink").glob("*.jar"))

    # -------------------------------------------------------------------------------- lifecycle

    def up(self) -> None:
        """Starts whatever is not running, waits until healthy, then creates topics and tables.

        A no-op (apart from the checks) on a running, healthy stack.

        Raises:
            StackError: setup missing, java missing, disk full, a port taken by a foreign process, or a
                service not healthy in time (with the tail of its log).
        """
        self._preflight()
        start = time.monotonic()
        for name in self.services:
            self.start_service(name)
        self._ensure_topics()
        self._ensure_tables()
        took = time.monotonic() - start
        self._log(f"stack {self.profile}: up in {took:.1f} s; Flink UI {self.flink_ui_url}")

    def down(self) -> None:
        """Stops every service of this stack, last started first. Safe to call twice."""
        for name in reversed(self.services):
            self.stop_service(name)

    def start_service(self, name: str) -> None:
        """Starts one service unless it is already running, and waits until it is healthy."""
        svc = self.services[name]
        pid = svc.pid()
        if pid is not None and self._healthy(svc):
            self._log(f"{name:<12} already up (pid {pid})")
            return
        start = time.monotonic()
        if pid is None:
            conflicts = self._port_conflicts(svc)
            if conflicts:
                raise StackError("\n".join(conflicts))
            svc.start()
        wait_until(svc.healthy, svc.start_timeout, f"{name} ({self.profile})", svc.log, svc.pid)
        self._log(f"{name:<12} up in {time.monotonic() - start:4.1f} s (pid {svc.pid()})")

    def stop_service(self, name: str, force: bool = False) -> None:
        """Stops one service: TERM, wait, then KILL (KILL at once if `force`, e.g. for chaos tests)."""
        pid = self.services[name].stop(force=force)
        self._log(f"{name:<12} {'stopped' if pid else 'not running'}" + (f" (pid {pid})" if pid else ""))

    def status(self, details: bool = True) -> dict[str, dict[str, Any]]:
        """Per service: `up` (running and healthy), `port` (None if none fixed), `pid` and `detail`.

        Args:
            details: also ask each service for a few words (topic count, free slots, ...).
        """
        result: dict[str, dict[str, Any]] = {}
        for name, svc in self.services.items():
            pid = svc.pid()
            up = pid is not None and self._healthy(svc)
            detail = ""
            if up and details:
                try:
                    detail = svc.detail()
                except Exception:  # detail is decoration only
                    detail = ""
            result[name] = {"up": up, "port": svc.ports[0] if svc.ports else None, "pid": pid,
                            "detail": detail}
        return result

    def healthy(self) -> bool:
        """Tells whether every service is up."""
        return all(s["up"] for s in self.status(details=False).values())

    # ---------------------------------------------------------------------------------- internals

    @staticmethod
    def _healthy(svc: Service) -> bool:
        try:
            return svc.healthy()
        except Exception:  # any failure of a probe means "not healthy"
            return False

    def _port_conflicts(self, svc: Service) -> list[str]:
        return [f"port {port} ({svc.name}, profile {self.profile}) is already in use by {port_holder(port)}. "
                f"Stop it, run `make down` (PROFILE={self.profile}) if it is a stack started from another "
                f"checkout, or use the other profile (TAGSTREAM_PROFILE=dev|test)."
                for port in svc.ports if not port_bindable(port)]

    def _preflight(self) -> None:
        """Checks everything `up` needs before starting anything."""
        lay = self.layout
        missing = [str(p.relative_to(lay.repo)) for p in (
            lay.python, lay.flink_home / "bin" / "jobmanager.sh",
            lay.jars / "flink", lay.jars / "kafka", lay.jars / "dynamodb" / "native",
        ) if not p.exists() or (p.is_dir() and not any(p.iterdir()))]
        if missing:
            raise StackError(f"setup is not done (missing: {', '.join(missing)}): run `make setup`")
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise StackError("Java 17 is required: `java` is not on PATH")
        if shutil.which("redis-server") is None:
            raise StackError("redis-server is not on PATH: run `make setup`")
        lay.run_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(lay.run_dir).free
        if free < MIN_FREE_DISK:
            raise StackError(f"only {free / 1024**3:.1f} GB free under {lay.run_dir}; the stack needs 2 GB")
        idle = [svc for svc in self.services.values() if svc.pid() is None]
        conflicts = [c for svc in idle for c in self._port_conflicts(svc)]
        if conflicts:
            raise StackError("\n".join(conflicts))

    def _ensure_topics(self) -> None:
        """Creates missing TOPICS; raises partition counts that are below the registry's."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.ports.bootstrap, client_id="tagstream-stack",
                                 request_timeout_ms=30000)
        try:
            existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
            missing = {t.name: {"num_partitions": t.partitions, "replication_factor": 1, "configs": t.config}
                       for t in TOPICS if t.name not in existing}
            if missing:
                admin.create_topics(missing, raise_errors=False, wait_for_metadata=True)
            grow = {t.name: t.partitions for t in TOPICS if 0 < existing.get(t.name, 0) < t.partitions}
            if grow:
                admin.create_partitions(grow)
        finally:
            admin.close()
        self._log(f"{'topics':<12} {len(TOPICS)} ok ({len(missing)} created)")

    def _ensure_tables(self) -> None:
        created = self.ensure_tables()
        self._log(f"{'tables':<12} {len(TABLES)} ok ({created} created)")

    def ensure_tables(self, prefix: str = "") -> int:
        """Creates missing TABLES (on-demand billing), named with `prefix` (an isolated copy, see
        `--dynamodb-table-prefix`), and enables TTL on their ttl_attribute; returns how many were created."""
        client = self.dynamodb_client()
        existing = set(client.list_tables()["TableNames"])
        created = 0
        for table in TABLES:
            name = prefix + table.name
            if name not in existing:
                keys = [(table.hash_key, "HASH")] + ([(table.range_key, "RANGE")] if table.range_key else [])
                client.create_table(
                    TableName=name, BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": a, "KeyType": k} for a, k in keys],
                    AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys])
                client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
                created += 1
            if table.ttl_attribute:
                ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
                if ttl.get("TimeToLiveStatus") != "ENABLED":
                    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
                        "Enabled": True, "AttributeName": table.ttl_attribute})
        return created

    def drop_tables(self, prefix: str) -> None:
        """Deletes the copy of TABLES named with `prefix` (best effort; the unprefixed tables are refused)."""
        if not prefix:
            raise ValueError("drop_tables needs a prefix: the stack's own tables stay")
        client = self.dynamodb_client()
        for table in TABLES:
            with contextlib.suppress(Exception):  # already gone
                client.delete_table(TableName=prefix + table.name)


def _print_status(stack: Stack) -> bool:
    status = stack.status()
    for name, s in status.items():
        port = f"127.0.0.1:{s['port']}" if s["port"] else "-"
        pid = f"pid {s['pid']}" if s["pid"] else "-"
        print(f"{name:<12} {'up' if s['up'] else 'DOWN':<5} {port:<16} {pid:<11} {s['detail']}".rstrip())
    print(f"Flink UI     {stack.flink_ui_url}")
    return all(s["up"] for s in status.values())


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=default_profile(),
                        help="port set and run dir (default: $TAGSTREAM_PROFILE, else dev)")
    args = parser.parse_args(argv)
    try:
        stack = Stack(args.profile)
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        else:
            return 0 if _print_status(stack) else 1
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
