"""Spatial action conditioning: 7-D EE actions rendered into image-space channels through the camera calibration.

A world model that receives an action only as one cross-attention token per frame must *learn* where in each view
that pose lies (the softmax over one token is 1, so the token acts as the same bias at every pixel). Here the
geometry is given: for every frame and view the renderer draws, on the latent grid of that view,

==============  =========================================================================================
channel         content
==============  =========================================================================================
``tcp``         a Gaussian at the projected TCP (``panda_hand_tcp``, the point every action commands)
``finger_a``    a Gaussian at the projected left fingertip (TCP ± half the opening along the hand's y axis)
``finger_b``    a Gaussian at the projected right fingertip — with ``finger_a`` this fixes yaw and the opening
``height``      the ``tcp`` Gaussian × the TCP height, (z − z_ref)/z_scale: the depth along the viewing ray
``gripper``     the ``tcp`` Gaussian × (1 − 2·g): +1 open, −1 closed
==============  =========================================================================================

Exterior cameras are fixed in the base frame. The wrist camera moves with the hand, so projecting a pose into *its
own* frame would always give the same pixel: every frame's points are projected into the wrist camera *at the
reference frame* (the current observation, the last history frame) — the map shows where the gripper goes as seen
from where it is now.

Everything is differentiable in the actions (plain tensor ops: Euler → rotation, pinhole projection, Gaussians), so
gradient refinement back-propagates through the maps, and it exports to ONNX. Pixel convention: continuous image
coordinates with pixel ``j`` covering ``[j, j + 1)`` (its centre at ``j + 0.5``), as MuJoCo renders with a
centred principal point ``c = W / 2``; intrinsics are scaled from the calibration's resolution to the latent grid.

Shapes: actions (B, F, 7) raw (m, rad Euler xyz extrinsic, gripper 0 open .. 1 closed, robot base frame); output
(B, F, K, V·h, w) with the V views stacked vertically as the latents are (:data:`vidplan_core.spaces.VIEW_ORDER`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vidplan_core.calibration import WORKSPACE_BOX, load_calibration, workspace_crop_boxes
from vidplan_core.spaces import VIEW_ORDER

__all__ = ["ACTION_MAP_CHANNELS", "ActionMapRenderer", "action_map_config", "check_view_geometry",
           "euler_xyz_to_matrix", "normalised_view_geometry", "resolve_action_map_spec"]

ACTION_MAP_CHANNELS = ("tcp", "finger_a", "finger_b", "height", "gripper")

#: TCP offset along the hand's z axis [m] (franka_ros ``panda_hand_tcp``; the hand and TCP frames share axes).
TCP_OFFSET_M = 0.1034
#: Franka Hand full opening [m] (two fingers of 0.04 m stroke each).
FINGER_OPEN_M = 0.08


def euler_xyz_to_matrix(euler: torch.Tensor) -> torch.Tensor:
    """(..., 3) Euler angles [rad], scipy ``"xyz"`` (extrinsic) → (..., 3, 3) rotation matrices R = Rz·Ry·Rx."""
    rx, ry, rz = euler.unbind(-1)
    cx, sx, cy, sy, cz, sz = rx.cos(), rx.sin(), ry.cos(), ry.sin(), rz.cos(), rz.sin()
    rows = [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
            sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
            -sy, cy * sx, cy * cx]
    return torch.stack(rows, -1).reshape(*euler.shape[:-1], 3, 3)


def action_map_config(calibration: Any, grid_hw: tuple[int, int], sigma_px: float = 1.0,
                      crop: dict[str, list[float]] | None = None, z_ref: float = 0.35, z_scale: float = 0.35,
                      ) -> dict[str, Any]:
    """A JSON-serialisable renderer configuration (stored in the world model's config) from a calibration.

    Args:
        calibration: :class:`vidplan_core.calibration.RigCalibration` (views in :data:`VIEW_ORDER`).
        grid_hw: (h, w) latent grid of ONE view [latent px].
        sigma_px: Gaussian standard deviation [latent px].
        crop: optional per-view crop box ``{view: [x0, y0, x1, y1]}`` in the calibration's pixels: the view is cut
            to that box before it is resized to the grid (the workspace crop), so the intrinsics follow it.
        z_ref, z_scale: the ``height`` channel is (z − z_ref)/z_scale [m → about −1..1 over the workspace].
    Returns:
        ``{"views": [{"name", "K" (3×3 at grid resolution), "T_parent_cam" (4×4), "parent": "base"|"hand",
        "crop": [u0, v0, u1, v1] in [0, 1] or None, "image_wh": calibrated [width, height] px}], "grid_hw",
        "sigma_px", "z_ref", "z_scale", "tcp_offset_m", "finger_open_m"}``. ``crop`` and ``image_wh`` are what
        :class:`vidplan_core.spaces.ViewPreparation` cuts every camera image with, here and at run time.
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    views = []
    for name in VIEW_ORDER:
        cam = calibration.cameras[name]
        box = (crop or {}).get(name)
        x0, y0, x1, y1 = box if box is not None else [0.0, 0.0, float(cam.width), float(cam.height)]
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"action maps: crop box of view {name!r} must have x1 > x0 and y1 > y0, got "
                             f"{[x0, y0, x1, y1]}")
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        K = [[cam.fx * sx, 0.0, (cam.cx - x0) * sx], [0.0, cam.fy * sy, (cam.cy - y0) * sy], [0.0, 0.0, 1.0]]
        parent = "hand" if cam.parent_frame.endswith("_hand") else "base"
        norm = (None if box is None else
                [float(x0) / cam.width, float(y0) / cam.height, float(x1) / cam.width, float(y1) / cam.height])
        views.append({"name": name, "K": K, "T_parent_cam": np.asarray(cam.transform()).tolist(), "parent": parent,
                      "crop": norm, "image_wh": [int(cam.width), int(cam.height)]})
    return {"views": views, "grid_hw": [h, w], "sigma_px": float(sigma_px), "z_ref": float(z_ref),
            "z_scale": float(z_scale), "tcp_offset_m": TCP_OFFSET_M, "finger_open_m": FINGER_OPEN_M}


