"""`vidplan demo --scripted --launch`: starts `vidplan up sim planner:=false` (sim_node + executor_node), runs a
pick-and-place through the real topics (scripted expert → ExecuteChunk → JointTrajectory → MuJoCo), prints success,
steps and tracking error, and stops everything it started."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from proc_helpers import started, wait_for

# Timing-sensitive on 2 shared cores (executor callbacks stall now and then, see the issue-3 note): rerun a failure
# up to twice; reruns are printed in the summary ("R"), so flakiness stays visible.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=2)


def _alive(pid: int) -> bool:
    p = Path(f"/proc/{pid}/stat")
    try:
        return p.read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_scripted_pick_and_place_through_ros(tmp_path):
    exe = shutil.which("vidplan")
    assert exe, "vidplan not on PATH; source scripts/env.sh"
    out_json = tmp_path / "demo.json"
    cmd = [exe, "demo", "--scripted", "--launch", "--seed", "1", "--clutter", "1", "--timeout", "60",
           "--json", str(out_json)]
    with started(cmd, tmp_path / "demo.log") as demo:
        code = demo.wait(timeout=150)
        log = demo.output()
    print(log[-3000:])
    assert code == 0, f"demo exit code {code}:\n{log[-4000:]}"
    res = json.loads(out_json.read_text())
    why = f"{json.dumps(res, indent=1)}\n{log[-4000:]}"
    assert res["success"] is True and res["instruction"] == "put the orange ball in the bowl", why
    assert res["steps_executed"] == res["steps_planned"] > 40, why
    assert all(s == "succeeded" for s in res["chunk_status"]), why
    assert res["mean_tracking_error_m"] < 0.01, why
    assert res["final_position_error_m"] < 0.005, why  # the last chunk waits for settling: 5 mm
    assert re.search(r"\[demo\] SUCCESS: put the orange ball in the bowl", log)
    assert re.search(r"steps \d+/\d+ in \d+ chunks; tracking error mean [\d.]+ mm", log)
    # Everything `vidplan up` started is gone.
    pids = [int(p) for p in re.findall(r"\(vidplan_\w+/\w+, pid (\d+)\)", log)]
    assert len(pids) == 2, log
    assert wait_for(lambda: not any(_alive(p) for p in pids), 10.0), "node processes left running"


def test_demo_bad_options_and_nothing_running(tmp_path):
    import subprocess

    exe = shutil.which("vidplan")
    r = subprocess.run([exe, "demo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "vidplan demo --scripted" in r.stderr
    r = subprocess.run([exe, "demo", "--scripted", "--clutter", "7"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--clutter must be 0..3" in r.stderr
    # No sim/executor on this test's ROS domain: a clear error and exit code 3, not a hang.
    r = subprocess.run([exe, "demo", "--scripted", "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "/vidplan/execute_chunk not available" in r.stderr
    # --task is the deprecated name of --instruction: it still works, with a warning; the two disagreeing is an error
    r = subprocess.run([exe, "demo", "--scripted", "--timeout", "2", "--task", "touch the red cube"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "--task is deprecated; use --instruction" in r.stderr, r.stdout + r.stderr
    r = subprocess.run([exe, "demo", "--scripted", "--task", "touch the red cube", "--instruction",
                        "touch the blue cube"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "disagree" in r.stderr, r.stdout + r.stderr
