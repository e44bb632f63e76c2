"""Managed nodes through the real lifecycle services, every node its own process (vidplan_ros.lifecycle,
lifecycle_manager_node):

* executor and planner with ``autostart:=false`` wait unconfigured (and say so on /diagnostics); the lifecycle
  manager configures both, then activates both, in ``node_names`` order; ``~/pause`` deactivates them (an inactive
  executor refuses a goal naming its state), ``~/resume`` activates them again, ``~/reset`` cleans them up to
  unconfigured and a second ``~/startup`` brings them back (what configure made was destroyed, not duplicated);
* a planner whose configure fails (models that cannot load) stays unconfigured and alive, with the reason on
  /diagnostics.
"""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from proc_helpers import node_executable, started, wait_for
from ros_spin import SpinningNode
from std_srvs.srv import Trigger

from vidplan_core.kinematics import HOME_Q, PandaKinematics
from vidplan_core.spaces import EEChunk
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros.compat import ActionClient
from vidplan_ros.conversions import chunk_to_msg

pytestmark = pytest.mark.slow


class Rig(SpinningNode):
    def __init__(self) -> None:
        super().__init__("lifecycle_test")
        self.diag: dict[str, DiagnosticStatus] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diag.update({s.name: s for s in m.status}), 10)
        self.execute = ActionClient(self.node, ExecuteChunk, "/vidplan/execute_chunk")
        self.start_spinning()

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        cli = self.node.create_client(srv_type, name)
        try:
            assert cli.wait_for_service(timeout_sec=60.0), f"{name} not available"
            fut = cli.call_async(request)
            assert wait_for(fut.done, timeout), f"{name}: no response in {timeout} s"
            return fut.result()
        finally:
            self.node.destroy_client(cli)

    def state(self, node: str) -> str:
        return self.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.label


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def _goal() -> ExecuteChunk.Goal:
    ee = PandaKinematics().fk_action(HOME_Q)
    ch = EEChunk.from_actions(np.tile(np.r_[ee, 1.0], (5, 1)), dt=0.2)
    return ExecuteChunk.Goal(chunk=chunk_to_msg(ch, PlanChunk, "panda_link0", rclpy.clock.Clock().now().to_msg(), 1))


def test_manager_configures_then_activates_in_order_pauses_resumes_and_resets(tmp_path, tiny_model_dir, rig):
    env = {"OMP_NUM_THREADS": "1"}
    exe_cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "autostart:=false",
               "-p", "diagnostics_period_s:=0.2"]
    planner_cmd = [node_executable("vidplan_ros", "planner_node"), "--ros-args", "-p", "autostart:=false",
                   "-p", f"model_dir:={tiny_model_dir}", "-p", "threads:=1"]
    manager_cmd = [node_executable("vidplan_ros", "lifecycle_manager_node"), "--ros-args",
                   "-p", "node_names:=[executor,planner_node]"]
    with started(exe_cmd, tmp_path / "exe.log", env=env) as exe, \
            started(planner_cmd, tmp_path / "planner.log", env=env) as planner:
        assert rig.state("executor") == "unconfigured" and rig.state("planner_node") == "unconfigured"
        assert wait_for(lambda: "vidplan executor" in rig.diag and "vidplan: planner_node" in rig.diag, 20)
        assert rig.diag["vidplan executor"].message.startswith("unconfigured: waiting for configure")
        assert rig.diag["vidplan: planner_node"].message == "unconfigured: waiting for configure"
        assert "planner ready" not in planner.output()  # nothing loaded before configure
        with started(manager_cmd, tmp_path / "manager.log", env=env) as manager:
            assert wait_for(lambda: "bring-up done" in manager.output(), 180), (manager.output(), planner.output())
            assert rig.state("executor") == "active" and rig.state("planner_node") == "active"
            out = manager.output()
            order = [out.index(f"{what} {n} ...") for what, n in (("configure", "executor"),
                                                                   ("configure", "planner_node"),
                                                                   ("activate", "executor"),
                                                                   ("activate", "planner_node"))]
            assert order == sorted(order), out
            assert "planner ready" in planner.output() and "executor ready" in exe.output()

            # pause: both inactive; the executor refuses a goal naming its state
            res = rig.call(Trigger, "/lifecycle_manager/pause", Trigger.Request())
            assert res.success, res.message
            assert rig.state("executor") == "inactive" and rig.state("planner_node") == "inactive"
            assert rig.execute.wait_for_server(timeout_sec=30)
            fut = rig.execute.send_goal_async(_goal())
            assert wait_for(fut.done, 20)
            result = fut.result().get_result_async()
            assert wait_for(result.done, 20)
            r = result.result().result
            assert r.status == ExecuteChunk.Result.STATUS_REJECTED and "executor is inactive" in r.reason, r.reason
            # (its message leads with the missing joint states: no sim in this test)
            assert wait_for(lambda: {kv.key: kv.value for kv in rig.diag["vidplan executor"].values}.get(
                "lifecycle_state") == "inactive", 10), rig.diag["vidplan executor"]

            assert rig.call(Trigger, "/lifecycle_manager/resume", Trigger.Request()).success
            assert rig.state("executor") == "active" and rig.state("planner_node") == "active"

            # reset to unconfigured, then up again: configure's subscriptions/timers/action were destroyed, not kept
            res = rig.call(Trigger, "/lifecycle_manager/reset", Trigger.Request())
            assert res.success, res.message
            assert rig.state("executor") == "unconfigured" and rig.state("planner_node") == "unconfigured"
            res = rig.call(Trigger, "/lifecycle_manager/startup", Trigger.Request(), timeout=180)
            assert res.success, (res.message, planner.output()[-2000:])
            assert rig.state("executor") == "active" and rig.state("planner_node") == "active"
            assert exe.alive() and planner.alive() and manager.alive()
        assert "Traceback" not in exe.output() + planner.output(), exe.output() + planner.output()


def test_failed_configure_leaves_the_planner_unconfigured_with_the_reason(tmp_path, rig):
    cmd = [node_executable("vidplan_ros", "planner_node"), "--ros-args", "-p", "autostart:=false",
           "-p", f"model_dir:={tmp_path / 'no_such_model'}"]
    with started(cmd, tmp_path / "planner.log") as planner:
        res = rig.call(ChangeState, "/planner_node/change_state",
                       ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
        assert not res.success
        assert rig.state("planner_node") == "unconfigured"
        assert wait_for(lambda: "configure failed" in getattr(rig.diag.get("vidplan: planner_node"), "message", ""),
                        10), planner.output()
        st = rig.diag["vidplan: planner_node"]
        assert st.level == DiagnosticStatus.ERROR
        assert "cannot load models from model_dir" in st.message and "no_such_model" in st.message, st.message
        assert planner.alive(), planner.output()
