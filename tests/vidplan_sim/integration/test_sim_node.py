"""sim_node as a real process on loopback DDS: camera streams, state, clock, JointTrajectory, gripper, services."""

from __future__ import annotations

import json
import threading
import time
import warnings

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from proc_helpers import node_executable, started, wait_for
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_spin import SpinningNode
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vidplan_bringup.dds_shm import census
from vidplan_core.topics import INSTRUCTION_TOPIC
from vidplan_interfaces.srv import SetInstruction
from vidplan_sim.scene import HOME_Q

ARM = [f"panda_joint{i}" for i in range(1, 8)]
VIEWS = ("left", "right", "wrist")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Probe(SpinningNode):
    """Test-side node recording everything sim_node publishes."""

    def __init__(self) -> None:
        super().__init__("sim_test_probe")
        n = self.node
        self.lock = threading.Lock()
        self.images: dict[str, list[Image]] = {v: [] for v in VIEWS}
        self.infos: dict[str, CameraInfo] = {}
        self.js: list[JointState] = []
        self.ee: list[PoseStamped] = []
        self.clock: list[float] = []
        self.scene: list[dict] = []
        self.instruction: list[str] = []
        self.image_subs = {v: self._subscribe_images(v) for v in VIEWS}
        self.resubscribed: list[str] = []  # cameras whose subscription wait_streams re-created (it says so)
        for v in VIEWS:
            n.create_subscription(CameraInfo, f"/cameras/{v}/camera_info",
                                  lambda m, v=v: self.infos.__setitem__(v, m), qos_profile_sensor_data)
        n.create_subscription(JointState, "/joint_states", lambda m: self._add(self.js, m), 10)
        n.create_subscription(PoseStamped, "/ee_pose", lambda m: self._add(self.ee, m), 10)
        n.create_subscription(Clock, "/clock", lambda m: self._add(self.clock, _sec(m.clock)), 10)
        n.create_subscription(String, "/sim/scene", lambda m: self._add(self.scene, json.loads(m.data)), LATCHED)
        n.create_subscription(String, INSTRUCTION_TOPIC, lambda m: self._add(self.instruction, m.data), LATCHED)
        self.tf: list[TFMessage] = []
        self.tf_static: list[TFMessage] = []
        n.create_subscription(TFMessage, "/tf", lambda m: self._add(self.tf, m), 10)
        n.create_subscription(TFMessage, "/tf_static", lambda m: self._add(self.tf_static, m), LATCHED)
        self.diags: list[DiagnosticArray] = []
        n.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._add(self.diags, m), 10)
        self.traj_pub = n.create_publisher(JointTrajectory, "/fr3_arm_controller/joint_trajectory", 10)
        self.grip_pub = n.create_publisher(Float64, "/gripper/command", 10)
        self.reset_cli = n.create_client(SetInstruction, "/sim/reset")
        self.success_cli = n.create_client(Trigger, "/sim/task_success")
        self.start_spinning()

    def _subscribe_images(self, view: str):
        return self.node.create_subscription(Image, f"/cameras/{view}/image_raw",
                                             lambda m: self._add(self.images[view], m), qos_profile_sensor_data)

    def _add(self, lst: list, item) -> None:
        with self.lock:
            lst.append(item)
            if len(lst) > 400:
                del lst[:200]

    def q(self) -> np.ndarray:
        with self.lock:
            m = self.js[-1]
        return np.array([m.position[m.name.index(n)] for n in ARM])

    def call(self, client, request, timeout: float = 30.0):
        assert client.wait_for_service(timeout_sec=10.0), f"service {client.srv_name} not available"
        fut = client.call_async(request)
        assert wait_for(fut.done, timeout), f"service {client.srv_name} did not answer"
        return fut.result()

    def report(self) -> str:
        """What arrived and what the probe's DDS graph sees — the message of a failed wait."""
        with self.lock:
            counts = {f"image/{v}": len(self.images[v]) for v in VIEWS}
            counts |= {"joint_states": len(self.js), "clock": len(self.clock), "tf": len(self.tf),
                       "diagnostics": len(self.diags)}
        n = self.node
        graph = {t: n.count_publishers(t) for t in ("/clock", "/joint_states", "/cameras/wrist/image_raw")}
        matched = {v: sub.get_publisher_count() for v, sub in self.image_subs.items()}
        diag = sim_diag(self)
        return (f"received {counts}; publishers seen {graph}; image writers matched by this probe's readers "
                f"{matched}; re-subscribed {self.resubscribed or 'none'}; nodes seen {sorted(n.get_node_names())}; "
                f"sim diagnostics {diag or 'none'}; {census()}")

    def wait_streams(self, proc, timeout: float = 60.0, images: int = 2, states: int = 5,
                     resubscribe_after: float = 15.0) -> None:
        """Wait until every camera sent ``images`` frames and /clock and /joint_states ``states`` messages; on a
        timeout fail with :meth:`report` and the sim's log.

        A camera still silent ``resubscribe_after`` s after its sibling cameras delivered gets its subscription
        re-created once, with a warning. Four CI runs under load (never reproduced alone, with stale DDS segments or
        with busy loops beside it) had the probe's wrist reader get nothing for 60 s while left and right, same
        type, size and QoS from the same sim, arrived at 10 Hz: a transport state of that one reader-writer pair,
        not the sim (its diagnostics count every triplet published). :meth:`report` prints the matched-writer
        counts of both sides for the next one.
        """
        def done() -> bool:
            return (all(len(self.images[v]) >= images for v in VIEWS) and len(self.js) > states
                    and len(self.clock) > states)

        t_end, first_images = time.monotonic() + timeout, None
        while not done() and time.monotonic() < t_end:
            time.sleep(0.05)
            with self.lock:
                silent = [v for v in VIEWS if not self.images[v]]
            if first_images is None and len(silent) < len(VIEWS):
                first_images = time.monotonic()
            if silent and first_images is not None and time.monotonic() - first_images > resubscribe_after:
                for v in silent:
                    if v not in self.resubscribed:
                        warnings.warn(f"no /cameras/{v}/image_raw {resubscribe_after:.0f} s after the other cameras "
                                      f"delivered; re-subscribing once ({self.report()})", stacklevel=2)
                        self.resubscribed.append(v)
                        self.node.destroy_subscription(self.image_subs[v])
                        self.image_subs[v] = self._subscribe_images(v)
        assert done(), (f"sim_node streams did not arrive within {timeout:.0f} s: {self.report()}; "
                        f"log:\n{proc.output()}")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim") / "sim_node.log"
    cmd = [node_executable("vidplan_sim", "sim_node"), "--ros-args", "-r", "__node:=sim",
           "-p", "scene_seed:=2", "-p", "clutter:=1", "-p", "instruction:=put the red cube in the bowl",
           "-p", "lockstep:=true", "-p", "real_time_factor:=1.0"]
    probe = Probe()  # subscribed before the sim starts: its first messages and discovery find a waiting reader
    try:
        with started(cmd, log) as proc:
            probe.wait_streams(proc)
            yield proc, probe
    finally:
        probe.close()


