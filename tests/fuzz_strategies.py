"""Hypothesis strategies for the messages vidplan takes from the wire (issue 13: nothing from the wire may stop the
arm from stopping).

Two kinds of strategies:

* **arbitrary** messages (:func:`plan_chunks`, :func:`execute_goals`, :func:`joint_states`, :func:`images`,
  :func:`compressed_images`, :func:`pose_stampeds`, :func:`instructions`): every field any value its ROS type allows
  (NaN/inf floats, empty and mismatched arrays, stamps with nanosec ≥ 1e9, random encodings and sizes). What can be
  published can arrive; whatever arrives must be handled without an exception escaping.
* **invalid by construction** chunks (:func:`defective_chunks`): a valid chunk near the current end-effector pose
  with exactly one defect injected (:data:`DEFECTS`), so a test knows the rule that must reject (or, under the clip
  policy, repair) it.

Used by tests/vidplan_ros/unit/test_fuzz_validators.py (library validators, thousands of cases) and
tests/vidplan_ros/integration/fault_injection/test_fuzz_live.py (a few hundred messages at live nodes). Message
classes are the built interfaces (sensor_msgs, geometry_msgs, vidplan_interfaces); nothing here starts ROS.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header

from vidplan_core.safety import SafetyLimits
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk

__all__ = [
    "ANY_F32",
    "ANY_F64",
    "DEFECTS",
    "FUZZ_FRAME",
    "PANDA_JOINTS",
    "PLAUSIBLE_F64",
    "DefectiveChunk",
    "compressed_images",
    "defective_chunks",
    "execute_goals",
    "images",
    "instructions",
    "joint_states",
    "mutated_chunks",
    "plan_chunk_from_arrays",
    "plan_chunks",
    "pose_stampeds",
    "poses",
    "raw_chunk_mappings",
    "stamps",
    "valid_chunk_arrays",
]

# Hypothesis keeps caches (constants, unicode data) in ./.hypothesis; keep them out of the working tree.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"vidplan-hypothesis-{os.getuid()}")

# header.frame_id of fuzzed /joint_states and /ee_pose messages: no node reads the frame of these two, and a test that
# watches the sim's own state on the same topics tells the fuzzer's messages apart by it.
FUZZ_FRAME = "fuzz"

INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
ANY_F64 = st.floats(allow_nan=True, allow_infinity=True)
ANY_F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
# floats a node meets in practice, mixed with the extremes (NaN, ±inf, ±max, subnormals) hypothesis favours anyway
PLAUSIBLE_F64 = st.one_of(st.floats(-2.0, 2.0), ANY_F64)
PANDA_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))


def stamps(sec: st.SearchStrategy[int] = INT32) -> st.SearchStrategy[Time]:
    """builtin_interfaces/Time with any int32 seconds and any uint32 nanoseconds (≥ 1e9 included: type-valid on the
    wire, meaningless as a time)."""
    return st.builds(Time, sec=sec, nanosec=UINT32)


def frame_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["", "panda_link0", "fr3_link0", "world", "panda_hand"]), st.text(max_size=16))


def headers(stamp: st.SearchStrategy[Time] | None = None,
            frame_id: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Header]:
    return st.builds(Header, stamp=stamp if stamp is not None else stamps(),
                     frame_id=frame_id if frame_id is not None else frame_ids())


@st.composite
def poses(draw, values: st.SearchStrategy[float] = PLAUSIBLE_F64) -> Pose:
    """geometry_msgs/Pose with each of the 7 numbers drawn from ``values`` (any double by default)."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (draw(values) for _ in range(3))
    o = pose.orientation
    o.x, o.y, o.z, o.w = (draw(values) for _ in range(4))
    return pose


@st.composite
def plan_chunks(draw, max_len: int = 70, stamp: st.SearchStrategy[Time] | None = None,
                frame_id: st.SearchStrategy[str] | None = None) -> PlanChunk:
    """Arbitrary vidplan_interfaces/PlanChunk: 0..``max_len`` poses of any doubles, gripper / uncertainty / value of
    independent lengths (float32, NaN/inf included), any dt, plan_id, stamp, frame and instruction."""
    h = draw(st.integers(0, max_len))
    # half the time the gripper has one value per pose, as a planner sends it
    k = h if draw(st.booleans()) else draw(st.integers(0, max_len))
    msg = PlanChunk()
    msg.header = draw(headers(stamp, frame_id))
    msg.plan_id = draw(UINT64)
    msg.dt = draw(st.one_of(st.floats(0.0, 1.0), ANY_F64))
    msg.poses = [draw(poses()) for _ in range(h)]
    msg.gripper = draw(st.lists(st.one_of(st.floats(0, 1, width=32), ANY_F32), min_size=k, max_size=k))
    msg.uncertainty = draw(st.lists(ANY_F32, max_size=max_len))
    msg.value = draw(st.lists(ANY_F32, max_size=max_len))
    msg.instruction = draw(instructions(max_size=64))
    return msg


