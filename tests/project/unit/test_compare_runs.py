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


def _record(run: Path, commit: str, variant: str, planner: dict | None) -> None:
    data = json.loads((run / "results.json").read_text())
    data["commit"] = commit
    if planner is not None:
        data["planner_configs"] = {variant: planner}
    (run / "results.json").write_text(json.dumps(data))


def test_sides_at_other_commits_or_planner_settings_are_named(tmp_path):
    # the comparison a stale baseline made: random scored by an older planner against today's product
    outcomes = {("push", 0, 0): True, ("push", 1, 0): False}
    a = _run(tmp_path / "a", "vidplan", outcomes)
    b = _run(tmp_path / "b", "random", outcomes)
    shipped = {"session": {"gradopt": {"refine_iters": 5, "score": {"push_keepout_m": 0.03}}}}
    _record(a, "a" * 40, "vidplan", shipped)
    _record(b, "b" * 40, "random", {"session": {"gradopt": {"refine_iters": 0, "score": {}}}})
    res = _compare(a, b, "--variant", "vidplan", "--variant-b", "random", "--out", tmp_path / "stale")
    assert res.returncode == 0, res.stderr
    assert "other commits (A aaaaaaa; B bbbbbbb)" in res.stderr, res.stderr
    assert "session.gradopt.refine_iters: 5 → 0" in res.stderr and "push_keepout_m: 0.03 → None" in res.stderr
    md = (tmp_path / "stale.md").read_text()
    assert "What else differs between the sides" in md and "refine_iters: 5 → 0" in md
    settings = json.loads((tmp_path / "stale.json").read_text())["settings"]
    assert settings["commits_a"] == ["a" * 40] and len(settings["warnings"]) == 2

    # the same commit and configuration but for what makes the variant (random's own refine_iters): nothing to warn
    # about, and the summary says so
    _record(b, "a" * 40, "random", {"session": {"gradopt": {"refine_iters": 0, "score": {"push_keepout_m": 0.03}}}})
    data = json.loads((b / "results.json").read_text())
    (b / "results.json").write_text(json.dumps({**data, "variant_overrides": {
        "random": {"session.gradopt.refine_iters": 0}}}))
    res = _compare(a, b, "--variant", "vidplan", "--variant-b", "random", "--out", tmp_path / "same")
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    assert ("Both sides ran at `aaaaaaa` with the same planner configuration (as recorded at run time; apart from "
            "what makes each variant: session.gradopt.refine_iters)") in (tmp_path / "same.md").read_text()

    # runs older than the recorded configurations: said to be unknown
    res = _compare(_run(tmp_path / "old", "vidplan", outcomes), a,
                   "--out", tmp_path / "unknown")
    assert res.returncode == 0 and "recorded no planner configuration" in res.stderr, res.stderr


def test_a_merged_run_reports_the_commits_its_parts_ran_at(tmp_path):
    """A run gathered by bench/merge_runs.py records the commit of its summary; the comparison reads the commits of
    the parts the variant's episodes came from (sources.json, followed through a part that is merged itself). It
    said "both sides ran at <summary commit>" for episodes run at three other commits before."""
    outcomes = {("push", 0, 0): True, ("put", 0, 0): True}
    planner = {"session": {"gradopt": {"refine_iters": 5}}}
    old = _run(tmp_path / "old", "vidplan", {("push", 0, 0): True})
    _record(old, "1" * 40, "vidplan", planner)
    inner = _run(tmp_path / "inner", "vidplan", {("push", 0, 0): True})  # itself merged from `old`
    _record(inner, "2" * 40, "vidplan", planner)
    (inner / "sources.json").write_text(json.dumps([{"dir": str(old), "episodes": {"vidplan/push": 1}}]))
    new = _run(tmp_path / "new", "vidplan", {("put", 0, 0): True})
    _record(new, "3" * 40, "vidplan", planner)
    merged = _run(tmp_path / "merged", "vidplan", outcomes)
    _record(merged, "4" * 40, "vidplan", planner)
    (merged / "sources.json").write_text(json.dumps([
        {"dir": str(inner), "episodes": {"vidplan/push": 1}}, {"dir": str(new), "episodes": {"vidplan/put": 1}},
        {"dir": str(tmp_path / "gone"), "episodes": {"random/put": 1}}]))  # another variant's part: not read
    plain = _run(tmp_path / "plain", "vidplan", outcomes)
    _record(plain, "3" * 40, "vidplan", planner)
    res = _compare(merged, plain, "--out", tmp_path / "paired")
    assert res.returncode == 0, res.stderr
    assert "other commits (A 1111111, 3333333; B 3333333)" in res.stderr, res.stderr
    assert json.loads((tmp_path / "paired.json").read_text())["settings"]["commits_a"] == ["1" * 40, "3" * 40]
