"""The ``learned+privileged`` rung: the learned world model's predictions, scored by the privileged reward.

The privileged reward (:mod:`vidplan_sim.privileged`) needs a state; a learned world model predicts pixels. This
backend reads the state the prediction shows, with privileged help only where the *reading* needs it:

* it runs the bundle's backend (flow map rollout of every candidate), decodes each candidate's predicted frames;
* the target's colour is measured in the current real frame at the target's true pixel position (privileged: the
  simulator says where the target is now), then found in every predicted view as the colour-matched blob inside
  a search window around that position;
* each view's blob centroid is back-projected through the camera calibration onto the horizontal plane at the
  target's height. The exterior cameras are fixed; the wrist camera rides on the hand, and its pose is taken from
  the *candidate's own action* at that step (where the executor will put it). A model that ignores its actions
  shows the target still at the same wrist pixel while the commanded hand moves: the read-out target then moves
  with the hand and the candidate earns no progress — the failure this rung exists to expose;
* TCP and gripper come from the candidate's action (what the executor tracks), ``touched`` is the TCP within
  the target radius + 1.5 cm of the read-out target, and the privileged reward scores that state.

Views where the target is not found contribute nothing; with none, the target's current true position is used.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vidplan_core.kinematics import action_to_transform
from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput
from vidplan_core.spaces import VIEW_ORDER
from vidplan_sim.privileged import PrivilegedReward, PrivilegedState
from vidplan_sim.tasks import TaskState

__all__ = ["PredictedStateBackend"]

#: TCP → hand (panda_hand) offset along the hand's z axis [m] (Franka hand: TCP 0.1034 m ahead of the flange).
TCP_OFFSET_M = 0.1034


class PredictedStateBackend:
    """:class:`~vidplan_core.runtime.base.Backend` for ``learned+privileged`` (see the module docstring).

    Args:
        learned: the bundle's backend (torch or onnxruntime; needs ``predict_latents`` and ``decode``).
        env: the :class:`vidplan_sim.env.SimEnv` of the episode (read only: the target's current state).
        reward: the privileged reward.
        window: half-size of the search window around the target's current pixel, as a fraction of the view.
        colour_tol: largest RGB distance (0..1 per channel) of a pixel counted as the target.
    """

    name = "learned+privileged"

    def __init__(self, learned: Any, env: Any, reward: PrivilegedReward, window: float = 0.3,
                 colour_tol: float = 0.18):
        self.learned, self.env, self.reward = learned, env, reward
        self.window, self.colour_tol = float(window), float(colour_tol)
        self.horizon, self.num_history = learned.horizon, learned.num_history
        self.normalizer = learned.normalizer
        self._state: TaskState | None = None
        self._ref: list[tuple[np.ndarray, tuple[float, float]] | None] = []

    # ------------------------------------------------------------------ geometry
    def _camera_pose(self, view: str, tcp_action: np.ndarray | None) -> np.ndarray:
        cal = self.env.calibration.cameras[view]
        if view != "wrist":
            return cal.transform()
        T_tcp = action_to_transform(tcp_action) if tcp_action is not None else self.env.ee_pose()
        T_hand = T_tcp.copy()
        T_hand[:3, 3] -= T_tcp[:3, 2] * TCP_OFFSET_M
        return T_hand @ cal.transform()

    def _project(self, view: str, p: np.ndarray, hw: tuple[int, int]) -> tuple[float, float] | None:
        cal = self.env.calibration.cameras[view].scaled(hw[1], hw[0])
        T = self._camera_pose(view, None)
        pc = np.linalg.inv(T) @ np.append(p, 1.0)
        if pc[2] <= 1e-3:
            return None
        u, v = cal.fx * pc[0] / pc[2] + cal.cx, cal.fy * pc[1] / pc[2] + cal.cy
        return (u, v) if 0 <= u < hw[1] and 0 <= v < hw[0] else None

    def _unproject(self, view: str, uv: tuple[float, float], hw: tuple[int, int], z: float,
                   tcp_action: np.ndarray | None) -> np.ndarray | None:
        cal = self.env.calibration.cameras[view].scaled(hw[1], hw[0])
        T = self._camera_pose(view, tcp_action)
        ray = T[:3, :3] @ np.array([(uv[0] - cal.cx) / cal.fx, (uv[1] - cal.cy) / cal.fy, 1.0])
        if abs(ray[2]) < 1e-6:
            return None
        s = (z - T[2, 3]) / ray[2]
        return T[:3, 3] + s * ray if s > 0 else None

    def _blob(self, img: np.ndarray, ref: tuple[np.ndarray, tuple[float, float]]) -> tuple[float, float] | None:
        """Centroid (u, v) [px] of the pixels within ``colour_tol`` of the reference colour near its pixel."""
        colour, (u0, v0) = ref
        h, w = img.shape[:2]
        rw, rh = self.window * w, self.window * h
        x0, x1 = int(max(0, u0 - rw)), int(min(w, u0 + rw + 1))
        y0, y1 = int(max(0, v0 - rh)), int(min(h, v0 + rh + 1))
        crop = img[y0:y1, x0:x1]
        mask = np.linalg.norm(crop - colour, axis=-1) < self.colour_tol
        if mask.sum() < 2:
            return None
        ys, xs = np.nonzero(mask)
        return float(xs.mean() + x0), float(ys.mean() + y0)

    # ------------------------------------------------------------------ Backend protocol
    def set_context(self, ctx: PlanningContext) -> float:
        t0 = time.perf_counter()
        self.learned.set_context(ctx)
        self._state = self.env.task_state()
        frames = np.asarray(ctx.history_frames[-1], np.float32)  # (3 views, 3, h, w) the current real frames
        frames = frames / 255.0 if ctx.history_frames.dtype == np.uint8 else frames
        self._ref = []
        for vi, view in enumerate(VIEW_ORDER):
            img = frames[vi].transpose(1, 2, 0)
            uv = self._project(view, np.asarray(self._state.target_pos, float), img.shape[:2])
            if uv is None:
                self._ref.append(None)
                continue
            u, v = round(uv[0]), round(uv[1])
            patch = img[max(0, v - 1):v + 2, max(0, u - 1):u + 2].reshape(-1, 3)
            self._ref.append((patch.mean(0), uv))
        return time.perf_counter() - t0

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        t0 = time.perf_counter()
        latents = self.learned.predict_latents(actions)  # the world model only: the learned scoring is not needed
        t_roll = time.perf_counter() - t0
        t0 = time.perf_counter()
        st = self._state
        n, h = np.asarray(actions).shape[:2]
        progress = np.zeros((n, h), np.float32)
        z_plane = float(st.target_start[2])
        for i in range(n):
            frames = np.asarray(self.learned.decode(latents[i]))  # (H, 3 views, 3, h, w) in [0, 1]
            for j in range(h):
                a = np.asarray(actions[i, j], float)
                est = []
                for vi, view in enumerate(VIEW_ORDER):
                    if self._ref[vi] is None:
                        continue
                    img = frames[j, vi].transpose(1, 2, 0)
                    uv = self._blob(img, self._ref[vi])
                    if uv is None:
                        continue
                    p = self._unproject(view, uv, img.shape[:2], z_plane, a if view == "wrist" else None)
                    if p is not None and np.isfinite(p).all():
                        est.append(p)
                target = np.mean(est, axis=0) if est else np.asarray(st.target_pos, float)
                tcp = a[:3]
                touched = bool(st.touched or np.linalg.norm(tcp - target) < st.target_radius + 0.015)
                ts = TaskState(target_pos=target, target_start=st.target_start, target_radius=st.target_radius,
                               bowl_pos=st.bowl_pos, bowl_radius=st.bowl_radius, bowl_height=st.bowl_height,
                               touched=touched, held=False, push_distance=st.push_distance)
                progress[i, j] = self.reward(self.env.task, PrivilegedState(tcp=tcp, gripper=float(a[6]), task=ts))
        z = np.zeros((n, h), np.float32)
        timings = {"rollout": t_roll, "semantic": time.perf_counter() - t0}
        return RolloutOutput(h_bar=z, uq_map=np.zeros((n, h, 1, 1), np.float32), value=z, value_entropy=z,
                             semantic_score=progress, semantic_map=np.zeros((n, h, 1, 1), np.float32),
                             latents=latents, timings=timings)

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise BackendError("learned+privileged has no gradients (the reward is read from decoded pixels): "
                           "plan with refine_iters 0")
