"""vidplan_core.safety: one test per rule, under both policies."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.spatial.transform import Rotation

from vidplan_core.safety import SafetyLimits, check_joint_trajectory, filter_chunk
from vidplan_core.spaces import EEChunk, euler_to_quat

CUR = np.array([0.45, 0.0, 0.30, np.pi, 0.0, 0.0])  # gripper down, in the middle of the default workspace


def _chunk(offsets, dt=0.2, gripper=None, euler=None) -> EEChunk:
    offsets = np.asarray(offsets, float).reshape(-1, 3)
    h = len(offsets)
    return EEChunk(position=CUR[:3] + offsets, euler=np.tile(CUR[3:], (h, 1)) if euler is None else euler,
                   gripper=np.zeros(h) if gripper is None else gripper, dt=dt)


def _rules(res):
    return {v.rule for v in res.violations}


def test_good_chunk_passes_unchanged():
    ch = _chunk([[0.02 * i, 0.0, -0.01 * i] for i in range(1, 6)])
    res = filter_chunk(ch, CUR)
    assert res.accepted and res.violations == [] and res.reason == ""
    np.testing.assert_allclose(res.chunk.actions[:, :3], ch.actions[:, :3])
    # Euler angles are unwrapped around the current orientation (rx stays near +π, never jumps to −π)
    assert np.all(np.abs(res.chunk.euler[:, 0] - np.pi) < 1e-6)


def test_nan_rejected_under_both_policies():
    ch = _chunk([[0.01, 0, 0], [np.nan, 0, 0]])
    for policy in ("reject", "clip"):
        res = filter_chunk(ch, CUR, policy=policy)
        assert not res.accepted and "non_finite" in _rules(res) and "at steps [1]" in res.reason


def test_wrong_lengths_and_bad_quaternions_from_raw_arrays():
    raw = {"position": np.zeros((3, 3)) + CUR[:3], "quaternion": euler_to_quat(np.tile(CUR[3:], (2, 1))),
           "gripper": np.zeros(3), "dt": 0.2}
    res = filter_chunk(raw, CUR, policy="clip")
    assert not res.accepted and "structure" in _rules(res) and "expected (3, 4)" in res.reason
    raw = {**raw, "quaternion": np.zeros((3, 4)), "gripper": np.zeros(3)}
    res = filter_chunk(raw, CUR)
    assert not res.accepted and _rules(res) == {"quaternion"}
    raw = {**raw, "quaternion": euler_to_quat(np.tile(CUR[3:], (3, 1))), "gripper": np.zeros(2)}
    res = filter_chunk(raw, CUR)
    assert not res.accepted and "gripper has 2 values, expected 3" in res.reason
    ok = {**raw, "gripper": np.zeros(3)}
    assert filter_chunk(ok, CUR).accepted
    assert not filter_chunk({"position": []}, CUR).accepted  # missing fields


def test_empty_too_long_and_bad_dt():
    assert "empty" in filter_chunk(_chunk(np.zeros((0, 3))), CUR).reason
    assert "max_horizon" in filter_chunk(_chunk(np.zeros((100, 3))), CUR).reason
    res = filter_chunk(_chunk([[0, 0, 0]], dt=5.0), CUR, policy="clip")
    assert not res.accepted and "dt=5.0" in res.reason


def test_workspace_reject_and_clip():
    ch = _chunk([[0.0, 0.0, -0.05], [0.0, 0.0, -0.10], [0.0, 0.0, -0.31]])  # last one below the table
    res = filter_chunk(ch, CUR)
    assert not res.accepted and _rules(res) == {"workspace"}
    assert "outside the workspace box on z" in res.reason and "step 2" in res.reason
    res = filter_chunk(ch, CUR, policy="clip")
    assert res.accepted and res.clipped
    assert res.chunk.position[2, 2] == pytest.approx(SafetyLimits().workspace_min[2])
    np.testing.assert_allclose(res.chunk.position[:2], ch.position[:2])


def test_translation_step_limit_scales_with_dt():
    lim = SafetyLimits()
    assert lim.max_translation(0.2) == pytest.approx(0.225)  # 0.075 m per 15 Hz step × 3 steps
    ch = _chunk([[0.1, 0, 0]], dt=1 / 15)  # 0.1 m in one control step > 0.075 m
    res = filter_chunk(ch, CUR)
    assert not res.accepted and _rules(res) == {"step_translation"}
    assert filter_chunk(_chunk([[0.1, 0, 0]], dt=0.2), CUR).accepted
    res = filter_chunk(ch, CUR, policy="clip")
    assert res.accepted
    assert np.linalg.norm(res.chunk.position[0] - CUR[:3]) == pytest.approx(0.075)


def test_rotation_step_limit():
    eul = np.array([[np.pi, 0.0, 0.6]])  # 0.6 rad yaw in one 0.2 s step > 0.45 rad
    ch = _chunk([[0, 0, 0]], euler=eul)
    res = filter_chunk(ch, CUR)
    assert not res.accepted and _rules(res) == {"step_rotation"}
    res = filter_chunk(ch, CUR, policy="clip")
    R0, R1 = Rotation.from_euler("xyz", CUR[3:]), Rotation.from_euler("xyz", res.chunk.euler[0])
    assert (R0.inv() * R1).magnitude() == pytest.approx(0.45, abs=1e-6)


def test_gripper_range():
    ch = _chunk([[0, 0, 0], [0, 0, 0]], gripper=np.array([0.5, 1.4]))
    res = filter_chunk(ch, CUR)
    assert not res.accepted and _rules(res) == {"gripper"}
    res = filter_chunk(ch, CUR, policy="clip")
    np.testing.assert_allclose(res.chunk.gripper, [0.5, 1.0])


def test_stale_unstamped_and_frame():
    ch = _chunk([[0.01, 0, 0]])
    assert filter_chunk(ch, CUR, age_s=0.1).accepted
    res = filter_chunk(ch, CUR, policy="clip", age_s=3.0)
    assert not res.accepted and _rules(res) == {"stale"} and "3.000 s old" in res.reason
    assert "unstamped" in filter_chunk(ch, CUR, age_s=float("inf")).reason
    assert "in the future" in filter_chunk(ch, CUR, age_s=-2.0).reason
    res = filter_chunk(ch, CUR, frame_id="world", base_frame="panda_link0")
    assert not res.accepted and _rules(res) == {"frame"}
    assert filter_chunk(ch, CUR, frame_id="", base_frame="panda_link0").accepted


def test_joint_position_and_velocity():
    lower, upper = -np.ones(7), np.ones(7)
    vel = np.full(7, 2.0)
    q0 = np.zeros(7)
    qs = np.array([[0.1] * 7, [0.2] * 7])
    _, scale, v = check_joint_trajectory(qs, q0, 0.2, lower, upper, vel)
    assert v == [] and scale == 1.0
    near = qs.copy()
    near[1, 3] = 0.995
    _, _, v = check_joint_trajectory(near, q0, 1.0, lower, upper, vel)
    assert [x.rule for x in v] == ["joint_position"] and "joints 4" in str(v[0])
    qc, _, _ = check_joint_trajectory(near, q0, 1.0, lower, upper, vel, policy="clip")
    assert qc[1, 3] == pytest.approx(0.99)
    fast = np.array([[0.5] * 7])  # 0.5 rad in 0.2 s = 2.5 rad/s > 0.8·2 rad/s
    _, scale, v = check_joint_trajectory(fast, q0, 0.2, lower, upper, vel)
    assert [x.rule for x in v] == ["joint_velocity"] and scale == 1.0
    _, scale, v = check_joint_trajectory(fast, q0, 0.2, lower, upper, vel, policy="clip")
    assert scale == pytest.approx(2.5 / 1.6) and v[0].clipped


def test_limits_validation_and_bad_inputs():
    with pytest.raises(ValidationError, match="below workspace_max"):
        SafetyLimits(workspace_min=[0.5, 0, 0], workspace_max=[0.4, 1, 1])
    with pytest.raises(ValidationError):
        SafetyLimits(max_translation_per_control_step=-1)
    with pytest.raises(ValidationError):
        SafetyLimits(unknown_key=1)
    with pytest.raises(ValueError, match="policy"):
        filter_chunk(_chunk([[0, 0, 0]]), CUR, policy="ignore")
    with pytest.raises(ValueError, match="current EE"):
        filter_chunk(_chunk([[0, 0, 0]]), np.full(6, np.nan))
