"""Conventions shared by every part of vidplan: actions, normalisation, camera views and rates.

Action (one step, 7-D, robot base frame)::

    [x, y, z,            # EE position [m]
     rx, ry, rz,         # EE orientation, Euler angles [rad], scipy "xyz" (extrinsic), as DROID records them
     g]                  # gripper command, 0 = open .. 1 = closed

Euler angles of a Franka with the gripper pointing down sit near rx = ±π, where they wrap. Every consumer
therefore wraps angles into a window centred on a reference (:func:`wrap_angle`); the normaliser stores that
centre next to its p01/p99 statistics.

Views: three cameras in the fixed order :data:`VIEW_ORDER` (left exterior, right exterior, wrist), stacked
vertically into one frame (``(C, 3·H, W)``) as Ctrl-World does.

Rates: cameras and control run at :data:`CONTROL_RATE_HZ` (15 Hz, DROID), the world model at
:data:`MODEL_RATE_HZ` (5 Hz): one model step spans ``CONTROL_RATE_HZ / MODEL_RATE_HZ`` control steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "ACTION_DIM",
    "ACTION_NAMES",
    "CONTROL_RATE_HZ",
    "EULER_SEQ",
    "MODEL_RATE_HZ",
    "ROTATION_DIMS",
    "VIEW_ORDER",
    "ActionNormalizer",
    "EEChunk",
    "ViewPreparation",
    "continuous_euler",
    "crop_box_pixels",
    "crop_view",
    "euler_to_quat",
    "model_stride",
    "quat_to_euler",
    "resize_view",
    "stack_views",
    "unstack_views",
    "wrap_angle",
]

ACTION_DIM = 7
ACTION_NAMES = ("x", "y", "z", "rx", "ry", "rz", "gripper")
ROTATION_DIMS = (3, 4, 5)
EULER_SEQ = "xyz"  # scipy extrinsic x-y-z, DROID's cartesian_position convention
VIEW_ORDER = ("left", "right", "wrist")
CONTROL_RATE_HZ = 15.0
MODEL_RATE_HZ = 5.0


def model_stride(control_rate_hz: float = CONTROL_RATE_HZ, model_rate_hz: float = MODEL_RATE_HZ) -> int:
    """Number of control steps per model step (3 for 15 Hz / 5 Hz). Raises if the rates are not commensurate."""
    ratio = control_rate_hz / model_rate_hz
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(f"control rate {control_rate_hz} Hz must be an integer multiple of the model rate "
                         f"{model_rate_hz} Hz")
    return round(ratio)


def wrap_angle(angle: Any, center: Any = 0.0) -> Any:
    """Wrap angles [rad] into ``[center − π, center + π)``; works on numpy arrays and torch tensors."""
    return (angle - center + np.pi) % (2 * np.pi) - np.pi + center


def continuous_euler(poses: np.ndarray) -> np.ndarray:
    """(T, 7) EE poses along a history with each one's Euler angles wrapped to within π of the previous one's (no
    ±π jumps inside one planning context, as :class:`~vidplan_core.observation.ObservationHistory` keeps them);
    a copy."""
    out = np.array(poses, dtype=np.float64)
    rot = list(ROTATION_DIMS)
    for i in range(1, len(out)):
        out[i, rot] = wrap_angle(out[i, rot], out[i - 1, rot])
    return out


def euler_to_quat(euler: np.ndarray) -> np.ndarray:
    """(..., 3) Euler xyz [rad] → (..., 4) unit quaternion [qx, qy, qz, qw] (ROS order)."""
    euler = np.asarray(euler, dtype=np.float64)
    return Rotation.from_euler(EULER_SEQ, euler.reshape(-1, 3)).as_quat().reshape(*euler.shape[:-1], 4)


def quat_to_euler(quat: np.ndarray) -> np.ndarray:
    """(..., 4) quaternion [qx, qy, qz, qw] → (..., 3) Euler xyz [rad] in (−π, π]."""
    quat = np.asarray(quat, dtype=np.float64)
    norms = np.linalg.norm(quat.reshape(-1, 4), axis=-1)
    if not np.all(np.isfinite(norms)) or np.any(norms < 1e-6):
        raise ValueError("quaternion with zero norm or non-finite entries")
    return Rotation.from_quat(quat.reshape(-1, 4)).as_euler(EULER_SEQ).reshape(*quat.shape[:-1], 3)


@dataclass
class EEChunk:
    """A chunk of H end-effector targets at the model rate.

    Attributes:
        position: (H, 3) EE positions in the base frame [m].
        euler: (H, 3) EE orientations, Euler xyz [rad].
        gripper: (H,) gripper command, 0 open .. 1 closed.
        dt: time between steps [s] (1 / model rate).
        uncertainty: optional (H,) normalised entropy in [0, 1] per step.
        value: optional (H,) expected value in [0, 1] per step.
    """

    position: np.ndarray
    euler: np.ndarray
    gripper: np.ndarray
    dt: float = 1.0 / MODEL_RATE_HZ
    uncertainty: np.ndarray | None = None
    value: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64).reshape(-1, 3)
        self.euler = np.asarray(self.euler, dtype=np.float64).reshape(-1, 3)
        self.gripper = np.asarray(self.gripper, dtype=np.float64).reshape(-1)
        h = len(self.position)
        if len(self.euler) != h or len(self.gripper) != h:
            raise ValueError(f"EEChunk lengths differ: position {h}, euler {len(self.euler)}, "
                             f"gripper {len(self.gripper)}")
        for name in ("uncertainty", "value"):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float64).reshape(-1)
                if len(arr) != h:
                    raise ValueError(f"EEChunk.{name} has length {len(arr)}, expected {h}")
                setattr(self, name, arr)
        if not self.dt > 0:
            raise ValueError(f"EEChunk.dt must be > 0 s, got {self.dt}")

    def __len__(self) -> int:
        return len(self.position)

    @property
    def actions(self) -> np.ndarray:
        """(H, 7) action array [x, y, z, rx, ry, rz, g]."""
        return np.concatenate([self.position, self.euler, self.gripper[:, None]], axis=1)

    @classmethod
    def from_actions(cls, actions: np.ndarray, dt: float = 1.0 / MODEL_RATE_HZ, **kw: Any) -> EEChunk:
        """Build from an (H, 7) action array."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM:
            raise ValueError(f"actions must have shape (H, {ACTION_DIM}), got {a.shape}")
        return cls(position=a[:, :3], euler=a[:, 3:6], gripper=a[:, 6], dt=dt, **kw)

    def is_finite(self) -> bool:
        """True when every pose and gripper value is finite."""
        return bool(np.isfinite(self.actions).all())


