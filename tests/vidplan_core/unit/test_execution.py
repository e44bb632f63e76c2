"""vidplan_core.execution: the one chunk → joint plan path (filter → IK → joint checks → timing) or its rejection."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from vidplan_core.execution import IKOptions, JointPlan, Rejection, plan_execution
from vidplan_core.kinematics import HOME_Q, PandaKinematics, transform_to_action
from vidplan_core.safety import SafetyLimits
from vidplan_core.spaces import EEChunk, euler_to_quat

KIN = PandaKinematics()
HOME_EE = KIN.fk_action(HOME_Q, euler_center=[np.pi, 0, 0])  # (6,) EE pose at home: gripper down, mid-workspace


def _chunk(offsets, dt=0.2, euler=None, gripper=None) -> EEChunk:
    offsets = np.asarray(offsets, float).reshape(-1, 3)
    h = len(offsets)
    return EEChunk(position=HOME_EE[:3] + offsets, euler=np.tile(HOME_EE[3:6], (h, 1)) if euler is None else euler,
                   gripper=np.linspace(0, 1, h) if gripper is None else gripper, dt=dt)


def _mapping(ch: EEChunk) -> dict:
    """The raw-message form (quaternions) of ``ch``, as the executor node hands it over."""
    return {"position": ch.position.copy(), "quaternion": euler_to_quat(ch.euler), "gripper": ch.gripper.copy(),
            "dt": ch.dt}


def _line(n=5, step=0.01):
    return [[step * (i + 1), 0.005 * (i + 1), 0.0] for i in range(n)]


def test_ik_options_defaults_kwargs_and_validation():
    o = IKOptions()
    assert o.kwargs() == dict(max_iters=100, position_tol=5e-4, rotation_tol=5e-3, damping=0.01)
    assert IKOptions(max_iterations=7, damping=0.1).kwargs()["max_iters"] == 7
    with pytest.raises(ValidationError):
        IKOptions(max_iters=100)  # extra="forbid": the kwargs names are not the field names
    with pytest.raises(ValidationError):
        IKOptions(max_iterations=0)
    with pytest.raises(ValidationError):
        IKOptions(position_tolerance=0.0)


def test_accepted_chunk_gives_a_timed_joint_plan():
    ch = _chunk(_line(), dt=0.1)
    plan = plan_execution(ch, HOME_Q, KIN)
    assert isinstance(plan, JointPlan)
    assert plan.positions.shape == (5, 7) and plan.ee_targets.shape == (5, 4, 4)
    np.testing.assert_array_equal(plan.q_start, HOME_Q)
    np.testing.assert_allclose(plan.times, 0.1 * np.arange(1, 6), atol=1e-12)  # (i+1)·dt
    np.testing.assert_allclose(plan.gripper, np.linspace(0, 1, 5))
    np.testing.assert_allclose(plan.ee_targets, KIN.fk_batch(plan.positions), atol=1e-12)
    np.testing.assert_allclose(plan.ee_targets[:, :3, 3], ch.position, atol=1e-3)  # IK reached the targets
    assert plan.notes == [] and plan.truncated_reason == ""
    assert isinstance(plan.chunk, EEChunk) and len(plan.chunk) == 5 and plan.chunk.dt == pytest.approx(0.1)


def test_mapping_and_eechunk_forms_agree():
    ch = _chunk(_line(), dt=0.1)
    a, b = plan_execution(ch, HOME_Q, KIN), plan_execution(_mapping(ch), HOME_Q, KIN)
    assert isinstance(a, JointPlan) and isinstance(b, JointPlan)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    np.testing.assert_allclose(a.times, b.times, atol=1e-12)


def test_time_scale_slows_the_chunk_and_its_step_limits():
    ch = _chunk(_line(), dt=0.1)
    plan = plan_execution(ch, HOME_Q, KIN, time_scale=2.0)
    assert isinstance(plan, JointPlan)
    np.testing.assert_allclose(plan.times, 0.2 * np.arange(1, 6), atol=1e-12)
    assert plan.chunk.dt == pytest.approx(0.2)
    # step limits refer to the executed step: 15 cm in one 0.1 s step is over the limit (0.075 m · 0.1 s · 15 Hz =
    # 0.1125 m), but not when that step is executed 3× slower (0.3375 m per 0.3 s; joint speeds fit then, too)
    far = _chunk([[0.15, 0.0, 0.0]], dt=0.1)
    rej = plan_execution(far, HOME_Q, KIN)
    assert isinstance(rej, Rejection) and rej.status == "rejected" and rej.reason.startswith("[step_translation]")
    plan = plan_execution(far, HOME_Q, KIN, time_scale=3.0)
    assert isinstance(plan, JointPlan) and plan.notes == []
    np.testing.assert_allclose(plan.times, [0.3], atol=1e-12)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="time_scale"):
            plan_execution(ch, HOME_Q, KIN, time_scale=bad)


def test_max_steps_keeps_the_first_steps():
    ch = _chunk(_line(), dt=0.1)
    for form in (ch, _mapping(ch)):
        plan = plan_execution(form, HOME_Q, KIN, max_steps=2)
        assert isinstance(plan, JointPlan) and len(plan.positions) == 2 and len(plan.gripper) == 2
        np.testing.assert_allclose(plan.times, [0.1, 0.2], atol=1e-12)
    full = plan_execution(ch, HOME_Q, KIN, max_steps=0)
    assert isinstance(full, JointPlan) and len(full.positions) == 5
    # a mapping whose lengths disagree is not cut: the filter reports the mismatch on the whole chunk
    m = _mapping(ch)
    m["gripper"] = m["gripper"][:3]
    rej = plan_execution(m, HOME_Q, KIN, max_steps=2)
    assert isinstance(rej, Rejection) and rej.reason.startswith("[structure]") and "expected 5" in rej.reason


def test_out_of_workspace_rejected_or_clipped():
    # 5 steps going down 12 cm per step (dt 0.2 s: within the step limit): the last ones are below the table
    ch = _chunk([[0, 0, -0.12 * (i + 1)] for i in range(5)], dt=0.2)
    rej = plan_execution(ch, HOME_Q, KIN)
    assert isinstance(rej, Rejection) and rej.status == "rejected"
    assert rej.reason.startswith("[workspace]") and "outside the workspace box on z" in rej.reason
    plan = plan_execution(ch, HOME_Q, KIN, policy="clip")
    assert isinstance(plan, JointPlan) and len(plan.positions) == 5
    assert plan.notes and all(v.clipped for v in plan.notes)
    assert [v.step for v in plan.notes if v.rule == "workspace"] == [3, 4]
    assert plan.ee_targets[:, 2, 3].min() == pytest.approx(0.02, abs=1e-3)
    assert plan.chunk.position[:, 2].min() == pytest.approx(0.02)


def test_stale_and_frame_rejections_name_their_rule():
    ch = _chunk(_line(1))
    rej = plan_execution(ch, HOME_Q, KIN, age_s=5.0)
    assert isinstance(rej, Rejection) and rej.reason.startswith("[stale]") and "5.000 s old" in rej.reason
    rej = plan_execution(ch, HOME_Q, KIN, age_s=float("inf"))
    assert isinstance(rej, Rejection) and "unstamped" in rej.reason
    rej = plan_execution(ch, HOME_Q, KIN, frame_id="world", base_frame="panda_link0")
    assert isinstance(rej, Rejection) and rej.reason.startswith("[frame]")
    # both clip-proof: still rejected under clip
    assert isinstance(plan_execution(ch, HOME_Q, KIN, policy="clip", age_s=5.0), Rejection)
    assert isinstance(plan_execution(ch, HOME_Q, KIN, age_s=0.1, frame_id="", base_frame="panda_link0"), JointPlan)


def test_ik_unreachable_truncates_or_aborts():
    # step 1 asks for the far low corner of the box with the gripper pointing up: within the workspace and the
    # (long-dt) step limits, but beyond the arm's reach → keep step 0 and say where it stopped
    target = np.array([0.8, 0.45, 0.02]) - HOME_EE[:3]
    euler = np.array([HOME_EE[3:6], [0.0, 0.0, 0.0]])
    ch = _chunk([[0.01, 0, 0], target], dt=2.0, euler=euler, gripper=np.zeros(2))
    plan = plan_execution(ch, HOME_Q, KIN)
    assert isinstance(plan, JointPlan) and len(plan.positions) == 1 and len(plan.times) == 1
    assert plan.truncated_reason.startswith("IK unreachable at step 1 (residual ")
    assert plan.truncated_reason.endswith("; executed steps 0..0 and stopped there")
    assert len(plan.gripper) == 1 and plan.ee_targets.shape == (1, 4, 4)
    # unreachable at step 0: nothing to execute → aborted (the node's STATUS_ABORTED)
    rej = plan_execution(_chunk([target], dt=2.0, euler=euler[1:], gripper=np.zeros(1)), HOME_Q, KIN)
    assert isinstance(rej, Rejection) and rej.status == "aborted"
    assert rej.reason.startswith("IK unreachable at step 0 (residual ") and rej.reason.endswith("; nothing executed")
    # the IK options are used: one iteration cannot reach even a 1 cm step
    rej = plan_execution(_chunk(_line(1)), HOME_Q, KIN, ik=IKOptions(max_iterations=1))
    assert isinstance(rej, Rejection) and rej.status == "aborted"


def test_joint_velocity_rejected_or_slowed_down():
    slow_limits = SafetyLimits(joint_velocity_scale=0.01)  # ~0.02 rad/s per joint
    ch = _chunk(_line(3), dt=0.2)
    rej = plan_execution(ch, HOME_Q, KIN, slow_limits)
    assert isinstance(rej, Rejection) and rej.status == "rejected" and rej.reason.startswith("[joint_velocity]")
    plan = plan_execution(ch, HOME_Q, KIN, slow_limits, "clip")
    assert isinstance(plan, JointPlan) and {v.rule for v in plan.notes} == {"joint_velocity"}
    step = plan.times[0]
    assert step > 0.2  # slowed down, evenly: times = dt·slow·(i+1)
    np.testing.assert_allclose(plan.times, step * np.arange(1, 4), rtol=1e-12)
    vmax = KIN.velocity_limits * slow_limits.joint_velocity_scale
    dq = np.abs(np.diff(np.vstack([HOME_Q, plan.positions]), axis=0))
    assert np.all(dq / step <= vmax * (1 + 1e-6))


def test_joint_position_margin_keeps_a_joint_out_of_the_band_but_lets_one_in_it_stay_or_leave():
    """The keep-out band inside each joint limit: the executor's IK solves around a joint at its band (the redundant
    arm does the work), and a joint already standing in the band (tracking overshoot; MuJoCo's soft limit even lets
    one past the limit) may hold or move out. Before, standing in the band was itself a violation, so every chunk
    from there, the hold included, was rejected and the arm stayed stuck (12 holds in one put episode)."""
    from vidplan_core.planning.proposals import basis_velocity_proposals

    for inside in (0.005, 0.0, -0.002):  # in the band, at the limit, 2 mrad past it
        q = HOME_Q.copy()
        q[6] = KIN.upper[6] - inside
        a = transform_to_action(KIN.fk(KIN.clip(q)))
        hold = EEChunk(position=np.tile(a[:3], (4, 1)), euler=np.tile(a[3:6], (4, 1)), gripper=np.zeros(4), dt=0.2)
        plan = plan_execution(hold, q, KIN)
        assert isinstance(plan, JointPlan) and not plan.notes and len(plan.positions) == 4, (inside, plan)
        assert np.all(plan.positions[:, 6] <= min(q[6], KIN.upper[6]) + 1e-12)  # never further in
        props = basis_velocity_proposals(KIN, q, 6, 0.05, 0.0, euler_center=a[3:6], velocity_scale=0.72,
                                         joint_margin=0.01)
        for lab, act in zip(props.labels, props.actions, strict=True):
            plan = plan_execution(EEChunk.from_actions(act, dt=0.2), q, KIN)
            assert isinstance(plan, JointPlan) and len(plan.positions) == 6, (inside, lab, plan)
            assert np.all(plan.positions[:, 6] <= min(q[6], KIN.upper[6]) + 1e-12)
    # a joint outside the band is kept out of it: IK for a pose whose nearest solution enters it solves around it
    q = HOME_Q.copy()
    q[6] = KIN.upper[6] - 0.02
    near = q.copy()
    near[6] = KIN.upper[6] - 0.002  # the same pose family, 2 mrad from the limit
    a = transform_to_action(KIN.fk(near))
    ch = EEChunk(position=a[None, :3], euler=a[None, 3:6], gripper=np.zeros(1), dt=0.2)
    plan = plan_execution(ch, q, KIN)
    if isinstance(plan, JointPlan):  # solved by the other joints, within the band
        assert plan.positions[0, 6] <= KIN.upper[6] - 0.01 + 1e-12
    else:  # or not reachable without entering it: nothing moves
        assert plan.reason.startswith("IK unreachable at step 0")


def test_joint_band_bounds():
    from vidplan_core.safety import joint_band

    lower, upper = -np.ones(7), np.ones(7)
    q0 = np.array([0.0, 0.995, -0.999, 1.003, -1.2, 0.989, 0.5])
    lo, hi = joint_band(q0, lower, upper, 0.01)
    np.testing.assert_allclose(hi, [0.99, 0.995, 0.99, 1.0, 0.99, 0.99, 0.99])  # stays where it stands, ≤ the limit
    np.testing.assert_allclose(lo, [-0.99, -0.99, -0.999, -0.99, -1.0, -0.99, -0.99])


def test_caller_bugs_raise():
    ch = _chunk(_line(1))
    with pytest.raises(ValueError, match="q must be"):
        plan_execution(ch, np.zeros(6), KIN)
    with pytest.raises(ValueError, match="q must be"):
        plan_execution(ch, np.full(7, np.nan), KIN)
    with pytest.raises(ValueError, match="policy"):
        plan_execution(ch, HOME_Q, KIN, policy="ignore")


def test_nothing_is_modified_in_place():
    ch = _chunk([[0, 0, -0.12 * (i + 1)] for i in range(5)], dt=0.2)
    m = _mapping(ch)
    before = {k: np.array(v, copy=True) for k, v in m.items()}
    pos0, q = ch.position.copy(), HOME_Q.copy()
    plan_execution(ch, q, KIN, policy="clip", max_steps=3, time_scale=2.0)
    plan_execution(m, q, KIN, policy="clip", max_steps=3, time_scale=2.0)
    np.testing.assert_array_equal(ch.position, pos0)
    assert ch.dt == 0.2 and len(ch) == 5
    for k, v in before.items():
        np.testing.assert_array_equal(m[k], v)
    np.testing.assert_array_equal(q, HOME_Q)
