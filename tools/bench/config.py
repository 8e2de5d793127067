"""Sizes of a benchmark run: `full` (make bench, <= 20 min), `quick` (~2-4 min), `smoke` (seconds of load,
for `make test`), `knobs` (one overload step per tuning variant)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    """What a run does.

    Attributes:
        mode: full, quick, smoke or knobs.
        steps: offered loads of tagstream, events/s, in order (stops after the first one not sustained).
        step_s: seconds of load per step.
        probe_rate: probes per second during a step.
        baseline_rate: offered load at which the baselines' latency is measured (also a tagstream step).
        saturation_s: seconds of maximum load offered to each baseline (their throughput).
        pool_events: generator events in the template pool (cycled).
        state_persons: persons loaded into the segments job's RocksDB state (0: skip the state phase).
        state_load_s: most seconds spent loading them (the phase reports how many it reached).
        knobs: run the tuning variants (systems.KNOBS) instead of the main phases.
        knob_rate: offered load of each variant's step. variants: which variants (empty: all).
        checkpoint_s: checkpoint interval of the jobs.
        settle_s: most seconds to wait after a step for its probes (entries and exits).
        baselines: run the twin and the naive consumer.
        fresh_taskmanager: restart the TaskManager at the start and before the state phase (not in smoke
            runs: the e2e stack's TaskManager runs other tests' jobs).
    """

    mode: str = "full"
    steps: tuple[int, ...] = (100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)
    step_s: float = 25.0
    probe_rate: float = 20.0
    baseline_rate: int = 250
    saturation_s: float = 25.0
    pool_events: int = 50_000
    state_persons: int = 1_000_000
    state_load_s: float = 240.0
    knobs: bool = False
    knob_rate: int = 1000
    variants: tuple[str, ...] = ()
    checkpoint_s: float = 5.0
    settle_s: float = 10.0
    baselines: bool = True
    fresh_taskmanager: bool = True


MODES: dict[str, BenchConfig] = {
    "full": BenchConfig(),
    "quick": BenchConfig(mode="quick", steps=(100, 500, 2000, 20000), step_s=15.0, saturation_s=15.0,
                         pool_events=20_000, state_persons=50_000, state_load_s=60.0),
    "smoke": BenchConfig(mode="smoke", steps=(100,), step_s=4.0, probe_rate=5.0, baseline_rate=100,
                         saturation_s=3.0, pool_events=500, state_persons=300, state_load_s=30.0, settle_s=20.0,
                         fresh_taskmanager=False),
    "knobs": BenchConfig(mode="knobs", steps=(), knobs=True, step_s=25.0, pool_events=20_000, state_persons=0,
                         baselines=False),
}


def config_for(mode: str, **overrides: Any) -> BenchConfig:
    """The config of a mode with some fields replaced (None values are ignored)."""
    return replace(MODES[mode], **{k: v for k, v in overrides.items() if v is not None})
