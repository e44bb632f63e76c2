"""`vidplan up`: starts real nodes from a profile, they talk, SIGTERM stops everything within 5 s, errors are
reported with the right exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from proc_helpers import started, wait_for

PROFILES = Path(__file__).resolve().parents[1] / "data" / "profiles"


def _vidplan() -> str:
    exe = shutil.which("vidplan")
    assert exe, "vidplan not on PATH; source scripts/env.sh"
    return exe


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie whose parent has not reaped it yet is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_up_starts_two_talking_nodes_and_sigterm_stops_all_within_5s(tmp_path):
    report = tmp_path / "probe.json"
    cmd = [_vidplan(), "up", str(PROFILES / "two_nodes.yaml"), f"report:={report}", "rate:=20.0"]
    with started(cmd, tmp_path / "up.log") as up:
        assert wait_for(lambda: report.is_file() and json.loads(report.read_text())["count"] >= 5, 40), up.output()
        out = up.output()
        pids = [int(p) for p in re.findall(r"pid (\d+)\)", out)]
        assert len(pids) == 2, out
        assert re.search(r"^\[publisher\] ", out, re.M) or re.search(r"^\[probe\s*\] ", out, re.M), out
        t0 = time.monotonic()
        up.signal(signal.SIGTERM)
        code = up.wait(timeout=8)
        elapsed = time.monotonic() - t0
        assert code == 0, up.output()
        assert elapsed < 5.0, f"shutdown took {elapsed:.2f} s"
        assert not [p for p in pids if _pid_alive(p)], "orphaned node processes"
    stats = json.loads(report.read_text())
    assert stats["plan_ids"] == sorted(stats["plan_ids"]) and stats["p50_ms"] < 1000


def test_up_with_typo_profile_exits_2_naming_the_key(tmp_path):
    with started([_vidplan(), "up", str(PROFILES / "typo.yaml")], tmp_path / "up.log") as up:
        code = up.wait(timeout=30)
        assert code == 2, up.output()
        assert "nodes.publisher.requried" in up.output() and "typo.yaml" in up.output()


def test_up_with_unknown_override_exits_2(tmp_path):
    with started([_vidplan(), "up", str(PROFILES / "two_nodes.yaml"), "raet:=5"], tmp_path / "up.log") as up:
        assert up.wait(timeout=30) == 2, up.output()
        assert "raet" in up.output()


@pytest.mark.slow
def test_required_node_crash_is_reported_and_stops_the_rest(tmp_path):
    with started([_vidplan(), "up", str(PROFILES / "crashing.yaml")], tmp_path / "up.log") as up:
        code = up.wait(timeout=40)
        out = up.output()
        assert code == 1, out
        assert "required node 'probe' exited with code 2" in out, out
        assert "not/a/Type" in out, out  # the node's own reason is shown
        pids = [int(p) for p in re.findall(r"pid (\d+)\)", out)]
        assert pids and not [p for p in pids if _pid_alive(p)]


def test_killed_supervisor_leaves_no_node_running(tmp_path):
    # Even SIGKILL (no chance to clean up) must not orphan nodes: children die with their parent (PR_SET_PDEATHSIG).
    cmd = [_vidplan(), "up", str(PROFILES / "two_nodes.yaml"), f"report:={tmp_path / 'probe.json'}"]
    with started(cmd, tmp_path / "up.log") as up:
        assert wait_for(lambda: len(re.findall(r"pid (\d+)\)", up.output())) == 2, 30), up.output()
        pids = [int(p) for p in re.findall(r"pid (\d+)\)", up.output())]
        up.signal(signal.SIGKILL)
        up.wait(5)
        assert wait_for(lambda: not [p for p in pids if _pid_alive(p)], 5), "nodes outlived a killed vidplan up"