def sim_diags(probe) -> list[dict[str, str]]:
    """Key/values of every sim_node status received on /diagnostics, oldest first."""
    with probe.lock:
        arrays = list(probe.diags)
    return [{kv.key: kv.value for kv in st.values} for arr in arrays for st in arr.status
            if st.name == "vidplan_sim: sim_node"]


def sim_diag(probe) -> dict[str, str]:
    """Key/values of the newest sim_node status on /diagnostics ({} before the first)."""
    diags = sim_diags(probe)
    return diags[-1] if diags else {}


def test_streams(sim):
    _proc, probe = sim
    for v in VIEWS:
        img = probe.images[v][-1]
        assert (img.encoding, img.height, img.width, img.step) == ("rgb8", 180, 320, 960)
        assert len(img.data) == 180 * 320 * 3
        assert img.header.frame_id == f"{v}_camera_optical_frame"
        pix = np.frombuffer(bytes(img.data), np.uint8)
        assert pix.std() > 10
        info = probe.infos[v]
        assert (info.width, info.height) == (320, 180) and info.k[2] == pytest.approx(160.0)
    js = probe.js[-1]
    assert js.name == [*ARM, "panda_finger_joint1", "panda_finger_joint2"]
    np.testing.assert_allclose(probe.q(), HOME_Q, atol=5e-3)
    assert sum(js.position[7:]) == pytest.approx(0.08, abs=3e-3)  # open gripper: two fingers of 0.04 m
    ee = probe.ee[-1]
    assert ee.header.frame_id == "panda_link0"
    assert [ee.pose.position.x, ee.pose.position.y, ee.pose.position.z] == pytest.approx([0.307, 0.0, 0.487],
                                                                                           abs=5e-3)
    assert wait_for(lambda: probe.scene and probe.instruction, 10.0), \
        "latched /sim/scene and /vidplan/instruction not received"
    assert probe.scene[-1]["instruction"] == "put the red cube in the bowl"
    assert "red_cube" in probe.scene[-1]["objects"] and probe.instruction[-1] == "put the red cube in the bowl"
    # /clock increases and stamps use it. Lock-step: frames are one camera period (1/15 s) of sim time apart;
    # best-effort delivery may drop frames at a loaded receiver, so check stamp spacing, not the received rate.
    c0 = probe.clock[-1]
    time.sleep(2.0)
    assert probe.clock[-1] > c0
    with probe.lock:
        stamps = sorted({_sec(m.header.stamp) for m in probe.images["left"]})
    gaps = np.diff(stamps[-20:]) * 15.0
    assert len(gaps) >= 5 and np.allclose(gaps, np.round(gaps), atol=0.04) and gaps.min() == pytest.approx(1, abs=0.04)
    # an image is stamped with sim time the sim has published on /clock, though the two topics may arrive in either
    # order at a loaded receiver (CI once saw the image of 2.466 s before the /clock message of it)
    stamp = _sec(probe.images["wrist"][-1].header.stamp)
    assert wait_for(lambda: stamp <= probe.clock[-1] + 1e-6, 5.0), (stamp, probe.clock[-1])
    # The sim's 1 Hz diagnostics (wall time): the first one can predate the streams, so wait for one that counts
    # more than 10 rendered triplets (CI once saw only that first one, triplets = 1, after the 2 s above).
    assert wait_for(lambda: int(sim_diag(probe).get("triplets", 0)) > 10, 10.0), \
        f"no sim_node /diagnostics counting > 10 triplets; last: {sim_diag(probe)}"
    vals = sim_diag(probe)
    assert vals["instruction"] == "put the red cube in the bowl"
    # The node's own counters: one triplet rendered per camera period of sim time, none dropped.
    assert int(vals["triplets"]) / float(vals["sim_time_s"]) == pytest.approx(15.0, rel=0.1)
    assert vals["dropped"] == "0"