class ActionNormalizer:
    """p01/p99 normalisation of 7-D actions to [−1, 1] (Ctrl-World / DROID convention).

    ``x_n = 2·(x − p01)/(p99 − p01) − 1``; rotation dims are first wrapped into ``[c − π, c + π)`` around the
    stored circular centre ``c`` so that angles near ±π do not split into two clusters. Works on numpy arrays
    and torch tensors (differentiable), on any leading shape ``(..., 7)``.
    """

    def __init__(self, p01: Any, p99: Any, angle_center: Any | None = None, eps: float = 1e-6):
        self.p01 = np.asarray(p01, dtype=np.float64).reshape(ACTION_DIM)
        self.p99 = np.asarray(p99, dtype=np.float64).reshape(ACTION_DIM)
        self.angle_center = (np.zeros(3) if angle_center is None
                             else np.asarray(angle_center, dtype=np.float64).reshape(3))
        self.scale = np.maximum(self.p99 - self.p01, eps)

    @classmethod
    def fit(cls, actions: np.ndarray) -> ActionNormalizer:
        """Fit p01/p99 (and the circular centre of the rotation dims) on an (N, 7) array of actions."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, ACTION_DIM)
        if len(a) == 0 or not np.isfinite(a).all():
            raise ValueError("cannot fit action statistics on empty or non-finite data")
        rot = a[:, list(ROTATION_DIMS)]
        center = np.arctan2(np.sin(rot).mean(0), np.cos(rot).mean(0))
        a = a.copy()
        a[:, list(ROTATION_DIMS)] = wrap_angle(rot, center)
        return cls(np.percentile(a, 1, axis=0), np.percentile(a, 99, axis=0), center)

    def _wrap(self, x: Any) -> Any:
        lib = _lib(x)
        center = lib.asarray(self.angle_center, dtype=x.dtype) if lib is np else _torch_const(x, self.angle_center)
        rot = wrap_angle(x[..., 3:6], center)
        return lib.cat([x[..., :3], rot, x[..., 6:]], dim=-1) if lib is not np else np.concatenate(
            [x[..., :3], rot, x[..., 6:]], axis=-1)

    def normalize(self, x: Any) -> Any:
        """(..., 7) actions → (..., 7) normalised actions (roughly in [−1, 1])."""
        _check_last_dim(x)
        x = self._wrap(x)
        p01, scale = self._consts(x)
        return 2.0 * (x - p01) / scale - 1.0

    def denormalize(self, x: Any) -> Any:
        """(..., 7) normalised actions → (..., 7) actions (rotation dims within ±π of the centre)."""
        _check_last_dim(x)
        p01, scale = self._consts(x)
        return (x + 1.0) * 0.5 * scale + p01

    def _consts(self, x: Any) -> tuple[Any, Any]:
        if _lib(x) is np:
            return self.p01.astype(x.dtype), self.scale.astype(x.dtype)
        return _torch_const(x, self.p01), _torch_const(x, self.scale)

    def state_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable statistics."""
        return {"p01": self.p01.tolist(), "p99": self.p99.tolist(), "angle_center": self.angle_center.tolist()}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> ActionNormalizer:
        """Inverse of :meth:`state_dict`; raises KeyError naming the missing key."""
        for k in ("p01", "p99"):
            if k not in d:
                raise KeyError(f"action statistics lack '{k}'")
        return cls(d["p01"], d["p99"], d.get("angle_center"))


