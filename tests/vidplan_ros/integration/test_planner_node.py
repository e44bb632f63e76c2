"""planner_node in a real process, fed by a real camera/state publisher process, with tiny random models:
it publishes valid PlanChunks and diagnostics, and stops (ERROR diagnostic) when a camera goes silent."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from proc_helpers import node_executable, started, wait_for
from ros_spin import SpinningNode
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_ros.conversions import chunk_from_msg, stamp_to_sec

SCRIPTS = Path(__file__).parent / "scripts"
TASK = "put the red cube in the bowl"


@pytest.fixture
def listener():
    spin = SpinningNode("planner_test_listener", period=0.05)
    node = spin.node
    got = {"plans": [], "diags": [], "pred": [], "uq": [], "markers": [], "ros_diags": []}
    node.create_subscription(PlanChunk, "/vidplan/plan", got["plans"].append, 10)
    node.create_subscription(Image, "/vidplan/debug/prediction", got["pred"].append, 2)
    node.create_subscription(Image, "/vidplan/debug/uncertainty", got["uq"].append, 2)
    node.create_subscription(MarkerArray, "/vidplan/debug/plan_markers", got["markers"].append, 2)
    node.create_subscription(PlanDiagnostics, "/vidplan/plan_diagnostics", got["diags"].append, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", got["ros_diags"].append, 50)
    spin.start_spinning()
    yield got
    spin.close()


def _planner_cmd(model_dir: Path, **params) -> list[str]:
    base = dict(model_dir=str(model_dir), instruction=TASK, refine_iters=1, open_loop_steps=1, camera_timeout_s=0.6,
                state_timeout_s=1.0)
    base.update(params)
    cmd = [node_executable("vidplan_ros", "planner_node"), "--ros-args"]
    for k, v in base.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


@pytest.mark.slow
def test_planner_publishes_chunks_then_errors_when_a_camera_goes_silent(tmp_path, tiny_model_dir, listener):
    env = {"OMP_NUM_THREADS": "1"}
    pub_cmd = [sys.executable, str(SCRIPTS / "robot_stream_publisher.py"), "--width", "40", "--height", "24",
               "--silence", "wrist", "--after", "25"]
    with started(pub_cmd, tmp_path / "pub.log", env=env) as pub, \
            started(_planner_cmd(tiny_model_dir), tmp_path / "planner.log", env=env) as planner:
        assert wait_for(lambda: len(listener["plans"]) >= 2, 60), planner.output()[-3000:]
        msg = listener["plans"][-1]
        chunk = chunk_from_msg(msg)
        assert msg.instruction == TASK and msg.header.frame_id == "panda_link0" and msg.plan_id >= 1
        assert len(chunk) == 3 and chunk.is_finite()  # tiny model: H = 3
        assert chunk.dt == pytest.approx(0.2)
        # The chunk starts near the robot's pose (basis proposals move 15 cm/s: 3 cm per 0.2 s step).
        assert np.linalg.norm(chunk.position[0] - [0.3069, 0.0, 0.4869]) < 0.1
        ok = [d for d in listener["diags"] if d.status in (PlanDiagnostics.STATUS_OK, PlanDiagnostics.STATUS_BUDGET)]
        assert ok, [(d.status, d.reason) for d in listener["diags"]]
        d = ok[-1]
        assert d.num_proposals == len(d.candidate_scores) == 8  # 6 basis directions + hold + gripper toggle
        assert 0 <= d.chosen_index < d.num_proposals and np.isfinite(d.candidate_scores).all()
        assert "total" in d.stage_names and d.backend == "torch"
        # Debug pictures (published because someone subscribes): current vs predicted frames, the heat map, path.
        assert wait_for(lambda: listener["pred"] and listener["uq"] and listener["markers"], 30)
        pred, uq = listener["pred"][-1], listener["uq"][-1]
        assert pred.encoding == uq.encoding == "rgb8"
        assert pred.height == 2 * (3 * 16 + 2) - 2 and pred.width == 3 * (16 + 2) - 2  # 2 rows: now, 3 predicted
        assert uq.height == 3 * 16 and len(uq.data) == uq.height * uq.width * 3
        assert len(listener["markers"][-1].markers[0].points) == 3
        # The wrist camera goes silent 25 s after the first subscriber: plans stop, an ERROR names the camera.
        assert wait_for(lambda: any(x.status == PlanDiagnostics.STATUS_ERROR and "wrist" in x.reason
                                    for x in listener["diags"]), 60), planner.output()[-3000:]
        n_plans = len(listener["plans"])
        err_count = sum(x.status == PlanDiagnostics.STATUS_ERROR for x in listener["diags"])
        assert wait_for(lambda: sum(x.status == PlanDiagnostics.STATUS_ERROR for x in listener["diags"])
                        > err_count + 2, 20)
        assert len(listener["plans"]) <= n_plans + 1  # at most a cycle already running when the camera stopped
        assert pub.alive() and planner.alive()


@pytest.mark.slow
def test_planner_plans_on_onnxruntime_with_the_bundled_export(tmp_path, listener):
    """The robot profile's runtime: onnxruntime on models/demo/onnx (the shipped export, hashes checked at start-up).
    Its batch sizes (1, 8, 16) fit the default 8 candidates, so the node logs no padding warning; its debug
    pictures are decoded by the export's own decode graph. The cameras publish the calibrated mode's aspect (16:9,
    the 320x180 the bundle's workspace crop was computed for, at half size)."""
    demo = Path(__file__).resolve().parents[3] / "models" / "demo"
    env = {"OMP_NUM_THREADS": "1"}
    pub_cmd = [sys.executable, str(SCRIPTS / "robot_stream_publisher.py"), "--width", "160", "--height", "90"]
    with started(pub_cmd, tmp_path / "pub.log", env=env), \
            started(_planner_cmd(demo, backend="onnxruntime"), tmp_path / "planner.log", env=env) as planner:
        assert wait_for(lambda: any(d.status == PlanDiagnostics.STATUS_OK for d in listener["diags"])
                        and listener["plans"], 120), planner.output()[-3000:]
        d = next(d for d in listener["diags"] if d.status == PlanDiagnostics.STATUS_OK)
        assert d.backend == "onnxruntime" and d.num_proposals == len(d.candidate_scores) == 8
        assert np.isfinite(d.candidate_scores).all()
        chunk = chunk_from_msg(listener["plans"][-1])
        assert len(chunk) == 5 and chunk.is_finite()  # demo model: H = 5
        # Debug pictures come from the export's decode graph (no torch models on this path).
        assert wait_for(lambda: listener["pred"] and listener["uq"], 60), planner.output()[-3000:]
        assert listener["pred"][-1].height == 2 * (3 * 48 + 2) - 2  # rows: now, 5 predicted; views stacked
        log = planner.output()
        assert "loaded onnxruntime backend" in log and "padding is dropped" not in log, log[-3000:]
        assert "no debug prediction pictures" not in log, log[-3000:]


@pytest.mark.slow
def test_compressed_cameras_give_the_plan_raw_ones_give(tmp_path, tiny_model_dir, listener):
    """image_transport:=compressed: the planner subscribes to <topic>/compressed (sensor_msgs/CompressedImage) and
    decodes with the suite's one decoder. On a fixed scene the first plan of a run is reproducible, so the three
    transports can be compared: PNG (lossless) gives exactly the raw plan, JPEG q95 the same plan (the same winning
    candidate, its chunk within 1 cm) with scores ranked alike."""
    env = {"OMP_NUM_THREADS": "1"}
    first = {}
    for mode in ("raw", "png", "jpeg"):
        for v in listener.values():
            v.clear()
        pub_cmd = [sys.executable, str(SCRIPTS / "robot_stream_publisher.py"), "--width", "80", "--height", "48",
                   "--static", *(["--compressed", mode] if mode != "raw" else [])]
        planner_cmd = _planner_cmd(tiny_model_dir, image_transport="raw" if mode == "raw" else "compressed",
                                   publish_debug=False)
        with started(pub_cmd, tmp_path / f"pub_{mode}.log", env=env), \
                started(planner_cmd, tmp_path / f"planner_{mode}.log", env=env) as planner:
            assert wait_for(lambda: listener["plans"] and any(
                d.plan_id == listener["plans"][0].plan_id for d in listener["diags"]), 60), planner.output()[-3000:]
            plan = listener["plans"][0]
            diag = next(d for d in listener["diags"] if d.plan_id == plan.plan_id)
            first[mode] = (plan.plan_id, np.array(diag.candidate_scores), chunk_from_msg(plan))
    (id_raw, s_raw, c_raw), (id_png, s_png, c_png), (id_jpg, s_jpg, c_jpg) = first["raw"], first["png"], first["jpeg"]
    assert id_raw == id_png == id_jpg == 1  # the first cycle of each run: the same noise seed
    np.testing.assert_allclose(s_png, s_raw, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c_png.position, c_raw.position, rtol=0, atol=1e-6)
    # JPEG (34 dB on these pictures) moves the random tiny model's scores, not their order: the same candidate wins
    from scipy.stats import spearmanr

    assert int(np.argmax(s_jpg)) == int(np.argmax(s_raw)), (s_raw, s_jpg)
    assert spearmanr(s_raw, s_jpg).statistic >= 0.8, (s_raw, s_jpg)
    np.testing.assert_allclose(c_jpg.position, c_raw.position, rtol=0, atol=0.01)  # [m]


@pytest.mark.slow
def test_planner_on_franka_ros2_names_takes_the_ee_pose_from_joint_states(tmp_path, tiny_model_dir, listener):
    """The robot profile's state inputs: FR3 joint names (joint_prefix fr3) and no /ee_pose topic (franka_ros2
    publishes none; ee_pose_topic: "" computes the TCP by forward kinematics). The plan starts at the FK pose; with
    the arm's joints missing the planner says which joints, and plans again once they come."""
    from vidplan_core.kinematics import HOME_Q, PandaKinematics

    env = {"OMP_NUM_THREADS": "1"}
    pub_cmd = [sys.executable, str(SCRIPTS / "robot_stream_publisher.py"), "--width", "40", "--height", "24",
               "--prefix", "fr3", "--no-ee-pose"]
    tcp = PandaKinematics().fk(HOME_Q)[:3, 3]
    with started(pub_cmd, tmp_path / "pub.log", env=env):
        # the sim's names (panda_) on FR3 joint states: no plan, the diagnostics name the missing joints
        with started(_planner_cmd(tiny_model_dir, ee_pose_topic="''", base_frame="fr3_link0"),
                     tmp_path / "planner_panda.log", env=env) as planner:
            assert wait_for(lambda: any(d.status == PlanDiagnostics.STATUS_ERROR and "panda_joint1" in d.reason
                                        for d in listener["diags"]), 60), planner.output()[-3000:]
            assert not listener["plans"]
        with started(_planner_cmd(tiny_model_dir, ee_pose_topic="''", joint_prefix="fr3", base_frame="fr3_link0"),
                     tmp_path / "planner.log", env=env) as planner:
            assert wait_for(lambda: len(listener["plans"]) >= 1, 60), planner.output()[-3000:]
            msg = listener["plans"][-1]
            assert msg.header.frame_id == "fr3_link0"
            chunk = chunk_from_msg(msg)
            # the first step moves at most 0.2 s x 0.15 m/s from the FK pose (basis proposals) or holds it
            assert np.linalg.norm(chunk.position[0] - tcp) < 0.035, (chunk.position[0], tcp)


def _executor_counters(ros_diags) -> dict[str, int]:
    for arr in reversed(ros_diags):
        for st in arr.status:
            if st.name == "vidplan executor":
                return {kv.key: int(kv.value) for kv in st.values if kv.key.startswith("chunks_")}
    return {}


@pytest.mark.slow
def test_a_planner_slower_than_max_plan_age_still_reaches_the_arm(tmp_path, tiny_model_dir, listener):
    """Plans are stamped when produced (their PlanDiagnostics keep the camera triplet's stamp): with the executor's
    max_plan_age_s below the planner's cycle time (0.25 s here; the tiny model with 6 refinement iterations takes
    longer from triplet to chunk), every chunk is still accepted. Aged from their input, as before, every one would be
    rejected as stale. (The bound was 0.1 s: beside 3 eval processes a chunk once took 0.145 s from its stamp to the
    executor, DDS delivery on a loaded machine; 0.5-1.2 s from input to chunk was measured there with 3 iterations.)
    (Nobody moves this rig's arm, so chunks are planned from where it is: latency_compensation off.)"""
    env = {"OMP_NUM_THREADS": "1"}
    pub_cmd = [sys.executable, str(SCRIPTS / "robot_stream_publisher.py"), "--width", "40", "--height", "24"]
    exe_cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "max_plan_age_s:=0.25",
               "-p", "diagnostics_period_s:=0.2", "-p", "path_position_tolerance:=0.0"]
    planner_cmd = _planner_cmd(tiny_model_dir, refine_iters=6, publish_debug=False, latency_compensation=False)
    with started(pub_cmd, tmp_path / "pub.log", env=env), started(exe_cmd, tmp_path / "exe.log", env=env) as exe, \
            started(planner_cmd, tmp_path / "planner.log", env=env) as planner:
        def latencies():
            inputs = {d.plan_id: stamp_to_sec(d.header.stamp) for d in list(listener["diags"])}
            return [stamp_to_sec(m.header.stamp) - inputs[m.plan_id] for m in list(listener["plans"])
                    if m.plan_id in inputs]

        # at least 2 plans older than max_plan_age_s by their input, all of them delivered to the executor
        assert wait_for(lambda: sum(x > 0.25 for x in latencies()) >= 2 and _executor_counters(
            listener["ros_diags"]).get("chunks_received", 0) >= len(listener["plans"]) >= 3, 120), \
            (latencies(), planner.output()[-3000:] + exe.output()[-2000:])
        c = _executor_counters(listener["ros_diags"])
        assert c["chunks_rejected"] == 0, (c, latencies(), exe.output()[-3000:])