def test_joint_trajectory_moves_arm(sim):
    proc, probe = sim
    goal = HOME_Q + np.array([0.25, 0.15, -0.1, 0.2, 0.0, -0.15, 0.3])
    msg = JointTrajectory()
    msg.joint_names = list(reversed(ARM))  # any order, as with a JTC
    pt = JointTrajectoryPoint()
    pt.positions = [float(x) for x in reversed(goal)]
    pt.time_from_start.sec = 1
    msg.points = [pt]
    start_err = np.linalg.norm(probe.q() - goal)
    probe.traj_pub.publish(msg)
    assert wait_for(lambda: np.linalg.norm(probe.q() - goal) < 0.5 * start_err, 10.0), "arm did not move"
    assert wait_for(lambda: np.abs(probe.q() - goal).max() < 5e-3, 10.0), f"arm at {probe.q()}, goal {goal}"
    # Unknown joint names are rejected (logged) and do not move the arm.
    bad = JointTrajectory()
    bad.joint_names = [*ARM[:6], "fr3_joint7"]
    bad.points = [JointTrajectoryPoint(positions=[0.0] * 7)]
    bad.points[0].time_from_start.sec = 1
    probe.traj_pub.publish(bad)
    assert wait_for(lambda: "rejected JointTrajectory" in proc.output(), 5.0)
    time.sleep(0.5)
    assert np.abs(probe.q() - goal).max() < 5e-3
    # Gripper command closes the fingers.
    probe.grip_pub.publish(Float64(data=1.0))
    assert wait_for(lambda: sum(probe.js[-1].position[7:]) < 0.01, 10.0)


