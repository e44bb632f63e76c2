"""planner_node against faulty inputs, in a real process over DDS (vidplan issue 13, reliability): invalid images,
malformed JointState and NaN poses are dropped, named in PlanDiagnostics and never fatal; SIGTERM while planning and
publishing ends the node without a traceback; a model with NaN weights fails start-up (exit 2) naming the part.

The faults come from tests/vidplan_ros/integration/scripts/faulty_stream_publisher.py, switched by the latched
/test/fault topic.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from proc_helpers import node_executable, started, wait_for
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_spin import SpinningNode
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics

SCRIPTS = Path(__file__).parent / "scripts"
TASK = "put the red cube in the bowl"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OK = (PlanDiagnostics.STATUS_OK, PlanDiagnostics.STATUS_BUDGET)


class Listener(SpinningNode):
    """The test's own node: collects plans and diagnostics, subscribes to the debug pictures (so the planner
    publishes them too) and switches the publisher's fault."""

    def __init__(self):
        super().__init__("planner_faults_listener", period=0.05)
        self.plans: list[PlanChunk] = []
        self.diags: list[PlanDiagnostics] = []
        self.node.create_subscription(PlanChunk, "/vidplan/plan", self.plans.append, 10)
        self.node.create_subscription(PlanDiagnostics, "/vidplan/plan_diagnostics", self.diags.append, 50)
        for topic in ("/vidplan/debug/prediction", "/vidplan/debug/uncertainty"):
            self.node.create_subscription(Image, topic, lambda _m: None, 2)
        self._fault = self.node.create_publisher(String, "/test/fault", LATCHED)
        self.start_spinning()

    def fault(self, value: str) -> None:
        self._fault.publish(String(data=value))

    def ok_count(self) -> int:
        return sum(d.status in OK for d in self.diags)

    def error_with(self, *words: str) -> bool:
        return any(d.status == PlanDiagnostics.STATUS_ERROR and all(w in d.reason for w in words)
                   for d in list(self.diags))


@pytest.fixture
def listener():
    lis = Listener()
    yield lis
    lis.close()


def _planner_cmd(model_dir: Path, **params) -> list[str]:
    base = dict(model_dir=str(model_dir), instruction=TASK, refine_iters=1, open_loop_steps=1, camera_timeout_s=0.6,
                state_timeout_s=1.0)
    base.update(params)
    cmd = [node_executable("vidplan_ros", "planner_node"), "--ros-args"]
    for k, v in base.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


PUB_CMD = [sys.executable, str(SCRIPTS / "faulty_stream_publisher.py"), "--width", "40", "--height", "24"]
ENV = {"OMP_NUM_THREADS": "1"}


def _errors(lis: Listener) -> list[str]:
    return [d.reason for d in lis.diags if d.status == PlanDiagnostics.STATUS_ERROR][-5:]


