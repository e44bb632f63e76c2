"""VidPlan as an openpi policy: a DROID lab's evaluation client (``openpi_client``) runs the planner without ROS.

``vidplan serve openpi`` puts :class:`VidPlanOpenPIPolicy` behind an openpi websocket policy server
(``openpi_server.WebsocketPolicyServer``, the protocol of openpi's ``serve_policy.py``). Each request is one
observation with DROID's keys (openpi ``examples/droid``):

==========================================  ======================================================================
``observation/exterior_image_1_left``       (H, W, 3) uint8 → the left view (``exterior_image_2_left``: right;
``observation/exterior_image_2_left``       ``wrist_image_left``: wrist). A square image is taken to be
``observation/wrist_image_left``            ``image_tools.resize_with_pad`` output: its padding is cut off again
                                            before the planner's own crop/resize (spaces.ViewPreparation)
``observation/joint_position``              (7,) [rad]; the EE pose comes from forward kinematics
``observation/gripper_position``            (1,) 0 open .. 1 closed
``prompt``                                  the instruction
==========================================  ======================================================================

The answer is DROID's action space: ``actions`` (N, 8) = 7 joint velocities [rad/s] + gripper position at
``control_rate_hz`` (15 Hz), from the planned EE chunk through the executor's own conversion
(:func:`vidplan_core.execution.plan_execution`: safety filter, IK, joint limits), differentiated at the control
rate; plus ``vidplan`` (status, reason, plan id, chosen candidate) for the client's logs. The observation history
(T frames at the model rate) is kept across requests by receipt time, as the planner node keeps it by stamp: a
client that queries once per chunk gives the world model sparser history than the robot's cameras would. A new
prompt or a pause of ``max_gap_s`` starts a new history (the protocol has no episode reset). Until T frames have
arrived, and whenever planning fails, the answer holds the arm (zero velocities).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vidplan_core.calibration import load_calibration
from vidplan_core.execution import Rejection, plan_execution
from vidplan_core.observation import ObservationHistory
from vidplan_core.spaces import CONTROL_RATE_HZ, MODEL_RATE_HZ, VIEW_ORDER

__all__ = ["DROID_IMAGE_KEYS", "VidPlanOpenPIPolicy", "unpad"]

DROID_IMAGE_KEYS = {"left": "observation/exterior_image_1_left", "right": "observation/exterior_image_2_left",
                    "wrist": "observation/wrist_image_left"}


def unpad(image: np.ndarray, aspect: float) -> np.ndarray:
    """Undo ``openpi_client.image_tools.resize_with_pad`` of a W/H = ``aspect`` image: the central band of a
    square (H, W, 3) image; any other image is returned as it is."""
    h, w = image.shape[:2]
    if h != w or abs(aspect - 1.0) < 1e-3:
        return image
    if aspect > 1:  # wide: black bars above and below
        band = max(1, round(w / aspect))
        top = (h - band) // 2
        return image[top:top + band]
    band = max(1, round(h * aspect))
    left = (w - band) // 2
    return image[:, left:left + band]


class VidPlanOpenPIPolicy:
    """openpi ``BasePolicy`` around a :class:`~vidplan_core.planning.session.PlanningSession`.

    Args:
        session: the planning session (backend, kinematics, planner config).
        views: the model's :class:`~vidplan_core.spaces.ViewPreparation` (crop + resize of each view).
        limits: the executor's :class:`~vidplan_core.safety.SafetyLimits` (the conversion to joint motion).
        control_rate_hz: rate of the returned actions (DROID: 15 Hz).
        seed: base noise seed (request i plans with seed + i).
        clock: receipt time source [s] (monotonic by default).
        aspects: ``{view: width / height}`` of the cameras (to cut resize_with_pad's padding off square images);
            default: the model's recorded camera geometry, else the shipped calibration's.
        max_gap_s: a request more than this after the previous one starts a new history [s] (as does a new
            prompt): an episode boundary, since the protocol has no reset message.
    """

    def __init__(self, session, views, limits, control_rate_hz: float = CONTROL_RATE_HZ, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, aspects: dict[str, float] | None = None,
                 max_gap_s: float = 60.0):

        self.session, self.views, self.limits = session, views, limits
        cams = load_calibration().cameras
        self.aspects = {v: (aspects or {}).get(v) or views.aspects.get(v) or cams[v].width / cams[v].height
                        for v in VIEW_ORDER}
        self.kin = session.kin
        self.rate = float(control_rate_hz)
        self.seed = int(seed)
        self.clock = clock
        self.history = ObservationHistory(int(session.backend.num_history), model_rate_hz=MODEL_RATE_HZ)
        self.requests = 0
        self.plans = 0
        self.max_gap_s = float(max_gap_s)
        self._prompt = ""

    @property
    def metadata(self) -> dict[str, Any]:
        return {"policy": "vidplan", "action_space": "joint_velocity", "control_rate_hz": self.rate,
                "horizon": int(self.session.horizon), "model_rate_hz": MODEL_RATE_HZ,
                "image_keys": DROID_IMAGE_KEYS}

    def reset(self) -> None:
        """A new episode: forget the observation history."""
        self.history.clear()

    def _observation(self, obs: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        missing = [k for k in (*DROID_IMAGE_KEYS.values(), "observation/joint_position",
                               "observation/gripper_position") if k not in obs]
        if missing:
            raise ValueError(f"observation lacks {missing} (DROID keys; got {sorted(obs)})")
        images = []
        for view in VIEW_ORDER:
            img = np.asarray(obs[DROID_IMAGE_KEYS[view]])
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"{DROID_IMAGE_KEYS[view]} must be an (H, W, 3) uint8 image, got {img.shape} "
                                 f"{img.dtype}")
            images.append(unpad(img, self.aspects[view]))
        q = np.asarray(obs["observation/joint_position"], np.float64).reshape(-1)
        g = float(np.asarray(obs["observation/gripper_position"], np.float64).reshape(-1)[0])
        if q.shape != (7,) or not np.isfinite(q).all() or not np.isfinite(g):
            raise ValueError(f"observation/joint_position must be 7 finite joint angles [rad] and gripper_position "
                             f"finite, got {q.tolist()}, {g}")
        return self.views.prepare(images), q, np.r_[self.kin.fk_action(q), np.clip(g, 0.0, 1.0)], \
            str(obs.get("prompt", ""))

    def _hold(self, g: float, status: str, reason: str) -> dict[str, Any]:
        n = int(self.session.horizon * round(self.rate / MODEL_RATE_HZ))
        acts = np.zeros((n, 8))
        acts[:, 7] = g
        return {"actions": acts, "vidplan": {"status": status, "reason": reason, "plan_id": self.plans}}

    def infer(self, obs: dict) -> dict[str, Any]:
        """One DROID observation → ``{"actions": (N, 8), "vidplan": {...}}`` (see the module docstring).

        Raises:
            ValueError: an observation without DROID's keys or with malformed values (named).
        """
        self.requests += 1
        frames, q, pose, prompt = self._observation(obs)
        now = self.clock()
        if self.history.age(now) > self.max_gap_s or prompt != self._prompt:
            self.history.clear()  # a new episode (new prompt, or a long pause): old frames are another scene's
        self._prompt = prompt
        self.history.push(now, frames, pose)
        if not self.history.ready():
            return self._hold(pose[6], "waiting", f"collecting history ({len(self.history._ring)}/"
                                                  f"{self.history.length} frames)")
        if not prompt:
            return self._hold(pose[6], "idle", "no prompt")
        frames_w, poses_w, _ = self.history.window()
        self.plans += 1
        result, _props = self.session.plan(frames_w, poses_w, q, prompt, seed=self.seed + self.plans)
        if result.hold:
            return self._hold(pose[6], "hold", result.reason)
        plan = plan_execution(result.chunk, q, self.kin, self.limits, "clip")
        if isinstance(plan, Rejection):
            return self._hold(pose[6], "rejected", plan.reason)
        # joint targets at the chunk's steps → piecewise-linear joint motion sampled at the control rate
        t = np.r_[0.0, plan.times]
        qs = np.vstack([q, plan.positions])
        grid = np.arange(0.0, t[-1] + 1e-9, 1.0 / self.rate)
        q_grid = np.stack([np.interp(grid, t, qs[:, j]) for j in range(7)], axis=1)
        qdot = np.diff(q_grid, axis=0) * self.rate
        grip = np.interp(grid[1:], plan.times, plan.gripper)
        acts = np.concatenate([qdot, grip[:, None]], axis=1)
        return {"actions": acts, "vidplan": {"status": result.status, "reason": result.reason,
                                             "plan_id": self.plans, "chosen_index": int(result.chosen_index)}}
