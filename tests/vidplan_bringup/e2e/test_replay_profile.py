"""`vidplan up replay bag:=PATH`: replay a recorded sim episode on live topics with /clock, run the planner on it
(shadow mode) and measure camera stamp → plan latency with the probe (on PlanDiagnostics, stamped with the camera
triplet) — all real processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest
from proc_helpers import started, wait_for


@pytest.fixture(scope="module")
def episode_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay_bags")
    cmd = [shutil.which("vidplan"), "data", "generate", "--out", str(out), "--episodes", "1", "--width", "64",
           "--height", "48", "--max-steps", "90", "--failure-prob", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    bags = [p for p in out.iterdir() if p.is_dir()]
    assert len(bags) == 1, list(out.iterdir())
    return bags[0]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from vidplan_core.runtime.bundle import random_planner_models

    d = tmp_path_factory.mktemp("replay_model") / "model"
    pm = random_planner_models("tiny", seed=0)
    pm.save(d)
    return d


@pytest.mark.slow
@pytest.mark.flaky(reruns=2, reruns_delay=2)  # timing-dependent on shared cores (see the issue-6 note); reruns show
def test_up_replay_plans_on_the_bag_and_measures_latency(tmp_path, episode_bag, tiny_model_dir):
    report = tmp_path / "latency.json"
    cmd = [shutil.which("vidplan"), "up", "replay", f"bag:={episode_bag}", f"model_dir:={tiny_model_dir}",
           f"report:={report}", "instruction:=put the red cube in the bowl", "rate:=0.5", "loop:=true",
           "planner.refine_iters:=1", "planner.open_loop_steps:=1", "latency_probe.report_period_s:=1.0"]
    with started(cmd, tmp_path / "up.log", env={"OMP_NUM_THREADS": "1"}) as up:
        ok = wait_for(lambda: report.is_file() and json.loads(report.read_text())["count"] >= 2, 150, interval=0.5)
        assert ok, up.output()[-4000:]
        up.signal(signal.SIGTERM)
        assert up.wait(10) == 0, up.output()[-3000:]
    stats = json.loads(report.read_text())
    # Latency is measured in bag time (/clock): positive (it includes the planning, unlike DDS delivery alone,
    # which under a 100 Hz /clock is often 0) and below a few seconds of bag time at rate 0.5.
    assert stats["topic"] == "/vidplan/plan_diagnostics"
    assert 0 < stats["p50_ms"] < 5000, stats
    assert stats["plan_ids"] == sorted(stats["plan_ids"])


def test_up_replay_without_bag_fails_cleanly(tmp_path, tiny_model_dir):
    cmd = [shutil.which("vidplan"), "up", "replay", f"model_dir:={tiny_model_dir}",
           "bag:=/nonexistent/bag"]
    with started(cmd, tmp_path / "up.log") as up:
        code = up.wait(120)
        out = up.output()
        assert code == 1, out[-3000:]
        assert "required node 'replay'" in out and "/nonexistent/bag" in out, out[-3000:]
