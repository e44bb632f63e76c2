"""planning.proposals and planning.rtc: Jacobian basis proposals checked with FK, perturbations, composition."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.kinematics import HOME_Q, PandaKinematics
from vidplan_core.planning.nominal import HoldPolicy, NominalObservation, ReplayPolicy
from vidplan_core.planning.proposals import (
    BASIS_DIRECTIONS,
    basis_velocity_proposals,
    compose_proposals,
    gripper_proposals,
    perturbation_proposals,
)
from vidplan_core.planning.rtc import blend_chunks, pose_after_latency
from vidplan_core.spaces import EEChunk


@pytest.fixture(scope="module")
def kin() -> PandaKinematics:
    return PandaKinematics()


@pytest.mark.parametrize("q0", [HOME_Q, HOME_Q + np.array([0.3, 0.2, -0.2, 0.3, 0.1, -0.2, 0.0])])
def test_basis_proposals_move_in_the_six_directions(kin, q0):
    speed, H = 0.04, 5
    props = basis_velocity_proposals(kin, q0, H, speed=speed, gripper=0.3)
    assert props.actions.shape == (6, H, 7) and props.labels == list(BASIS_DIRECTIONS)
    start = kin.fk(q0)
    for label, chunk in zip(props.labels, props.actions, strict=True):
        disp = chunk[-1, :3] - start[:3, 3]
        # 5 model steps at 5 Hz = 1 s at `speed` m/s
        assert np.linalg.norm(disp) == pytest.approx(speed * 1.0, rel=0.05), label
        cos = disp @ BASIS_DIRECTIONS[label] / np.linalg.norm(disp)
        assert cos > 0.99, (label, disp)
        # monotone progress along the direction, orientation held, gripper kept
        prog = (chunk[:, :3] - start[:3, 3]) @ BASIS_DIRECTIONS[label]
        assert np.all(np.diff(prog) > 0)
        np.testing.assert_allclose(chunk[:, 3:6], np.repeat(kin.fk_action(q0)[None, 3:6], H, 0), atol=5e-3)
        np.testing.assert_allclose(chunk[:, 6], 0.3)


def test_basis_proposals_respect_joint_limits(kin):
    q0 = kin.upper - 0.01  # at the limits: motion is clipped, never beyond
    props = basis_velocity_proposals(kin, q0, 3, speed=0.5)
    assert np.isfinite(props.actions).all()
    with pytest.raises(ValueError, match="unknown directions"):
        basis_velocity_proposals(kin, HOME_Q, 3, directions=("up",))


def test_perturbations_and_composition(kin):
    nominal = HoldPolicy(4).infer(NominalObservation(ee_pose=np.r_[0.4, 0.0, 0.3, np.pi - 0.01, 0, 0, 0.0]))
    pert = perturbation_proposals(nominal, 10, rng=1)
    np.testing.assert_allclose(pert.actions[0], nominal)
    assert pert.actions[1:].std() > 0
    assert np.all(np.abs(pert.actions[..., 3] - nominal[None, :, 3]) < 0.5)  # angles stay next to the nominal's
    assert np.all((pert.actions[..., 6] >= 0) & (pert.actions[..., 6] <= 1))
    basis = basis_velocity_proposals(kin, HOME_Q, 4)
    both = compose_proposals(basis, pert)
    assert both.actions.shape == (16, 4, 7) and both.labels[:6] == list(BASIS_DIRECTIONS)
    with pytest.raises(ValueError, match="different horizons"):
        compose_proposals(basis, perturbation_proposals(nominal[:3], 2))


def test_replay_policy_advances_and_holds():
    rec = np.tile(np.arange(6.0)[:, None], (1, 7)) * 0.01
    pol = ReplayPolicy(rec, horizon=3)
    obs = NominalObservation(ee_pose=rec[0])
    np.testing.assert_allclose(pol.infer(obs)[:, 0], [0.01, 0.02, 0.03])
    np.testing.assert_allclose(pol.infer(obs)[:, 0], [0.02, 0.03, 0.04])
    for _ in range(5):
        last = pol.infer(obs)
    np.testing.assert_allclose(last[:, 0], [0.05, 0.05, 0.05])


def test_rtc_latency_pose_and_blend():
    cur = np.array([0.0, 0, 0, np.pi - 0.05, 0, 0, 0])
    acts = np.zeros((5, 7))
    acts[:, 0] = np.arange(1, 6) * 0.1
    acts[:, 3] = -np.pi + 0.05  # crosses ±π: interpolation must go the short way
    chunk = EEChunk.from_actions(acts, dt=0.2)
    p = pose_after_latency(cur, chunk, elapsed_s=0.1, latency_s=0.2)  # t = 0.3 s → 1.5 steps
    assert p[0] == pytest.approx(0.15)
    assert abs(np.cos(p[3]) - np.cos(np.pi)) < 1e-2
    np.testing.assert_allclose(pose_after_latency(cur, chunk, 5.0, 1.0)[0], 0.5)
    new = EEChunk.from_actions(np.zeros((5, 7)) + np.r_[1.0, 0, 0, 0, 0, 0, 0], dt=0.2)
    blended = blend_chunks(acts[2:], new, blend_steps=2)
    assert blended.position[0, 0] == pytest.approx((2 / 3) * 0.3 + (1 / 3) * 1.0)
    assert blended.position[2, 0] == pytest.approx(1.0)


def test_proposals_stay_inside_the_executor_limits(kin):
    """Bounded by the executor's safety limits (one source: PlanningConfig.limits), no basis proposal is rejected by
    the execution core: the motion stops at the workspace wall and joint speed stays below the allowance."""
    from vidplan_core.execution import JointPlan, plan_execution
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.spaces import EEChunk

    cfg = load_planning_config()
    assert cfg.session.gradopt.position_min == tuple(cfg.limits.workspace_min)
    pc = cfg.session.proposals
    assert pc.workspace_max == cfg.limits.workspace_max and pc.joint_velocity_scale == cfg.limits.joint_velocity_scale
    T = kin.fk(HOME_Q)
    T[:3, 3] = [0.5, 0.43, 0.04]  # 2 cm from two walls of the box (y max, z min)
    q = kin.ik(T, HOME_Q, max_iters=500).q
    near_wall = kin.fk(q)[:3, 3]
    assert np.allclose(near_wall, T[:3, 3], atol=1e-3)
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon = kin, cfg.session, 5
    pose = kin.fk_action(q)
    pose = np.append(pose, 0.0)
    props = PlanningSession.proposals(session, q, pose)
    assert "toggle_gripper" in props.labels and "hold" in props.labels
    tog = props.actions[props.labels.index("toggle_gripper")]
    assert np.allclose(tog[:, 6], 1.0) and np.allclose(tog[:, :6], pose[:6])
    lo, hi = np.array(cfg.limits.workspace_min), np.array(cfg.limits.workspace_max)
    for lab, a in zip(props.labels, props.actions, strict=True):
        assert (a[:, :3] >= lo - 1e-6).all() and (a[:, :3] <= hi + 1e-6).all(), (lab, a[:, :3], near_wall)
        res = plan_execution(EEChunk.from_actions(a), q, kin, cfg.limits, "reject")
        assert isinstance(res, JointPlan), (lab, res)


def test_gripper_toggle_follows_the_nominal_motion_when_there_is_one():
    """With a nominal policy the toggle candidate moves like the nominal (gripper toggled): a held toggle won the
    cycles of every failing scripted+vidplan episode and stood the arm still (closed_loop_tiny_decoder)."""
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession

    kin = PandaKinematics()
    pose = np.append(kin.fk_action(HOME_Q), 0.0)
    rec = np.tile(pose, (20, 1))
    rec[:, 0] += np.linspace(0.0, 0.1, 20)  # the nominal moves 10 cm along +x, gripper open
    cfg = load_planning_config().session.model_copy(deep=True)
    cfg.proposals.num_nominal = 4
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon = kin, cfg, 5
    session.nominal = ReplayPolicy(rec, horizon=5)
    props = PlanningSession.proposals(session, HOME_Q, pose)
    assert "toggle_gripper" not in props.labels
    tog = props.actions[props.labels.index("toggle_nominal")]
    nominal = props.actions[props.labels.index("nominal")]
    assert np.allclose(tog[:, :6], nominal[:, :6]) and np.allclose(tog[:, 6], 1.0) and np.allclose(nominal[:, 6], 0)
    assert tog[-1, 0] - pose[0] > 0.02  # it moves, not held
    with pytest.raises(ValueError, match="motion must be"):
        gripper_proposals(pose, 5, motion=rec)


def test_contact_instructions_are_planned_with_the_gripper_closed():
    """contact_closed (shipped on): a touch/push instruction gives basis and hold candidates with the gripper closed
    from the first cycle and no toggle (an open gripper straddled the cube without touching it); a put instruction,
    or the option off, keeps the gripper as it is and the toggle."""
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.goal import contact_instruction
    from vidplan_core.planning.session import PlanningSession

    assert contact_instruction("touch the red cube") and contact_instruction("Please push the ball to the left")
    assert contact_instruction("  Tap the bowl") and not contact_instruction("put the red cube in the bowl")
    assert not contact_instruction("pick up the cube you can touch") and not contact_instruction("touchscreen off")
    kin = PandaKinematics()
    pose = np.append(kin.fk_action(HOME_Q), 0.0)  # gripper open
    cfg = load_planning_config().session.model_copy(deep=True)
    assert cfg.proposals.contact_closed  # planner.yaml ships it
    assert load_planning_config().session.gradopt.score.approach_observed  # a put placed on the observed frames
    assert load_planning_config().session.gradopt.score.locate_observed  # and touch and push located on them
    cfg.proposals.put_approach = False  # it reads the planner's last reference (test_planning_planner tests it)
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon = kin, cfg, 5
    assert session.closed_contact("touch the red cube") and not session.closed_contact("put the red cube in the bowl")
    for instruction in ("touch the red cube", "push the green ball to the right"):
        props = PlanningSession.proposals(session, HOME_Q, pose, instruction)
        assert "toggle_gripper" not in props.labels and "hold" in props.labels and "+x" in props.labels
        assert np.allclose(props.actions[..., 6], 1.0), instruction
        held = props.actions[props.labels.index("hold")]
        assert np.allclose(held[:, :6], pose[:6])
    put = PlanningSession.proposals(session, HOME_Q, pose, "put the red cube in the bowl")
    assert "toggle_gripper" in put.labels and np.allclose(put.actions[put.labels.index("+x")][:, 6], 0.0)
    cfg.proposals.contact_closed = False
    assert not session.closed_contact("touch the red cube")
    off = PlanningSession.proposals(session, HOME_Q, pose, "touch the red cube")
    assert "toggle_gripper" in off.labels and np.allclose(off.actions[off.labels.index("hold")][:, 6], 0.0)


def test_hold_shrink_halves_the_step_after_a_hold_and_restores_it_after_a_move(kin):
    """hold_shrink: a chosen 'hold' makes the next cycle's basis chunks shorter (down to hold_min_speed_mps), a chosen
    basis direction lengthens them again; another instruction, a fallback hold, a put instruction or a new episode
    start at full speed."""
    from types import SimpleNamespace

    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession

    pose = np.append(kin.fk_action(HOME_Q), 0.0)
    cfg = load_planning_config().session.model_copy(deep=True)
    cfg.proposals.hold_shrink, cfg.proposals.hold_min_speed_mps = 0.5, 0.03
    cfg.proposals.put_approach = False  # it reads the planner's last reference (test_planning_planner tests it)
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon, session._step_scale = kin, cfg, 5, ("", 1.0)
    session.planner = SimpleNamespace(reset_target=lambda: None)
    touch = "touch the red cube"

    def reach(instruction: str) -> float:  # how far the +x chunk goes [m]
        props = PlanningSession.proposals(session, HOME_Q, pose, instruction)
        return float(props.actions[props.labels.index("+x"), -1, 0] - pose[0])

    def chose(instruction: str, label: str, fallback: str = "") -> None:
        props = PlanningSession.proposals(session, HOME_Q, pose, instruction)
        session._update_step_scale(instruction, SimpleNamespace(chosen_index=props.labels.index(label),
                                                                fallback=fallback), props)

    full = reach(touch)
    assert full == pytest.approx(0.15, abs=0.01)  # 1 s at 0.15 m/s
    chose(touch, "hold")
    assert session.step_scale(touch) == 0.5 and reach(touch) == pytest.approx(full / 2, rel=0.02)
    chose(touch, "hold")
    chose(touch, "hold")  # 0.125 × 0.15 m/s is below the 0.03 m/s floor
    assert session.step_scale(touch) == pytest.approx(0.2) and reach(touch) == pytest.approx(0.03, abs=0.003)
    chose(touch, "-z")
    assert session.step_scale(touch) == pytest.approx(0.4)
    chose(touch, "hold", fallback="hold")  # the executor's check, not the scores, held: no change
    assert session.step_scale(touch) == pytest.approx(0.4)
    assert reach("push the red cube to the left") == pytest.approx(full, rel=1e-6)  # another instruction
    put = "put the red cube in the bowl"
    chose(put, "hold")
    assert session.step_scale(put) == 1.0  # contact instructions only
    chose(touch, "hold")
    session.reset_episode()
    assert session.step_scale(touch) == 1.0 and reach(touch) == pytest.approx(full, rel=1e-6)
    cfg.proposals.hold_shrink = 1.0  # off: nothing changes
    chose(touch, "hold")
    assert session.step_scale(touch) == 1.0


def test_random_directions_fill_the_free_slot_of_a_contact_instruction(kin):
    """random_directions: one more candidate at the basis speed in a direction drawn from the cycle's seed (same seed,
    same direction), carrying the gripper as the basis candidates do; under contact_closed a touch then has 8
    candidates again, the batch an export was made for."""
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession

    pose = np.append(kin.fk_action(HOME_Q), 0.0)
    cfg = load_planning_config().session.model_copy(deep=True)
    cfg.proposals.random_directions = 1
    cfg.proposals.put_approach = False  # it reads the planner's last reference (test_planning_planner tests it)
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon = kin, cfg, 5
    a = PlanningSession.proposals(session, HOME_Q, pose, "touch the red cube", seed=4)
    b = PlanningSession.proposals(session, HOME_Q, pose, "touch the red cube", seed=4)
    c = PlanningSession.proposals(session, HOME_Q, pose, "touch the red cube", seed=5)
    assert len(a) == 8 == session.num_candidates - 1 and "rand0" in a.labels and "toggle_gripper" not in a.labels
    r = a.labels.index("rand0")
    np.testing.assert_array_equal(a.actions[r], b.actions[r])
    assert not np.allclose(a.actions[r], c.actions[r])
    assert np.allclose(a.actions[r, :, 6], 1.0)  # closed, as the basis candidates of a contact instruction
    assert np.linalg.norm(a.actions[r, -1, :3] - pose[:3]) == pytest.approx(0.15, abs=0.01)
    put = PlanningSession.proposals(session, HOME_Q, pose, "put the red cube in the bowl", seed=4)
    assert len(put) == 9 and np.allclose(put.actions[put.labels.index("rand0"), :, 6], 0.0)


def test_approach_proposal_lands_on_its_goal_and_stays(kin):
    """A goal within reach of the chunk is reached at the basis speed and held; a farther one is headed for in a
    straight line; a goal outside the executor's box is clipped into it; the clearance rule goes over, then down."""
    from vidplan_core.planning.proposals import approach_goal, approach_proposals

    pose = kin.fk_action(HOME_Q)
    lo, hi = np.array([0.2, -0.45, 0.02]), np.array([0.8, 0.45, 0.7])
    near = pose[:3] + np.array([0.04, 0.02, -0.08])  # 9 cm: reached within the 1 s chunk at 0.15 m/s
    a = approach_proposals(kin, HOME_Q, 5, near, 0.15, 1.0, pose[3:6], workspace_min=lo, workspace_max=hi)
    assert a.labels == ["approach"] and a.actions.shape == (1, 5, 7) and np.allclose(a.actions[0, :, 6], 1.0)
    np.testing.assert_allclose(a.actions[0, -2:, :3], np.tile(near, (2, 1)), atol=2e-3)
    far = pose[:3] + np.array([0.0, 0.30, -0.30])
    b = approach_proposals(kin, HOME_Q, 5, far, 0.15, 0.0, pose[3:6], workspace_min=lo, workspace_max=hi)
    moved = b.actions[0, -1, :3] - pose[:3]
    assert np.linalg.norm(moved) == pytest.approx(0.15, abs=0.01)  # 1 s at 0.15 m/s
    assert np.dot(moved / np.linalg.norm(moved), (far - pose[:3]) / np.linalg.norm(far - pose[:3])) > 0.999
    c = approach_proposals(kin, HOME_Q, 5, np.array([pose[0], 0.0, -0.5]), 0.5, 0.0, pose[3:6], workspace_min=lo,
                           workspace_max=hi)
    assert c.actions[0, :, 2].min() >= lo[2] - 1e-6
    np.testing.assert_allclose(approach_goal([0.3, 0.0, 0.5], [0.4, 0.06, 0.02], 0.06, 0.03), [0.4, 0.06, 0.08])
    np.testing.assert_allclose(approach_goal([0.39, 0.06, 0.1], [0.4, 0.06, 0.02], 0.06, 0.03), [0.4, 0.06, 0.02])
    np.testing.assert_allclose(approach_goal([0.3, 0.0, 0.5], [0.4, 0.06, 0.02], 0.06, 0.03, direct=True),
                               [0.4, 0.06, 0.02])
    with pytest.raises(ValueError, match="goal"):
        approach_proposals(kin, HOME_Q, 5, np.array([np.nan, 0, 0]), 0.15, 0.0, pose[3:6])


def test_planner_config_unknown_key_is_named():
    import pytest as _pytest

    from vidplan_core.planning.config import PlanningConfigError, load_planning_config, parse_override

    with _pytest.raises(PlanningConfigError, match=r"session\.gradopt\.kapa"):
        load_planning_config(None, {"session.gradopt.kapa": 1})
    with _pytest.raises(PlanningConfigError, match="open_loop_steps"):
        load_planning_config(None, {"open_loop_steps": 0})
    assert parse_override("session.proposals.basis_speed_mps=0.1") == ("session.proposals.basis_speed_mps", 0.1)
    cfg = load_planning_config(None, dict([parse_override("limits.workspace_max=[0.7, 0.4, 0.6]")]))
    assert cfg.session.gradopt.position_max == (0.7, 0.4, 0.6)
    assert cfg.session.limits == cfg.limits  # the session's executability check uses the executor's limits
    with _pytest.raises(PlanningConfigError, match="set limits instead"):
        load_planning_config(None, {"session.limits.joint_velocity_scale": 0.5})
