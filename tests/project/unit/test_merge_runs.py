"""bench/merge_runs.py: the episodes of several eval-sim runs of the same settings become one resumable run directory;
runs of other settings, and an episode found in two parts, are refused (exit 2, named)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vidplan_app.jobs.closed_loop_config import EPISODES, SETTINGS, ClosedLoopConfig

ROOT = Path(__file__).resolve().parents[3]


def _run_dir(path: Path, variants: list[str], tasks: list[str], overrides: dict | None = None, episodes: int = 3,
             seeds: range = range(2), seed: int = 0) -> Path:
    path.mkdir(parents=True)
    cfg = ClosedLoopConfig(variants=variants, tasks=tasks, clutter=[0, 1], episodes=episodes, episodes_other=episodes,
                           overrides=overrides or {}, seed=seed)
    (path / SETTINGS).write_text(cfg.model_dump_json(indent=2))
    lines = [json.dumps({"variant": v, "task": t, "clutter": c, "seed": s, "instruction": f"{t} it", "success": True})
             for v in variants for t in tasks for c in (0, 1) for s in seeds]
    (path / EPISODES).write_text("\n".join(lines) + "\n{\"cut by an interrupt")  # a torn last line is skipped
    return path


def _merge(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "merge_runs.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_parts_of_one_setting_merge_into_a_run_directory(tmp_path):
    a = _run_dir(tmp_path / "a", ["vidplan", "no-uq"], ["touch", "push"], episodes=5)
    b = _run_dir(tmp_path / "b", ["scripted"], ["put"])
    out = tmp_path / "merged"
    res = _merge("--out", out, f"{a}:vidplan:touch", b)
    assert res.returncode == 0, res.stderr
    cfg = ClosedLoopConfig.model_validate_json((out / SETTINGS).read_text())
    assert cfg.variants == ["vidplan", "scripted"] and cfg.tasks == ["touch", "put"] and cfg.episodes == 5
    assert cfg.fixed() == ClosedLoopConfig.model_validate_json((a / SETTINGS).read_text()).fixed()
    recs = [json.loads(x) for x in (out / EPISODES).read_text().splitlines()]
    assert sorted({(r["variant"], r["task"]) for r in recs}) == [("scripted", "put"), ("vidplan", "touch")]
    assert len(recs) == 8  # 2 clutter levels x 2 seeds from each part; no-uq and push left behind
    sources = json.loads((out / "sources.json").read_text())
    assert sources[0]["episodes"] == {"vidplan/touch": 4} and sources[1]["episodes"] == {"scripted/put": 4}


def test_other_settings_a_repeated_episode_and_a_missing_variant_are_refused(tmp_path):
    a = _run_dir(tmp_path / "a", ["vidplan"], ["touch"])
    other = _run_dir(tmp_path / "other", ["random"], ["touch"], overrides={"session.gradopt.score.lam": 7.25})
    res = _merge("--out", tmp_path / "m1", a, other)
    assert res.returncode == 2 and "session.gradopt.score.lam" in res.stderr and str(other) in res.stderr
    again = _run_dir(tmp_path / "again", ["vidplan"], ["touch"], seeds=range(1, 3))
    res = _merge("--out", tmp_path / "m2", a, again)
    assert res.returncode == 2 and "also in" in res.stderr and "'vidplan', 'touch'" in res.stderr
    res = _merge("--out", tmp_path / "m3", f"{a}:argmax")
    assert res.returncode == 2 and "argmax" in res.stderr
    res = _merge("--out", a, a)  # never into an existing directory
    assert res.returncode == 2 and "exists" in res.stderr
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3"))


def test_runs_over_consecutive_scene_seeds_pool_into_one_run(tmp_path):
    """More scenes of one protocol: a run from seed 0 (5 per cell) and one from seed 5 become a run from seed 0 with
    10 per cell, each episode at its index within the cell; a gap between the seed ranges is refused."""
    first = _run_dir(tmp_path / "first", ["vidplan"], ["touch"], episodes=5, seeds=range(5))
    more = _run_dir(tmp_path / "more", ["vidplan"], ["touch"], episodes=5, seeds=range(5, 10), seed=5)
    out = tmp_path / "pooled"
    res = _merge("--out", out, first, more)
    assert res.returncode == 0, res.stderr
    cfg = ClosedLoopConfig.model_validate_json((out / SETTINGS).read_text())
    assert cfg.seed == 0 and cfg.episodes == 10
    recs = [json.loads(x) for x in (out / EPISODES).read_text().splitlines()]
    assert len(recs) == 20 and all(r["index"] == r["seed"] for r in recs)
    assert [s["seed"] for s in json.loads((out / "sources.json").read_text())] == [0, 5]
    far = _run_dir(tmp_path / "far", ["vidplan"], ["touch"], episodes=5, seeds=range(20, 25), seed=20)
    res = _merge("--out", tmp_path / "gap", first, far)
    assert res.returncode == 2 and "[5, 6" in res.stderr and not (tmp_path / "gap").exists()


def test_overrides_compare_by_the_planner_they_resolve_to(tmp_path):
    """A part run with ``--set`` values that the shipped planner YAML now holds merges with a part run without them
    (the first part's overrides are kept, each part's recorded); an override that changes the planner is refused,
    naming the dotted key."""
    from vidplan_core.planning.config import load_planning_config

    kappa = load_planning_config(None, {}).session.gradopt.score.kappa
    plain = _run_dir(tmp_path / "plain", ["random"], ["touch"])
    shipped = _run_dir(tmp_path / "shipped", ["vidplan"], ["touch"], overrides={"session.gradopt.score.kappa": kappa})
    out = tmp_path / "merged"
    res = _merge("--out", out, plain, shipped)
    assert res.returncode == 0, res.stderr
    assert ClosedLoopConfig.model_validate_json((out / SETTINGS).read_text()).overrides == {}
    assert [s["overrides"] for s in json.loads((out / "sources.json").read_text())] == [
        {}, {"session.gradopt.score.kappa": kappa}]
    other = _run_dir(tmp_path / "other", ["vidplan"], ["push"], overrides={"session.gradopt.score.kappa": kappa + 1})
    res = _merge("--out", tmp_path / "m", plain, other)
    assert res.returncode == 2 and "session.gradopt.score.kappa" in res.stderr and not (tmp_path / "m").exists()


def test_seeds_take_a_range_of_scene_seeds_from_every_part(tmp_path):
    """The ladder's seeds 0-4 out of a run over 0-14 and a run over 0-4: a run from seed 0 with 5 per cell."""
    long = _run_dir(tmp_path / "long", ["vidplan"], ["push"], episodes=15, seeds=range(15))
    short = _run_dir(tmp_path / "short", ["random"], ["push"], episodes=5, seeds=range(5))
    out = tmp_path / "ladder"
    res = _merge("--seeds", "0-4", "--out", out, long, short)
    assert res.returncode == 0, res.stderr
    cfg = ClosedLoopConfig.model_validate_json((out / SETTINGS).read_text())
    assert (cfg.seed, cfg.episodes, cfg.episodes_other) == (0, 5, 5)
    recs = [json.loads(x) for x in (out / EPISODES).read_text().splitlines()]
    assert sorted({r["seed"] for r in recs}) == [0, 1, 2, 3, 4] and len(recs) == 2 * 2 * 5
    res = _merge("--seeds", "20-24", "--out", tmp_path / "none", long)
    assert res.returncode == 2 and "no episodes taken" in res.stderr
    res = _merge("--seeds", "4-0", "--out", tmp_path / "bad", long)
    assert res.returncode == 2 and "HI < LO" in res.stderr
