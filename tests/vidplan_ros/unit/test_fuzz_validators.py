"""Property-based fuzzing (hypothesis) of the validators between the wire and the arm (issue 13: nothing from the
wire may stop the arm from stopping).

Thousands of generated messages (tests/fuzz_strategies.py) against:

* the chunk safety filter (:func:`vidplan_core.safety.filter_chunk`) and the execution core
  (:func:`vidplan_core.execution.plan_execution`, fed through the executor node's own PlanChunk → mapping
  conversion): nothing raises, every rejection carries a reason naming its rule, every injected defect is rejected
  (or, under the clip policy, repaired into the limits), and what is accepted lies within the limits;
* the message conversions and validators of :mod:`vidplan_ros.conversions` (chunks, stamps, poses, images, joint
  states): a validator returns None or a non-empty reason and never raises; what it passes, the consumer decodes;
  what it refuses, the consumer refuses with the same reason.

Every test sets its own ``max_examples``; ``deadline=None`` (a loaded 2-core CI machine must not turn slowness into
failures) and ``database=None`` (no .hypothesis/ folder in the working tree). A failure prints the falsifying
example; a bug it found is also pinned by an explicit-example test (e.g. huge finite quaternions).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fuzz_strategies import (
    _PNG_1X1,
    ANY_F64,
    PANDA_JOINTS,
    PLAUSIBLE_F64,
    compressed_images,
    defective_chunks,
    images,
    joint_states,
    mutated_chunks,
    plan_chunk_from_arrays,
    plan_chunks,
    poses,
    raw_chunk_mappings,
    stamps,
    valid_chunk_arrays,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from vidplan_core.execution import JointPlan, Rejection, plan_execution
from vidplan_core.kinematics import HOME_Q, PandaKinematics
from vidplan_core.safety import FilterResult, SafetyLimits, filter_chunk
from vidplan_core.spaces import EEChunk, quat_to_euler
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros import conversions as conv
from vidplan_ros.executor_node import _chunk_mapping  # the executor's own PlanChunk → mapping step

# float extremes overflow inside numpy/scipy on purpose here; those warnings are expected noise
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:Gimbal lock detected:UserWarning")]
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])


def fuzz(max_examples: int) -> settings:
    """The settings of every test here, with its number of generated cases."""
    return settings(FUZZ, max_examples=max_examples)
KIN = PandaKinematics()
LIMITS = SafetyLimits()
BASE = "panda_link0"
HOME_T = KIN.fk(HOME_Q)
HOME_POS, HOME_QUAT = HOME_T[:3, 3].copy(), Rotation.from_matrix(HOME_T[:3, :3]).as_quat()
TOL = 1e-6


def _ages() -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), st.floats(0.0, 0.9), ANY_F64)


def _assert_within_limits(chunk: EEChunk, start_pos: np.ndarray, start_R: Rotation, limits: SafetyLimits) -> None:
    """What the filter lets through: finite, inside the box, gripper in range, steps within the dt-scaled limits."""
    pos, eul, grip = chunk.position, chunk.euler, chunk.gripper
    assert np.isfinite(pos).all() and np.isfinite(eul).all() and np.isfinite(grip).all()
    assert limits.min_dt <= chunk.dt <= limits.max_dt
    assert 1 <= len(pos) <= limits.max_horizon and len(eul) == len(grip) == len(pos)
    assert np.all(pos >= np.asarray(limits.workspace_min) - TOL) and np.all(pos <= np.asarray(limits.workspace_max)
                                                                              + TOL)
    assert np.all(grip >= limits.gripper_min - TOL) and np.all(grip <= limits.gripper_max + TOL)
    steps = np.linalg.norm(np.diff(np.vstack([start_pos, pos]), axis=0), axis=1)
    assert np.all(steps <= limits.max_translation(chunk.dt) + TOL), steps
    rots = Rotation.from_euler("xyz", eul)
    prev = Rotation.concatenate([start_R, rots[:-1]]) if len(rots) > 1 else start_R
    angles = (prev.inv() * rots).magnitude()
    assert np.all(angles <= limits.max_rotation(chunk.dt) + 1e-5), angles


def _check_result(res: FilterResult, policy: str) -> None:
    assert isinstance(res, FilterResult)
    if not res.accepted:
        assert res.violations and res.reason.strip(), res
        assert all(v.rule and v.message for v in res.violations)
        return
    if policy == "reject":
        assert res.violations == [], res.reason
    _assert_within_limits(res.chunk, HOME_POS, Rotation.from_quat(HOME_QUAT), LIMITS)


# ------------------------------------------------------------------------------------------------ safety filter


@fuzz(1200)
@given(m=st.one_of(raw_chunk_mappings(),
                  mutated_chunks(HOME_POS, HOME_QUAT, LIMITS, values=st.one_of(PLAUSIBLE_F64, st.floats(-1.0, 1.0)))),
       policy=st.sampled_from(["reject", "clip"]), age=_ages(),
       frame=st.sampled_from(["", BASE, "world"]))
def test_filter_chunk_never_raises_and_every_rejection_has_a_reason(m, policy, age, frame):
    """Malformed and near-valid chunks: a FilterResult, never an exception; a rejection names its rules; what is
    accepted (as is, or clipped) lies within the limits."""
    res = filter_chunk(m, HOME_T, LIMITS, policy, age_s=age, frame_id=frame, base_frame=BASE)
    _check_result(res, policy)
    event("accepted" if res.accepted else f"rejected {res.violations[0].rule}")


@fuzz(1000)
@given(d=defective_chunks(HOME_POS, HOME_QUAT, LIMITS, base_frame=BASE))
def test_every_injected_defect_is_rejected_naming_its_rule_or_clipped_into_the_limits(d):
    event(d.defect)
    res = filter_chunk(d.chunk, HOME_T, LIMITS, "reject", age_s=d.age_s, frame_id=d.frame_id, base_frame=BASE)
    assert not res.accepted, (d.defect, res)
    assert f"[{d.rule}]" in res.reason, (d.defect, res.reason)
    clip = filter_chunk(d.chunk, HOME_T, LIMITS, "clip", age_s=d.age_s, frame_id=d.frame_id, base_frame=BASE)
    if d.clippable:
        assert clip.accepted and clip.clipped, (d.defect, clip.reason)
        assert any(v.rule == d.rule and v.clipped for v in clip.violations), (d.defect, clip.reason)
        _assert_within_limits(clip.chunk, HOME_POS, Rotation.from_quat(HOME_QUAT), LIMITS)
    else:
        assert not clip.accepted and f"[{d.rule}]" in clip.reason, (d.defect, clip.reason)


@fuzz(150)
@given(c=valid_chunk_arrays(HOME_POS, HOME_QUAT, LIMITS), age=st.one_of(st.none(), st.floats(-0.9, 0.9)))
def test_valid_chunks_pass_the_filter_unchanged(c, age):
    res = filter_chunk(c, HOME_T, LIMITS, "reject", age_s=age, frame_id=BASE, base_frame=BASE)
    assert res.accepted and res.violations == [], res.reason
    np.testing.assert_allclose(res.chunk.position, c["position"], atol=1e-12)
    ang = (Rotation.from_euler("xyz", res.chunk.euler).inv() * Rotation.from_quat(c["quaternion"])).magnitude()
    assert np.all(ang < 1e-9)
    np.testing.assert_allclose(res.chunk.gripper, c["gripper"])


@pytest.mark.parametrize("quat", [[1e200, 0.0, 0.0, 0.0], [1e300, 1e300, 0.0, 1.0], [-1.7e308, 0.0, 0.0, 0.0]])
def test_huge_finite_quaternion_is_rejected_not_raised(quat):
    # the norm of these overflows float64: quat / inf = 0 made Rotation.from_quat raise out of filter_chunk
    m = {"position": HOME_POS[None], "quaternion": np.array([quat]), "gripper": np.zeros(1), "dt": 0.2}
    for policy in ("reject", "clip"):
        res = filter_chunk(m, HOME_T, LIMITS, policy)
        assert not res.accepted and "[quaternion]" in res.reason, res


# ------------------------------------------------------------------------------------------------ execution core


def _joint_vectors(around: np.ndarray | None = None, radius: float = 0.5) -> st.SearchStrategy[np.ndarray]:
    """Joint positions strictly inside the URDF limits [rad]; within ``radius`` of ``around`` when given."""
    lo, hi = KIN.lower + 0.05, KIN.upper - 0.05
    if around is not None:
        lo, hi = np.maximum(lo, around - radius), np.minimum(hi, around + radius)
    return st.tuples(*[st.floats(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]).map(np.array)


def _check_plan(out: JointPlan | Rejection, q: np.ndarray) -> None:
    if isinstance(out, Rejection):
        assert out.status in ("rejected", "aborted") and out.reason.strip(), out
        return
    assert isinstance(out, JointPlan)
    k = len(out.positions)
    assert k >= 1 and out.positions.shape == (k, 7) and np.isfinite(out.positions).all()
    assert np.all(out.positions >= KIN.lower) and np.all(out.positions <= KIN.upper)
    assert out.times.shape == (k,) and out.times[0] > 0 and np.all(np.diff(out.times) > 0)
    assert out.gripper.shape == (k,) and np.all((out.gripper >= 0) & (out.gripper <= 1))
    np.testing.assert_array_equal(out.q_start, q)


@fuzz(300)
@given(msg=plan_chunks(max_len=8), q=_joint_vectors(),
       policy=st.sampled_from(["reject", "clip"]), time_scale=st.one_of(st.just(1.0), st.floats(0.01, 100.0)),
       max_steps=st.integers(0, 10), age=_ages())
def test_plan_execution_of_any_plan_chunk_message_moves_nothing_unsafe(msg, q, policy, time_scale, max_steps, age):
    """Any PlanChunk the executor could receive, through its own conversion and the execution core: a JointPlan
    within the joint limits, or a Rejection with a reason; nothing else (no exception)."""
    out = plan_execution(_chunk_mapping(msg), q, KIN, LIMITS, policy, time_scale=time_scale, max_steps=max_steps,
                         age_s=age, frame_id=msg.header.frame_id, base_frame=BASE)
    _check_plan(out, q)


@fuzz(200)
@given(data=st.data(), q=_joint_vectors(around=HOME_Q), policy=st.sampled_from(["reject", "clip"]))
def test_plan_execution_of_valid_chunks_from_many_joint_states(data, q, policy):
    """Valid chunks starting at the FK of joint states around the ready pose (EE inside the box): executed within
    the joint limits, or a reasoned rejection (joint limit / velocity) or abort (IK unreachable)."""
    T = KIN.fk(q)
    p0 = T[:3, 3]
    lo, hi = np.asarray(LIMITS.workspace_min) + 0.01, np.asarray(LIMITS.workspace_max) - 0.01
    assume(np.all(p0 > lo) and np.all(p0 < hi))  # outside the box every chunk is rejected (covered above)
    c = data.draw(valid_chunk_arrays(p0, Rotation.from_matrix(T[:3, :3]).as_quat(), LIMITS, max_len=5))
    msg = plan_chunk_from_arrays(c, conv.sec_to_stamp(0.0), BASE)
    out = plan_execution(_chunk_mapping(msg), q, KIN, LIMITS, policy, age_s=0.0, frame_id=BASE, base_frame=BASE)
    _check_plan(out, q)
    event(type(out).__name__ if isinstance(out, JointPlan) else f"{out.status}: {out.reason.split(']')[0]}]")


# ------------------------------------------------------------------------------------------------ conversions


@fuzz(400)
@given(msg=plan_chunks(max_len=6))
def test_chunk_from_msg_returns_a_chunk_or_raises_value_error(msg):
    try:
        chunk = conv.chunk_from_msg(msg)
    except ValueError as exc:
        assert str(exc).strip()
        return
    assert len(chunk) == len(msg.poses) == len(msg.gripper)
    assert chunk.position.shape == (len(msg.poses), 3) and chunk.euler.shape == (len(msg.poses), 3)


@fuzz(150)
@given(c=valid_chunk_arrays(HOME_POS, HOME_QUAT, LIMITS), stamp=stamps(st.integers(0, 2**31 - 1)),
       plan_id=st.integers(0, 2**64 - 1), instruction=st.text(max_size=40))
def test_chunk_to_msg_and_back_is_lossless(c, stamp, plan_id, instruction):
    from vidplan_core.spaces import EEChunk

    eul = Rotation.from_quat(c["quaternion"]).as_euler("xyz")
    chunk = EEChunk(position=c["position"], euler=eul, gripper=c["gripper"], dt=c["dt"])
    msg = conv.chunk_to_msg(chunk, PlanChunk, BASE, stamp, plan_id, instruction)
    assert msg.plan_id == plan_id and msg.instruction == instruction and msg.header.stamp == stamp
    back = conv.chunk_from_msg(msg)
    np.testing.assert_allclose(back.position, chunk.position, atol=1e-12)
    ang = (Rotation.from_euler("xyz", back.euler).inv() * Rotation.from_euler("xyz", eul)).magnitude()
    assert np.all(ang < 1e-9)
    np.testing.assert_allclose(back.gripper, chunk.gripper, atol=1e-6)  # float32 on the wire
    assert back.dt == chunk.dt


@fuzz(500)
@given(t=st.floats(-(2.0**31) + 1, 2.0**31 - 2))
def test_sec_to_stamp_and_back(t):
    s = conv.sec_to_stamp(t)
    assert 0 <= s.nanosec < 1_000_000_000
    assert abs(conv.stamp_to_sec(s) - t) <= 1e-9 + abs(t) * 4e-16


@fuzz(300)
@given(v=st.lists(st.floats(-1e6, 1e6), min_size=7, max_size=7).map(np.array))
def test_pose_vec_round_trip(v):
    np.testing.assert_array_equal(conv.pose_to_vec(conv.pose_from_vec(v)), v)


# ------------------------------------------------------------------------------------------------ validators


@fuzz(600)
@given(msg=st.one_of(images(), compressed_images()))
def test_validate_image_and_image_to_array_agree(msg):
    """validate_image: None or a reason, never raises; image_to_array decodes exactly what it passes (to (H, W, 3)
    uint8, the pixels of the message) and raises ImageDecodeError with that reason for the rest."""
    reason = conv.validate_image(msg)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        with pytest.raises(conv.ImageDecodeError) as err:
            conv.image_to_array(msg)
        assert err.value.reason == reason
        return
    if not hasattr(msg, "encoding"):  # compressed: validation reads the header, decoding may still find it cut
        try:
            img = conv.image_to_array(msg)
        except conv.ImageDecodeError as exc:
            assert "could not be decoded" in exc.reason
            return
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        return
    img = conv.image_to_array(msg)
    ch = conv.IMAGE_ENCODINGS[msg.encoding.lower()]
    assert img.shape == (msg.height, msg.width, 3) and img.dtype == np.uint8
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
    raw = raw.reshape(msg.height, msg.width, ch)
    enc = msg.encoding.lower()
    want = (np.repeat(raw, 3, axis=2) if ch == 1 else raw[..., 2::-1] if enc.startswith("bgr") else raw[..., :3])
    np.testing.assert_array_equal(img, want)


@fuzz(100)
@given(msg=compressed_images())
def test_compressed_images_decode_or_are_refused_with_a_reason(msg):
    # a bogus format or bytes that are not JPEG/PNG are refused by name (never an AttributeError in a callback)
    reason = conv.validate_image(msg)
    if reason is not None:
        assert "compressed" in reason.lower()
    elif bytes(msg.data) == _PNG_1X1:
        assert conv.image_to_array(msg).shape == (1, 1, 3)


@fuzz(600)
@given(msg=joint_states(), required=st.sampled_from([(), PANDA_JOINTS]))
def test_validate_joint_state_never_raises_and_what_it_passes_is_usable(msg, required):
    reason = conv.validate_joint_state(msg, required)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        return
    assert len(msg.position) == len(msg.name) and len(set(msg.name)) == len(msg.name)
    assert all(math.isfinite(p) for p in msg.position)
    idx = {n: i for i, n in enumerate(msg.name)}
    q = np.array([msg.position[idx[n]] for n in required])  # what a node does with it must work
    assert q.shape == (len(required),)


@fuzz(200)
@given(msg=joint_states(), required=st.just(PANDA_JOINTS))
def test_validate_joint_state_refuses_what_nodes_cannot_use(msg, required):
    """The complement: a message with a missing required joint, too few positions or a NaN position is refused."""
    names = list(msg.name)
    usable = (all(n in names for n in required) and len(msg.position) == len(names)
              and len(set(names)) == len(names) and all(math.isfinite(p) for p in msg.position))
    if not usable:
        assert conv.validate_joint_state(msg, required)


@fuzz(500)
@given(pose=poses(st.one_of(PLAUSIBLE_F64, st.floats(-1e-7, 1e-7))))
def test_validate_pose_never_raises_and_what_it_passes_converts(pose):
    reason = conv.validate_pose(pose)
    v = conv.pose_to_vec(pose)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        return
    assert np.isfinite(v).all()
    e = quat_to_euler(v[3:])
    assert np.isfinite(e).all()


def test_validate_pose_refuses_quaternions_whose_norm_overflows():
    # found by the fuzzing above: the norm of huge finite components overflows to inf, which once passed the
    # zero-norm check, and quat_to_euler then raised on a pose validate_pose had accepted
    for q in ([1e200, 0.0, 0.0, 1e200], [1.7e308, 0.0, 0.0, 0.0]):
        pose = conv.pose_from_vec(np.array([0.4, 0.0, 0.3, *q]))
        assert conv.validate_pose(pose), q
        with pytest.raises(ValueError):
            quat_to_euler(np.array(q))
