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

PROFILES = Path(__file__).resolve().parents[2] / "data" / "profiles"


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


# --- parameters are checked against what each node declares (the node itself, not a list kept elsewhere)


def test_up_dry_run_names_a_misspelled_node_parameter_and_the_declared_one(tmp_path):
    # a typo of an executor safety limit must not leave the default in force
    with started([_vidplan(), "up", "sim", "--dry-run", "executor.max_horizn:=3"], tmp_path / "typo.log") as up:
        assert up.wait(timeout=180) == 2, up.output()
        out = up.output()
        assert "executor.max_horizn (command-line override)" in out and "did you mean max_horizon?" in out, out
    with started([_vidplan(), "up", "sim", "--dry-run", "executor.max_horizon:=3"], tmp_path / "ok.log") as up:
        assert up.wait(timeout=180) == 0, up.output()
        assert re.search(r"^ +max_horizon: 3$", up.output(), re.M), up.output()


def test_up_takes_the_deprecated_task_arg_with_a_warning_and_refuses_conflicting_sim_names(tmp_path):
    """`vidplan up sim task:=...` (the instruction's arg before the rename) still works for one release: the nodes get
    it as their instruction and a warning names instruction:=. The sim's old and new parameter names given different
    values are refused (exit 2) before anything starts, naming both."""
    with started([_vidplan(), "up", "sim", "--dry-run", "task:=touch the green ball"], tmp_path / "old.log") as up:
        assert up.wait(timeout=180) == 0, up.output()
        out = up.output()
        assert re.search(r"^warning: .*profile arg 'task' is deprecated.*use 'instruction'", out, re.M), out
        assert len(re.findall(r"^ +instruction: 'touch the green ball'$", out, re.M)) == 2, out  # sim and planner
    with started([_vidplan(), "up", "sim", "--dry-run", "sim.task_topic:=/a", "sim.instruction_topic:=/b"],
                 tmp_path / "both.log") as up:
        assert up.wait(timeout=180) == 2, up.output()
        out = up.output()
        assert "rejects its parameters" in out and "instruction_topic ('/b')" in out and "task_topic ('/a')" in out, out


def test_up_with_a_misspelled_node_parameter_exits_2_before_starting_anything(tmp_path):
    with started([_vidplan(), "up", "sim", "planner:=false", "executor.max_horizn:=3"], tmp_path / "up.log") as up:
        code = up.wait(timeout=180)  # the old behaviour: it started with the default and kept running
        out = up.output()
        assert code == 2, out
        assert "executor.max_horizn" in out and "max_horizon" in out, out
        assert "pid " not in out, out  # no node was started


def test_up_with_a_misspelled_parameter_in_the_profile_exits_2_naming_it(tmp_path):
    prof = tmp_path / "typo_param.yaml"
    prof.write_text((PROFILES / "two_nodes.yaml").read_text().replace("report_period_s:", "report_perod_s:"))
    with started([_vidplan(), "up", str(prof), "--dry-run"], tmp_path / "up.log") as up:
        assert up.wait(timeout=120) == 2, up.output()
        out = up.output()
        assert "probe.report_perod_s (profile nodes.probe.parameters)" in out, out
        assert "did you mean report_period_s" in out, out


def test_up_with_a_profile_arg_of_the_wrong_type_exits_2_naming_arg_and_type(tmp_path):
    with started([_vidplan(), "up", "sim", "clutter:=abc"], tmp_path / "up.log") as up:
        code = up.wait(timeout=60)
        out = up.output()
        assert code == 2, out
        assert "clutter: expected an integer" in out and "'abc'" in out, out
        assert "pid " not in out, out


@pytest.mark.parametrize("name", ["robot", "sim", "replay"])
def test_shipped_profiles_set_only_parameters_their_nodes_declare(name):
    from vidplan_bringup.profiles import load_profile, resolve_profile
    from vidplan_bringup.supervisor import Supervisor

    profile, path = load_profile(name)
    nodes = resolve_profile(profile, str(path), {k: True for k in profile.args if k == "planner"})
    check = Supervisor(nodes).check_parameters()
    assert not check.problems, check.problems
    # every node was asked (replay_node too: it lists its parameters before it needs the bag, empty here)
    assert set(check.declared) == {n.name for n in nodes}, (check.declared.keys(), check.notes)


def test_the_parameter_check_has_no_side_effects(tmp_path):
    # the recorder lists its parameters before it creates its bag: the dry run leaves no directory behind, and a
    # real start after the check would not find its bag_name taken
    prof = tmp_path / "rec.yaml"
    prof.write_text(f"nodes:\n  recorder:\n    package: vidplan_ros\n    executable: recorder_node\n"
                    f"    parameters: {{topics: ['/x:std_msgs/msg/String'], output_dir: '{tmp_path}', "
                    f"bag_name: fixed}}\n")
    with started([_vidplan(), "up", str(prof), "--dry-run"], tmp_path / "up.log") as up:
        assert up.wait(timeout=120) == 0, up.output()
        assert "parameters checked against what the nodes declare: recorder" in up.output(), up.output()
    assert not (tmp_path / "fixed").exists()


@pytest.mark.slow
def test_nodes_killed_with_sigkill_leave_no_shared_memory_segment_behind(tmp_path):
    """kill -9 of both nodes (no participant left to clean up after them): `vidplan up` reports it (exit 1) and
    removes the Fast DDS shared-memory segments the dead processes left in /dev/shm (memory, 8 MiB each;
    vidplan_bringup.dds_shm)."""
    cmd = [_vidplan(), "up", str(PROFILES / "two_nodes.yaml"), f"report:={tmp_path / 'probe.json'}"]
    with started(cmd, tmp_path / "up.log") as up:
        report = tmp_path / "probe.json"
        assert wait_for(lambda: report.is_file() and json.loads(report.read_text())["count"] >= 5, 40), \
            up.output()  # both up and talking (their DDS participants and segments exist)
        assert wait_for(lambda: len(re.findall(r"pid (\d+)\)", up.output())) == 2, 30), up.output()
        pids = [int(p) for p in re.findall(r"pid (\d+)\)", up.output())]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert up.wait(timeout=30) == 1, up.output()
        out = up.output()
    assert "was killed by SIGKILL" in out, out
    removed = re.search(r"removed (\d+) Fast DDS shared-memory segment\(s\) of killed nodes", out)
    assert removed and int(removed.group(1)) >= 2, out  # one participant per node at least
