"""rosbag2 recordings → a vidplan episode dataset (:mod:`vidplan_core.data.schema`), one episode per recording.

Works on the bags of ``vidplan data generate`` and on a real robot's recordings through a topic map
(:class:`vidplan_core.data.topic_map.TopicMap`, YAML) that names where each signal comes from. The instruction is
read from /vidplan/instruction, or from /vidplan/task (its deprecated old name) in a bag recorded before the rename.

A success label is required (episode_info, success topic or sidecar): the reward head's value target needs it.

Resampling: frame times are a grid at the model rate (``fps``, 5 Hz) from the latest first-message time to the
earliest last-message time of the needed streams (plus a quarter period of tolerance for stamp jitter; held
commands do not end the grid). Images, EE pose, joints and measured gripper take the sample
nearest in time (the header stamp, or the bag time where a message has none); commanded actions take the latest
command at or before the frame time (zero-order hold, as an executor holds it). A stream with no sample within
``max_gap_s`` of a frame is an error naming bag, topic and time. Images are resized to the target size per view
(bilinear with antialiasing; the aspect ratio is not kept if it differs).

Every recording is checked (readable, needed topics present with accepted types, a label source) before any
conversion work starts; all problems are reported together.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bags import BagError, BagReader, find_bags
from vidplan_core.data.messages import Codec, stamp_ns
from vidplan_core.data.schema import (
    SHARD_DIR,
    DatasetMeta,
    EpisodeMeta,
    save_meta,
    split_episodes,
    write_shard,
)
from vidplan_core.data.topic_map import (
    BOOL,
    CHUNK,
    JOINTS,
    STRING,
    TopicMap,
    instruction_topic,
    needed_streams,
    resolve_camera_topics,
)
from vidplan_core.images import ImageDecodeError, decode_image, image_size
from vidplan_core.spaces import CONTROL_RATE_HZ, MODEL_RATE_HZ, VIEW_ORDER, ActionNormalizer, ViewPreparation

__all__ = ["ConvertError", "convert_bags", "expand_inputs"]

class ConvertError(ValueError):
    """Recordings that cannot be converted; lists every problem (bag, topic, what is wrong and expected)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot convert:\n" + "\n".join(f"  - {p}" for p in problems))


# --------------------------------------------------------------------------------------------------------------
# Inputs