@pytest.mark.slow
def test_invalid_images_are_dropped_named_in_diagnostics_and_never_planned_on(tmp_path, tiny_model_dir, listener):
    lis = listener
    with started(PUB_CMD, tmp_path / "pub.log", env=ENV) as pub, \
            started(_planner_cmd(tiny_model_dir), tmp_path / "planner.log", env=ENV) as planner:
        assert wait_for(lambda: lis.ok_count() >= 1, 120), planner.output()[-3000:]
        # 0x0 images on the left camera: no longer "stale" or black frames planned on, but the true reason
        lis.fault("zero_image:left")
        t_left = time.monotonic()
        assert wait_for(lambda: lis.error_with("left", "invalid image size 0x0"), 30), \
            (_errors(lis), pub.output()[-500:], planner.output()[-3000:])
        time.sleep(0.5)  # anything published before the error has arrived by now
        n_ok, n_plans = lis.ok_count(), len(lis.plans)
        time.sleep(3.0)
        assert lis.ok_count() == n_ok and len(lis.plans) == n_plans, "planned while the left camera was invalid"
        assert lis.error_with("left", "invalid image size 0x0")
        # an unsupported encoding on the wrist camera, then data shorter than step x height on the right one
        lis.fault("bad_encoding:wrist")
        left_fault_s = time.monotonic() - t_left
        assert wait_for(lambda: lis.error_with("wrist", "unsupported image encoding 'yuv422'"), 30), _errors(lis)
        lis.fault("short_data:right")
        assert wait_for(lambda: lis.error_with("right", "too small"), 30), _errors(lis)
        # good images again: planning resumes in the same process
        n_ok = lis.ok_count()
        lis.fault("none")
        assert wait_for(lambda: lis.ok_count() > n_ok, 60), (_errors(lis), planner.output()[-3000:])
        assert planner.alive() and pub.alive()
        log = planner.output()
    # the reason is logged, throttled (at most one line per camera per 5 s, not one per image at 15 Hz)
    left_lines = [ln for ln in log.splitlines() if "camera 'left'" in ln and "dropping invalid image" in ln]
    assert 1 <= len(left_lines) <= 2 + left_fault_s / 5.0 and "0x0" in left_lines[0], (left_lines, left_fault_s)
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_malformed_state_messages_are_dropped_named_and_never_fatal(tmp_path, tiny_model_dir, listener):
    lis = listener
    with started(PUB_CMD, tmp_path / "pub.log", env=ENV) as pub, \
            started(_planner_cmd(tiny_model_dir), tmp_path / "planner.log", env=ENV) as planner:
        assert wait_for(lambda: lis.ok_count() >= 1, 120), planner.output()[-3000:]
        # a JointState with names but no positions used to raise IndexError in the callback and end the node
        lis.fault("joints_no_positions")
        assert wait_for(lambda: lis.error_with("/joint_states", "8 names but 0 positions"), 30), \
            (_errors(lis), planner.output()[-3000:])
        assert planner.alive(), planner.output()[-3000:]
        lis.fault("joints_nan")
        assert wait_for(lambda: lis.error_with("/joint_states", "non-finite joint position(s) for panda_joint4"),
                        30), _errors(lis)
        # a NaN EE position used to be blamed on the cameras ("newest camera triplet is ... old")
        lis.fault("nan_ee")
        assert wait_for(lambda: lis.error_with("/ee_pose", "non-finite position"), 30), _errors(lis)
        assert not any("camera" in r for r in _errors(lis)[-2:]), _errors(lis)
        n_ok = lis.ok_count()
        lis.fault("none")
        assert wait_for(lambda: lis.ok_count() > n_ok, 60), (_errors(lis), planner.output()[-3000:])
        assert planner.alive() and pub.alive()
        assert "Traceback" not in planner.output(), planner.output()[-3000:]


@pytest.mark.slow
def test_estop_from_a_default_qos_publisher_stops_planning(tmp_path, tiny_model_dir, listener):
    """An e-stop published with rclpy's default QoS (reliable, volatile) reaches the planner: it used to subscribe
    with the latched profile only, which never matches such a publisher, and kept planning."""
    from std_msgs.msg import Bool

    lis = listener
    estop = lis.node.create_publisher(Bool, "/vidplan/estop", 10)  # rclpy's default profile
    with started(PUB_CMD, tmp_path / "pub.log", env=ENV) as pub, \
            started(_planner_cmd(tiny_model_dir), tmp_path / "planner.log", env=ENV) as planner:
        assert wait_for(lambda: lis.ok_count() >= 1, 120), planner.output()[-3000:]
        assert wait_for(lambda: estop.get_subscription_count() >= 1, 10)
        estop.publish(Bool(data=True))
        assert wait_for(lambda: "e-stop latched" in planner.output(), 20), planner.output()[-3000:]
        time.sleep(1.0)  # a cycle already under way may still finish
        n_ok, n_plans = lis.ok_count(), len(lis.plans)
        time.sleep(3.0)
        assert lis.ok_count() == n_ok and len(lis.plans) == n_plans, "planned while the e-stop was latched"
        estop.publish(Bool(data=False))
        assert wait_for(lambda: lis.ok_count() > n_ok, 60), (_errors(lis), planner.output()[-3000:])
        assert planner.alive() and pub.alive()


