"""Camera calibration of the DROID setup: intrinsics and extrinsics of the left, right and wrist cameras.

File format (``calibration/droid_cameras.yaml``)::

    base_frame: panda_link0
    cameras:
      left:                                  # one of VIEW_ORDER: left, right, wrist
        frame_id: left_camera_optical_frame  # ROS optical frame: z forward, x right, y down
        parent_frame: panda_link0            # panda_link0 for exterior cameras, panda_hand for the wrist camera
        width: 320                           # [px] at the resolution the model sees (DROID: 320×180)
        height: 180
        fx: 180.0                            # [px]
        fy: 180.0
        cx: 160.0
        cy: 90.0
        distortion: [0, 0, 0, 0, 0]          # plumb_bob k1 k2 t1 t2 k3
        translation: [x, y, z]               # [m] optical frame origin in parent_frame
        rotation: [qx, qy, qz, qw]           # optical frame orientation in parent_frame (unit quaternion)

Intrinsics scale with resolution: :meth:`CameraCalibration.scaled` rescales them for another image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.spatial.transform import Rotation

from vidplan_core.config import load_model
from vidplan_core.paths import share_file
from vidplan_core.spaces import VIEW_ORDER, ViewPreparation

__all__ = ["WORKSPACE_BOX", "CameraCalibration", "RigCalibration", "load_calibration", "look_at_quaternion",
           "workspace_crop_box", "workspace_crop_boxes", "workspace_views"]

#: The DROID-style table workspace [m, robot base frame] the exterior views are cropped to (``crop: workspace``):
#: every object, bowl and reachable table point of the simulated scenes, plus 12 cm above the table.
WORKSPACE_BOX: dict[str, list[float]] = {"x": [0.33, 0.71], "y": [-0.31, 0.31], "z": [0.0, 0.12]}


class CameraCalibration(BaseModel):
    """Intrinsics and extrinsics of one camera (see module docstring for units and frames)."""

    model_config = ConfigDict(extra="forbid")

    frame_id: str = Field(min_length=1)
    parent_frame: str = Field(min_length=1)
    width: int = Field(gt=0, description="[px]")
    height: int = Field(gt=0, description="[px]")
    fx: float = Field(gt=0, description="[px]")
    fy: float = Field(gt=0, description="[px]")
    cx: float
    cy: float
    distortion: list[float] = Field(default_factory=lambda: [0.0] * 5)
    translation: list[float]
    rotation: list[float]

    @field_validator("translation")
    @classmethod
    def _t(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or not np.all(np.isfinite(v)):
            raise ValueError("translation must be 3 finite numbers [m]")
        if np.linalg.norm(v) > 5.0:
            raise ValueError(f"translation {v} is more than 5 m from the parent frame; units must be metres")
        return v

    @field_validator("rotation")
    @classmethod
    def _q(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or not np.all(np.isfinite(v)):
            raise ValueError("rotation must be a quaternion [qx, qy, qz, qw]")
        n = float(np.linalg.norm(v))
        if abs(n - 1.0) > 1e-3:
            raise ValueError(f"rotation quaternion must have unit norm, has norm {n:.4f}")
        return v

    @field_validator("distortion")
    @classmethod
    def _d(cls, v: list[float]) -> list[float]:
        if len(v) not in (4, 5, 8, 12, 14):
            raise ValueError(f"distortion must have 4, 5, 8, 12 or 14 coefficients, got {len(v)}")
        return v

    @model_validator(mode="after")
    def _principal_point(self) -> CameraCalibration:
        if not (0 <= self.cx <= self.width and 0 <= self.cy <= self.height):
            raise ValueError(f"principal point ({self.cx}, {self.cy}) lies outside the {self.width}×{self.height} "
                             "image")
        return self

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the camera matrix is called K everywhere
        """(3, 3) camera matrix [px]."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view [deg] (what MuJoCo cameras take)."""
        return float(np.degrees(2 * np.arctan2(self.height / 2, self.fy)))

    def transform(self) -> np.ndarray:
        """(4, 4) pose of the optical frame in ``parent_frame``."""
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(self.rotation).as_matrix()
        T[:3, 3] = self.translation
        return T

    def scaled(self, width: int, height: int) -> CameraCalibration:
        """Same camera at another resolution (intrinsics scaled, extrinsics unchanged)."""
        sx, sy = width / self.width, height / self.height
        return self.model_copy(update=dict(width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                                           cx=self.cx * sx, cy=self.cy * sy))


class RigCalibration(BaseModel):
    """The three DROID cameras."""

    model_config = ConfigDict(extra="forbid")

    base_frame: str = "panda_link0"
    cameras: dict[str, CameraCalibration]

    @field_validator("cameras")
    @classmethod
    def _views(cls, v: dict[str, CameraCalibration]) -> dict[str, CameraCalibration]:
        if set(v) != set(VIEW_ORDER):
            raise ValueError(f"cameras must be exactly {list(VIEW_ORDER)}, got {sorted(v)}")
        frames = [c.frame_id for c in v.values()]
        if len(set(frames)) != len(frames):
            raise ValueError(f"camera frame_ids must be distinct, got {frames}")
        return {k: v[k] for k in VIEW_ORDER}


