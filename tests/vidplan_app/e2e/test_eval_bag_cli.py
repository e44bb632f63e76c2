"""``vidplan eval-bag`` / ``vidplan eval bag`` as a user runs them (real subprocesses): a bag recorded under the
robot's own camera topic names with a topic map, a truncated copy (salvaged, exit 3) and a corrupt bag (exit 2).

The bag and the tiny random model bundle come from the helpers of tests/vidplan_core/unit/test_eval_bag.py (loaded
by path).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_HELPERS = Path(__file__).resolve().parents[2] / "vidplan_core" / "unit" / "test_eval_bag.py"
_spec = importlib.util.spec_from_file_location("eval_bag_helpers", _HELPERS)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def _vidplan() -> list[str]:
    exe = shutil.which("vidplan")
    return [exe] if exe else [sys.executable, "-m", "vidplan_app.cli"]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    # one torch thread: the tiny models gain nothing from two, and the suite shares two cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(_vidplan() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _numbers_finite(node, reasons, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            _numbers_finite(v, reasons, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _numbers_finite(v, reasons, f"{path}[{i}]")
    elif node is None:
        p = path
        while p and p not in reasons:
            cut = max(p.rfind("."), p.rfind("["))
            p = p[:cut] if cut > 0 else ""
        assert p, f"{path} is null without a reason"
    elif isinstance(node, float):
        assert math.isfinite(node), path


@pytest.mark.slow
def test_eval_bag_cli_with_topic_map_truncated_and_corrupt_bags(tmp_path):
    bag = helpers.write_episode_bag(tmp_path / "robot_episode", cam_topic="/robot/{}_cam/color")
    model = helpers.save_tiny_bundle(tmp_path / "model")
    tmap = tmp_path / "map.yaml"
    tmap.write_text("cameras: {left: /robot/left_cam/color, right: /robot/right_cam/color, "
                    "wrist: /robot/wrist_cam/color}\n")
    planner = tmp_path / "planner.yaml"
    planner.write_text("session: {gradopt: {refine_iters: 0}}\n")  # argmax only: the gradient path is unit-tested
    out = tmp_path / "out"
    p = _run(["eval-bag", bag, "--model", model, "--out", out, "--topic-map", tmap, "--max-steps", "2",
              "--flow-steps", "1", "--shadow-max", "1", "--planner-config", planner, "--device", "cpu"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "complete: 2 windows" in p.stdout and "shadow planner: 1 plans" in p.stdout
    assert "controllability (latent MSE ratio, 1.0 = action-blind): shuffled/true" in p.stdout
    assert "eval-bag robot_episode" in p.stderr  # the progress bar
    m = json.loads((out / "metrics.json").read_text())
    _numbers_finite(m, m["null_reasons"])
    assert m["settings"]["flow_steps"] == 1 and m["settings"]["topic_map"]["cameras"]["left"] == "/robot/left_cam/color"
    assert m["uq"]["ece"] >= 0 and m["reward"]["on_predicted"]["frames"] > 0 and m["shadow"]["plans"] == 1
    html = (out / "report.html").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) >= 8 and all(f"plots/{png.name}" in html for png in pngs)

    # without the topic map the robot's camera topics are not found: exit 2 naming bag and topic
    p = _run(["eval-bag", bag, "--model", model, "--out", tmp_path / "o2", "--no-progress"])
    assert p.returncode == 2 and str(bag) in p.stderr and "/cameras/left/image_raw" in p.stderr

    # a truncated copy: the salvaged part is evaluated, flagged partial, exit 3 (sub-app spelling)
    cut = shutil.copytree(bag, tmp_path / "cut")
    mcap = next(cut.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 6 // 10])
    p = _run(["eval", "bag", cut, "--model", model, "--out", tmp_path / "o3", "--topic-map", tmap, "--max-steps",
              "1", "--no-shadow", "--no-progress"])
    assert p.returncode == 3, p.stdout + p.stderr
    assert "partial" in p.stdout and "truncated" in p.stderr
    m = json.loads((tmp_path / "o3" / "metrics.json").read_text())
    assert m["status"] == "partial" and m["reward"] is None and (tmp_path / "o3" / "report.html").is_file()
    # --no-salvage: the same bag is an error
    p = _run(["eval-bag", cut, "--model", model, "--out", tmp_path / "o4", "--topic-map", tmap, "--no-salvage"])
    assert p.returncode == 2 and str(cut) in p.stderr and "truncated" in p.stderr

    # a corrupt bag (not an mcap file at all): exit 2 naming the bag, nothing written
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00garbage" * 100)
    p = _run(["eval-bag", bad, "--model", model, "--out", tmp_path / "o5"])
    assert p.returncode == 2 and str(bad) in p.stderr and not (tmp_path / "o5" / "metrics.json").exists()
