"""Optional py-spy profile of the TaskManager during a load step (thread mode runs the UDFs inside its JVM,
and py-spy reads the embedded interpreter's stacks). Enabled by `$BENCH_PY_SPY` (path of a py-spy binary;
py-spy is not a project dependency: `pip install --target /tmp/pyspy py-spy`)."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any


class StepProfile:
    """`py-spy record --format raw` of a process for `seconds`; `top()` summarizes the collapsed stacks.

    Args:
        pid: the process (the TaskManager). seconds: how long. out: the collapsed-stacks file.
    """

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 50) -> None:
        self.out = out
        binary = os.environ.get("BENCH_PY_SPY", "")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
             "--format", "raw", "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if binary else None

    def top(self, n: int = 12, timeout_s: float = 60) -> dict[str, Any] | None:
        """Waits for py-spy; the functions with the most samples on the stack (inclusive) and on top (self)."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if not self.out.exists():
            return None
        return summarize(self.out.read_text(encoding="utf-8", errors="replace").splitlines(), n)


def summarize(lines: list[str], n: int = 12) -> dict[str, Any]:
    """Top frames of collapsed stacks (`frame;frame;... count`): busy samples only (idle threads excluded)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.split(" (")[0] for f in stack.split(";") if f]
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames[1:]):  # the first frame is the thread
            inclusive[frame] += samples
    share = {k: round(100 * v / total, 1) for k, v in inclusive.most_common(n)} if total else {}
    return {"samples": total, "inclusive_pct": share,
            "self_pct": {k: round(100 * v / total, 1) for k, v in own.most_common(n)} if total else {}}