def _sidecar(bag: Path) -> Path | None:
    for cand in (bag.parent / f"{bag.name}.json", bag / "episode.json"):
        if cand.is_file():
            return cand
    return None


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Recordings named by ``paths``: a bag directory (or a split recording) is one episode; a directory whose
    sub-directories are bags with a ``<name>.json`` sidecar each (the output of ``vidplan data generate``) gives
    one episode per sub-directory. Raises ConvertError for paths that hold no bag."""
    out: list[Path] = []
    problems = []
    for p in map(Path, paths):
        if not p.exists():
            problems.append(f"{p}: does not exist")
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (p / f"{d.name}.json").is_file()) if p.is_dir() else []
        subs = [d for d in subs if (d / "metadata.yaml").is_file() or any(d.glob("*.mcap")) or any(d.glob("*.db3"))]
        if subs and not (p / "metadata.yaml").is_file():
            out += subs
            continue
        try:
            find_bags(p)
            out.append(p)
        except BagError as exc:
            problems.append(str(exc))
    if problems:
        raise ConvertError(problems)
    if not out:
        raise ConvertError(["no recordings given"])
    return out


# --------------------------------------------------------------------------------------------------------------
# Checking


def _check_bag(bag: Path, reader: BagReader, tm: TopicMap) -> list[str]:
    tm = resolve_camera_topics(tm, {name: info.msgtype for name, info in reader.topics.items()})
    problems = []
    for role, (topic, types) in needed_streams(tm).items():
        info = reader.topics.get(topic)
        if info is None:
            problems.append(f"bag {bag}: missing topic {topic} (needed for {role}); "
                            f"the bag has {sorted(reader.topics)}")
        elif info.msgtype not in types:
            problems.append(f"bag {bag}: topic {topic} ({role}) has type {info.msgtype}; expected {' or '.join(types)}")
        elif info.message_count == 0:
            problems.append(f"bag {bag}: topic {topic} ({role}) has no messages")
    if tm.action is None and tm.gripper.topic is None:
        problems.append(f"bag {bag}: topic map names neither an action source nor a gripper topic: no gripper signal")
    labels = []
    if tm.episode_info and tm.episode_info in reader.topics:
        labels.append(tm.episode_info)
    if tm.success and tm.success in reader.topics:
        if reader.topics[tm.success].msgtype != BOOL:
            problems.append(f"bag {bag}: success topic {tm.success} has type {reader.topics[tm.success].msgtype}; "
                            f"expected {BOOL}")
        labels.append(tm.success)
    instruction = instruction_topic(tm, reader.topics)
    if instruction and reader.topics[instruction].msgtype != STRING:
        problems.append(f"bag {bag}: instruction topic {instruction} has type {reader.topics[instruction].msgtype}; "
                        f"expected {STRING}")
    side = _sidecar(bag) if tm.sidecar else None
    if side is not None:
        try:
            if "success" in json.loads(side.read_text()):
                labels.append(str(side))
        except json.JSONDecodeError as exc:
            problems.append(f"bag {bag}: sidecar {side} is not valid JSON ({exc})")
    if not labels:
        problems.append(f"bag {bag}: no success label: needs topic {tm.episode_info or tm.success} (episode info / "
                        f"std_msgs/Bool) or a sidecar {bag.name}.json with key 'success'")
    return problems


# --------------------------------------------------------------------------------------------------------------
# One episode


@dataclass
class _Stream:
    t: list[int] = field(default_factory=list)
    v: list[Any] = field(default_factory=list)


def _nearest(times: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest sample for each grid time and its distance [ns]."""
    j = np.clip(np.searchsorted(times, grid), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(grid), int)
    if len(times) > 1:
        left = grid - times[j - 1] <= times[j] - grid
        j = np.where(left, j - 1, j)
    return j, np.abs(times[j] - grid)


