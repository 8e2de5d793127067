"""The five processes of a local stack: Kafka, Redis, DynamoDB Local, Flink JobManager and TaskManager.

Each `Service` knows how to start itself (detached, output in `.run/<profile>/<name>/`), whether it is
running (pid file + a check that the pid really is this stack's process), whether it is healthy, and how to
stop. `tools.stack.Stack` orders them; nothing here prints.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tools.stack_proc import (
    alive,
    cmdline,
    listening_ports,
    port_open,
    proc_name,
    read_pid,
    spawn_detached,
    terminate,
)
from udfs.topology import PROFILES, Ports

REPO = Path(__file__).resolve().parents[1]
CONF_TEMPLATES = Path(__file__).resolve().parent / "stack_conf"

# DynamoDB Local accepts any credentials; boto3 needs some.
DYNAMODB_CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "local",
                        "aws_secret_access_key": "local"}


@dataclass(frozen=True)
class Layout:
    """Where one profile's stack keeps its files, and where setup put the tools it runs.

    Attributes:
        profile: `dev` or `test` (a key of udfs.topology.PROFILES).
        repo: repository root.
    """

    profile: str
    repo: Path = REPO

    @property
    def ports(self) -> Ports:
        """Loopback ports of this profile."""
        return PROFILES[self.profile]

    @property
    def flink_rpc_port(self) -> int:
        """JobManager RPC port: not in Ports, so derived from the REST port (6123 for dev, 16123 for test)."""
        return self.ports.flink_rest - 8081 + 6123

    @property
    def run_dir(self) -> Path:
        """Data, logs and pid files of this profile's stack."""
        return self.repo / ".run" / self.profile

    @property
    def venv(self) -> Path:
        """The virtualenv tools/setup.sh creates."""
        return self.repo / ".venv"

    @property
    def python(self) -> Path:
        """The venv's interpreter (PyFlink's Python, in the TaskManager too)."""
        return self.venv / "bin" / "python"

    @cached_property
    def site_packages(self) -> Path:
        """The venv's site-packages directory."""
        found = sorted(self.venv.glob("lib/python3*/site-packages"))
        return found[0] if found else self.venv / "lib" / "python3.11" / "site-packages"

    @property
    def flink_home(self) -> Path:
        """The Flink distribution inside the apache-flink wheel."""
        return self.site_packages / "pyflink"

    @property
    def jars(self) -> Path:
        """Jars fetched by deps/pom.xml."""
        return self.repo / ".cache" / "jars"

    @property
    def flink_conf_dir(self) -> Path:
        """Rendered FLINK_CONF_DIR."""
        return self.run_dir / "flink-conf"

    @property
    def flink_dir(self) -> Path:
        """Flink's logs, pid files, checkpoints, savepoints and temp dirs."""
        return self.run_dir / "flink"

    @property
    def flink_lib_dir(self) -> Path:
        """FLINK_LIB_DIR: the wheel's lib/ plus opt/flink-python (see `link_flink_lib`)."""
        return self.flink_dir / "lib"

    def pii_key(self) -> str:
        """The local stack's PII key: `.run/<profile>/pii.key`, generated (random, mode 0600) on first use."""
        path = self.run_dir / "pii.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()

    def flink_env(self) -> dict[str, str]:
        """Environment for Flink's scripts (jobmanager.sh, taskmanager.sh, flink) against this stack."""
        env = dict(os.environ)
        python_path = [str(self.site_packages), str(self.repo)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update({
            "FLINK_HOME": str(self.flink_home),
            "FLINK_CONF_DIR": str(self.flink_conf_dir),
            "FLINK_LOG_DIR": str(self.flink_dir / "log"),
            "FLINK_PID_DIR": str(self.flink_dir),
            "FLINK_IDENT_STRING": "tagstream",
            "FLINK_LIB_DIR": str(lib if (lib := self.flink_lib_dir).is_dir() else self.flink_home / "lib"),
            # Thread-mode PyFlink imports pemja and the jobs' modules inside the TaskManager JVM.
            "PYTHONPATH": os.pathsep.join(python_path),
            "PATH": os.pathsep.join([str(self.venv / "bin"), env.get("PATH", "")]),
        })
        # The identity job's HMAC key of PII: the caller's, else this stack's generated one (never committed).
        env.setdefault("TAGSTREAM_PII_KEY", self.pii_key())
        # DynamoDB Local accepts any credentials, but boto3 in the jobs' store writers needs some.
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        # Flink's config.sh exports an empty JAVA_HOME when there is none, and PyFlink then looks for
        # "bin/java" when a UDF in the TaskManager needs a Java gateway: give it the real one.
        if not env.get("JAVA_HOME") and (java := shutil.which("java")):
            env["JAVA_HOME"] = str(Path(java).resolve().parents[1])
        return env


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turns nested YAML maps into Flink's dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def link_flink_lib(layout: Layout) -> Path:
    """Builds FLINK_LIB_DIR: symlinks to the wheel's lib/*.jar and to opt/flink-python-*.jar.

    With flink-python (which bundles pemja) on the cluster's classpath and `pemja.` loaded parent-first
    (config.yaml), thread-mode Python is initialized once per TaskManager. Otherwise each job's class
    loader loads pemja's native library again, which Java 17 refuses for the second job on a TaskManager
    ("NoSuchFieldException: loadedLibraryNames").

    Returns:
        The directory.
    """
    lib = layout.flink_lib_dir
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    home = layout.flink_home
    for jar in [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python-*.jar")]:
        (lib / jar.name).symlink_to(jar)
    return lib


def render_flink_conf(layout: Layout) -> Path:
    """Writes FLINK_CONF_DIR for this stack: repo flink-conf/ with per-stack values, plus the wheel's conf/.

    Returns:
        The rendered directory.
    """
    dst, fdir = layout.flink_conf_dir, layout.flink_dir
    dst.mkdir(parents=True, exist_ok=True)
    link_flink_lib(layout)
    for sub in ("log", "tmp", "checkpoints", "savepoints"):
        (fdir / sub).mkdir(parents=True, exist_ok=True)
    ours = layout.repo / "flink-conf"
    for src in (layout.flink_home / "conf").iterdir():
        if src.is_file() and not (ours / src.name).exists():
            shutil.copyfile(src, dst / src.name)
    for src in ours.iterdir():
        if src.is_file() and src.name != "config.yaml":
            shutil.copyfile(src, dst / src.name)
    conf = _flatten(yaml.safe_load((ours / "config.yaml").read_text()))
    conf.update({
        "rest.port": layout.ports.flink_rest,
        "jobmanager.rpc.port": layout.flink_rpc_port,
        "metrics.reporter.prom.port": layout.ports.prometheus_range,
        "execution.checkpointing.dir": (fdir / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (fdir / "savepoints").as_uri(),
        "io.tmp.dirs": str(fdir / "tmp"),
        "web.tmpdir": str(fdir / "tmp"),
        "env.log.dir": str(fdir / "log"),
        "env.pid.dir": str(fdir),
        "python.executable": str(layout.python),
        "python.client.executable": str(layout.python),
    })
    header = f"# Rendered by tools/stack.py from flink-conf/config.yaml ({layout.profile}); do not edit.\n"
    (dst / "config.yaml").write_text(header + yaml.safe_dump(conf, sort_keys=True, width=10_000))
    return dst


class Service:
    """One process of the stack. Subclasses set `name` and implement `start` and `healthy`."""

    name: ClassVar[str]
    start_timeout: ClassVar[float] = 90.0
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dir = layout.run_dir / self.name

    @property
    def ports(self) -> tuple[int, ...]:
        """Fixed ports the service listens on; the first is the one clients use."""
        raise NotImplementedError

    @property
    def pid_file(self) -> Path:
        """Where the service's pid is kept."""
        return self.dir / f"{self.name}.pid"

    @property
    def log(self) -> Path | None:
        """The service's main log file."""
        return self.dir / f"{self.name}.log"

    def owns(self, pid: int) -> bool:
        """Tells whether `pid` is this stack's process (guards against recycled pids)."""
        return str(self.dir) in cmdline(pid)

    def pid(self) -> int | None:
        """The pid of this stack's running process, or None."""
        pid = read_pid(self.pid_file)
        return pid if alive(pid) and pid is not None and self.owns(pid) else None

    def start(self) -> None:
        """Launches the process (without waiting for it to be healthy)."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """Health probe; may raise (callers treat exceptions as unhealthy)."""
        raise NotImplementedError

    def detail(self) -> str:
        """A few words for `status` when the service is up."""
        return ""

    def stop(self, force: bool = False) -> int | None:
        """Stops the process (SIGKILL at once if `force`); returns the pid it stopped, if any."""
        pid = self.pid()
        terminate(pid, timeout=self.stop_timeout, force=force)
        self.pid_file.unlink(missing_ok=True)
        return pid

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        return str(Path(java_home) / "bin" / "java") if java_home else "java"


class Kafka(Service):
    """Single-node KRaft Kafka 4.x (broker and controller in one JVM) from .cache/jars/kafka."""

    name = "kafka"

    @property
    def ports(self) -> tuple[int, ...]:
        """Client listener, then controller listener."""
        return (self.layout.ports.kafka, self.layout.ports.kafka_controller)

    def _java_cmd(self, main: str, *args: str, heap: str = "512m") -> list[str]:
        return [self._java(), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={CONF_TEMPLATES / 'kafka-log4j2.properties'}",
                f"-Dkafka.logs.dir={self.dir}",
                "-cp", str(self.layout.jars / "kafka" / "*"), main, *args]

    def start(self) -> None:
        """Renders server.properties, formats the storage on first start, launches kafka.Kafka."""
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        template = (CONF_TEMPLATES / "kafka.properties").read_text()
        props.write_text(template.format(kafka_port=self.layout.ports.kafka,
                                         controller_port=self.layout.ports.kafka_controller,
                                         log_dirs=data))
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            with (self.dir / "format.log").open("w") as out:
                subprocess.run(self._java_cmd("kafka.tools.StorageTool", "format", "-t", cluster_id,
                                              "-c", str(props), "--ignore-formatted", heap="256m"),
                               stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)
        pid = spawn_detached(self._java_cmd("kafka.Kafka", str(props)), self.dir / "kafka.log",
                             os.environ, self.dir)
        self.pid_file.write_text(f"{pid}\n")

    def healthy(self) -> bool:
        """The admin API answers a topic listing."""
        from kafka import KafkaAdminClient

        if not port_open(self.layout.ports.kafka):
            return False
        admin = KafkaAdminClient(bootstrap_servers=self.layout.ports.bootstrap, client_id="tagstream-stack",
                                 request_timeout_ms=5000, bootstrap_timeout_ms=5000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    def detail(self) -> str:
        """Number of (non-internal) topics."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.layout.ports.bootstrap, client_id="tagstream-stack",
                                 request_timeout_ms=5000, bootstrap_timeout_ms=5000)
        try:
            return f"{sum(not t.startswith('__') for t in admin.list_topics())} topics"
        finally:
            admin.close()


class Redis(Service):
    """redis-server on loopback, no persistence, daemonized with its own pid file."""

    name = "redis"
    start_timeout = 20.0

    @property
    def ports(self) -> tuple[int, ...]:
        """The Redis port."""
        return (self.layout.ports.redis,)

    def owns(self, pid: int) -> bool:
        """redis-server rewrites its command line to `redis-server 127.0.0.1:<port>`."""
        return proc_name(pid).startswith("redis-server") and f":{self.layout.ports.redis}" in cmdline(pid)

    def start(self) -> None:
        """Starts redis-server --daemonize yes (it writes the pid file itself)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["redis-server", "--port", str(self.layout.ports.redis), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--pidfile", str(self.pid_file), "--logfile", str(self.log), "--dir", str(self.dir)],
                       check=True, timeout=30, stdin=subprocess.DEVNULL, start_new_session=True)

    def healthy(self) -> bool:
        """PING answers."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.layout.ports.redis, socket_timeout=2,
                             socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()


class DynamoDB(Service):
    """DynamoDB Local 2.x (java), one shared database under the run dir."""

    name = "dynamodb"
    start_timeout = 60.0

    @property
    def ports(self) -> tuple[int, ...]:
        """The DynamoDB Local port."""
        return (self.layout.ports.dynamodb,)

    @property
    def endpoint(self) -> str:
        """boto3 endpoint_url."""
        return f"http://127.0.0.1:{self.layout.ports.dynamodb}"

    def client(self) -> Any:
        """A boto3 DynamoDB client for this stack, with short timeouts."""
        import boto3
        from botocore.config import Config

        return boto3.client("dynamodb", endpoint_url=self.endpoint, **DYNAMODB_CREDENTIALS,
                            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}))

    def start(self) -> None:
        """Launches ServerRunner with -sharedDb -dbPath <run>/dynamodb/data."""
        data, tmp = self.dir / "data", self.dir / "tmp"
        data.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        jars = self.layout.jars / "dynamodb"
        cmd = [self._java(), "-Xms128m", "-Xmx512m", f"-Djava.library.path={jars / 'native'}",
               f"-Djava.io.tmpdir={tmp}",  # it unpacks its sqlite4java library there
               "-cp", str(jars / "*"), "com.amazonaws.services.dynamodbv2.local.main.ServerRunner",
               "-port", str(self.layout.ports.dynamodb), "-sharedDb", "-dbPath", str(data),
               "-disableTelemetry"]
        pid = spawn_detached(cmd, self.dir / "dynamodb.log", os.environ, self.dir)
        self.pid_file.write_text(f"{pid}\n")

    def healthy(self) -> bool:
        """ListTables answers."""
        if not port_open(self.layout.ports.dynamodb):
            return False
        self.client().list_tables(Limit=1)
        return True

    def detail(self) -> str:
        """Number of tables."""
        return f"{len(self.client().list_tables()['TableNames'])} tables"


