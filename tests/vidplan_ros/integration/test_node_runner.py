"""vidplan_ros.node_runner on real node processes: a parameter a node does not declare is an error (exit 2 naming it
and the closest declared names), never silently ignored; a value of the wrong type exits 2 without a traceback; the
listing mode `vidplan up` uses prints what the node itself declares and starts nothing."""

from __future__ import annotations

import json
import subprocess

import pytest
from proc_helpers import node_executable

from vidplan_core.parameter_listing import DECLARED_PARAMETERS_TAG, LIST_PARAMETERS_ENV


def _run(package: str, executable: str, ros_args: list[str], env: dict[str, str] | None = None,
         timeout: float = 90) -> subprocess.CompletedProcess:
    import os

    # a node that does not stop by itself (the old behaviour: it runs with the default) fails here by the timeout
    return subprocess.run([node_executable(package, executable), "--ros-args", *ros_args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_executor_with_a_misspelled_safety_limit_exits_2_naming_it_and_the_declared_one():
    p = _run("vidplan_ros", "executor_node", ["-r", "__node:=executor", "-p", "max_horizn:=3",
                                              "-p", "max_plan_age_s:=0.4"])
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "has no parameter 'max_horizn'" in out and "did you mean max_horizon" in out, out
    assert "Traceback" not in out and "executor ready" not in out, out  # failed before it started


def test_a_node_without_the_hook_is_checked_after_its_constructor(tmp_path):
    # latency_probe does not call parameters_declared(): run_node's generic check after the factory catches it
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    topic: /x\n    report_perod_s: 2.0\n")
    p = _run("vidplan_ros", "latency_probe", ["-r", "__node:=probe", "--params-file", str(params)])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "node 'probe' has no parameter 'report_perod_s' (did you mean report_period_s" in p.stderr, p.stderr


def test_a_value_of_the_wrong_type_exits_2_without_a_traceback():
    p = _run("vidplan_ros", "latency_probe", ["-p", "report_period_s:=abc"])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "report_period_s" in p.stderr and "DOUBLE" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_listing_mode_prints_the_declared_parameters_and_starts_nothing():
    env = {LIST_PARAMETERS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"}
    p = _run("vidplan_ros", "executor_node", ["-r", "__node:=executor", "-p", "max_horizn:=3"], env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(DECLARED_PARAMETERS_TAG)]
    assert len(lines) == 1, p.stdout
    info = json.loads(lines[0][len(DECLARED_PARAMETERS_TAG):])
    assert info["node"] == "executor" and info["overrides"] == ["max_horizn"]  # what rclpy received
    # the node's own declarations, the safety limits and the generated ik_* included
    assert {"max_horizon", "workspace_min", "max_plan_age_s", "ik_max_iterations", "use_sim_time"} <= set(
        info["declared"]), info["declared"]
    assert "executor ready" not in p.stdout + p.stderr  # stopped at parameters_declared(), before its start-up


def test_shipped_params_files_are_what_the_nodes_declare_and_the_nodes_accept_them(tmp_path):
    """config/params/<profile>/<node>.yaml (`vidplan params PROFILE`): regenerated from the nodes themselves they are
    unchanged (a new or renamed parameter fails here until they are regenerated), and each node started with its file
    accepts every entry (a params file naming a parameter the node does not declare would exit 2)."""
    import os
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[3]
    shipped = repo / "ros_ws" / "src" / "vidplan_bringup" / "config" / "params"
    for profile in ("robot", "sim"):
        out = tmp_path / profile
        p = subprocess.run(["vidplan", "params", profile, "--out", str(out)], capture_output=True, text=True,
                           timeout=180, env=os.environ.copy())
        assert p.returncode == 0, p.stdout + p.stderr
        fresh = sorted(f.name for f in out.glob("*.yaml"))
        assert fresh == sorted(f.name for f in (shipped / profile).glob("*.yaml")), fresh
        for name in fresh:
            assert (out / name).read_text() == (shipped / profile / name).read_text(), (
                f"config/params/{profile}/{name} is stale: run `vidplan params {profile} --out "
                f"ros_ws/src/vidplan_bringup/config/params/{profile}`")
    # the robot's executor and planner take their whole file (listing mode: built up to their declarations)
    for node, exe in (("executor", "executor_node"), ("planner", "planner_node")):
        f = shipped / "robot" / f"{node}.yaml"
        given = set(yaml.safe_load(f.read_text())["/**"]["ros__parameters"])
        assert {"joint_prefix", "base_frame"} <= given
        p = _run("vidplan_ros", exe, ["-r", f"__node:={node}", "--params-file", str(f)],
                 env={LIST_PARAMETERS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"})
        assert p.returncode == 0, p.stdout + p.stderr
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(DECLARED_PARAMETERS_TAG))
        info = json.loads(line[len(DECLARED_PARAMETERS_TAG):])
        assert "error" not in info and given <= set(info["declared"]) and given <= set(info["overrides"])
        assert info["values"]["joint_prefix"] == "fr3"


def test_planner_and_sim_check_values_like_the_executor():
    """One declare-and-check path (node_runner.declare_checked) for the planner, the executor, the simulator and the
    lifecycle manager: an integer where a double is declared is taken, a string is named and refused (exit 2)."""
    env = {LIST_PARAMETERS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"}
    for pkg, exe, good, bad, words in (
            ("vidplan_ros", "planner_node", "expected_latency_s:=1", "kappa:=abc",
             "parameter kappa must be a number (double), got 'abc'"),
            ("vidplan_sim", "sim_node", "camera_rate_hz:=15", "camera_width:=wide",
             "parameter camera_width must be an integer, got 'wide'")):
        p = _run(pkg, exe, ["-p", good], env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        info = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith(DECLARED_PARAMETERS_TAG))[
            len(DECLARED_PARAMETERS_TAG):])
        name, value = good.split(":=")
        assert "error" not in info and info["values"][name] == int(value), info
        p = _run(pkg, exe, ["-p", good, "-p", bad], env=env)
        assert p.returncode == 2 and words in p.stdout + p.stderr, p.stdout + p.stderr
        assert "Traceback" not in p.stdout + p.stderr


def test_declare_renamed_takes_the_old_name_with_a_warning_and_refuses_two_values(capfd):
    """node_runner.declare_renamed (a parameter renamed, its old name kept one release): the value in force for each
    way the two names can be given, the deprecation warning naming the new name, and the refusal naming both."""
    import rclpy
    from rclpy.parameter import Parameter

    from vidplan_ros.node_runner import ParameterConflictError, declare_renamed

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    made = []

    def value(**given: str) -> str:
        node = rclpy.create_node("renamed_probe", context=ctx, start_parameter_services=False,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in given.items()])
        made.append(node)
        return declare_renamed(node, "instruction_topic", "task_topic", "/vidplan/instruction")

    try:
        warning = "parameter task_topic is deprecated and will be removed in the next release; set instruction_topic"
        for given, expected, warns in (
                ({}, "/vidplan/instruction", False),
                ({"instruction_topic": "/new"}, "/new", False),
                ({"task_topic": "/old"}, "/old", True),
                ({"task_topic": ""}, "", True),  # "" (publish nothing) is a value, not "unset"
                # a params file restating the new name's default does not hide an old-name override
                ({"instruction_topic": "/vidplan/instruction", "task_topic": "/old"}, "/old", True),
                ({"instruction_topic": "/same", "task_topic": "/same"}, "/same", True),
                ({"task_topic": "/vidplan/instruction"}, "/vidplan/instruction", False)):
            capfd.readouterr()
            assert value(**given) == expected, given
            out = "".join(capfd.readouterr())
            assert (warning in out) == warns, (given, out)
        with pytest.raises(ParameterConflictError) as err:
            value(instruction_topic="/new", task_topic="/old")
        text = str(err.value)
        assert "instruction_topic ('/new')" in text and "task_topic ('/old')" in text and "set only" in text, text
    finally:
        for node in made:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_sim_nodes_renamed_parameters_in_listing_mode():
    """sim_node's task / task_topic, renamed instruction / instruction_topic: the old name alone still starts the node
    (a warning names the new one) and the listing names the pair, so `vidplan params` writes only the new names; old
    and new names given different values: the node rejects its parameters naming both, so `vidplan up` refuses
    before starting anything."""
    env = {LIST_PARAMETERS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"}
    p = _run("vidplan_sim", "sim_node", ["-p", "task:=touch the green ball", "-p", "task_topic:=/old/topic"], env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    for old, new in (("task", "instruction"), ("task_topic", "instruction_topic")):
        assert f"parameter {old} is deprecated" in out and f"set {new} instead" in out, out
    info = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith(DECLARED_PARAMETERS_TAG))[
        len(DECLARED_PARAMETERS_TAG):])
    assert info["deprecated"] == {"task": "instruction", "task_topic": "instruction_topic"}, info
    assert info["values"]["task_topic"] == "/old/topic"
    assert info["values"]["instruction_topic"] == "/vidplan/instruction"
    p = _run("vidplan_sim", "sim_node", ["-p", "task:=touch the green ball", "-p", "instruction:=push the red cube"],
             env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    info = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith(DECLARED_PARAMETERS_TAG))[
        len(DECLARED_PARAMETERS_TAG):])
    assert "instruction ('push the red cube')" in info["error"] and "task ('touch the green ball')" in info["error"]
    assert "Traceback" not in out, out
