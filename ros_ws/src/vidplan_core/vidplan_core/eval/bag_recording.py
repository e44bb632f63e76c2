"""The recording ``vidplan eval-bag`` reads: scan a rosbag2 (or its salvageable part), choose the action
source, write a salvaged copy, and convert it to model-rate windows (:func:`prepare_episode`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bag_writer import BagWriter
from vidplan_core.data.bags import BagError, BagReader, find_bags
from vidplan_core.data.convert import ConvertError, convert_bags
from vidplan_core.data.messages import Codec
from vidplan_core.data.topic_map import COMPRESSED, IMAGE, TopicMap, resolve_camera_topics
from vidplan_core.eval.bag_bundle import Bundle
from vidplan_core.eval.bag_config import STORAGE_MAGIC, EvalBagConfig, EvalBagError
from vidplan_core.images import image_size
from vidplan_core.spaces import VIEW_ORDER

__all__ = ["Episode", "Scan", "action_source", "image_size_from_cdr", "prepare_episode", "scan_bag"]


def image_size_from_cdr(data: bytes) -> tuple[int, int]:
    """(height, width) of a CDR-serialised ``sensor_msgs/msg/Image`` without decoding its pixels.

    Layout: 4-byte encapsulation header, then (aligned to the data start) Header {stamp.sec int32, stamp.nanosec
    uint32, frame_id string (uint32 length incl. NUL + bytes)}, height uint32, width uint32, ...
    """
    if len(data) < 24:
        raise ValueError(f"image message of {len(data)} bytes is too short")
    little = data[1] == 1
    order = "little" if little else "big"
    n = int.from_bytes(data[12:16], order)
    pos = 16 + n
    pos += (-(pos - 4)) % 4  # align to 4 relative to the end of the encapsulation header
    if pos + 8 > len(data):
        raise ValueError("image message ends inside its header")
    return int.from_bytes(data[pos:pos + 4], order), int.from_bytes(data[pos + 4:pos + 8], order)


def _sidecar(bag: Path) -> Path | None:
    """The label sidecar convert_bags reads (``<bag>.json`` next to the bag, or ``<bag>/episode.json``)."""
    for cand in (bag.parent / f"{bag.name}.json", bag / "episode.json"):
        if cand.is_file():
            return cand
    return None


@dataclass
class Scan:
    topics: dict[str, tuple[str, int]]  # name → (type, messages read)
    sizes: dict[str, tuple[int, int]]  # camera topic → (H, W)
    damaged: bool
    recovered: bool  # opened with BagReader(recover=True) (the storage file could not be opened normally)
    readable: int  # messages readable before the damage (all of them when undamaged)
    warnings: list[str]
    duration_s: float
    topic_map: TopicMap  # the caller's, compressed camera topics resolved (convert.resolve_camera_topics)


def scan_bag(bag: Path, tm: TopicMap, salvage: bool) -> Scan:
    """Read every message once (raw bytes): damage, per-camera image size consistency, what the bag holds.

    Raises:
        EvalBagError: an empty bag or a file that is not a bag, unreadable bag (when not salvaging or nothing
            salvageable), no message readable, a camera whose size changes.
    """
    problem = _storage_problem(bag)
    if problem:
        raise EvalBagError(problem)
    warnings: list[str] = []
    damaged = recovered = False
    try:
        reader = BagReader(bag)
    except BagError as exc:
        if not salvage:
            raise EvalBagError(str(exc)) from exc
        try:
            reader = BagReader(bag, recover=True)
        except BagError as exc2:
            raise EvalBagError([str(exc), f"bag {bag}: salvage failed too: {exc2.problem}"]) from exc2
        damaged = recovered = True
        warnings.append(f"bag {bag}: {exc.problem}; evaluating the messages salvaged before the damage")
        warnings += reader.warnings
    tm = resolve_camera_topics(tm, {name: info.msgtype for name, info in reader.topics.items()})
    cams = {tm.cameras[v] for v in VIEW_ORDER}
    sizes: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    counts: dict[str, int] = {}
    t_first, t_last = None, None
    codec = None
    with reader:
        types = {name: info.msgtype for name, info in reader.topics.items()}
        it = reader.messages()
        while True:
            try:
                m = next(it)
            except StopIteration:
                break
            except BagError as exc:
                if not salvage:
                    raise EvalBagError(str(exc)) from exc
                damaged = True
                warnings.append(f"{exc}; evaluating the {sum(counts.values())} messages before the damage")
                break
            counts[m.topic] = counts.get(m.topic, 0) + 1
            t_first = m.timestamp_ns if t_first is None else min(t_first, m.timestamp_ns)
            t_last = m.timestamp_ns if t_last is None else max(t_last, m.timestamp_ns)
            if m.topic in cams and m.msgtype in (IMAGE, COMPRESSED):
                try:
                    if m.msgtype == IMAGE:
                        hw = image_size_from_cdr(m.data)
                    else:  # a JPEG/PNG header read, no pixels
                        codec = codec or Codec()
                        hw = image_size(codec.deserialize(m.data, m.msgtype))
                except ValueError as exc:
                    problems.append(f"bag {bag}: topic {m.topic}: message {counts[m.topic] - 1} is not a valid "
                                    f"image ({exc})")
                    continue
                first = sizes.setdefault(m.topic, hw)
                if hw != first and len(problems) < 20:
                    problems.append(f"bag {bag}: topic {m.topic}: mismatched image sizes: message "
                                    f"{counts[m.topic] - 1} is {hw[0]}x{hw[1]} (HxW) but the first is "
                                    f"{first[0]}x{first[1]}; every image of a camera must have one size")
    if not counts:  # say so, rather than list every topic as missing
        why = "; ".join(w for w in warnings if str(bag) in w) or "its storage files hold no messages"
        raise EvalBagError(f"bag {bag}: no message could be read ({why})")
    # the streams eval-bag itself needs (the converter checks the rest of the topic map)
    for topic in (*sorted(cams), tm.ee_pose):
        if counts.get(topic, 0) == 0:
            what = "missing topic" if topic not in types else "no messages on topic"
            problems.append(f"bag {bag}: {what} {topic} (topic map: {'camera' if topic in cams else 'ee_pose'}); "
                            f"the bag has {sorted(types)}")
    if problems:
        raise EvalBagError(problems)
    topics = {t: (types.get(t, "?"), counts.get(t, 0)) for t in types}
    dur = (t_last - t_first) / 1e9 if t_first is not None else 0.0
    return Scan(topics, sizes, damaged, recovered, sum(counts.values()), warnings, dur, tm)


def _storage_problem(bag: Path) -> str:
    """Why the recording's storage files cannot be a bag ("" when they may be): all of them empty (0 bytes), or one
    that does not start as an mcap / sqlite3 file does. A file shorter than its format's magic (the last file of an
    interrupted split recording) counts as empty, so the rest stays salvageable."""
    try:
        dirs = find_bags(bag)
    except BagError:
        return ""  # missing / no bag: expand_inputs and BagReader say so
    files = [f for d in dirs for f in sorted(d.iterdir()) if f.is_file() and f.suffix in STORAGE_MAGIC]
    short, foreign = [], []
    for f in files:
        magic = STORAGE_MAGIC[f.suffix]
        with f.open("rb") as fh:
            head = fh.read(len(magic))
        if len(head) < len(magic):
            short.append(f)
        elif head != magic:
            foreign.append((f, head))
    if foreign:
        f, head = foreign[0]
        kind = "an mcap" if f.suffix == ".mcap" else "a sqlite3"
        return (f"bag {bag}: {f.name} is not {kind} (or rosbag2) file: it starts with {head!r}, not "
                f"{STORAGE_MAGIC[f.suffix]!r}")
    if files and len(short) == len(files):
        names = ", ".join(f"{f.name} ({f.stat().st_size} bytes)" for f in files)
        return f"bag {bag} is empty: {names}; nothing was recorded (did the recorder stop before writing?)"
    return ""


def action_source(tm: TopicMap, scan: Scan, bag: Path) -> tuple[TopicMap, str]:
    """The topic map to convert with, and a note when the default action topic is absent and the measured EE pose
    and gripper closure stand in for it (a robot recording has no expert; see the module docstring)."""
    if tm.action is None or "action" in tm.model_fields_set or scan.topics.get(tm.action, ("", 0))[1] > 0:
        return tm, ""
    grip = tm.gripper.topic or "none configured"
    return tm.model_copy(update={"action": None}), (
        f"bag {bag} has no {tm.action} (the default action source: the sim expert's commands; robot recordings have "
        f"none): actions are the measured EE pose ({tm.ee_pose}) and the measured gripper closure ({grip}); name an "
        f"action topic in a --topic-map to use recorded commands")


def _write_salvaged(bag: Path, scan: Scan, dest: Path, warnings: list[str]) -> None:
    """Copy the ``scan.readable`` messages before the damage into a complete bag (streamed, so big recordings
    need no memory), for the regular converter to read."""
    with BagWriter(dest) as w, BagReader(bag, recover=scan.recovered) as reader:
        ok: set[str] = set()
        for topic, (msgtype, _n) in scan.topics.items():
            try:
                w.add_topic(topic, msgtype)
                ok.add(topic)
            except ValueError as exc:
                warnings.append(f"salvaged copy leaves out topic {topic}: {exc}")
        it = reader.messages()
        for _ in range(scan.readable):
            try:
                m = next(it)
            except (StopIteration, BagError):
                break
            if m.topic in ok:
                w.write(m.topic, m.timestamp_ns, m.data)


@dataclass
class Episode:
    frames: np.ndarray  # (T, 3, 3, H, W) uint8
    actions: np.ndarray  # (T, 7)
    joints: np.ndarray  # (T, J)
    timestamps_ns: np.ndarray
    success: bool | None
    instruction: str
    joint_names: list[str]
    source_size: tuple[int, int]


def _has_label(bag: Path, scan: Scan, tm: TopicMap) -> bool:
    topics = {t for t, (_ty, n) in scan.topics.items() if n > 0}
    return bool((tm.episode_info and tm.episode_info in topics) or (tm.success and tm.success in topics)
                or (tm.sidecar and _sidecar(bag) is not None and "success" in _read_json(_sidecar(bag))))


def _read_json(path: Path | None) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text()) if path else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


#: A pixel "moves" when some channel of the future frame differs from the current frame by more than this
#: ([0, 1] scale: about 13/255 — above the simulator's and a camera's frame-to-frame noise).
def prepare_episode(bag: Path, tm: TopicMap, bundle: Bundle, cfg: EvalBagConfig, work: Path, scan: Scan,
             warnings: list[str]) -> tuple[Episode, bool, str]:
    """Convert the recording (or its salvaged copy) to model-rate frames with the data engineer's converter.

    Returns (episode, label_known, label_source).
    """
    from safetensors.numpy import load_file


    label_known = _has_label(bag, scan, tm)
    src_dir = work / "src"
    src_dir.mkdir()
    src = src_dir / bag.name
    if scan.damaged:
        _write_salvaged(bag, scan, src, warnings)
    else:
        src.symlink_to(bag.resolve(), target_is_directory=True)
    labels = _read_json(_sidecar(bag) if tm.sidecar else None)
    label_source = "recorded"
    if cfg.success is not None:
        label_source = "--success"
        labels["success"] = bool(cfg.success)
        label_known = True
    # The converter insists on a label (training needs one): give it the original sidecar's labels, the user's
    # label or a placeholder, next to our link/copy. A label recorded on a topic still wins inside the converter;
    # which label counts here is decided after the conversion (``label_known``, ``cfg.success``).
    labels.setdefault("success", False)
    (src_dir / f"{bag.name}.json").write_text(json.dumps(labels))
    tm_conv = tm.model_copy(update={"sidecar": True})
    try:
        meta = convert_bags([src], work / "dataset", tm_conv, fps=bundle.fps, val_fraction=0.0, value_gamma=0.97,
                            views=bundle.views)
    except (ConvertError, BagError) as exc:
        problems = exc.problems if isinstance(exc, ConvertError) else [str(exc)]
        raise EvalBagError([p.replace(str(src), str(bag)) for p in problems]) from exc
    ep = meta.episodes[0]
    data = load_file(str(work / "dataset" / ep.shard))
    success: bool | None = bool(cfg.success) if cfg.success is not None else (ep.success if label_known else None)
    src_hw = tuple(meta.info.get("source_image_size") or data["frames"].shape[-2:])
    return (Episode(data["frames"], data["actions"].astype(np.float64), data["joint_positions"].astype(np.float64),
                     data["timestamps_ns"], success, ep.instruction, list(meta.joint_names), src_hw),
            label_known, label_source)
