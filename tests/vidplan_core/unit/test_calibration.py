"""The calibration schema accepts the shipped file and rejects broken ones with file/key/reason."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from vidplan_core.calibration import RigCalibration, default_calibration_path, load_calibration, look_at_quaternion
from vidplan_core.config import ConfigError


def test_shipped_calibration_is_valid():
    rig = load_calibration()
    assert list(rig.cameras) == ["left", "right", "wrist"]
    assert rig.cameras["wrist"].parent_frame == "panda_hand"
    for cam in rig.cameras.values():
        T = cam.transform()
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)
        assert 20 < cam.fovy_deg < 120


def test_exterior_cameras_look_at_the_table():
    rig = load_calibration()
    for name in ("left", "right"):
        T = rig.cameras[name].transform()
        forward = T[:3, 2]
        to_table = np.array([0.55, 0.0, 0.05]) - T[:3, 3]
        cos = forward @ to_table / np.linalg.norm(to_table)
        assert cos > 0.99, f"{name} camera does not face the table centre (cos {cos:.3f})"


def test_scaled_intrinsics():
    cam = load_calibration().cameras["left"].scaled(640, 360)
    assert (cam.fx, cam.cx, cam.cy) == (360.0, 320.0, 180.0)


def _write(tmp_path, data):
    p = tmp_path / "cal.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "mutate, key, reason",
    [
        (lambda d: d["cameras"]["left"].__setitem__("rotation", [0, 0, 0, 2.0]), "cameras.left.rotation", "unit norm"),
        (lambda d: d["cameras"]["right"].__setitem__("fx", -1), "cameras.right.fx", "greater than 0"),
        (lambda d: d["cameras"].pop("wrist"), "cameras", "exactly"),
        (lambda d: d["cameras"]["left"].__setitem__("focal", 3), "cameras.left.focal", "unknown key"),
        (lambda d: d["cameras"]["left"].__setitem__("translation", [0, 0, 620]), "cameras.left.translation", "metres"),
        (lambda d: d["cameras"]["left"].__setitem__("cx", 900.0), "cameras.left", "principal point"),
    ],
)
def test_broken_calibration_names_key_and_reason(tmp_path, mutate, key, reason):
    data = yaml.safe_load(default_calibration_path().read_text())
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_calibration(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and reason in msg, msg


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("cameras:\n  left: [1, 2\n")
    with pytest.raises(ConfigError, match="line"):
        load_calibration(p)


def test_look_at_quaternion_points_z_at_target():
    from scipy.spatial.transform import Rotation

    q = look_at_quaternion([0, 1, 1], [0.5, 0, 0])
    z = Rotation.from_quat(q).as_matrix()[:, 2]
    d = np.array([0.5, -1, -1]) / np.linalg.norm([0.5, -1, -1])
    assert np.allclose(z, d, atol=1e-9)
    assert RigCalibration.model_fields["base_frame"].default == "panda_link0"