@st.composite
def execute_goals(draw, chunks: st.SearchStrategy[PlanChunk] | None = None) -> ExecuteChunk.Goal:
    """ExecuteChunk goals: any chunk, any out_of_limits_policy byte (only 0 and 1 are defined), max_steps,
    time_scale (NaN, negative, 0 = default) and wait_for_settle."""
    g = ExecuteChunk.Goal()
    g.chunk = draw(chunks if chunks is not None else plan_chunks())
    g.out_of_limits_policy = draw(st.one_of(st.sampled_from([0, 1]), st.integers(0, 255)))
    g.max_steps = draw(st.one_of(st.integers(0, 5), UINT32))
    g.time_scale = draw(st.one_of(st.sampled_from([0.0, 1.0, 2.0]), ANY_F64))
    g.wait_for_settle = draw(st.booleans())
    return g


@st.composite
def joint_states(draw, frame_id: str | None = None, max_len: int = 12) -> JointState:
    """sensor_msgs/JointState: names from the panda's joints, fr3 joints and junk (duplicates possible), positions /
    velocities / efforts of independent lengths with any doubles; ``frame_id`` fixed when given."""
    pool = st.sampled_from([*PANDA_JOINTS, "panda_finger_joint1", "panda_finger_joint2", "fr3_joint1", ""])
    names = draw(st.one_of(
        st.just([*PANDA_JOINTS, "panda_finger_joint1", "panda_finger_joint2"]),
        st.permutations([*PANDA_JOINTS, "panda_finger_joint1"]),
        st.lists(st.one_of(pool, st.text(max_size=12)), max_size=max_len)))
    n = len(names)
    lengths = st.one_of(st.just(n), st.integers(0, max_len))
    msg = JointState()
    msg.header = draw(headers(frame_id=st.just(frame_id) if frame_id is not None else None))
    msg.name = list(names)
    def values(elements: st.SearchStrategy[float], size: int) -> list[float]:
        return draw(st.lists(elements, min_size=size, max_size=size))

    msg.position = values(st.one_of(st.floats(-3.0, 3.0), ANY_F64), draw(lengths))
    msg.velocity = values(ANY_F64, draw(st.one_of(st.just(0), lengths)))
    msg.effort = values(ANY_F64, draw(st.one_of(st.just(0), lengths)))
    return msg


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "RGB8", "mono16", "16UC1", "32FC1", "yuv422", "jpeg", ""]


@st.composite
def images(draw, max_side: int = 64, max_bytes: int = 1 << 16, stamp: st.SearchStrategy[Time] | None = None,
           frame_id: st.SearchStrategy[str] | None = None) -> Image:
    """sensor_msgs/Image: consistent images (height × step bytes of a known encoding) and inconsistent ones (sizes
    up to 2³²−1 claimed over a few bytes, step below width × channels, unknown encodings); data ≤ ``max_bytes``."""
    msg = Image()
    msg.header = draw(headers(stamp, frame_id))
    msg.encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=10)))
    msg.is_bigendian = draw(st.integers(0, 255))
    if draw(st.booleans()):  # consistent sizes (the encoding may still be unknown)
        ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding.lower(), 3)
        msg.height, msg.width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
        msg.step = msg.width * ch + draw(st.sampled_from([0, 0, 0, 1, 8]))
        n = msg.step * msg.height
        if n > max_bytes:
            msg.height = max(1, max_bytes // msg.step)
            n = msg.step * msg.height
        msg.data = draw(st.binary(min_size=n, max_size=n))
    else:
        side = st.one_of(st.integers(0, max_side), UINT32)
        msg.height, msg.width, msg.step = draw(side), draw(side), draw(st.one_of(st.integers(0, 4 * max_side),
                                                                                 UINT32))
        msg.data = draw(st.binary(max_size=min(max_bytes, 4096)))
    return msg


# smallest valid PNG (1x1 RGB) and the start of a JPEG: real formats next to garbage
_PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
                         "63f8cfc000000301010018dd8db00000000049454e44ae426082")


