"""A test's own rclpy node, spun in the background: the one implementation of the context / executor / spin-thread
set-up that the ROS integration tests share."""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor


class SpinningNode:
    """An rclpy node on a context of its own (a test's participant is never shared with another by accident), added
    to one executor that a daemon thread spins every ``period`` s from :meth:`start_spinning` until :meth:`close`.

    Subclasses (test harnesses) create their subscriptions, publishers and clients on ``self.node`` first and then
    call :meth:`start_spinning`. A callback that raises would end the thread, and every later check would then wait on
    messages that never come: the error is kept in ``spin_errors`` and spinning goes on.

    Args:
        name: node name.
        period: [s] ``spin_once`` timeout.
        start: start spinning at once (for a bare node that tests add their own entities to).
    """

    def __init__(self, name: str, period: float = 0.02, start: bool = False) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.spin_errors: list[str] = []
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        if start:
            self.start_spinning()

    def start_spinning(self) -> None:
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.ex.spin_once(timeout_sec=self._period)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.spin_errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.01)

    def close(self, join_timeout: float = 2.0) -> None:
        """Stop spinning (waiting up to ``join_timeout`` s: a loaded machine can hold one spin_once a while), destroy
        the node and shut its context down."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=join_timeout)
        try:
            self.node.destroy_node()
        finally:  # the participant must go even if the node did not: a live one stays in the graph of later tests
            rclpy.try_shutdown(context=self.ctx)

    def spin_report(self) -> str:
        """One line on the spin thread (alive, the last errors its callbacks raised), for assertion messages."""
        return (f"{self.node.get_name()} spin thread alive={self._thread.is_alive()}, "
                f"callback errors={self.spin_errors[-3:]}")

    def __enter__(self) -> SpinningNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