def normalised_view_geometry(action_maps: dict[str, Any] | None = None) -> dict[str, Any]:
    """The camera geometry of a model's views with a 1×1 grid (intrinsics in normalised image coordinates [0, 1],
    crop included): a world model's resolved ``action_maps`` configuration rescaled, or — for a model without maps —
    the default calibration's whole views. What the planner projects the TCP with (gripper-referenced centring)."""
    import copy

    if action_maps and "views" in action_maps:
        g = copy.deepcopy(dict(action_maps))
        h, w = g["grid_hw"]
        for v in g["views"]:
            v["K"] = [[k / w for k in v["K"][0]], [k / h for k in v["K"][1]], list(v["K"][2])]
        g["grid_hw"] = [1, 1]
        return g

    return action_map_config(load_calibration(), (1, 1))


def check_view_geometry(model_geometry: dict[str, Any], calibration: Any, model_name: str = "the model",
                        calibration_name: str = "the calibration", k_tol: float = 0.01, t_tol_m: float = 0.01,
                        r_tol_rad: float = 0.02) -> None:
    """Refuse a model whose cameras are not these cameras: compare the view geometry a model recorded (its
    :func:`normalised_view_geometry`, workspace crops included) with ``calibration`` seen through the same crops.

    Args:
        model_geometry: the model's normalised view geometry (a backend's ``view_geometry``).
        calibration: the :class:`~vidplan_core.calibration.RigCalibration` of the cameras the planner runs on.
        model_name, calibration_name: how the error names the two (e.g. the model directory, the YAML path).
        k_tol: tolerance on normalised intrinsics (fractions of the image: 0.01 = 1 %).
        t_tol_m, r_tol_rad: tolerance on each camera's pose in its parent frame [m], [rad].
    Raises:
        ValueError: naming every view that differs, with the model's and the calibration's values.
    """
    from scipy.spatial.transform import Rotation

    views = {v["name"]: v for v in model_geometry.get("views", [])}
    crop = {}
    for name, v in views.items():
        if v.get("crop") is not None and name in calibration.cameras:
            cam = calibration.cameras[name]
            u0, v0, u1, v1 = v["crop"]
            crop[name] = [u0 * cam.width, v0 * cam.height, u1 * cam.width, v1 * cam.height]
    ours = {v["name"]: v for v in normalised_view_geometry(action_map_config(calibration, (1, 1), crop=crop))["views"]}
    problems = []
    for name in VIEW_ORDER:
        if name not in views:
            continue
        m, c = views[name], ours[name]
        dk = float(np.abs(np.asarray(m["K"], float) - np.asarray(c["K"], float)).max())
        Tm, Tc = np.asarray(m["T_parent_cam"], float), np.asarray(c["T_parent_cam"], float)
        dt = float(np.linalg.norm(Tm[:3, 3] - Tc[:3, 3]))
        dr = float(Rotation.from_matrix(Tm[:3, :3].T @ Tc[:3, :3]).magnitude())
        if dk > k_tol or dt > t_tol_m or dr > r_tol_rad or m.get("parent") != c.get("parent"):
            fm, fc = np.asarray(m["K"])[[0, 1, 0, 1], [0, 1, 2, 2]], np.asarray(c["K"])[[0, 1, 0, 1], [0, 1, 2, 2]]
            problems.append(
                f"view {name}: {model_name} has fx, fy, cx, cy = {np.round(fm, 3).tolist()} (of the "
                f"{'cropped' if m.get('crop') is not None else 'whole'} image) at {np.round(Tm[:3, 3], 3).tolist()} m "
                f"in {m.get('parent')}, {calibration_name} gives {np.round(fc, 3).tolist()} at "
                f"{np.round(Tc[:3, 3], 3).tolist()} m in {c.get('parent')} (differences: intrinsics {dk:.3f}, "
                f"position {dt * 100:.1f} cm, rotation {np.degrees(dr):.1f} deg)")
    if problems:
        raise ValueError(f"the cameras of {model_name} are not the cameras of {calibration_name} (the model was "
                         "trained on other cameras or another workspace crop; its action maps and crops would be "
                         "wrong): " + "; ".join(problems))


