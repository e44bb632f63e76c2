"""bench/compare_runs.py: paired episodes of two sides, each side one run or several pooled (``DIR[:TASKS]+...``),
reported per task, per clutter level and pooled; an episode found in two parts of a side is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(path: Path, variant: str, outcomes: dict[tuple[str, int, int], bool]) -> Path:
    path.mkdir(parents=True)
    episodes = [{"variant": variant, "task": t, "clutter": c, "seed": s, "instruction": f"{t} the red cube",
                 "success": ok, "plan_s_mean": 1.0} for (t, c, s), ok in outcomes.items()]
    (path / "results.json").write_text(json.dumps({"episodes": episodes}))
    return path


def _compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "compare_runs.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_a_side_pooled_from_parts_pairs_per_task_and_clutter(tmp_path):
    # A: one run over seeds 0-1; B: touch from one run, push from another, seed 1 from a third
    a = _run(tmp_path / "a", "vidplan", {("touch", 0, 0): True, ("touch", 1, 0): False, ("push", 0, 0): False,
                                         ("push", 1, 0): False, ("touch", 0, 1): True, ("push", 1, 1): True})
    b_touch = _run(tmp_path / "bt", "vidplan", {("touch", 0, 0): True, ("touch", 1, 0): True,
                                                ("push", 0, 0): True})  # its push ran with other settings
    b_push = _run(tmp_path / "bp", "vidplan", {("push", 0, 0): True, ("push", 1, 0): False})
    b_more = _run(tmp_path / "bm", "vidplan", {("touch", 0, 1): False, ("push", 1, 1): True})
    out = tmp_path / "paired"
    res = _compare(a, f"{b_touch}:touch+{b_push}:push+{b_more}", "--labels", "a,b", "--out", out)
    assert res.returncode == 0, res.stderr
    groups = json.loads(out.with_suffix(".json").read_text())["groups"]
    assert groups["all"]["pairs"] == 6
    assert (groups["all"]["only_a"], groups["all"]["only_b"], groups["all"]["both"]) == (1, 2, 2)
    assert groups["push"]["only_b"] == 1 and groups["push"]["both"] == 1  # B's push (0, 0) is b_push's, not b_touch's
    assert groups["clutter 1"]["pairs"] == 3 and groups["clutter 1"]["only_b"] == 1  # (touch, 1, 0)
    assert "| clutter 0 |" in out.with_suffix(".md").read_text()

    twice = _compare(a, f"{b_touch}+{b_push}", "--out", tmp_path / "refused")
    assert twice.returncode == 2 and "('push', 0, 0, 'push the red cube')" in twice.stderr, twice.stderr
