"""Where a put stands, read each plan cycle (:attr:`~vidplan_core.planning.scoring.ScoreConfig.carry_height_m`).

A put ("put the red cube in the bowl": :func:`~vidplan_core.planning.goal.instruction_destination` names a
destination) goes through three phases, read from the current gripper command (the last history pose's, 0 open … 1
closed) and, where the caller measures it, the finger closure (:attr:`~vidplan_core.runtime.base.PlanningContext.
gripper_closure`):

``approach``  gripper open: the named object is scored and located; an open hand in its grasp zone pays
              (``grasp_radius_m``), except where a grasp of this episode already closed on nothing;
``carry``     gripper closed, fingers apart: the destination phrase is scored and located instead
              (:attr:`PutPhase.carry`), the centring lifts the hand and brings it over the destination;
``let go``    gripper closed, fingers together (``empty_grasp_closure``): it missed, or the object slipped out; the
              gripper should open, and the object is searched for near where the hand lost it.

Touch, push and free-form instructions name no destination: :meth:`PutPhase.update` leaves every field at rest.
No planner state lives here besides these few facts; the scoring terms are in :mod:`vidplan_core.planning.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidplan_core.planning.goal import instruction_destination
from vidplan_core.planning.scoring import ScoreConfig
from vidplan_core.runtime.base import PlanningContext

__all__ = ["PutPhase"]


@dataclass
class PutPhase:
    """A put's phase this cycle and what earlier cycles of the episode learned (see the module docstring).

    Attributes:
        put: the instruction is a put and its carry phase is on (this cycle).
        carry: the destination phrase while carrying ("the bowl"), else None (this cycle).
        let_go: the closed gripper holds nothing (this cycle).
        settle: the gripper closed no more than ``carry_settle_cycles`` cycles ago (this cycle).
        tcp: (3,) [m] the TCP this cycle.
        closed_cycles: plan cycles in a row that began with the gripper closed.
        lost_at: (3,) [m] at table height below where the hand let go of an emptied grasp, until the object's search
            has started there (:meth:`take_lost_at`).
        empty_grasps: (3,) [m] the TCPs at which a grasp of this episode closed on nothing.
        relook: since the last empty grasp, the TCP has not yet gone back up to 0.8 × ``grasp_clearance_m`` over
            the object plane (``relook_after_empty``; the approach goes there before it closes again).
    """

    put: bool = False
    carry: str | None = None
    let_go: bool = False
    settle: bool = False
    tcp: np.ndarray | None = None
    closed_cycles: int = 0
    lost_at: np.ndarray | None = None
    empty_grasps: list[np.ndarray] = field(default_factory=list)
    relook: bool = False

    def update(self, ctx: PlanningContext, sc: ScoreConfig, enabled: bool, scored_text: str | None) -> None:
        """Read this cycle's phase from ``ctx``. ``enabled``: the planner can run a carry phase ('table' fusion and
        camera geometry) and ``sc.carry_height_m`` > 0; ``scored_text``: the text the planner's target memory was
        kept for last cycle (the instruction, or the destination while carrying), None before the first cycle."""
        closed = float(ctx.current_pose[6]) >= 0.5
        self.closed_cycles = self.closed_cycles + 1 if closed else 0
        self.tcp = np.asarray(ctx.current_pose[:3], np.float64).copy()
        dest = instruction_destination(ctx.instruction) if enabled and sc.carry_height_m > 0 else None
        self.put = dest is not None
        empty = closed and ctx.gripper_closure is not None and float(ctx.gripper_closure) >= sc.empty_grasp_closure
        self.carry = dest if self.put and closed and not empty else None
        self.let_go = self.put and empty
        self.settle = self.closed_cycles <= sc.carry_settle_cycles
        if self.let_go:
            if not self.empty_grasps or np.linalg.norm(self.empty_grasps[-1] - self.tcp) > 1e-3:
                self.empty_grasps.append(self.tcp.copy())
            if scored_text is not None and scored_text != ctx.instruction:
                # the carry just ended with the fingers together: the object is where the hand lost it, below it
                self.lost_at = np.array([*self.tcp[:2], sc.table_height_m])
        if self.let_go and sc.relook_after_empty:
            self.relook = True
        elif self.relook and (self.carry is not None or not self.put
                              or self.tcp[2] >= sc.table_height_m + 0.8 * sc.grasp_clearance_m):
            self.relook = False  # up where the hand camera sees the object whole (or holding something after all)

    def take_lost_at(self) -> np.ndarray | None:
        """(3,) [m] where to start searching for the object after an emptied carry (once), else None."""
        p, self.lost_at = self.lost_at, None
        return p

    def grasp_allowed(self, radius_m: float) -> bool:
        """Whether the grasp zone applies at this cycle's TCP: approaching (not carrying, not letting go) and not
        within ``radius_m`` horizontally of a TCP where a grasp of this episode closed on nothing (closing there
        again is futile)."""
        if not self.put or self.carry is not None or self.let_go or self.tcp is None:
            return False
        return all(np.linalg.norm(self.tcp[:2] - p[:2]) > radius_m for p in self.empty_grasps)

    def reset(self) -> None:
        """Forget the episode (a new one, with the same instruction or not)."""
        self.__init__()