@st.composite
def compressed_images(draw, stamp: st.SearchStrategy[Time] | None = None,
                      frame_id: st.SearchStrategy[str] | None = None) -> CompressedImage:
    """sensor_msgs/CompressedImage: real and bogus formats, a real 1x1 PNG, truncated or random bytes."""
    msg = CompressedImage()
    msg.header = draw(headers(stamp, frame_id))
    msg.format = draw(st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff"]),
                                st.text(max_size=16)))
    msg.data = draw(st.one_of(st.just(_PNG_1X1), st.binary(max_size=64).map(lambda b: _PNG_1X1[:16] + b),
                              st.binary(max_size=512)))
    return msg


@st.composite
def pose_stampeds(draw, frame_id: str | None = None) -> PoseStamped:
    """geometry_msgs/PoseStamped with any pose (zero / huge / NaN quaternions included)."""
    msg = PoseStamped()
    msg.header = draw(headers(frame_id=st.just(frame_id) if frame_id is not None else None))
    msg.pose = draw(poses())
    return msg


def instructions(max_size: int = 2000) -> st.SearchStrategy[str]:
    """Task / instruction strings: real tasks, whitespace, control characters, any unicode (no surrogates: they
    cannot be UTF-8 encoded, so they never reach the wire), and long texts."""
    real = st.sampled_from(["put the red cube in the bowl", "push the purple cylinder to the left", "", "   ",
                            "\n\t", "PUT THE RED CUBE IN THE BOWL!!!", "put the red cube in the bowl " * 40])
    return st.one_of(real, st.text(max_size=max_size), st.text(alphabet=st.characters(codec="utf-8"), max_size=64))


# --------------------------------------------------------------------------------------------------------------
# raw chunk mappings (what the executor hands to vidplan_core.execution.plan_execution)


def _array_of(shape_strategy: st.SearchStrategy, values: st.SearchStrategy[float]) -> st.SearchStrategy:
    return shape_strategy.flatmap(lambda shape: st.lists(values, min_size=int(np.prod(shape)),
                                                         max_size=int(np.prod(shape))).map(
        lambda xs, s=shape: np.array(xs, dtype=np.float64).reshape(s)))


_SHAPES = st.one_of(st.tuples(), st.tuples(st.integers(0, 5)), st.tuples(st.integers(0, 5), st.integers(0, 5)),
                    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)))


@st.composite
def raw_chunk_mappings(draw, values: st.SearchStrategy[float] = PLAUSIBLE_F64) -> dict[str, Any]:
    """Mappings of the raw-chunk form filter_chunk / plan_execution accept, malformed in every way: arrays of random
    shapes (scalars to 3-D) with any floats (``values``), missing keys, ragged lists, strings and None instead of
    numbers, any dt, quaternion or Euler orientations."""
    h = draw(st.integers(0, 6))
    well_shaped = draw(st.booleans())

    def field(cols: int | None, elements: st.SearchStrategy[float]) -> st.SearchStrategy:
        shape = st.just((h, cols) if cols else (h,)) if well_shaped else _SHAPES
        return st.one_of(_array_of(shape, elements), st.just([[1.0, 2.0], [3.0]]), st.just("abc"), st.none(),
                         st.lists(elements, max_size=4))

    m: dict[str, Any] = {}
    for key, cols in (("position", 3), ("gripper", None)):
        if draw(st.integers(0, 9)):  # a key is missing one time in ten
            m[key] = draw(field(cols, values))
    rot = draw(st.sampled_from(["quaternion", "euler", None]))
    if rot is not None:
        m[rot] = draw(field(4 if rot == "quaternion" else 3, values))
    if draw(st.integers(0, 9)):
        m["dt"] = draw(st.one_of(st.floats(0.0, 1.0), ANY_F64, st.just("0.2"), st.none(), st.just([0.1, 0.2])))
    return m