def test_services(sim):
    _proc, probe = sim
    res = probe.call(probe.success_cli, Trigger.Request())
    assert res.success is False and res.message.startswith("put the red cube in the bowl")
    clock_before = probe.clock[-1]
    n_scene = len(probe.scene)
    res = probe.call(probe.reset_cli, SetInstruction.Request(instruction="touch the green ball", scene_seed=7))
    assert res.success, res.message
    assert wait_for(lambda: len(probe.scene) > n_scene, 10.0)
    scene = probe.scene[-1]
    assert scene["instruction"] == "touch the green ball" and scene["scene_seed"] == 7
    assert wait_for(lambda: probe.instruction[-1] == "touch the green ball", 10.0), probe.instruction
    assert "green_ball" in scene["objects"]
    assert wait_for(lambda: np.abs(probe.q() - HOME_Q).max() < 5e-3, 10.0)  # back at home
    assert wait_for(lambda: sum(probe.js[-1].position[7:]) > 0.075, 10.0)  # gripper open again
    assert probe.clock[-1] >= clock_before  # sim time stays monotonic across resets
    res = probe.call(probe.success_cli, Trigger.Request())
    assert res.success is False and res.message.startswith("touch the green ball")
    bad = probe.call(probe.reset_cli, SetInstruction.Request(instruction="fly to the moon", scene_seed=-1))
    assert bad.success is False and "cannot parse instruction" in bad.message


def test_tf_tree_matches_the_ee_pose_and_the_cameras(sim):
    """/tf_static (latched, received by this late subscriber) + /tf compose, as tf2 would, to the TCP pose the sim
    reports on /ee_pose (within 1 mm) and to camera optical frames at the calibration's poses (what RViz shows)."""
    from scipy.spatial.transform import Rotation

    from vidplan_core.calibration import load_calibration

    _proc, probe = sim
    assert wait_for(lambda: probe.tf_static and len(probe.tf) > 3, 20.0), "no /tf_static or /tf"

    def mat(t):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat([t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w]).as_matrix()
        T[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
        return T

    with probe.lock:
        edges = {t.child_frame_id: (t.header.frame_id, mat(t.transform))
                 for m in [*probe.tf_static, probe.tf[-1]] for t in m.transforms}
        ee = probe.ee[-1]

    def pose(frame):
        T = np.eye(4)
        while frame != "panda_link0":
            parent, Tpc = edges[frame]
            T, frame = Tpc @ T, parent
        return T

    tcp = pose("panda_hand_tcp")[:3, 3]
    assert np.linalg.norm(tcp - [ee.pose.position.x, ee.pose.position.y, ee.pose.position.z]) < 1e-3
    cal = load_calibration()
    for v in ("left", "right"):
        np.testing.assert_allclose(pose(f"{v}_camera_optical_frame"), cal.cameras[v].transform(), atol=1e-5)
    assert {"panda_leftfinger", "panda_rightfinger", "wrist_camera_optical_frame"} <= set(edges)
