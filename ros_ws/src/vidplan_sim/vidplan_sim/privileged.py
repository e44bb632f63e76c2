"""Privileged reward: task progress read from the simulator's state (a diagnostic of the oracle ladder, never the
product's reward).

The closed-loop ladder (``vidplan eval sim``) swaps this in for the learned hierarchical reward to ask "would the
planner succeed if it knew exactly how good a predicted future is?". It scores one predicted instant from what the
simulator knows: the TCP position, the gripper command, the target object's position (now and at the episode
start), whether the robot touched / holds it, and the bowl. Higher is better; units are metres of progress, so the
scores of different candidates and frames are comparable.

Per task kind (:class:`vidplan_sim.tasks.Task`):

``touch``  ``−‖tcp − target‖`` (m), + 1 once the target was touched. Greedy descent onto the object.
``push``   ``4·disp − approach(pre) − 0.03·(1 − gripper)`` (a closed hand is a narrow pusher): ``disp`` is the
           target's displacement along the instructed ±y direction since the start (m, negative when it moved the
           wrong way); ``pre`` is the pre-push point next to the target on the side opposite the push direction
           (``target − sign·(radius + 4 cm)·ŷ``), recomputed from the target's current position so that it travels
           with a pushed object. ``approach(p)`` is two-phase: far from ``p``
           (horizontally more than ``capture_radius``), the distance to a waypoint ``clear_height`` above ``p`` (plus
           that height); within it, the distance to ``p`` — so the TCP passes over the target instead of knocking
           it the wrong way, and descends only behind it.
``put``    before a grasp: ``−approach(target) ± 0.05·gripper``: closing is a bonus once the TCP is within
           1.5 cm of the target's centre and a cost before; an open hand is never charged, so the approach
           is monotone in distance; once held (or lifted > 1 cm):
           ``1 + lift`` minus the target's horizontal distance to the bowl ``± 0.05·(1 − gripper)``: opening is a
           bonus over the bowl (within half its radius) and a cost elsewhere, a closed hand is never charged;
           success (the object released in the bowl) scores 4.05 in any phase, above everything else.

The phases and the weights were chosen once, by hand, for the greedy argmax over 1-s basis proposals; they are
documented here so that a ladder result can be read against them. No MuJoCo import (pure numpy on a state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidplan_sim.tasks import Task, TaskState, evaluate_task

__all__ = ["PrivilegedReward", "PrivilegedState"]


@dataclass
class PrivilegedState:
    """One instant as the privileged reward sees it (base frame, metres).

    Attributes:
        tcp: (3,) TCP position.
        gripper: gripper command 0 open .. 1 closed.
        task: the simulator's task predicate state (target now and at the start, touched, held, bowl).
    """

    tcp: np.ndarray
    gripper: float
    task: TaskState


@dataclass
class PrivilegedReward:
    """Task progress from the simulator state (see the module docstring).

    Attributes:
        clear_height: [m] TCP height above the table to travel at while far from the approach point.
        capture_radius: [m] horizontal distance to the approach point below which the TCP descends onto it.
        min_height: [m] lowest TCP height asked for (the executor's workspace floor is 2 cm).
        push_gain: weight of the push displacement against the approach distance.
        grasp_radius: [m] put, before a grasp: TCP-to-target distance within which closing the hand is rewarded.
        grip_weight: [m of progress] put: before a grasp, the bonus for a closed hand within ``grasp_radius`` and
            its cost outside it; while carrying, the bonus for an open hand over the bowl and its cost elsewhere.
    """

    clear_height: float = 0.12
    capture_radius: float = 0.04
    min_height: float = 0.03
    push_gain: float = 4.0
    grasp_radius: float = 0.015
    grip_weight: float = 0.05

    def approach(self, tcp: np.ndarray, point: np.ndarray) -> float:
        """Two-phase distance [m] of the TCP to ``point``: while the TCP is more than ``capture_radius`` away
        horizontally, the distance to the waypoint ``clear_height`` above ``point`` plus the height of that waypoint
        over ``point``; within it, the straight distance to ``point``. Entering the capture radius at the waypoint
        always lowers the cost, so the greedy planner travels high and descends only over its goal."""
        p = np.asarray(point, float).copy()
        p[2] = max(float(p[2]), self.min_height)
        d_xy = float(np.linalg.norm(tcp[:2] - p[:2]))
        if d_xy <= self.capture_radius:
            return float(np.linalg.norm(tcp - p))
        z_way = max(self.clear_height, float(p[2]))
        return float(np.hypot(d_xy, float(tcp[2]) - z_way)) + (z_way - float(p[2]))

    def __call__(self, task: Task, s: PrivilegedState) -> float:
        """Progress of state ``s`` for ``task`` (higher is better)."""
        ts = s.task
        tcp = np.asarray(s.tcp, float)
        p = np.asarray(ts.target_pos, float)
        if task.kind == "touch":
            return -float(np.linalg.norm(tcp - p)) + (1.0 if ts.touched else 0.0)
        if task.kind == "push":
            sign = task.push_sign
            disp = float((p[1] - ts.target_start[1]) * sign)
            pre = p - np.array([0.0, sign * (ts.target_radius + 0.04), 0.0])
            # a closed hand is a narrow pusher: open fingers straddle or clip the target
            return self.push_gain * disp - self.approach(tcp, pre) - 0.03 * (1.0 - s.gripper)
        # put
        success, _ = evaluate_task(task, ts)
        if success:
            # above any other put score (≤ 1 + 0.1 + grip_weight), in every phase: a released object that came to
            # rest in the bowl is neither held nor lifted, and once fell to the pre-grasp branch, scored there as a TCP
            # 12 cm from the object; opening over the bowl then lost to holding on (closed_loop_put_release traces)
            return 4.0 + self.grip_weight
        lifted = p[2] > ts.target_start[2] + 0.01
        if not (ts.held or lifted):
            # Closing is rewarded inside the grasp ball and costs outside it; an open hand is never charged. It once
            # was (0.05 for an open hand inside the ball): the greedy planner, whose proposals move or close but never
            # both, then parked 2-3 cm beside the object, since entering the ball open cost more than it gained
            # (closed_loop_put_held traces).
            d3 = float(np.linalg.norm(tcp - p))
            grip = self.grip_weight * s.gripper * (1.0 if d3 < self.grasp_radius else -1.0)
            return -self.approach(tcp, p) + grip
        bowl = np.asarray(ts.bowl_pos, float)
        d_bowl = float(np.linalg.norm(p[:2] - bowl[:2]))
        lift = min(float(p[2] - ts.target_start[2]), 0.1)
        # Opening is rewarded over the bowl and costs elsewhere; a closed hand is never charged (the same trap as
        # before the grasp: charged over the bowl, the carry stopped 3.9 cm from its centre, closed_loop_put_grasp)
        over = d_bowl < 0.5 * ts.bowl_radius
        release = self.grip_weight * (1.0 - s.gripper) * (1.0 if over else -1.0)
        return 1.0 + lift - d_bowl + release