@st.composite
def valid_chunk_arrays(draw, start_pos: np.ndarray, start_quat: np.ndarray, limits: SafetyLimits | None = None,
                       max_len: int = 8, dt: st.SearchStrategy[float] | None = None,
                       margin: float = 0.01) -> dict[str, Any]:
    """A raw chunk mapping that passes the safety filter from the EE pose (``start_pos`` [m], ``start_quat`` xyzw):
    1..``max_len`` steps inside the workspace box (shrunk by ``margin`` [m]), each moving at most 80 % of the step
    limits for its dt (the fraction of the limit drawn per chunk, from "not at all" to 80 %), unit quaternions of
    either sign, gripper in [0, 1]. ``start_pos`` must lie inside the box. Step directions come from a numpy
    generator seeded by hypothesis (one draw instead of a dozen per step: thousands of chunks stay fast)."""
    limits = limits or SafetyLimits()
    lo, hi = np.asarray(limits.workspace_min) + margin, np.asarray(limits.workspace_max) - margin
    h = draw(st.integers(1, max_len))
    step_dt = draw(dt if dt is not None else st.floats(0.05, 0.5))
    max_t = draw(st.floats(0.0, 0.8)) * limits.max_translation(step_dt)
    max_r = draw(st.floats(0.0, 0.8)) * limits.max_rotation(step_dt)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dirs = rng.normal(size=(h, 2, 3))
    dirs /= np.maximum(np.linalg.norm(dirs, axis=2, keepdims=True), 1e-12)
    frac = rng.uniform(0.0, 1.0, size=(h, 2))
    p, R = np.clip(np.asarray(start_pos, float), lo, hi), Rotation.from_quat(start_quat)
    pos, quat = np.zeros((h, 3)), np.zeros((h, 4))
    for i in range(h):
        p = np.clip(p + dirs[i, 0] * frac[i, 0] * max_t, lo, hi)  # clipping into the box only shortens a step
        R = Rotation.from_rotvec(dirs[i, 1] * frac[i, 1] * max_r) * R
        pos[i], quat[i] = p, R.as_quat() * (1.0 if rng.random() < 0.5 else -1.0)
    grip = rng.uniform(0.0, 1.0, size=h)
    grip[rng.random(h) < 0.2] = draw(st.sampled_from([0.0, 1.0]))  # the end points of the range too
    return {"position": pos, "quaternion": quat, "gripper": grip, "dt": step_dt}


@st.composite
def mutated_chunks(draw, start_pos: np.ndarray, start_quat: np.ndarray, limits: SafetyLimits | None = None,
                   values: st.SearchStrategy[float] = PLAUSIBLE_F64) -> dict[str, Any]:
    """A valid chunk (:func:`valid_chunk_arrays`) with 0..4 entries overwritten by arbitrary numbers (``values``):
    near-valid input, where the clip policy's repairs are exercised."""
    c = draw(valid_chunk_arrays(start_pos, start_quat, limits))
    h = len(c["position"])
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["position", "quaternion", "gripper", "dt"]))
        if key == "dt":
            c["dt"] = draw(values)
            continue
        i = draw(st.integers(0, h - 1))
        v = draw(values)
        if key == "gripper":
            c[key][i] = v
        else:
            c[key][i, draw(st.integers(0, c[key].shape[1] - 1))] = v
    return c


# defect → (rule named in the rejection reason, whether the clip policy repairs it)
DEFECTS: dict[str, tuple[str, bool]] = {
    "nan_position": ("non_finite", False),
    "inf_quaternion": ("non_finite", False),
    "nan_gripper": ("non_finite", False),
    "zero_quaternion": ("quaternion", False),
    "length_mismatch": ("structure", False),
    "empty": ("structure", False),
    "too_long": ("structure", False),
    "bad_dt": ("structure", False),
    "stale": ("stale", False),
    "future": ("stale", False),
    "unstamped": ("stale", False),
    "wrong_frame": ("frame", False),
    "workspace": ("workspace", True),
    "step_translation": ("step_translation", True),
    "step_rotation": ("step_rotation", True),
    "gripper_range": ("gripper", True),
}


@dataclass
class DefectiveChunk:
    """A chunk with one injected defect: the raw mapping, the filter's ``age_s`` / ``frame_id`` arguments, the
    defect's name, the rule that must name it and whether ``policy="clip"`` repairs it."""

    chunk: dict[str, Any]
    age_s: float | None
    frame_id: str
    defect: str
    rule: str
    clippable: bool


