"""vidplan_core.robot_state: the URDF joint tree's transforms (what robot_state_publisher puts on /tf) compose to the
poses pinocchio computes for the same URDF — arm links, TCP and the camera optical frames."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.kinematics import PandaKinematics
from vidplan_core.robot_state import RobotStateModel


def test_tree_composes_to_the_kinematics_poses():
    rs, kin = RobotStateModel(), PandaKinematics()
    assert rs.root == "panda_link0"
    assert rs.actuated_names == [*kin.joint_names, "panda_finger_joint1"]  # finger 2 mimics finger 1
    static = {c for _, c, _ in rs.static_transforms()}
    assert {"panda_hand_tcp", "left_camera_optical_frame", "right_camera_optical_frame",
            "wrist_camera_optical_frame"} <= static
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = kin.lower + (kin.upper - kin.lower) * rng.uniform(0.05, 0.95, 7)
        pos = {**dict(zip(kin.joint_names, q, strict=True)), "panda_finger_joint1": 0.03}
        for frame in ("panda_link4", "panda_hand", "panda_hand_tcp", "wrist_camera_optical_frame",
                      "left_camera_optical_frame"):
            np.testing.assert_allclose(rs.frame_pose(frame, pos), kin.frame_pose(q, frame), atol=1e-9)
        moving = {c: T for _, c, T in rs.transforms(pos)}
        # the fingers open symmetrically along the hand's y axis
        assert moving["panda_leftfinger"][1, 3] == pytest.approx(0.03) and moving["panda_rightfinger"][1, 3] == \
            pytest.approx(-0.03)
    with pytest.raises(ValueError, match="panda_joint7"):
        rs.transforms({n: 0.0 for n in kin.joint_names[:6]} | {"panda_finger_joint1": 0.0})