def test_planner_rejects_bad_parameters_and_missing_models(tmp_path, tiny_model_dir):
    with started(_planner_cmd(tiny_model_dir, uncertainty_weighting="cubic"), tmp_path / "a.log") as p:
        assert p.wait(60) == 2, p.output()
        assert "uncertainty_weighting" in p.output()
    with started(_planner_cmd(tmp_path / "nope"), tmp_path / "b.log") as p:
        assert p.wait(60) == 2, p.output()
        assert "nope" in p.output()
    # the model directory's index (bundle.json) names a part that is gone: exit 2 naming the key and the path
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    shutil.rmtree(broken / "reward_head")
    with started(_planner_cmd(broken), tmp_path / "c.log") as p:
        assert p.wait(60) == 2, p.output()
        assert "parts.reward_head" in p.output() and str(broken / "reward_head") in p.output(), p.output()
    # the planner YAML is read (one planner configuration): a misspelt key in it is named, exit 2
    bad_cfg = tmp_path / "planner.yaml"
    bad_cfg.write_text("session:\n  proposals:\n    basis_sped_mps: 0.1\n")
    with started(_planner_cmd(tiny_model_dir, planner_config=str(bad_cfg)), tmp_path / "d.log") as p:
        assert p.wait(60) == 2, p.output()
        assert "basis_sped_mps" in p.output() and str(bad_cfg) in p.output(), p.output()
    # cameras that are not the model's (the right camera 5 cm off): exit 2 naming the model, the file and the view
    import yaml

    from vidplan_core.calibration import default_calibration_path

    cal = yaml.safe_load(Path(default_calibration_path()).read_text())
    cal["cameras"]["right"]["translation"][0] += 0.05
    moved = tmp_path / "moved_cameras.yaml"
    moved.write_text(yaml.safe_dump(cal))
    with started(_planner_cmd(tiny_model_dir, camera_calibration=str(moved)), tmp_path / "e.log") as p:
        assert p.wait(60) == 2, p.output()
        out = p.output()
        assert str(tiny_model_dir) in out and str(moved) in out and "view right" in out and "5.0 cm" in out, out


