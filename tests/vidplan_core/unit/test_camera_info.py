"""vidplan_core.camera_info: a driver's CameraInfo against the calibration (size, intrinsics, named mismatches) and
lens-distortion removal (OpenCV) that puts points where the calibrated pinhole camera sees them."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.calibration import load_calibration
from vidplan_core.camera_info import Undistorter, camera_info_key, check_camera_info


@pytest.fixture(scope="module")
def left():
    return load_calibration().cameras["left"]


def _k(cam, w, h):
    c = cam.scaled(w, h)
    return [c.fx, 0, c.cx, 0, c.fy, c.cy, 0, 0, 1]


def test_the_calibrated_camera_at_any_resolution_passes(left):
    for w, h in ((left.width, left.height), (1280, 720), (640, 360)):
        chk = check_camera_info("left", w, h, _k(left, w, h), [0.0] * 5, "plumb_bob", left)
        assert chk.problems == [] and chk.undistorter is None, (w, h, chk.problems)
    # within the 3 % tolerance
    k = _k(left, 640, 360)
    k[0] *= 1.02
    assert check_camera_info("left", 640, 360, k, [], "plumb_bob", left).problems == []


def test_mismatches_are_named_with_both_values(left):
    k = _k(left, 640, 360)
    k[0] *= 1.10  # fx 10 % off: another lens or zoom
    chk = check_camera_info("left", 640, 360, k, [0.0] * 5, "plumb_bob", left)
    assert len(chk.problems) == 1 and "camera 'left'" in chk.problems[0] and "fx" in chk.problems[0]
    assert f"{k[0]:.1f} vs {left.scaled(640, 360).fx:.1f}" in chk.problems[0]
    chk = check_camera_info("left", 640, 480, _k(left, 640, 480), [], "plumb_bob", left)
    assert "aspect" in chk.problems[0] and "640x480" in chk.problems[0]
    chk = check_camera_info("left", 640, 360, [0.0] * 9, [], "plumb_bob", left)
    assert "no intrinsics" in chk.problems[0]
    chk = check_camera_info("left", 640, 360, _k(left, 640, 360), [0.1, 0.2], "plumb_bob", left)
    assert "takes 4, 5, 8, 12 or 14 coefficients" in chk.problems[0]
    assert camera_info_key(640, 360, k, [], "plumb_bob") != camera_info_key(640, 360, _k(left, 640, 360), [],
                                                                            "plumb_bob")


@pytest.mark.parametrize("model, D", [("plumb_bob", [-0.25, 0.08, 0.001, -0.0005, -0.01]),
                                      ("equidistant", [0.05, -0.02, 0.004, -0.001])])
def test_undistortion_puts_points_where_the_pinhole_camera_sees_them(left, model, D):
    """Dots projected through the distorted lens (cv2.projectPoints) land, after undistortion, at their pinhole
    projection (K only) within half a pixel."""
    import cv2

    w, h = 640, 360
    K = np.array(_k(left, w, h)).reshape(3, 3)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-0.5, 0.5, 12), rng.uniform(-0.25, 0.25, 12), np.full(12, 1.0)]  # camera frame [m]
    zero = np.zeros(3)
    if model == "equidistant":
        dist = cv2.fisheye.projectPoints(pts[:, None], zero, zero, K, np.array(D))[0].reshape(-1, 2)
    else:
        dist = cv2.projectPoints(pts, zero, zero, K, np.array(D))[0].reshape(-1, 2)
    ideal = (pts[:, :2] / pts[:, 2:]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    assert np.abs(dist - ideal).max() > 3.0  # the lens moves the dots by pixels
    img = np.zeros((h, w, 3), np.uint8)
    for u, v in dist:  # soft dots, so the centroid is sub-pixel
        yy, xx = np.mgrid[0:h, 0:w]
        img[..., 1] = np.maximum(img[..., 1], (255 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / 2.0)).astype(np.uint8))
    chk = check_camera_info("left", w, h, K.reshape(-1), D, model, left)
    assert chk.problems == [] and isinstance(chk.undistorter, Undistorter)
    out = chk.undistorter(img)[..., 1].astype(float)
    yy, xx = np.mgrid[0:h, 0:w]
    for u, v in ideal:
        m = out * (((xx - u) ** 2 + (yy - v) ** 2) < 16)
        c = np.array([(m * xx).sum(), (m * yy).sum()]) / m.sum()
        assert np.linalg.norm(c - [u, v]) < 0.5, (c, (u, v))
    with pytest.raises(ValueError, match="does not match"):
        chk.undistorter(img[:100])