def default_calibration_path() -> Path:
    """calibration/droid_cameras.yaml of the installed bring-up package, else of the source tree."""
    return share_file("vidplan_bringup", "calibration/droid_cameras.yaml",
                      Path(__file__).resolve().parents[4] / "calibration" / "droid_cameras.yaml")


def load_calibration(path: str | Path | None = None) -> RigCalibration:
    """Load and validate a calibration file (default: :func:`default_calibration_path`).

    Raises:
        vidplan_core.config.ConfigError: naming the file, key and reason.
    """
    return load_model(RigCalibration, path or default_calibration_path())


def look_at_quaternion(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0, 0, 1)) -> np.ndarray:
    """Quaternion [qx, qy, qz, qw] of an optical frame (z forward, x right, y down) at ``eye`` looking at ``target``."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("viewing direction is parallel to the up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return Rotation.from_matrix(np.stack([x, y, z], axis=1)).as_quat()


def workspace_crop_box(cam: CameraCalibration, points_base: np.ndarray, aspect: float, margin_px: float = 6.0,
                       ) -> list[float]:
    """The crop of one exterior camera that holds the workspace: the bounding box of ``points_base`` projected
    into the image, grown by ``margin_px`` and then to the aspect ratio ``aspect`` (width / height) around its
    centre, shifted (and if needed shrunk) to lie inside the image.

    Args:
        cam: a camera whose ``parent_frame`` is the base frame (the wrist camera moves: it is never cropped).
        points_base: (P, 3) points [m] in the base frame, e.g. the corners of the workspace box.
        aspect: width / height of the model's view (80 / 48 for the demo).
    Returns:
        [x0, y0, x1, y1] in the calibration's pixels (whole numbers, as floats; x right, y down).
    Raises:
        ValueError: a point behind the camera.
    """
    pts = np.asarray(points_base, float).reshape(-1, 3)
    T = np.linalg.inv(cam.transform())
    pc = pts @ T[:3, :3].T + T[:3, 3]
    if np.any(pc[:, 2] <= 1e-6):
        raise ValueError(f"workspace crop of {cam.frame_id}: {int((pc[:, 2] <= 1e-6).sum())} workspace point(s) lie "
                         "behind the camera")
    u = cam.fx * pc[:, 0] / pc[:, 2] + cam.cx
    v = cam.fy * pc[:, 1] / pc[:, 2] + cam.cy
    x0, x1 = u.min() - margin_px, u.max() + margin_px
    y0, y1 = v.min() - margin_px, v.max() + margin_px
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    if w > cam.width:  # the workspace is wider than the image at this aspect: the full width, centred height
        w, h = float(cam.width), cam.width / aspect
    if h > cam.height:
        h, w = float(cam.height), cam.height * aspect
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    w, h = float(min(round(w), cam.width)), float(min(round(h), cam.height))  # whole pixels: crop_view cuts exactly
    x0 = float(np.clip(round(cx - w / 2), 0.0, cam.width - w))
    y0 = float(np.clip(round(cy - h / 2), 0.0, cam.height - h))
    return [x0, y0, x0 + w, y0 + h]


def workspace_crop_boxes(calibration: RigCalibration, workspace: dict[str, list[float]], aspect: float,
                         margin_px: float = 6.0) -> dict[str, list[float]]:
    """Crop boxes ``{view: [x0, y0, x1, y1]}`` of the exterior views for a workspace box
    ``{"x": [lo, hi], "y": [lo, hi], "z": [lo, hi]}`` [m, base frame] (see :func:`workspace_crop_box`); the wrist
    view is not cropped (absent from the result)."""
    for k in ("x", "y", "z"):
        lo_hi = workspace.get(k)
        if lo_hi is None or len(lo_hi) != 2 or not lo_hi[1] > lo_hi[0]:
            raise ValueError(f"workspace crop: '{k}' must be [lo, hi] with hi > lo [m], got {lo_hi}")
    corners = np.array([[x, y, z] for x in workspace["x"] for y in workspace["y"] for z in workspace["z"]])
    return {name: workspace_crop_box(cam, corners, aspect, margin_px)
            for name, cam in calibration.cameras.items() if not cam.parent_frame.endswith("_hand")}


def workspace_views(height: int, width: int, calibration: RigCalibration | None = None,
                    workspace: dict[str, list[float]] | None = None) -> ViewPreparation:
    """The :class:`~vidplan_core.spaces.ViewPreparation` of a model whose world model has ``action_maps.crop:
    workspace`` (same calibration, same workspace box): each exterior view cut to the workspace at the view's
    aspect ratio, then resized to ``height`` × ``width`` [px]; the wrist view whole. Used by ``vidplan data convert
    --crop workspace`` so training data is cut exactly as the model cuts camera images at run time."""
    cal = calibration or load_calibration()
    boxes = workspace_crop_boxes(cal, workspace or WORKSPACE_BOX, width / height)
    crops = {v: (b[0] / cal.cameras[v].width, b[1] / cal.cameras[v].height, b[2] / cal.cameras[v].width,
                 b[3] / cal.cameras[v].height) for v, b in boxes.items()}
    aspects = {v: cal.cameras[v].width / cal.cameras[v].height for v in boxes}
    return ViewPreparation(int(height), int(width), crops, aspects)
