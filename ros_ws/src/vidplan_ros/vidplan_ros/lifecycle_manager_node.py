"""lifecycle_manager_node: brings vidplan's managed nodes up in order and down in reverse (nav2's lifecycle manager
pattern), through each node's standard lifecycle services (``/<node>/change_state``, ``/<node>/get_state``).

Bring-up: configure every node in ``node_names`` order, then activate them in the same order — the executor first, so
nothing plans before something can hold the arm. A failed transition stops the bring-up there: the node it failed on
stays unconfigured (or inactive) with its reason on its own /diagnostics, this node reports which node and which
transition failed (ERROR on /diagnostics, log) and stays up, so the operator can look and retry (``~/startup``).
Used by the robot profile (``vidplan up robot`` and ``ros2 launch vidplan_bringup robot.launch.py`` start the same
nodes), where the planner and the executor run with ``autostart:=false``.

Services (std_srvs/Trigger): ``~/startup`` (configure + activate what is not active yet), ``~/pause`` (deactivate in
reverse order: the planner stops first, then the executor holds), ``~/resume`` (activate again), ``~/reset``
(deactivate and clean up in reverse order: models freed, back to unconfigured).
Publishes: /diagnostics ("vidplan: lifecycle_manager": each node's state).

Parameters (read at start-up):
    node_names (str[], []): the managed nodes, in bring-up order (names as in ``ros2 node list``, without the
        leading slash).
    autostart (bool, true): run the bring-up at start-up.
    transition_timeout_s (float, 300.0): longest wait for one transition [s] (configure loads models and may build
        TensorRT engines).
    service_timeout_s (float, 60.0): longest wait for a node's lifecycle services to appear [s].
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from vidplan_ros.node_runner import (
    declare_checked,
    parameter_descriptor,
    parameter_docs,
    parameters_declared,
    run_node,
)

__all__ = ["LifecycleManager", "main"]

_DOCS = parameter_docs(__doc__)
_NAMES = {Transition.TRANSITION_CONFIGURE: "configure", Transition.TRANSITION_ACTIVATE: "activate",
          Transition.TRANSITION_DEACTIVATE: "deactivate", Transition.TRANSITION_CLEANUP: "cleanup"}


class LifecycleManager(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("lifecycle_manager")

        def p(name: str, default):
            return declare_checked(self, name, default, _DOCS.get(name, ""),
                                   lo=0.0 if isinstance(default, float) else None)

        # a typed parameter without a default (rclpy cannot infer a type from []): unset reads as no nodes
        self.declare_parameter("node_names", Parameter.Type.STRING_ARRAY,
                               parameter_descriptor("node_names", [], _DOCS.get("node_names", "")))
        try:
            names = list(self.get_parameter("node_names").value or [])
        except ParameterUninitializedException:
            names = []
        self.node_names = [n.strip("/") for n in names if n.strip("/")]
        autostart = p("autostart", True)
        self.transition_timeout = p("transition_timeout_s", 300.0)
        self.service_timeout = p("service_timeout_s", 60.0)
        parameters_declared(self)
        if not self.node_names:
            raise ValueError("parameter 'node_names' is empty: give the managed nodes in bring-up order, e.g. "
                             "node_names:=[executor,planner]")
        group = ReentrantCallbackGroup()  # service callbacks wait for other nodes' responses
        self._change = {n: self.create_client(ChangeState, f"/{n}/change_state", callback_group=group)
                        for n in self.node_names}
        self._get = {n: self.create_client(GetState, f"/{n}/get_state", callback_group=group)
                     for n in self.node_names}
        self.states: dict[str, str] = {n: "unknown" for n in self.node_names}
        self.problem = ""
        self._busy = threading.Lock()  # one sequence of transitions at a time
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        for name, cb in (("startup", self.startup), ("pause", self.pause), ("resume", self.resume),
                         ("reset", self.reset)):
            self.create_service(Trigger, f"~/{name}", lambda req, resp, cb=cb: self._serve(cb, resp),
                                callback_group=group)
        if autostart:
            threading.Thread(target=self.startup, name="lifecycle-startup", daemon=True).start()

    # ------------------------------------------------------------------ transitions
    def _wait(self, future, timeout: float) -> bool:
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        return done.wait(timeout) and future.result() is not None

    def state_of(self, name: str) -> str:
        """The node's lifecycle state label ("unconfigured", "inactive", "active", ...) or "unreachable"."""
        cli = self._get[name]
        if not cli.wait_for_service(timeout_sec=self.service_timeout):
            return "unreachable"
        fut = cli.call_async(GetState.Request())
        state = fut.result().current_state.label if self._wait(fut, 10.0) else "unreachable"
        self.states[name] = state
        return state

    def _transition(self, name: str, transition: int) -> bool:
        what = _NAMES[transition]
        cli = self._change[name]
        if not cli.wait_for_service(timeout_sec=self.service_timeout):
            self.problem = f"{name}: lifecycle services not available after {self.service_timeout:.0f} s"
            self.get_logger().error(self.problem)
            return False
        self.get_logger().info(f"{what} {name} ...")
        fut = cli.call_async(ChangeState.Request(transition=Transition(id=transition)))
        if not self._wait(fut, self.transition_timeout):
            self.problem = f"{name}: no answer to {what} within {self.transition_timeout:.0f} s"
            self.get_logger().error(self.problem)
            return False
        state = self.state_of(name)
        if not fut.result().success:
            self.problem = f"{name}: {what} failed (now {state}; the reason is in its log and /diagnostics)"
            self.get_logger().error(self.problem)
            return False
        self.get_logger().info(f"{name}: {state}")
        return True

    def _run(self, steps: list[tuple[str, int, tuple[str, ...]]]) -> tuple[bool, str]:
        """Each (node, transition, the states it applies from) in order; stop at the first failure."""
        with self._busy:
            self.problem = ""
            for name, transition, from_states in steps:
                state = self.state_of(name)
                if state == "unreachable":
                    self.problem = f"{name}: unreachable (is it running, with autostart:=false?)"
                    self.get_logger().error(self.problem)
                    return False, self.problem
                if state in from_states and not self._transition(name, transition):
                    return False, self.problem
            return True, "states: " + ", ".join(f"{n} {s}" for n, s in self.states.items())

    def startup(self) -> tuple[bool, str]:
        """Configure, then activate, every node (in order); nodes already there are left as they are."""
        steps = ([(n, Transition.TRANSITION_CONFIGURE, ("unconfigured",)) for n in self.node_names]
                 + [(n, Transition.TRANSITION_ACTIVATE, ("inactive",)) for n in self.node_names])
        ok, msg = self._run(steps)
        self.get_logger().info(f"bring-up {'done' if ok else 'stopped'}: {msg}")
        return ok, msg

    def pause(self) -> tuple[bool, str]:
        return self._run([(n, Transition.TRANSITION_DEACTIVATE, ("active",)) for n in reversed(self.node_names)])

    def resume(self) -> tuple[bool, str]:
        return self._run([(n, Transition.TRANSITION_ACTIVATE, ("inactive",)) for n in self.node_names])

    def reset(self) -> tuple[bool, str]:
        back = list(reversed(self.node_names))
        return self._run([(n, Transition.TRANSITION_DEACTIVATE, ("active",)) for n in back]
                         + [(n, Transition.TRANSITION_CLEANUP, ("inactive",)) for n in back])

    def _serve(self, cb, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = cb()
        return resp

    def _publish_diagnostics(self) -> None:
        active = all(s == "active" for s in self.states.values())
        level = DiagnosticStatus.ERROR if self.problem else DiagnosticStatus.OK if active else DiagnosticStatus.WARN
        msg = self.problem or ("all active" if active else "bringing up" if self._busy.locked() else "not all active")
        st = DiagnosticStatus(level=level, name="vidplan: lifecycle_manager", hardware_id="vidplan", message=msg,
                              values=[KeyValue(key=n, value=s) for n, s in self.states.items()])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> None:
    run_node(LifecycleManager, args, num_threads=4)