def _hold(times: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the latest sample at or before each grid time (the first sample before it starts) and the age."""
    j = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 1)
    return j, np.abs(grid - times[j])


def _convert_one(bag: Path, tm: TopicMap, codec: Any, fps: float, size: tuple[int, int] | None,
                 views: ViewPreparation | None = None,
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str], tuple[int, int]]:
    """Shard arrays, labels, joint names and source image size of one recording."""

    def when(msg: Any, bag_t: int) -> int:
        s = stamp_ns(msg) if tm.use_header_stamp else 0
        return s if s > 0 else bag_t

    cams = {tm.cameras[v]: v for v in VIEW_ORDER}
    streams: dict[str, _Stream] = {}
    labels: dict[str, Any] = {}
    side = _sidecar(bag) if tm.sidecar else None
    if side is not None:
        labels.update(json.loads(side.read_text()))
    joint_names: list[str] | None = None
    src_hw: tuple[int, int] | None = None
    with BagReader(bag) as reader:
        wanted = {t for t, _ in needed_streams(tm).values()}
        instruction = instruction_topic(tm, reader.topics)  # /vidplan/instruction, or an old bag's /vidplan/task
        wanted |= {t for t in (tm.episode_info, tm.success, instruction) if t and t in reader.topics}
        for m in reader.messages(wanted):
            msg = codec.deserialize(m.data, m.msgtype)
            if m.topic == tm.episode_info and m.msgtype == STRING:
                try:
                    labels.update(json.loads(msg.data))
                except json.JSONDecodeError:
                    raise ConvertError([f"bag {bag}: {m.topic} holds no JSON: {msg.data[:80]!r}"]) from None
                continue
            if m.topic == tm.success:
                labels["success"] = bool(msg.data)
                continue
            if m.topic == instruction:
                labels["instruction"] = str(msg.data)
                continue
            t = when(msg, m.timestamp_ns)
            if m.topic in cams:  # images: keep only the time here, decode the chosen ones in a second pass
                streams.setdefault(m.topic, _Stream()).t.append(t)
                if src_hw is None:
                    try:
                        src_hw = image_size(msg)  # a compressed image's own header says its size
                    except ImageDecodeError as exc:
                        raise ConvertError([f"bag {bag}: topic {m.topic}: {exc}"]) from exc
                continue
            if m.topic == tm.ee_pose:
                streams.setdefault("ee_pose", _Stream()).t.append(t)
                streams["ee_pose"].v.append(codec.pose_to_vec(msg.pose))
            if m.topic == tm.action:
                if m.msgtype == CHUNK:
                    if not msg.poses:
                        continue
                    g = float(msg.gripper[0]) if len(msg.gripper) else np.nan
                    vec = np.append(codec.pose_to_vec(msg.poses[0]), g)
                else:
                    vec = np.append(codec.pose_to_vec(msg.pose), np.nan)
                streams.setdefault("action", _Stream()).t.append(t)
                streams["action"].v.append(vec)
            if m.topic == tm.joint_states:
                names = list(msg.name)
                if joint_names is None:
                    joint_names = tm.arm_joints or [n for n in names if "finger" not in n]
                    missing = [n for n in joint_names if n not in names]
                    if missing:
                        raise ConvertError([f"bag {bag}: {m.topic} lacks joint(s) {missing}; it has {names}"])
                pos = dict(zip(names, np.asarray(msg.position, float), strict=False))
                streams.setdefault("joints", _Stream()).t.append(t)
                streams["joints"].v.append([pos.get(n, np.nan) for n in joint_names])
            if m.topic == tm.gripper.topic:
                if m.msgtype == JOINTS:
                    pos = dict(zip(list(msg.name), np.asarray(msg.position, float), strict=False))
                    fingers = tm.gripper.joints or [n for n in pos if "finger" in n]
                    if not fingers or any(n not in pos for n in fingers):
                        raise ConvertError([f"bag {bag}: {m.topic} has no gripper joint(s) "
                                            f"{fingers or 'containing finger'}; it has {sorted(pos)}"])
                    width = sum(pos[n] for n in fingers)
                    g = float(np.clip(1.0 - width / tm.gripper.open_width, 0.0, 1.0))
                else:
                    g = float(np.clip(msg.data, 0.0, 1.0))
                streams.setdefault("gripper", _Stream()).t.append(t)
                streams["gripper"].v.append(g)
        if "success" not in labels:
            raise ConvertError([f"bag {bag}: no success label found in its episode info, success topic or sidecar"])

        # frame grid at the model rate over the span every needed stream covers
        arrays = {k: np.asarray(s.t, dtype=np.int64) for k, s in streams.items()}
        for k, ts in arrays.items():
            if np.any(np.diff(ts) < 0):  # header stamps may arrive out of order; sort with their values
                order = np.argsort(ts, kind="stable")
                arrays[k] = ts[order]
                if streams[k].v:
                    streams[k].v = [streams[k].v[i] for i in order]
                else:
                    streams[k].v = list(order)  # images: message ordinal of each sorted time
        t0 = max(int(ts[0]) for ts in arrays.values())
        # a held command stays valid after its last message (up to max_gap_s), so it does not end the grid
        t1 = min(int(ts[-1]) for k, ts in arrays.items() if k != "action")
        period = round(1e9 / fps)
        t1 += min(int(tm.max_gap_s * 1e9), period // 4)  # stamp rounding/jitter at the end must not drop a frame
        if t1 < t0:
            raise ConvertError([f"bag {bag}: the needed streams do not overlap in time"])
        grid = np.arange(t0, t1 + 1, period, dtype=np.int64)
        max_gap = int(tm.max_gap_s * 1e9)
        picks: dict[str, np.ndarray] = {}
        for k, ts in arrays.items():
            j, gap = (_hold if k == "action" else _nearest)(ts, grid)
            bad = np.nonzero(gap > max_gap)[0]
            if len(bad):
                topic = {"ee_pose": tm.ee_pose, "action": tm.action, "joints": tm.joint_states,
                         "gripper": tm.gripper.topic}.get(k, k)
                raise ConvertError([f"bag {bag}: topic {topic} has no message within {tm.max_gap_s} s of the frame "
                                    f"at {(grid[bad[0]] - t0) / 1e9:.3f} s (gap {gap[bad[0]] / 1e9:.3f} s)"])
            picks[k] = j
        hw = size or src_hw
        # THE view preparation (crop + resize) the planner node applies to live images
        prep = views if views is not None else ViewPreparation(int(hw[0]), int(hw[1]))
        T = len(grid)
        frames = np.zeros((T, len(VIEW_ORDER), 3, hw[0], hw[1]), dtype=np.uint8)
        # second pass: decode only the chosen images (a 15 Hz recording keeps one image in three)
        for topic, view in cams.items():
            ordinal = np.asarray(streams[topic].v) if streams[topic].v else np.arange(len(arrays[topic]))
            want: dict[int, list[int]] = {}
            for frame_i, j in enumerate(picks[topic]):
                want.setdefault(int(ordinal[j]), []).append(frame_i)
            vi = VIEW_ORDER.index(view)
            for n, m in enumerate(reader.messages([topic])):
                if n in want:
                    try:
                        img = decode_image(codec.deserialize(m.data, m.msgtype), f"bag {bag}: {topic}")
                    except ImageDecodeError as exc:
                        raise ConvertError([str(exc)]) from exc
                    try:
                        img = prep.prepare_one(view, img)
                    except ValueError as exc:
                        raise ConvertError([f"bag {bag}: topic {topic}: {exc}"]) from exc
                    for frame_i in want[n]:
                        frames[frame_i, vi] = img.transpose(2, 0, 1)

    def take(k: str) -> np.ndarray:
        return np.asarray(streams[k].v, dtype=np.float64)[picks[k]]

    ee = take("ee_pose")
    gripper = take("gripper") if "gripper" in streams else None
    if "action" in streams:
        actions = take("action")
        if tm.action_pose == "measured":
            actions[:, :6] = ee
        if np.isnan(actions[:, 6]).any():
            if gripper is None:
                raise ConvertError([f"bag {bag}: action source {tm.action} carries no gripper and no gripper topic "
                                    f"is configured"])
            actions[:, 6] = np.where(np.isnan(actions[:, 6]), gripper, actions[:, 6])
    else:
        actions = np.concatenate([ee, gripper[:, None]], axis=1)
    if gripper is None:
        gripper = actions[:, 6].copy()
    joints = take("joints") if "joints" in streams else np.zeros((T, 0))
    tensors = {
        "frames": frames,
        "actions": actions.astype(np.float32),
        "ee_pose": ee.astype(np.float32),
        "gripper": gripper.astype(np.float32),
        "joint_positions": joints.astype(np.float32),
        "timestamps_ns": grid,
    }
    for k in ("actions", "ee_pose", "gripper", "joint_positions"):
        if not np.isfinite(tensors[k]).all():
            raise ConvertError([f"bag {bag}: non-finite values in {k} (check the joint names of the topic map)"])
    cam_t = arrays[tm.cameras[VIEW_ORDER[0]]]
    labels.setdefault("_camera_rate_hz", float(1e9 / np.median(np.diff(cam_t))) if len(cam_t) > 1 else None)
    return tensors, labels, joint_names or [], src_hw or hw


def convert_bags(inputs: Sequence[str | Path], out: str | Path, topic_map: TopicMap | None = None,
                 fps: float = MODEL_RATE_HZ, size: tuple[int, int] | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, value_gamma: float = 0.97, overwrite: bool = False,
                 progress: Callable[[Sequence[Path]], Any] | None = None,
                 views: ViewPreparation | None = None) -> DatasetMeta:
    """Convert recordings into a dataset at ``out`` (see the module docstring).

    Args:
        inputs: bag directories / split recordings / directories of generated episodes (:func:`expand_inputs`).
        out: dataset directory to write (must be empty or absent unless ``overwrite``).
        topic_map: where the signals come from (defaults: vidplan's topics).
        fps: frame rate of the dataset [Hz] (the world model's rate).
        size: (H, W) per view [px]; None keeps the first recording's camera size.
        val_fraction: fraction of episodes held out for validation (by episode, seeded by ``split_seed``).
        value_gamma: γ of the Monte-Carlo value target, per frame at ``fps``.
        progress: wraps the list of recordings for a progress bar (e.g. ``tqdm``).
        views: how camera images become views (workspace crops + size; e.g.
            :func:`vidplan_core.calibration.workspace_views`); its size replaces ``size``. Recorded in the dataset's
            ``info.view_preparation``, which training checks against the world model's ``action_maps.crop``.

    Raises:
        ConvertError: unreadable recordings, missing topics or labels (all listed, before any work starts), or a
            recording that turns out unusable while converting (naming it).
    """
    tm = topic_map or TopicMap()
    out = Path(out)
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ConvertError([f"image size must be (H, W) > 0 pixels, got {size}"])
    if views is not None:
        if size is not None and tuple(size) != (views.height, views.width):
            raise ConvertError([f"image size {tuple(size)} differs from the view preparation's "
                                f"{views.height}x{views.width}"])
        size = (views.height, views.width)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConvertError([f"output {out} exists and is not empty (use overwrite to replace it)"])
        shutil.rmtree(out)
    bags = expand_inputs(inputs)
    problems: list[str] = []
    bag_maps: dict[Path, TopicMap] = {}  # per recording: compressed camera topics resolved
    for bag in bags:
        try:
            with BagReader(bag) as reader:
                problems += _check_bag(bag, reader, tm)
                bag_maps[bag] = resolve_camera_topics(tm, {n: i.msgtype for n, i in reader.topics.items()})
        except BagError as exc:
            problems.append(str(exc))
    if problems:
        raise ConvertError(problems)

    codec = Codec()
    names: list[str] = []
    episodes: list[dict[str, Any]] = []
    joint_names: list[str] | None = None
    src_hw = None
    all_actions: list[np.ndarray] = []
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    for bag in (progress(bags) if progress else bags):
        tensors, labels, jn, hw0 = _convert_one(bag, bag_maps[bag], codec, fps, size, views)
        size = size or tuple(tensors["frames"].shape[-2:])  # the first recording fixes the size for the others
        src_hw = src_hw or hw0
        if joint_names is None:
            joint_names = jn
        elif jn != joint_names:
            raise ConvertError([f"bag {bag}: joint names {jn} differ from the first recording's {joint_names}"])
        name = bag.name if bag.name not in names else f"{bag.name}_{len(names)}"
        names.append(name)
        write_shard(out / SHARD_DIR / f"{name}.safetensors", tensors)
        all_actions.append(tensors["actions"])
        episodes.append(dict(name=name, length=len(tensors["timestamps_ns"]), labels=labels, source=str(bag)))
    splits = split_episodes(len(episodes), val_fraction, split_seed)
    metas = []
    for i, (ep, split) in enumerate(zip(episodes, splits, strict=False)):
        lab = ep["labels"]
        metas.append(EpisodeMeta(
            index=i, name=ep["name"], shard=f"{SHARD_DIR}/{ep['name']}.safetensors", length=ep["length"],
            task=str(lab.get("task", "")), instruction=str(lab.get("instruction", "")), success=bool(lab["success"]),
            seed=lab.get("seed"), clutter=lab.get("clutter"), split=split, source=ep["source"]))
    train_actions = np.concatenate([a for a, s in zip(all_actions, splits, strict=False) if s == "train"])
    meta = DatasetMeta(
        fps=fps, source_rate_hz=episodes[0]["labels"].get("_camera_rate_hz") or CONTROL_RATE_HZ,
        image_size={v: tuple(size) for v in VIEW_ORDER},
        action_stats=ActionNormalizer.fit(train_actions).state_dict(), value_gamma=value_gamma,
        joint_names=joint_names or [], episodes=metas,
        info={"converter": "vidplan data convert", "topic_map": tm.model_dump(), "source_image_size": list(src_hw),
              "val_fraction": val_fraction, "split_seed": split_seed,
              "view_preparation": (views or ViewPreparation(int(size[0]), int(size[1]))).as_dict()})
    save_meta(out, meta)
    return meta