@pytest.fixture
def instructor():
    """A test-side node that gives the planner instructions by every name (new and deprecated) and records the
    instruction the planner reports on /diagnostics."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from vidplan_core.topics import (
        DEPRECATED_INSTRUCTION_TOPIC,
        DEPRECATED_SET_INSTRUCTION_SERVICE,
        INSTRUCTION_TOPIC,
        SET_INSTRUCTION_SERVICE,
    )
    from vidplan_interfaces.srv import SetInstruction, SetTask

    spin = SpinningNode("planner_test_instructor", period=0.05)
    node = spin.node
    reported: list[dict[str, str]] = []

    def on_diag(arr: DiagnosticArray) -> None:
        reported.extend({kv.key: kv.value for kv in st.values} for st in arr.status
                        if st.name == "vidplan: planner_node")

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    # latched publishers, as the sim's: they reach both of the planner's subscriptions (volatile and latched)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    names = {"topic": node.create_publisher(String, INSTRUCTION_TOPIC, latched),
             "old topic": node.create_publisher(String, DEPRECATED_INSTRUCTION_TOPIC, latched),
             "service": node.create_client(SetInstruction, SET_INSTRUCTION_SERVICE),
             "old service": node.create_client(SetTask, DEPRECATED_SET_INSTRUCTION_SERVICE)}
    spin.start_spinning()

    def say(name: str, text: str) -> str:
        """Give ``text`` by ``name`` (a key of ``names``); returns a service's response message ("" for a topic)."""
        ep = names[name]
        if name.endswith("topic"):
            assert wait_for(lambda: ep.get_subscription_count() >= 2, 20), f"the planner does not subscribe to {name}"
            ep.publish(String(data=text))
            return ""
        assert ep.wait_for_service(timeout_sec=20), f"the planner does not serve {name}"
        fut = ep.call_async(ep.srv_type.Request(instruction=text, scene_seed=-1))
        assert wait_for(fut.done, 20), f"no answer from {name}"
        assert fut.result().success, fut.result().message
        return fut.result().message

    yield say, reported, names
    spin.close()


