"""MiniCluster fixtures (tier 2): bounded collections in, collected results out."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

# Thread mode runs Python inside the JVM (pemja); that Python must see this interpreter's packages and the
# repo. The JVM is started lazily by the first execution environment and inherits this environment.
_inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ["PYTHONPATH"] = os.pathsep.join([sysconfig.get_paths()["purelib"], os.getcwd(), *_inherited])
# The identity job hashes PII with this key (read by its operators inside the JVM, which inherits it).
os.environ.setdefault("TAGSTREAM_PII_KEY", "pipeline-test-pii-key-0123456789")


@pytest.fixture(params=[1, 2], ids=["p1", "p2"])
def parallelism(request) -> int:
    """Every pipeline test runs at parallelism 1 and 2."""
    return request.param


def minicluster_env(parallelism: int, python_mode: str = "thread"):
    """A MiniCluster execution environment configured like production."""
    from jobs.runtime import RuntimeOptions, create_env

    return create_env(RuntimeOptions(parallelism=parallelism, checkpoint_interval_ms=0, python_mode=python_mode,
                                     python_executable=sys.executable))


@pytest.fixture
def env(parallelism):
    """A MiniCluster execution environment configured like production, at the test's parallelism."""
    return minicluster_env(parallelism)


@pytest.fixture
def process_env(parallelism, monkeypatch):
    """The same in process mode, with Python workers in their own processes as on a cluster (no JVM gateway).

    A MiniCluster otherwise runs process-mode workers inside the client ("loopback"), where the client's
    gateway hides whatever a worker on a cluster cannot do.
    """
    monkeypatch.setenv("_python_worker_execution_mode", "process")  # read by PyFlink when the job starts
    return minicluster_env(parallelism, "process")
