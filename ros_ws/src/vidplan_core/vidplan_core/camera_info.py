"""A camera driver's ``sensor_msgs/CameraInfo`` against the calibration the models were trained with, and the
removal of lens distortion.

The world model, its action maps and the planner's TCP projection assume the pinhole cameras of the calibration
file (``calibration/droid_cameras.yaml``, or the robot's own). A real driver reports what its camera is:

* :func:`check_camera_info` compares image size (aspect) and intrinsics, the latter scaled to the reported size
  (:meth:`~vidplan_core.calibration.CameraCalibration.scaled`), within a relative tolerance, and names every
  mismatch with both values;
* :class:`Undistorter` maps a distorted image to the pinhole image with the same camera matrix (OpenCV's
  ``initUndistortRectifyMap`` + ``remap``, maps built once per camera): ``plumb_bob`` / ``rational_polynomial``
  (4–14 coefficients) and ``equidistant`` (fisheye, 4 coefficients).

No ROS import: the planner node reads the message fields and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vidplan_core.calibration import CameraCalibration

__all__ = ["CameraInfoCheck", "Undistorter", "camera_info_key", "check_camera_info"]

PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
FISHEYE_MODELS = ("equidistant", "fisheye")


class Undistorter:
    """Remove lens distortion: (H, W, 3) uint8 image of the distorted camera → the pinhole image with camera matrix
    ``K`` (the same K: pixels keep their scale, so the calibration's intrinsics hold afterwards).

    Args:
        K: (3, 3) camera matrix [px] at ``width`` × ``height``.
        D: distortion coefficients (plumb_bob k1 k2 t1 t2 k3; rational_polynomial 8; equidistant k1..k4).
        distortion_model: ``plumb_bob`` | ``rational_polynomial`` | ``equidistant``.
        width, height: image size [px] the maps are built for.
    Raises:
        ValueError: an unknown model or a coefficient count it does not take.
    """

    def __init__(self, K: np.ndarray, D: Sequence[float], distortion_model: str, width: int, height: int):
        import cv2

        K = np.asarray(K, np.float64).reshape(3, 3)
        D = np.asarray(D, np.float64).reshape(-1)
        model = (distortion_model or "plumb_bob").lower()
        self.size = (int(width), int(height))
        if model in PINHOLE_MODELS:
            if D.size not in (4, 5, 8, 12, 14):
                raise ValueError(f"distortion model {model!r} takes 4, 5, 8, 12 or 14 coefficients, got {D.size}")
            self.map1, self.map2 = cv2.initUndistortRectifyMap(K, D, None, K, self.size, cv2.CV_32FC1)
        elif model in FISHEYE_MODELS:
            if D.size != 4:
                raise ValueError(f"distortion model {model!r} takes 4 coefficients, got {D.size}")
            self.map1, self.map2 = cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, self.size, cv2.CV_32FC1)
        else:
            raise ValueError(f"distortion model {distortion_model!r} is not supported; expected one of "
                             f"{', '.join(PINHOLE_MODELS + FISHEYE_MODELS)}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        if (w, h) != self.size:
            raise ValueError(f"image of {w}x{h} px does not match the {self.size[0]}x{self.size[1]} its camera_info "
                             "describes: cannot remove the distortion")
        return cv2.remap(image, self.map1, self.map2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def camera_info_key(width: int, height: int, K: Sequence[float], D: Sequence[float], distortion_model: str) -> tuple:
    """The fields of a CameraInfo that :func:`check_camera_info` reads, hashable: a driver repeats the same
    CameraInfo with every image, and only a change needs a new check."""
    return (int(width), int(height), tuple(np.round(np.asarray(K, np.float64).reshape(-1), 6)),
            tuple(np.round(np.asarray(D, np.float64).reshape(-1), 9)), str(distortion_model))


@dataclass
class CameraInfoCheck:
    """What one CameraInfo says against the calibration.

    Attributes:
        view: left | right | wrist.
        problems: one line per mismatch (empty when the camera is the calibrated one).
        undistorter: set when the camera reports distortion (images must go through it), else None.
        key: the fields compared (size, K, D, model), to notice when a driver's CameraInfo changes.
    """

    view: str
    problems: list[str] = field(default_factory=list)
    undistorter: Undistorter | None = None
    key: tuple = ()


def check_camera_info(view: str, width: int, height: int, K: Sequence[float], D: Sequence[float],
                      distortion_model: str, calibration: CameraCalibration, rel_tol: float = 0.03,
                      distortion_eps: float = 1e-6) -> CameraInfoCheck:
    """Compare a driver's CameraInfo with the calibrated camera ``calibration`` (any resolution).

    Args:
        view: the camera's view name (named in the problems).
        width, height: CameraInfo width/height [px].
        K: its 9 camera-matrix entries (row-major) [px].
        D, distortion_model: its distortion.
        calibration: the calibrated camera.
        rel_tol: allowed relative difference of fx, fy, and of cx, cy as a fraction of width/height; also of the
            aspect ratio.
        distortion_eps: coefficients below this (absolute) count as no distortion.
    Returns:
        :class:`CameraInfoCheck` (problems named with both values; an undistorter when distortion is present).
    """
    w, h = int(width), int(height)
    K = np.asarray(K, np.float64).reshape(-1)
    D = np.asarray(D, np.float64).reshape(-1)
    out = CameraInfoCheck(view, key=camera_info_key(w, h, K, D, distortion_model))
    if w <= 0 or h <= 0:
        out.problems.append(f"camera '{view}': camera_info size {w}x{h} is not an image size")
        return out
    aspect, want = w / h, calibration.width / calibration.height
    if abs(aspect / want - 1) > rel_tol:
        out.problems.append(f"camera '{view}': camera_info size {w}x{h} (aspect {aspect:.3f}) differs from the "
                            f"calibration's {calibration.width}x{calibration.height} (aspect {want:.3f})")
        return out
    if K.size != 9 or not np.any(K):
        out.problems.append(f"camera '{view}': camera_info carries no intrinsics (K = {K.tolist()}): an "
                            "uncalibrated driver; cannot check it against the calibration")
    else:
        cal = calibration.scaled(w, h)
        got = {"fx": K[0], "fy": K[4], "cx": K[2], "cy": K[5]}
        ref = {"fx": cal.fx, "fy": cal.fy, "cx": cal.cx, "cy": cal.cy}
        scale = {"fx": cal.fx, "fy": cal.fy, "cx": w, "cy": h}
        bad = [f"{k} {got[k]:.1f} vs {ref[k]:.1f}" for k in got if abs(got[k] - ref[k]) > rel_tol * scale[k]]
        if bad:
            out.problems.append(f"camera '{view}': camera_info intrinsics differ from the calibration's (scaled to "
                                f"{w}x{h}): {', '.join(bad)} px (tolerance {rel_tol:.0%})")
    if D.size and np.abs(D).max() > distortion_eps and K.size == 9 and np.any(K):
        try:
            out.undistorter = Undistorter(K.reshape(3, 3), D, distortion_model, w, h)
        except ValueError as exc:
            out.problems.append(f"camera '{view}': {exc}")
    return out