@pytest.mark.slow
def test_instruction_by_new_and_deprecated_names(tmp_path, tiny_model_dir, instructor):
    """The instruction's ROS names were renamed (/vidplan/task → /vidplan/instruction, /vidplan/set_task (SetTask) →
    /vidplan/set_instruction (SetInstruction)); the old ones keep working for one release. The new names set the
    instruction without a word; so does an old bag replayed by replay_node (its /vidplan/task is published on
    /vidplan/instruction). The old topic and service still set it, and each logs its deprecation warning, naming
    the new name, once — not on every message. /diagnostics reports the instruction under "instruction" and under
    the deprecated key "task"."""
    from vidplan_core.data.bag_writer import BagWriter
    from vidplan_core.data.messages import Codec
    from vidplan_core.topics import DEPRECATED_INSTRUCTION_TOPIC

    say, reported, _names = instructor

    def planner_says(text: str) -> bool:
        return bool(reported) and reported[-1].get("instruction") == text

    old_bag = tmp_path / "old_bag"
    with BagWriter(old_bag) as w:  # a recording made before the rename
        w.add_topic(DEPRECATED_INSTRUCTION_TOPIC, "std_msgs/msg/String")
        w.write(DEPRECATED_INSTRUCTION_TOPIC, 1_000_000_000, Codec(w.definitions).string("from an old bag"))
    replay_cmd = [node_executable("vidplan_ros", "replay_node"), "--ros-args", "-p", f"bag:={old_bag}",
                  "-p", "exit_at_end:=true", "-p", "wait_subscribers:=1"]
    with started(_planner_cmd(tiny_model_dir, instruction="''", publish_debug=False), tmp_path / "planner.log",
                 env={"OMP_NUM_THREADS": "1"}) as planner:
        assert wait_for(lambda: planner_says(""), 120), planner.output()[-3000:]  # configured, idle
        say("topic", "touch the green ball")
        assert wait_for(lambda: planner_says("touch the green ball"), 20), (reported[-1:], planner.output()[-3000:])
        assert say("service", "push the red cube") == "planning for: 'push the red cube'"
        assert wait_for(lambda: planner_says("push the red cube"), 20), reported[-1:]
        with started(replay_cmd, tmp_path / "replay.log") as replay:
            assert replay.wait(60) == 0, replay.output()
            assert "replaying it on /vidplan/instruction" in replay.output(), replay.output()
        assert wait_for(lambda: planner_says("from an old bag"), 20), (reported[-1:], planner.output()[-3000:])
        assert "is deprecated and will be removed" not in planner.output(), planner.output()[-3000:]

        for text in ("put the blue ball in the bowl", "touch the red cube"):  # the deprecated topic, twice
            say("old topic", text)
            assert wait_for(lambda t=text: planner_says(t), 20), (reported[-1:], planner.output()[-3000:])
        for text in ("push the green ball", "put the red cube in the bowl"):  # the deprecated service, twice
            assert say("old service", text) == f"planning for: {text!r}"
            assert wait_for(lambda t=text: planner_says(t), 20), reported[-1:]
        assert wait_for(lambda: "/vidplan/set_task is deprecated" in planner.output(), 10), planner.output()[-3000:]
        out = planner.output()
    topic_warnings = [ln for ln in out.splitlines() if "/vidplan/task is deprecated" in ln]
    service_warnings = [ln for ln in out.splitlines() if "/vidplan/set_task is deprecated" in ln]
    assert len(topic_warnings) == 1 and "publish the instruction on /vidplan/instruction" in topic_warnings[0], out
    assert len(service_warnings) == 1 and "call /vidplan/set_instruction" in service_warnings[0], out
    assert "WARN" in topic_warnings[0] and "WARN" in service_warnings[0], (topic_warnings, service_warnings)
    assert reported[-1]["task"] == reported[-1]["instruction"] == "put the red cube in the bowl"