@pytest.mark.slow
def test_sigterm_while_planning_and_publishing_exits_cleanly(tmp_path, tiny_model_dir, listener):
    """SIGTERM lands while the node plans and publishes (plans, diagnostics, debug pictures, /diagnostics): exit 0,
    no traceback. Twice, at different points of the cycle."""
    lis = listener
    with started(PUB_CMD, tmp_path / "pub.log", env=ENV):
        for i, delay in enumerate((0.0, 0.37)):
            with started(_planner_cmd(tiny_model_dir), tmp_path / f"planner{i}.log", env=ENV) as planner:
                n = len(lis.plans)
                assert wait_for(lambda n=n: len(lis.plans) >= n + 2, 120), planner.output()[-3000:]
                time.sleep(delay)
                planner.signal(signal.SIGTERM)
                code = planner.wait(30)
                log = planner.output()
            assert code == 0, (code, log[-3000:])
            assert "Traceback" not in log and "RCLError" not in log and "InvalidHandle" not in log, log[-3000:]


def test_publishing_after_sigterm_shutdown_raises_nothing(tiny_model_dir):
    """What SIGTERM does to the node's context (rclpy's handler shuts it down) before run_node stops the plan
    thread: every publishing path of the node (error diagnostics, hold, /diagnostics, the plan loop itself) is quiet
    instead of raising from a thread (which printed a traceback)."""
    from vidplan_ros.planner_node import PlannerNode

    ctx_args = ["planner_test", "--ros-args", "-p", f"model_dir:={tiny_model_dir}", "-p", f"instruction:={TASK}",
                "-r", "__node:=planner_shutdown_test", "-r", "/vidplan/plan_diagnostics:=/planner_shutdown_test/diag",
                "-r", "/vidplan/plan:=/planner_shutdown_test/plan", "-r", "/diagnostics:=/planner_shutdown_test/d"]
    thread_errors: list[BaseException] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda a: thread_errors.append(a.exc_value)
    rclpy.init(args=ctx_args)
    node = None
    try:
        node = PlannerNode()
        node._publish_error("before shutdown")  # works while the context is up
        rclpy.shutdown()  # = rclpy's SIGTERM handler
        assert not node.context.ok()
        node._publish_error("after shutdown")
        node._publish_ros_diagnostics()
        node._publish_hold("after shutdown")
        time.sleep(0.5)  # the plan thread runs its loop (no inputs: it publishes an error diagnostic each pass)
        plan_thread = node._thread
        assert plan_thread is not None and plan_thread.is_alive()
        node.close()  # = release(): stops and joins the plan thread
        assert not plan_thread.is_alive() and node._thread is None
    finally:
        threading.excepthook = old_hook
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    assert not thread_errors, thread_errors


def test_nan_weights_fail_start_up_naming_the_part(tmp_path, tiny_model_dir):
    """Bad weights are a start-up error (exit 2 naming the part), not a HOLD in every control cycle."""
    import torch
    from safetensors.torch import load_file, save_file

    from vidplan_core.runtime.bundle_index import write_bundle_index

    bad = Path(shutil.copytree(tiny_model_dir, tmp_path / "nan_model"))
    f = bad / "reward_head" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    key = next(k for k in sd if k.endswith("conv_out.weight") or k.endswith("proj_out.weight"))
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, f, metadata={"format": "pt"})
    # without re-indexing, the changed file is a checksum mismatch naming it
    with started(_planner_cmd(bad), tmp_path / "a.log", env=ENV) as p:
        assert p.wait(120) == 2, p.output()[-3000:]
        assert "checksum mismatch" in p.output() and str(f) in p.output(), p.output()[-3000:]
    write_bundle_index(bad)  # the checksums now accept the NaN weights: the warm-up pass catches them
    with started(_planner_cmd(bad), tmp_path / "b.log", env=ENV) as p:
        assert p.wait(120) == 2, p.output()[-3000:]
        out = p.output()
    assert "warm-up produced NaN/Inf" in out and "'reward_head'" in out and str(bad / "reward_head") in out, out
    assert "planner ready" not in out and "Traceback" not in out, out[-3000:]
