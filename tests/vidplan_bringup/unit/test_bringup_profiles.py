"""Bring-up profiles: schema, substitutions, overrides, and that every executable they name is built."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

from vidplan_bringup.profiles import (
    DeprecatedArgWarning,
    find_profile,
    load_profile,
    parse_overrides,
    resolve_profile,
    ros_params_file_content,
)
from vidplan_bringup.supervisor import MissingBuildError, find_executable
from vidplan_core.config import ConfigError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = ["robot", "sim", "replay"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_valid_and_its_executables_are_built(name):
    profile, path = load_profile(name)
    assert path.name == f"{name}.yaml"
    nodes = resolve_profile(profile, str(path))
    assert nodes, "profile resolves to no nodes"
    assert any(n.required for n in nodes), "a profile needs at least one required node"
    for node in resolve_profile(profile, str(path), {k: True for k in profile.args if k == "planner"}):
        exe = find_executable(node.package, node.executable)
        assert exe.is_file()


def test_installed_profiles_are_the_source_profiles():
    src = REPO / "ros_ws" / "src" / "vidplan_bringup" / "profiles"
    for name in SHIPPED:
        assert find_profile(name).resolve() == (src / f"{name}.yaml").resolve()


@pytest.mark.parametrize("name", SHIPPED)
def test_launch_file_reads_the_same_profile(name):
    # launch/*.launch.py cannot run here (no launch/launch_ros wheels); check what they build from statically.
    path = REPO / "launch" / f"{name}.launch.py"
    tree = ast.parse(path.read_text())
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
             "generate_profile_launch_description"]
    assert [c.args[0].value for c in calls] == [name]
    installed = Path(find_profile(name)).parents[1] / "launch" / f"{name}.launch.py"
    assert installed.is_file(), f"{installed} not installed into share/vidplan_bringup/launch"


def test_arg_substitution_keeps_types_and_overrides_apply():
    profile, path = load_profile("sim")
    args, params = parse_overrides(["clutter:=3", "instruction:=put the red cube in the bowl",
                                    "executor.backend:=servo", "planner:=false"])
    nodes = {n.name: n for n in resolve_profile(profile, str(path), args, params)}
    assert "planner" not in nodes
    assert nodes["sim"].parameters["clutter"] == 3
    assert nodes["sim"].parameters["lockstep"] is True
    assert nodes["sim"].parameters["instruction"] == "put the red cube in the bowl"
    assert nodes["executor"].parameters["backend"] == "servo"
    assert "ros__parameters" in ros_params_file_content(nodes["sim"])


@pytest.mark.parametrize("name", SHIPPED)
def test_deprecated_task_arg_still_sets_the_instruction_with_a_warning(name):
    """task:= (the instruction's old arg name, before "task" came to mean only the manipulation task) keeps working
    for one release in every shipped profile: it sets the instruction arg and warns naming it; the nodes get exactly
    what instruction:= gives them. Giving both names is an error naming both."""
    profile, path = load_profile(name)
    assert profile.deprecated_args == {"task": "instruction"} and "task" not in profile.args
    text = "put the red cube in the bowl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        new = resolve_profile(profile, str(path), *parse_overrides([f"instruction:={text}"]))
    with pytest.warns(DeprecatedArgWarning) as caught:
        old = resolve_profile(profile, str(path), *parse_overrides([f"task:={text}"]))
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "'task' is deprecated" in msg and "'instruction'" in msg and "instruction:=" in msg, msg
    assert old == new
    planner = {n.name: n for n in old}.get("planner")
    assert planner is None or planner.parameters["instruction"] == text
    assert all("task" not in n.parameters for n in old)
    with pytest.raises(ConfigError) as err:
        resolve_profile(profile, str(path), *parse_overrides(["task:=a", f"instruction:={text}"]))
    assert "task" in str(err.value) and "instruction" in str(err.value), str(err.value)


def test_deprecated_args_must_name_a_declared_arg(tmp_path):
    """deprecated_args is validated when the profile loads: the new name must be a declared arg, and an old name must
    not be one (it could never be reached)."""
    node = ("nodes:\n  a:\n    package: vidplan_ros\n    executable: latency_probe\n"
            "    parameters: {topic: $(arg topic)}\n")
    good = tmp_path / "good.yaml"
    good.write_text("args: {topic: /a}\ndeprecated_args: {old_topic: topic}\n" + node)
    profile, path = load_profile(str(good))
    with pytest.warns(DeprecatedArgWarning, match="'old_topic' is deprecated.*'topic'"):
        nodes = resolve_profile(profile, str(path), {"old_topic": "/b"})
    assert nodes[0].parameters["topic"] == "/b"
    for text, words in (("args: {topic: /a}\ndeprecated_args: {old_topic: topc}\n", ("old_topic", "'topc'",
                                                                                     "not a declared arg")),
                        ("args: {topic: /a, old: 1}\ndeprecated_args: {old: topic}\n", ("'old'", "declared arg"))):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text + node)
        with pytest.raises(ConfigError) as err:
            load_profile(str(bad))
        assert "bad.yaml" in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_launch_path_passes_the_deprecated_arg_like_vidplan_up():
    """The ros2 launch path (launch_builder; launch itself is not installable here) hands resolve_profile every
    launch argument's text: a deprecated name left at its "" default is not given; given, it replaces its new arg
    when that is at its default, and conflicts with it otherwise."""
    from vidplan_bringup.launch_builder import launch_overrides

    profile, path = load_profile("sim")
    launch = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in profile.args.items()}
    assert "instruction:=" in launch_overrides(profile, {**launch, "task": ""})
    items = launch_overrides(profile, {**launch, "task": "touch the green ball"})
    assert "task:=touch the green ball" in items and not any(i.startswith("instruction:=") for i in items)
    with pytest.warns(DeprecatedArgWarning):
        nodes = {n.name: n for n in resolve_profile(profile, str(path), *parse_overrides(items))}
    assert nodes["sim"].parameters["instruction"] == "touch the green ball"
    assert nodes["planner"].parameters["instruction"] == "touch the green ball"
    items = launch_overrides(profile, {**launch, "instruction": "push the red cube", "task": "touch the green ball"})
    with pytest.raises(ConfigError, match="task"):
        resolve_profile(profile, str(path), *parse_overrides(items))


def test_unknown_override_is_rejected_naming_it():
    profile, path = load_profile("sim")
    with pytest.raises(ConfigError, match="cluter"):
        resolve_profile(profile, str(path), {"cluter": 2}, {})
    with pytest.raises(ConfigError, match="executer"):
        resolve_profile(profile, str(path), {}, {"executer": {"backend": "jtc"}})
    with pytest.raises(ConfigError, match="NAME:=VALUE"):
        parse_overrides(["clutter=2"])


def test_typo_in_profile_names_file_and_key():
    with pytest.raises(ConfigError) as err:
        load_profile(str(REPO / "tests" / "data" / "profiles" / "typo.yaml"))
    msg = str(err.value)
    assert "typo.yaml" in msg and "nodes.publisher.requried" in msg and "unknown key" in msg


def test_undeclared_arg_is_an_error(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("nodes:\n  a:\n    package: vidplan_ros\n    executable: latency_probe\n"
                 "    parameters: {topic: $(arg nope)}\n")
    profile, path = load_profile(str(p))
    with pytest.raises(ConfigError, match=r"\$\(arg nope\) is not declared"):
        resolve_profile(profile, str(path))


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match=r"known profiles: .*sim"):
        find_profile("simulation")


def test_missing_package_says_run_make_setup():
    with pytest.raises(MissingBuildError, match="make setup"):
        find_executable("vidplan_nonexistent", "node")
    with pytest.raises(MissingBuildError, match="make setup"):
        find_executable("vidplan_ros", "no_such_node")


def test_arg_overrides_must_have_the_type_of_the_default():
    profile, path = load_profile("sim")
    for item, expected in (("clutter:=abc", "expected an integer"), ("clutter:=2.5", "expected an integer"),
                           ("scene_seed:=", "expected an integer"), ("lockstep:=maybe", "expected true or false")):
        args, params = parse_overrides([item])
        with pytest.raises(ConfigError) as err:
            resolve_profile(profile, str(path), args, params)
        assert f"{item.split(':=')[0]}: {expected}" in str(err.value), str(err.value)
    # text args stay text (an instruction "42" is not the number 42); a float arg takes an int
    args, params = parse_overrides(["instruction:=42", "lockstep:=false", "clutter:=0"])
    nodes = {n.name: n for n in resolve_profile(profile, str(path), args, params)}
    assert nodes["sim"].parameters["instruction"] == "42" and nodes["planner"].parameters["instruction"] == "42"
    assert nodes["sim"].parameters["lockstep"] is False and nodes["sim"].parameters["clutter"] == 0
    two, two_path = load_profile(str(REPO / "tests" / "data" / "profiles" / "two_nodes.yaml"))
    args, _ = parse_overrides(["rate:=20"])
    rate = {n.name: n for n in resolve_profile(two, str(two_path), args)}["publisher"].parameters["rate_hz"]
    assert rate == 20.0 and isinstance(rate, float)


def test_robot_profile_gives_the_planner_franka_ros2_state_inputs():
    """franka_ros2 names the FR3's joints fr3_joint1..7 and publishes no EE pose topic: the robot profile gives both
    nodes the fr3 prefix and has the planner compute the EE pose from /joint_states (ee_pose_topic: "")."""
    profile, path = load_profile("robot")
    nodes = {n.name: n for n in resolve_profile(profile, str(path))}
    for name in ("planner", "executor"):
        assert nodes[name].parameters["joint_prefix"] == "fr3", name
    assert nodes["planner"].parameters["ee_pose_topic"] == ""
    assert nodes["planner"].parameters["base_frame"] == nodes["executor"].parameters["base_frame"] == "fr3_link0"
    assert "ee_pose_topic: ''" in ros_params_file_content(nodes["planner"])
    # managed nodes: started unconfigured, brought up by the lifecycle manager, executor first
    assert nodes["planner"].parameters["autostart"] is False and nodes["executor"].parameters["autostart"] is False
    managed = nodes["lifecycle_manager"].parameters["node_names"]
    assert managed == ["executor", "planner"] and set(managed) <= set(nodes)


def test_robot_profile_can_start_robot_state_publisher_with_the_fr3_urdf(tmp_path):
    """robot_state_publisher:=true adds ROS 2's robot_state_publisher with the text of urdf/fr3_droid.urdf (the arm in
    franka_ros2's names and the three camera optical frames); off by default (franka_bringup runs one). A
    robot_description_file that does not exist is a ConfigError naming it."""
    profile, path = load_profile("robot")
    assert "robot_state_publisher" not in {n.name for n in resolve_profile(profile, str(path))}
    nodes = {n.name: n for n in resolve_profile(profile, str(path), {"robot_state_publisher": True})}
    rsp = nodes["robot_state_publisher"]
    assert (rsp.package, rsp.executable) == ("robot_state_publisher", "robot_state_publisher")
    urdf = rsp.parameters["robot_description"]
    assert urdf == (REPO / "urdf" / "fr3_droid.urdf").read_text()
    for frame in ("fr3_joint1", "fr3_link0", "left_camera_optical_frame", "right_camera_optical_frame",
                  "wrist_camera_optical_frame"):
        assert f'"{frame}"' in urdf, frame
    import yaml  # the --params-file gives the node the text unchanged (YAML quoting and line folding round-trip)

    assert yaml.safe_load(ros_params_file_content(rsp))["/**"]["ros__parameters"]["robot_description"] == urdf
    # an absolute path works; a missing one names itself
    mine = tmp_path / "mine.urdf"
    mine.write_text("<robot name='x'/>")
    nodes = {n.name: n for n in resolve_profile(profile, str(path), {"robot_state_publisher": True,
                                                                     "robot_description_file": str(mine)})}
    assert nodes["robot_state_publisher"].parameters["robot_description"] == "<robot name='x'/>"
    with pytest.raises(ConfigError, match=r"no_such\.urdf"):
        resolve_profile(profile, str(path), {"robot_state_publisher": True,
                                             "robot_description_file": "urdf/no_such.urdf"})


def test_rviz_and_foxglove_layouts_show_topics_the_nodes_publish():
    """config/vidplan.rviz (RViz2) and config/vidplan_foxglove_layout.json: valid files, installed, every panel of
    the Foxglove layout defined, and every topic they show one that sim_node / planner_node publish (or
    /robot_description, robot_state_publisher's on the robot) — a renamed topic must not leave a blank panel."""
    import json

    import yaml

    cfg = REPO / "ros_ws" / "src" / "vidplan_bringup" / "config"
    sources = "".join((REPO / "ros_ws" / "src" / p).read_text() for p in (
        "vidplan_ros/vidplan_ros/planner_node.py", "vidplan_sim/vidplan_sim/sim_node.py"))

    def published(topic: str) -> bool:
        view = topic.split("/")[2] if topic.startswith("/cameras/") else None
        return topic == "/robot_description" or f'"{topic}"' in sources or (
            view in ("left", "right", "wrist") and topic == f"/cameras/{view}/image_raw")

    rviz = yaml.safe_load((cfg / "vidplan.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = [d["Topic"]["Value"] for d in displays if "Topic" in d]
    topics += [d["Description Topic"]["Value"] for d in displays if "Description Topic" in d]
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "panda_link0"
    assert {d["Class"] for d in displays} >= {"rviz_default_plugins/TF", "rviz_default_plugins/Image",
                                               "rviz_default_plugins/MarkerArray"}
    fox = json.loads((cfg / "vidplan_foxglove_layout.json").read_text())

    def leaves(node):
        return [node] if isinstance(node, str) else [*leaves(node["first"]), *leaves(node["second"])]

    assert sorted(leaves(fox["layout"])) == sorted(fox["configById"])
    for panel in fox["configById"].values():
        if "imageMode" in panel:
            topics.append(panel["imageMode"]["imageTopic"])
        topics += list(panel.get("topics", {}))
        if "topicPath" in panel:
            topics.append(panel["topicPath"])
    assert len(topics) >= 12
    assert [t for t in topics if not published(t)] == []
    installed = Path(find_profile("sim")).parents[1] / "config"
    assert (installed / "vidplan.rviz").is_file() and (installed / "vidplan_foxglove_layout.json").is_file()