SPEC_KEYS = ("calibration", "sigma_px", "crop", "workspace", "z_ref", "z_scale")


def resolve_action_map_spec(spec: dict[str, Any], grid_hw: tuple[int, int]) -> dict[str, Any]:
    """A model-config ``action_maps`` entry → the renderer configuration stored with the model.

    ``spec`` is either already resolved (has ``views``; returned as is) or the user form
    ``{calibration: default | PATH, sigma_px: 1.0, crop: workspace | {view: [x0, y0, x1, y1]}, workspace:
    {x: [lo, hi], y: [lo, hi], z: [lo, hi]}, z_ref: 0.35, z_scale: 0.35}`` (only ``calibration`` is required;
    ``default`` = the shipped calibration/droid_cameras.yaml). ``crop: workspace`` cuts each exterior view to the
    image of the workspace box (``workspace`` [m, base frame], default
    :data:`vidplan_core.calibration.WORKSPACE_BOX`) at the grid's aspect ratio
    (:func:`vidplan_core.calibration.workspace_crop_boxes`). Raises ValueError naming the key
    (``action_maps.calibration``, ``action_maps.crop``, an unknown key) or the calibration file's problem.
    """
    if "views" in spec:
        return spec
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"action_maps.{unknown[0]}: unknown key; allowed: {', '.join(SPEC_KEYS)}")
    if not spec.get("calibration"):
        raise ValueError("action_maps.calibration: spatial action maps need the camera calibration (a path to a "
                         "calibration YAML, or 'default' for calibration/droid_cameras.yaml)")

    cal_path = spec["calibration"]
    cal = load_calibration(None if cal_path == "default" else cal_path)
    kw = {k: spec[k] for k in ("sigma_px", "crop", "z_ref", "z_scale") if k in spec}
    if isinstance(kw.get("crop"), str):
        if kw["crop"] != "workspace":
            raise ValueError(f"action_maps.crop: 'workspace' or {{view: [x0, y0, x1, y1]}} [px], got {kw['crop']!r}")
        kw["crop"] = workspace_crop_boxes(cal, spec.get("workspace") or WORKSPACE_BOX, grid_hw[1] / grid_hw[0])
    elif "workspace" in spec:
        raise ValueError("action_maps.workspace: only used with crop: workspace")
    return action_map_config(cal, grid_hw, **kw)