def _lib(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return np
    import torch

    if isinstance(x, torch.Tensor):
        return torch
    raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")


def _torch_const(like: Any, values: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _check_last_dim(x: Any) -> None:
    if x.shape[-1] != ACTION_DIM:
        raise ValueError(f"actions must have last dimension {ACTION_DIM}, got shape {tuple(x.shape)}")


def stack_views(views: Any) -> Any:
    """Stack camera views vertically in :data:`VIEW_ORDER`.

    Args:
        views: (..., V, C, H, W) array/tensor, V = 3 views ordered (left, right, wrist).

    Returns:
        (..., C, V·H, W).
    """
    if views.ndim < 4 or views.shape[-4] != len(VIEW_ORDER):
        raise ValueError(f"expected (..., {len(VIEW_ORDER)}, C, H, W) views in order {VIEW_ORDER}, "
                         f"got shape {tuple(views.shape)}")
    *lead, v, c, h, w = views.shape
    perm_src = views.reshape(*lead, v, c, h, w)
    if isinstance(views, np.ndarray):
        moved = np.moveaxis(perm_src, -4, -3)  # (..., C, V, H, W)
    else:
        moved = perm_src.movedim(-4, -3)
    return moved.reshape(*lead, c, v * h, w)


def unstack_views(frame: Any, num_views: int = len(VIEW_ORDER)) -> Any:
    """Inverse of :func:`stack_views`: (..., C, V·H, W) → (..., V, C, H, W)."""
    *lead, c, vh, w = frame.shape
    if vh % num_views:
        raise ValueError(f"frame height {vh} is not divisible by {num_views} views")
    x = frame.reshape(*lead, c, num_views, vh // num_views, w)
    return np.moveaxis(x, -3, -4) if isinstance(x, np.ndarray) else x.movedim(-3, -4)


def resize_view(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one camera image (H, W, 3) uint8 to (height, width, 3) uint8.

    The one resize convention of vidplan (bilinear, Pillow): training data conversion and every node that feeds a
    model use it, so the model sees the same pixels at train and run time.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    if img.shape[:2] == (height, width):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR))


def crop_view(img: np.ndarray, box: list[float] | tuple[float, ...] | None, height: int, width: int) -> np.ndarray:
    """THE view preparation of vidplan: cut one camera image (H, W, 3) uint8 to ``box`` = [x0, y0, x1, y1] (image
    pixels of *this* image; ``None`` keeps the whole image) and resize it to (height, width, 3) with
    :func:`resize_view`.

    The box is rounded outwards to whole pixels and clipped to the image, so the crop's intrinsics are
    K' = [[fx·s_x, 0, (cx − x0)·s_x], [0, fy·s_y, (cy − y0)·s_y]] with s = output size / box size (what
    :func:`vidplan_core.models.action_maps.action_map_config` uses).
    """
    img = np.asarray(img)
    if box is not None:
        x0, y0, x1, y1 = crop_box_pixels(box, img.shape[1], img.shape[0])
        img = img[y0:y1, x0:x1]
    return resize_view(np.ascontiguousarray(img), height, width)


def crop_box_pixels(box: list[float] | tuple[float, ...], width: int, height: int) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1] → whole pixels (x0, y0, x1, y1), rounded outwards and clipped to a width×height image (the
    rounding of :func:`crop_view`; anything cropped alongside an image, e.g. labels, uses it too)."""
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"crop box {list(box)} leaves no image inside {width}x{height}")
    return x0, y0, x1, y1


#: Largest relative difference between an image's aspect ratio (width / height) and its calibration's before a
#: workspace crop refuses it (a 640×480 image fed to a model calibrated at 320×180 is from another camera or mode).
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class ViewPreparation:
    """How camera images become a model's views — the one implementation the planner node, data conversion, the
    closed-loop evaluation and the oracles share, so a model sees the same pixels at train and run time.

    Each view is cut to its workspace crop (absent: the whole image) and resized to ``height`` × ``width``
    (:func:`crop_view`). Crops are stored in normalised image coordinates, so one model serves any resolution of
    its calibrated cameras; images whose aspect ratio differs from the calibration's are refused (the crop would
    cut the wrong region).

    Attributes:
        height, width: one model view [px].
        crops: ``{view: (u0, v0, u1, v1)}`` in [0, 1] (x right, y down, fractions of the image width / height);
            views absent are not cropped (the wrist camera moves and is never cropped).
        aspects: ``{view: width / height}`` of the calibrated image, checked for every cropped view.
    """

    height: int
    width: int
    crops: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    aspects: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_geometry(cls, geometry: dict[str, Any] | None, height: int, width: int) -> ViewPreparation:
        """From a model's view geometry (``views[i]["crop"]``, ``views[i]["image_wh"]``, as
        :func:`vidplan_core.models.action_maps.action_map_config` records them); ``None`` or a geometry without
        crops gives the whole views."""
        crops: dict[str, tuple[float, float, float, float]] = {}
        aspects: dict[str, float] = {}
        for v in (geometry or {}).get("views", []):
            if v.get("crop") is not None:
                crops[v["name"]] = tuple(float(x) for x in v["crop"])  # type: ignore[assignment]
                if v.get("image_wh"):
                    aspects[v["name"]] = float(v["image_wh"][0]) / float(v["image_wh"][1])
        return cls(int(height), int(width), crops, aspects)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (recorded in a dataset's info and a model's manifest)."""
        return {"height": self.height, "width": self.width, "crops": {k: list(v) for k, v in self.crops.items()},
                "aspects": dict(self.aspects)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewPreparation:
        return cls(int(d["height"]), int(d["width"]), {k: tuple(v) for k, v in d.get("crops", {}).items()},
                   {k: float(v) for k, v in d.get("aspects", {}).items()})

    def describe(self) -> str:
        """One line for logs and errors, e.g. ``48x80, crop left [0.10, 0.20, 0.70, 0.85], right ...``."""
        if not self.crops:
            return f"{self.height}x{self.width}, whole views"
        crops = ", ".join(f"{k} [{', '.join(f'{x:.3f}' for x in v)}]" for k, v in sorted(self.crops.items()))
        return f"{self.height}x{self.width}, crop {crops}"

    def same_as(self, other: ViewPreparation, tol: float = 2e-3) -> bool:
        """Same view size and crops (within ``tol`` of the image size)."""
        return ((self.height, self.width) == (other.height, other.width) and set(self.crops) == set(other.crops)
                and all(np.allclose(self.crops[k], other.crops[k], atol=tol) for k in self.crops))

    def box_pixels(self, view: str, image_width: int, image_height: int) -> list[float] | None:
        """The crop of ``view`` in the pixels of an ``image_width`` × ``image_height`` image, or None (whole image).

        Raises:
            ValueError: the image's aspect ratio differs from the calibration's by more than
                :data:`ASPECT_TOLERANCE` (names both).
        """
        box = self.crops.get(view)
        if box is None:
            return None
        want = self.aspects.get(view)
        have = image_width / image_height
        if want is not None and abs(have / want - 1.0) > ASPECT_TOLERANCE:
            raise ValueError(f"view {view}: a {image_width}x{image_height} image (aspect {have:.3f}) but the model's "
                             f"workspace crop was computed for a calibrated image of aspect {want:.3f}: the crop "
                             "would cut the wrong region; publish the calibrated camera mode or re-calibrate")
        return [box[0] * image_width, box[1] * image_height, box[2] * image_width, box[3] * image_height]

    def prepare_one(self, view: str, img: np.ndarray) -> np.ndarray:
        """One camera image (H, W, 3) uint8 of ``view`` → the model's view (height, width, 3) uint8."""
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"view {view}: expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        return crop_view(img, self.box_pixels(view, img.shape[1], img.shape[0]), self.height, self.width)

    def prepare(self, images: Any) -> np.ndarray:
        """The three camera images in :data:`VIEW_ORDER` (each (H, W, 3) uint8, sizes may differ) → (3, height,
        width, 3) uint8."""
        if len(images) != len(VIEW_ORDER):
            raise ValueError(f"expected {len(VIEW_ORDER)} images ({', '.join(VIEW_ORDER)}), got {len(images)}")
        return np.stack([self.prepare_one(v, img) for v, img in zip(VIEW_ORDER, images, strict=True)])
