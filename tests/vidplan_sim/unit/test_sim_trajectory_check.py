"""check_joint_trajectory: the sim refuses what ros2_control's JointTrajectoryController refuses (issue 13, item 9).

Before the check existed the sim accepted a 1e6 rad target and drove the arm into its joint limit at full speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_sim.env import SimEnv
from vidplan_sim.scene import HOME_Q
from vidplan_sim.trajectory import LIMIT_TOLERANCE_RAD, TrajectoryRejectedError, check_joint_trajectory

ARM = [f"panda_joint{i}" for i in range(1, 8)]
# the Menagerie Panda's limits (checked against the MuJoCo model in test_limits_come_from_the_model)
LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])


def check(names=None, times=(1.0,), positions=None, **kw):
    names = ARM if names is None else names
    positions = [list(HOME_Q)] * len(times) if positions is None else positions
    return check_joint_trajectory(ARM, names, list(times), positions, lower=LOWER, upper=UPPER, **kw)


def rejected(**kw) -> str:
    with pytest.raises(TrajectoryRejectedError) as info:
        check(**kw)
    return str(info.value)


def test_valid_trajectory_is_reordered_to_the_controller_order():
    goal = HOME_Q + 0.1
    out = check(names=ARM[::-1], times=[0.5, 1.0], positions=[list(HOME_Q[::-1]), list(goal[::-1])],
                velocities=[[0.0] * 7, [0.0] * 7])
    np.testing.assert_allclose(out.times, [0.5, 1.0])
    np.testing.assert_allclose(out.positions, [HOME_Q, goal])
    assert out.velocities is not None and out.velocities.shape == (2, 7)
    # velocities on some points only: linear interpolation (no velocities), as before
    out = check(times=[0.5, 1.0], positions=[list(HOME_Q), list(goal)], velocities=[[0.0] * 7, []])
    assert out.velocities is None
    # no points: accepted (the caller holds)
    out = check(times=[], positions=[])
    assert out.times.shape == (0,) and out.positions.shape == (0, 7)


def test_position_outside_joint_limits_rejected_with_joint_and_value():
    q = HOME_Q.copy()
    q[0] = 1e6
    reason = rejected(positions=[list(q)])
    assert "panda_joint1" in reason and "1e+06" in reason and "limits" in reason, reason
    q = HOME_Q.copy()
    q[3] = UPPER[3] + 0.05  # joint 4 has an asymmetric range: -0.0698 is its upper limit
    reason = rejected(times=[0.5, 1.0], positions=[list(HOME_Q), list(q)])
    assert "point 1" in reason and "panda_joint4" in reason, reason
    # a measured position a hair past the limit (MuJoCo limits are soft) is still a valid hold target
    q = HOME_Q.copy()
    q[5] = LOWER[5] - 0.5 * LIMIT_TOLERANCE_RAD
    check(positions=[list(q)])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_rejected(value):
    q = list(HOME_Q)
    q[2] = value
    assert "non-finite position" in rejected(positions=[q]) and "panda_joint3" in rejected(positions=[q])
    v = [0.0] * 7
    v[6] = value
    assert "non-finite velocity" in rejected(velocities=[v])
    assert "non-finite acceleration" in rejected(accelerations=[v])
    assert "time_from_start" in rejected(times=[value])


def test_joint_names_must_match():
    assert "unknown ['fr3_joint7']" in rejected(names=[*ARM[:6], "fr3_joint7"])
    assert "missing ['panda_joint7']" in rejected(names=ARM[:6], positions=[list(HOME_Q[:6])])
    assert "repeated ['panda_joint1']" in rejected(names=[*ARM, "panda_joint1"], positions=[[*HOME_Q, 0.0]])
    assert "missing" in rejected(names=[], positions=[[]])


def test_length_mismatches_rejected():
    assert "6 positions for 7 joints" in rejected(positions=[list(HOME_Q[:6])])
    assert "8 positions for 7 joints" in rejected(positions=[[*HOME_Q, 0.0]])
    assert "0 positions" in rejected(positions=[[]])  # names but no positions
    assert "3 velocities for 7 joints" in rejected(velocities=[[0.0] * 3])
    assert "5 accelerations for 7 joints" in rejected(accelerations=[[0.0] * 5])
    assert "effort" in rejected(efforts=[[0.0] * 7])
    assert "position lists for" in rejected(times=[1.0, 2.0], positions=[list(HOME_Q)])


def test_time_from_start_must_be_non_negative_and_strictly_increasing():
    two = [list(HOME_Q), list(HOME_Q)]
    assert "point 1 has 1 s after 1 s" in rejected(times=[1.0, 1.0], positions=two)
    assert "point 1 has 0.5 s after 1 s" in rejected(times=[1.0, 0.5], positions=two)
    assert "point 0 has -1 s" in rejected(times=[-1.0])
    check(times=[0.0, 0.1], positions=two)  # a first point at t = 0 is fine


def test_limits_come_from_the_model():
    env = SimEnv(render=False)
    env.reset(0, clutter=0)
    lower, upper = env.arm_joint_limits()
    np.testing.assert_allclose(lower, LOWER, atol=1e-4)
    np.testing.assert_allclose(upper, UPPER, atol=1e-4)