@st.composite
def defective_chunks(draw, start_pos: np.ndarray, start_quat: np.ndarray, limits: SafetyLimits | None = None,
                     base_frame: str = "panda_link0", defects: tuple[str, ...] = tuple(DEFECTS),
                     age_margin_s: float = 0.0) -> DefectiveChunk:
    """A valid chunk (:func:`valid_chunk_arrays`) with exactly one defect of ``defects`` injected at a random step.

    ``age_margin_s``: stale / future plans are at least this much [s] beyond ``max_plan_age_s`` (0 = right at the
    bound; a live test needs a margin, since its clock and the executor's differ by the /clock delivery lag)."""
    limits = limits or SafetyLimits()
    defect = draw(st.sampled_from(defects))
    dt = st.floats(0.05, 0.1) if defect == "step_translation" else None  # short steps: a too-long one fits the box
    c = draw(valid_chunk_arrays(start_pos, start_quat, limits, dt=dt))
    h = len(c["position"])
    i = draw(st.integers(0, h - 1))
    age: float | None = draw(st.one_of(st.none(), st.floats(0.0, 0.9 * limits.max_plan_age_s)))
    frame = draw(st.sampled_from(["", base_frame]))
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    bad = st.sampled_from([np.nan, np.inf, -np.inf])
    if defect == "nan_position":
        c["position"][i, draw(st.integers(0, 2))] = draw(bad)
    elif defect == "inf_quaternion":
        c["quaternion"][i, draw(st.integers(0, 3))] = draw(bad)
    elif defect == "nan_gripper":
        c["gripper"][i] = draw(bad)
    elif defect == "zero_quaternion":
        c["quaternion"][i] = draw(st.sampled_from([0.0, 1e-9, -1e-8]))
    elif defect == "length_mismatch":  # on the gripper: the one mismatch a PlanChunk message can carry
        c["gripper"] = c["gripper"][:-1] if draw(st.booleans()) else np.concatenate([c["gripper"], [0.5]])
    elif defect == "empty":
        c = {"position": np.zeros((0, 3)), "quaternion": np.zeros((0, 4)), "gripper": np.zeros(0), "dt": c["dt"]}
    elif defect == "too_long":
        n = draw(st.integers(limits.max_horizon + 1, limits.max_horizon + 16))
        c = {k: (np.repeat(v[-1:], n, axis=0) if k != "dt" else v) for k, v in c.items()}
    elif defect == "bad_dt":
        c["dt"] = draw(st.one_of(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.2]),
                                 st.floats(-1e9, limits.min_dt, exclude_max=True),
                                 st.floats(limits.max_dt, 1e9, exclude_min=True)))
    elif defect == "stale":
        age = draw(st.floats(limits.max_plan_age_s * 1.01 + age_margin_s, 1e6))
    elif defect == "future":
        age = -draw(st.floats(limits.max_plan_age_s * 1.01 + age_margin_s, 1e6))
    elif defect == "unstamped":
        age = float("inf")
    elif defect == "wrong_frame":
        frame = draw(st.text(min_size=1, max_size=12).filter(lambda f: f != base_frame))
    elif defect == "workspace":
        k = draw(st.integers(0, 2))
        out = draw(st.floats(0.001, 0.2))
        c["position"][i, k] = lo[k] - out if draw(st.booleans()) else hi[k] + out
    elif defect == "step_translation":
        prev = np.asarray(start_pos, float) if i == 0 else c["position"][i - 1]
        max_t = limits.max_translation(c["dt"])
        # a point of the box at least 1.2 step limits away: the farthest corner is always far enough
        target = np.array([draw(st.floats(lo[k], hi[k])) for k in range(3)])
        if np.linalg.norm(target - prev) <= 1.2 * max_t:
            target = np.where(prev - lo > hi - prev, lo, hi)
        c["position"][i] = target
    elif defect == "step_rotation":
        prev = Rotation.from_quat(start_quat if i == 0 else c["quaternion"][i - 1])
        max_r = limits.max_rotation(c["dt"])
        axis = draw(st.lists(st.floats(-1, 1), min_size=3, max_size=3).map(np.array).filter(
            lambda v: np.linalg.norm(v) > 1e-3))
        ang = draw(st.floats(min(1.2 * max_r, 3.0), 3.1))
        c["quaternion"][i] = (Rotation.from_rotvec(axis / np.linalg.norm(axis) * ang) * prev).as_quat()
    elif defect == "gripper_range":
        c["gripper"][i] = draw(st.one_of(st.floats(-10.0, -1e-3), st.floats(1.0 + 1e-3, 10.0)))
    rule, clippable = DEFECTS[defect]
    return DefectiveChunk(c, age, frame, defect, rule, clippable)


def plan_chunk_from_arrays(c: dict[str, Any], stamp: Time, frame_id: str = "panda_link0", plan_id: int = 0,
                           instruction: str = "") -> PlanChunk:
    """PlanChunk carrying a raw chunk mapping (position (H, 3), quaternion (H', 4), gripper (G,), dt; lengths need
    not agree: poses are built for min(H, H') steps and the longer one's extra entries are dropped)."""
    msg = PlanChunk()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.plan_id, msg.dt, msg.instruction = int(plan_id), float(c["dt"]), instruction
    out = []
    for p, q in zip(c["position"], c["quaternion"], strict=False):
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = (float(x) for x in p)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(x) for x in q)
        out.append(pose)
    msg.poses = out
    msg.gripper = [float(g) for g in c["gripper"]]
    return msg
