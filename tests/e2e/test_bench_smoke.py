"""Smoke run of the benchmark harness (`python -m tools.bench --smoke`: seconds of load) on the e2e stack:
it runs every phase end to end and writes a valid JSON result with plots. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tools.bench.cli import main

pytestmark = pytest.mark.e2e


def test_smoke_run_writes_a_complete_result(stack, tmp_path: Path):
    assert main(["--smoke", "--profile", stack.profile, "--out-dir", str(tmp_path), "--no-readme"]) == 0
    [path] = tmp_path.glob("bench-2*.json")
    result = orjson.loads(path.read_bytes())
    steps = result["tagstream"]["steps"]
    assert steps and steps[0]["produced"]["sent"] > 0
    assert steps[0]["probes"]["seen"] > 0  # probes went through identity -> segments -> Redis
    assert steps[0]["latency_ms"]["count"] == steps[0]["probes"]["seen"]
    assert "taskmanager" in steps[0]["processes"]
    assert set(result["tagstream"]["checkpoints"]) == {"identity", "segments"}
    for kind in ("twin", "naive"):
        assert result[kind]["latency_step"]["probes"]["seen"] > 0, kind  # the baseline saw the same input
        assert result[kind]["saturation_step"]["produced"]["sent"] > 0
    assert result["state"]["persons_loaded"] > 0 and result["state"]["restore_submit_s"] > 0
    assert {t["target"] for t in result["targets"]} and set(result["ratios"])
    assert sorted(p.name.rsplit("-", 1)[1] for p in tmp_path.glob("*.png")) == ["latency.png", "throughput.png"]
