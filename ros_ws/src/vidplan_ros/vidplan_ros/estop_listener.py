"""EstopListener: a node's e-stop subscriptions on a DDS participant of their own.

Why a participant of its own: Fast DDS delivers every topic a participant subscribes to through that participant's
receive ports and threads, in arrival order. A flood on another topic the node subscribes to (a runaway planner
publishing chunks as fast as it can) queues an e-stop behind thousands of samples: measured on a loaded 2-core CI
machine, the executor latched the e-stop 3.4 s after it was published, having executed 36 more chunks meanwhile.
A second rclpy ``Context`` is a second participant with its own ports, threads and executor, so only traffic on the
e-stop topic can delay an e-stop. The cost is one more participant per process (discovery traffic, a few MB).

Three subscriptions, so an e-stop is honoured from a publisher of any QoS: best-effort volatile matches every
publisher (no e-stop is ever lost to a QoS mismatch), reliable volatile gives a reliable publisher (rclpy's default)
reliable delivery, reliable transient-local also receives an e-stop latched before this node started. A message
delivered by more than one of them is handed on once (by publisher GID and sequence number): a late duplicate after
a reset must not latch again.

Priority: the listener's thread sets itself to nice −10 before it creates the participant, so Fast DDS's receive
threads for the e-stop inherit it and a busy CPU (a flood being processed, training on the same cores) schedules the
e-stop path first. That needs the privilege to raise priority (root or CAP_SYS_NICE, as a real-time robot setup has);
without it the listener runs at normal priority and logs so once.

The listener node is named ``<owner>_estop`` in the owner's namespace; the topic is resolved with the owner's remap
rules (``-r /vidplan/estop:=...`` applies). The callback runs on the listener's own thread: the owner must guard
its state with a lock.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from std_msgs.msg import Bool

from vidplan_ros.compat import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks

ESTOP_ANY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
ESTOP_RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
ESTOP_LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)
ESTOP_NICE = -10  # the listener thread's nice value, when the process may raise its priority (root / CAP_SYS_NICE)


class EstopListener:
    """Subscribe to ``topic`` (std_msgs/Bool) from ``owner``'s process on a participant of its own.

    ``on_estop(msg)`` gets each distinct message once, on the listener's thread. ``on_incompatible_qos(topic, info)``
    gets the best-effort subscription's incompatible-QoS events (a publisher none of the three subscriptions matches
    cannot exist, but one of another message type can; the owner's graph check reports that).
    """

    def __init__(self, owner: Node, topic: str, on_estop: Callable[[Bool], None],
                 on_incompatible_qos: Callable[[str, QoSRequestedIncompatibleQoSInfo], None]) -> None:
        self.topic = owner.resolve_topic_name(topic)
        self.node_name, self.namespace = f"{owner.get_name()}_estop", owner.get_namespace()
        self._owner_logger = owner.get_logger()
        self._on_estop = on_estop
        self._on_incompatible_qos = on_incompatible_qos
        self._seen: deque[tuple] = deque(maxlen=64)  # (publisher GID, sequence number) of recent messages
        self._seen_lock = threading.Lock()
        self.context = Context()
        self.priority_note = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # The participant is created on the listener's own thread after that thread has raised its priority: Fast
        # DDS's receive threads inherit it, so on a loaded CPU the e-stop path is scheduled before a chunk flood
        # (CI, 2 busy cores: the latch came 0.55 s after publication at normal priority)
        self._thread = threading.Thread(target=self._run, name="estop_listener", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0):
            raise RuntimeError(f"the e-stop listener on {self.topic} did not start within 30 s")
        if self._error is not None:
            raise self._error
        if self.priority_note:
            self._owner_logger.info(self.priority_note)

    def _raise_priority(self) -> None:
        """Nice −10 for this thread (and the DDS threads created from it); without the privilege (CAP_SYS_NICE) the
        listener runs at normal priority and says so once."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ESTOP_NICE)
        except (OSError, AttributeError) as exc:  # EPERM/EACCES without the privilege; not Linux
            self.priority_note = (f"e-stop listener at normal priority (could not set nice {ESTOP_NICE}: {exc}); "
                                  "on a loaded CPU an e-stop may wait behind other work")

    def _start(self) -> None:
        # the owner's command line is not passed on: its remaps and parameters are the owner's; ROS_DOMAIN_ID and the
        # discovery range come from the environment as for the owner. No signal handlers (not the default context).
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(self.node_name, namespace=self.namespace, context=self.context,
                                      use_global_arguments=False, start_parameter_services=False)
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info: self._on_incompatible_qos(self.topic, info))
        self.node.create_subscription(Bool, self.topic, self._on_msg, ESTOP_ANY_QOS, event_callbacks=events)
        for qos, lacks in ((ESTOP_RELIABLE_QOS, "reliability"),
                           (ESTOP_LATCHED_QOS, "reliability or transient-local durability")):
            # replaces rclpy's warning, which would read as if e-stops from that publisher were lost
            events = SubscriptionEventCallbacks(incompatible_qos=lambda info, lacks=lacks: self._owner_logger.info(
                f"a publisher on {self.topic} offers no {lacks} "
                f"({qos_policy_name_from_kind(info.last_policy_kind)}): its e-stops are still received "
                "(best-effort subscription)", throttle_duration_sec=10.0))
            self.node.create_subscription(Bool, self.topic, self._on_msg, qos, event_callbacks=events)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)

    def _run(self) -> None:
        self._raise_priority()
        try:
            self._start()
        except BaseException as exc:  # handed to the constructor, which raises it in the owner's thread
            self._error = exc
            self.context.try_shutdown()
            return
        finally:
            self._ready.set()
        try:
            self._executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass

    def _on_msg(self, msg: Bool, info: dict) -> None:
        info = info or {}
        gid = info.get("publisher_gid")
        seq = info.get("publication_sequence_number")
        key = (bytes(gid["data"]) if gid else None, seq if seq is not None else info.get("source_timestamp"))
        if key[1] is not None:
            with self._seen_lock:
                if key in self._seen:
                    return
                self._seen.append(key)
        self._on_estop(msg)

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the listener's thread and leave its participant (idempotent)."""
        if self.context.ok() and self._error is None:
            self._executor.shutdown(timeout_sec=timeout_s)
            self.node.destroy_node()
            self.context.try_shutdown()
        self._thread.join(timeout_s)
