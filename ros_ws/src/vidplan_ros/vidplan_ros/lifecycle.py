"""Managed (lifecycle) nodes: the plumbing the planner and the executor share.

The ROS 2 node lifecycle (design.ros2.org "Managed nodes"), as nav2 and ros2_control use it:

* **unconfigured**: parameters declared and checked, ``/diagnostics`` reports the state (and why the last
  ``configure`` failed); nothing else runs;
* **configure**: the slow, fallible start-up work (models, kinematics, engines, warm-up) and the node's
  subscriptions, publishers, timers and threads. A failure returns to *unconfigured* with the reason logged and on
  ``/diagnostics``; nothing half-built stays behind;
* **activate** / **deactivate**: the node plans / executes only while *active*; deactivating stops it (the executor
  stops the running chunk and holds position, the planner stops sending chunks), safety inputs (e-stop) stay live;
* **cleanup**: back to *unconfigured*: everything ``configure`` created is destroyed;
* **shutdown**: from any state.

``autostart`` (a parameter of each managed node, default true, like nav2's lifecycle manager option): the node
configures and activates itself at start-up, so ``ros2 run`` and the sim/replay profiles behave as an unmanaged node
(a configure failure then ends the process with exit code 2 and the reason, as before). With ``autostart:=false`` the
node waits in *unconfigured* for the standard lifecycle services (``~/change_state``, ``~/get_state``, ...), driven by
``vidplan_ros.lifecycle_manager_node`` in a bring-up profile or by ``ros2 lifecycle set`` on the robot.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

__all__ = ["ManagedNode", "TransitionCallbackReturn"]

_KINDS = ("subscriptions", "publishers", "timers", "services", "clients", "waitables")


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclass supplies ``configure()`` (raise ``ValueError`` with the reason on failure),
    ``activate()``, ``deactivate()`` and ``release()`` (undo ``configure``'s non-ROS work: threads, sessions).

    Entities created by ``configure()`` (subscriptions, publishers, timers, services, clients, action clients) are
    recorded and destroyed on cleanup or a failed configure; entities made in the constructor (``/diagnostics``,
    its timer) live for the whole process.
    """

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.lifecycle_error = ""  # why the last transition failed ("" after a success)
        self.is_configured = False
        self.is_active = False
        self._made: dict[str, list] = {}

    # ------------------------------------------------------------------ subclass hooks
    def configure(self) -> None:
        """Load and build everything; ``ValueError`` (its message the reason) leaves the node unconfigured."""

    def activate(self) -> None:
        """Start planning / executing."""

    def deactivate(self) -> None:
        """Stop planning / executing; the arm holds."""

    def release(self) -> None:
        """Undo ``configure()``'s non-ROS work (stop threads, free models); ROS entities are destroyed after it."""

    # ------------------------------------------------------------------ state
    @property
    def lifecycle_state(self) -> str:
        """The state's label: unconfigured | inactive | active | finalized (or a transition state)."""
        return str(self._state_machine.current_state[1])

    def start(self, autostart: bool) -> None:
        """Call at the end of the constructor: with ``autostart`` configure and activate now, and raise
        ``ValueError`` with the reason when either fails (run_node then exits with code 2)."""
        if not autostart:
            self.get_logger().info("autostart is false: unconfigured, waiting for lifecycle transitions "
                                   f"(/{self.get_name()}/change_state)")
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(self.lifecycle_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ValueError(self.lifecycle_error or "activate failed")

    # ------------------------------------------------------------------ rclpy transition callbacks
    def _entities(self) -> dict[str, list]:
        return {k: list(getattr(self, k)) for k in _KINDS}

    def _destroy_made(self) -> None:
        made, self._made = self._made, {}
        for t in made.get("timers", []):
            self.destroy_timer(t)
        for s in made.get("subscriptions", []):
            self.destroy_subscription(s)
        for p in made.get("publishers", []):
            self.destroy_publisher(p)
        for s in made.get("services", []):
            self.destroy_service(s)
        for c in made.get("clients", []):
            self.destroy_client(c)
        for w in made.get("waitables", []):
            destroy = getattr(w, "destroy", None)  # rclpy's ActionClient/ActionServer remove themselves
            if callable(destroy):
                destroy()
            else:
                self.remove_waitable(w)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = {k: {id(e) for e in v} for k, v in self._entities().items()}
        try:
            self.configure()
        except ValueError as exc:
            ok = False
            self.lifecycle_error = f"configure failed: {exc}"
        except Exception as exc:  # an unexpected error is a failed configure too, never a dead node
            ok = False
            self.lifecycle_error = f"configure failed: {type(exc).__name__}: {exc}"
        else:
            ok = True
        self._made = {k: [e for e in v if id(e) not in before[k]] for k, v in self._entities().items()}
        if not ok:
            self.get_logger().error(self.lifecycle_error)
            try:
                self.release()
            finally:
                self._destroy_made()
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_error, self.is_configured = "", True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.is_active = True  # first: what activate() starts must see the node active
        try:
            self.activate()
        except ValueError as exc:
            self.is_active = False
            self.lifecycle_error = f"activate failed: {exc}"
            self.get_logger().error(self.lifecycle_error)
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_error = ""
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.is_active = False
        self.deactivate()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.is_configured = False
        try:
            self.release()
        finally:
            self._destroy_made()
        self.get_logger().info("cleaned up: unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.is_active:
            self.is_active = False
            self.deactivate()
        if self.is_configured:
            self.is_configured = False
            self.release()
        return TransitionCallbackReturn.SUCCESS
