"""The repository stays ruff-clean (configuration in pyproject.toml), and the packages run on Python 3.10."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed by make setup (requirements/base.txt)"
    res = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:]


def test_packages_run_on_python_3_10():
    """ROS 2 Humble's Python is 3.10: vermin finds the minimum version from the syntax and the standard-library
    members used (datetime.UTC, tomllib, ... are 3.11), which ruff's per-file target version does not check."""
    vermin = shutil.which("vermin")
    assert vermin, "vermin is installed by make setup (requirements/base.txt)"
    paths = [str(REPO / "ros_ws" / "src" / p) for p in ("vidplan_core/vidplan_core", "vidplan_ros/vidplan_ros",
                                                         "vidplan_sim/vidplan_sim", "vidplan_bringup",
                                                         "vidplan_app/vidplan_app")]
    make = (REPO / "Makefile").read_text()
    assert all(p.split("/src/")[1] in make for p in paths), "Makefile PY310_PATHS and this test name the same paths"
    res = subprocess.run([vermin, "--target=3.10-", "--violations", "--no-tips", "-q", *paths], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]