class ActionMapRenderer(nn.Module):
    """Renders raw EE actions into :data:`ACTION_MAP_CHANNELS` per view (module docstring for the channels).

    Args:
        config: :func:`action_map_config` output.
    """

    num_channels = len(ACTION_MAP_CHANNELS)

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        views = config["views"]
        if [v["name"] for v in views] != list(VIEW_ORDER):
            raise ValueError(f"action maps: views must be {list(VIEW_ORDER)} in that order, got "
                             f"{[v['name'] for v in views]}")
        self.grid_hw = (int(config["grid_hw"][0]), int(config["grid_hw"][1]))
        self.sigma = float(config["sigma_px"])
        self.z_ref, self.z_scale = float(config["z_ref"]), float(config["z_scale"])
        self.register_buffer("K", torch.tensor([v["K"] for v in views], dtype=torch.float32), persistent=False)
        self.register_buffer("T_parent_cam", torch.tensor([v["T_parent_cam"] for v in views], dtype=torch.float32),
                             persistent=False)
        self.on_hand = [v["parent"] == "hand" for v in views]
        self.tcp_offset = float(config["tcp_offset_m"])
        self.finger_half = 0.5 * float(config["finger_open_m"])
        h, w = self.grid_hw
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                                torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
        self.register_buffer("grid_x", xs, persistent=False)
        self.register_buffer("grid_y", ys, persistent=False)

    def points(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, F, 7) raw actions → (B, F, 3 points [tcp, finger_a, finger_b], 3) positions [m], base frame."""
        p = actions[..., :3]
        R = euler_xyz_to_matrix(actions[..., 3:6])
        half = self.finger_half * (1.0 - actions[..., 6:7].clamp(0.0, 1.0))  # (B, F, 1)
        y_axis = R[..., :, 1]
        return torch.stack([p, p + half * y_axis, p - half * y_axis], dim=-2)

    def camera_poses(self, actions: torch.Tensor, ref_index: int) -> torch.Tensor:
        """(B, V, 4, 4) camera optical-frame poses in the base frame; hand cameras at frame ``ref_index``."""
        B = actions.shape[0]
        fixed = self.T_parent_cam.to(actions.dtype)[None].expand(B, -1, -1, -1)
        if not any(self.on_hand):
            return fixed
        a = actions[:, ref_index]
        # built by concatenation, not slice assignment: in-place writes trace to as_strided_scatter, which the
        # value-and-grad ONNX export cannot express
        top = torch.cat([euler_xyz_to_matrix(a[:, 3:6]), a[:, :3, None]], dim=-1)  # (B, 3, 4)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=actions.dtype, device=actions.device).expand(B, 1, 4)
        T_tcp = torch.cat([top, bottom], dim=-2)
        T_tcp_hand = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -self.tcp_offset],
                                   [0.0, 0.0, 0.0, 1.0]], dtype=actions.dtype, device=actions.device)
        T_hand = T_tcp @ T_tcp_hand
        poses = [T_hand @ fixed[:, v] if self.on_hand[v] else fixed[:, v] for v in range(len(self.on_hand))]
        return torch.stack(poses, 1)

    def project(self, actions: torch.Tensor, ref_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates of the 3 points in every view: (B, F, V, 3, 2) [latent px] and depth (B, F, V, 3) [m]."""
        pts = self.points(actions)  # (B, F, 3, 3)
        T = self.camera_poses(actions, ref_index)  # (B, V, 4, 4)
        R, t = T[:, :, :3, :3], T[:, :, :3, 3]
        # p_cam = Rᵀ (p − t), per view
        d = pts[:, :, None] - t[:, None, :, None, :]  # (B, F, V, 3, 3)
        pc = torch.einsum("bvji,bfvpj->bfvpi", R, d)
        z = pc[..., 2]
        zs = z.clamp(min=1e-3)
        K = self.K.to(actions.dtype)
        u = K[None, None, :, None, 0, 0] * pc[..., 0] / zs + K[None, None, :, None, 0, 2]
        v = K[None, None, :, None, 1, 1] * pc[..., 1] / zs + K[None, None, :, None, 1, 2]
        return torch.stack([u, v], -1), z

    def forward(self, actions: torch.Tensor, ref_index: int) -> torch.Tensor:
        """(B, F, 7) raw actions → (B, F, K=5, V·h, w) maps; hand cameras are posed at frame ``ref_index``."""
        uv, z = self.project(actions, ref_index)
        gx, gy = self.grid_x.to(actions.dtype), self.grid_y.to(actions.dtype)
        du = gx - uv[..., 0, None, None]  # (B, F, V, 3, h, w)
        dv = gy - uv[..., 1, None, None]
        g = torch.exp(-(du * du + dv * dv) / (2.0 * self.sigma ** 2))
        g = g * (z > 1e-3).to(g.dtype)[..., None, None]  # points behind a camera are not drawn
        tcp = g[..., 0, :, :]
        height = ((actions[..., 2] - self.z_ref) / self.z_scale)[:, :, None, None, None] * tcp
        grip = (1.0 - 2.0 * actions[..., 6].clamp(0.0, 1.0))[:, :, None, None, None] * tcp
        maps = torch.stack([tcp, g[..., 1, :, :], g[..., 2, :, :], height, grip], dim=2)  # (B, F, K, V, h, w)
        B, F, K, V, h, w = maps.shape
        return maps.reshape(B, F, K, V * h, w)