class _FlinkDaemon(Service):
    """A Flink process started and stopped by the wheel's own bin/ scripts."""

    script: ClassVar[str]
    daemon: ClassVar[str]

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.dir = layout.flink_dir

    @property
    def pid_file(self) -> Path:
        """flink-daemon.sh's pid file (FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-<daemon>.pid)."""
        return self.dir / f"flink-tagstream-{self.daemon}.pid"

    @property
    def log(self) -> Path | None:
        """The newest log file of this daemon."""
        logs = sorted((self.dir / "log").glob(f"flink-tagstream-{self.daemon}-*.log"),
                      key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None

    def owns(self, pid: int) -> bool:
        """The JVM was started with --configDir <our FLINK_CONF_DIR>."""
        return str(self.layout.flink_conf_dir) in cmdline(pid)

    def _script(self, action: str) -> None:
        subprocess.run([str(self.layout.flink_home / "bin" / self.script), action],
                       env=self.layout.flink_env(), cwd=self.layout.run_dir, check=True, timeout=120,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        """Runs `<script> start` (renders FLINK_CONF_DIR first if missing)."""
        if not (self.layout.flink_conf_dir / "config.yaml").exists():
            render_flink_conf(self.layout)
        self._script("start")

    def stop(self, force: bool = False) -> int | None:
        """Runs `<script> stop` (or SIGKILLs if `force`), then makes sure the JVM is gone."""
        pid = self.pid()
        if pid is not None and not force:
            self._script("stop")
        terminate(pid, timeout=self.stop_timeout, force=force)
        self.pid_file.unlink(missing_ok=True)
        return pid

    def overview(self) -> dict[str, Any]:
        """The JobManager's REST /overview."""
        url = f"http://127.0.0.1:{self.layout.ports.flink_rest}/overview"
        with urllib.request.urlopen(url, timeout=3) as resp:
            result: dict[str, Any] = json.load(resp)
            return result


class JobManager(_FlinkDaemon):
    """Flink standalone session JobManager (jobmanager.sh)."""

    name = "jobmanager"
    script = "jobmanager.sh"
    daemon = "standalonesession"

    @property
    def ports(self) -> tuple[int, ...]:
        """REST (web UI), then RPC."""
        return (self.layout.ports.flink_rest, self.layout.flink_rpc_port)

    def start(self) -> None:
        """Renders FLINK_CONF_DIR afresh, then starts the JobManager."""
        render_flink_conf(self.layout)
        super().start()

    def healthy(self) -> bool:
        """REST /overview answers."""
        return "flink-version" in self.overview()

    def detail(self) -> str:
        """Running jobs."""
        return f"{self.overview().get('jobs-running', 0)} jobs running"


class TaskManager(_FlinkDaemon):
    """The single Flink TaskManager (taskmanager.sh)."""

    name = "taskmanager"
    daemon = "taskexecutor"
    script = "taskmanager.sh"

    @property
    def ports(self) -> tuple[int, ...]:
        """None fixed: RPC and data ports are ephemeral; the Prometheus port comes from a range."""
        return ()

    def registration(self) -> dict[str, Any] | None:
        """This TaskManager process as the JobManager's REST /taskmanagers lists it (matched by RPC port)."""
        pid = self.pid()
        if pid is None:
            return None
        ports = listening_ports(pid)
        url = f"http://127.0.0.1:{self.layout.ports.flink_rest}/taskmanagers"
        with urllib.request.urlopen(url, timeout=3) as resp:
            registered: list[dict[str, Any]] = json.load(resp)["taskmanagers"]
        for tm in registered:  # path: pekko.tcp://flink@127.0.0.1:<rpc port>/user/rpc/taskmanager_0
            if int(tm["path"].split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]) in ports:
                return tm
        return None

    def healthy(self) -> bool:
        """The JobManager lists this TaskManager process, with slots."""
        tm = self.registration()
        return tm is not None and tm["slotsNumber"] >= 1

    def detail(self) -> str:
        """Free and total slots."""
        tm = self.registration() or {}
        return f"{tm.get('freeSlots', 0)}/{tm.get('slotsNumber', 0)} slots free"


SERVICE_TYPES: tuple[type[Service], ...] = (Kafka, Redis, DynamoDB, JobManager, TaskManager)
