"""``vidplan eval-bag``: evaluate a model bundle on a recorded episode (rosbag2), without ROS.

For every step of the recording that has ``num_history`` frames behind it and ``num_future`` frames ahead (at the
world model's rate, 5 Hz by default) the flow map rolls out the *recorded* actions from the recorded history, and
the prediction is compared with what the cameras actually saw:

- prediction: PSNR [dB] and SSIM per horizon step per view (views unstacked: left, right, wrist), latent MSE per
  horizon step, and the autoencoder's own reconstruction PSNR of the same frames as the ceiling;
- UQ head: ECE (15 confidence bins) of its 30-bin distribution of |predicted − true latent| per latent element,
  the reliability diagram, Pearson and Spearman correlation (with p-values) of the normalised entropy with the
  actual error, per latent element (seeded subsample) and per predicted frame;
- reward head: bin accuracy, ECE and MAE of its 20-bin value distribution against the Monte-Carlo value
  V(τ) = γ^(F−τ)·success of the episode's success label, on predicted and on recorded (encoded) latents;
- shadow-mode planner (when the bag has joint states and a planning backend can be built from the bundle): the
  chunk it would have sent vs the recorded one, position [m] / rotation [rad] / gripper error per step;
- controllability (:mod:`vidplan_core.eval.controllability`): the same windows, with the same noise, predicted with
  another window's actions (shuffled) and with mirrored actions; error ratios vs the true actions per horizon step
  (≈ 1.0: the model ignores its actions) and the action effect vs the noise effect on the predicted latents;
- latency per stage (encode, rollout, decode, heads, planner).

Outputs in ``out``: ``metrics.json`` (every number finite; a ``null`` always has its reason in ``null_reasons``),
PNG plots under ``plots/`` and one self-contained ``report.html`` (plots embedded, linked to the PNG files).

The bag is read through :mod:`vidplan_core.data.bags` and converted to model-rate frames by
:func:`vidplan_core.data.convert.convert_bags` (the same code, topic map and resampling as training data).

Bad input (:class:`EvalBagError`, exit code 2 in the CLI): a missing bag, an empty bag (0-byte storage files) or a
file that is not an mcap (or rosbag2 sqlite3) file, a bag lacking a needed topic (as the topic map names them), a
camera whose image size changes within the recording, too few frames for one window, a model directory that does not
load (a truncated or corrupt safetensors or JSON file is named). A truncated or corrupt bag is *salvaged*: the
messages before the damage are evaluated, the report says so, ``metrics.json`` has ``"status": "partial"`` and the
CLI exits with 3. The reward-head comparison needs the episode's end and its success label; without them (salvaged
bag, no label) it is ``null`` with the reason. Camera images of another size than the model's views are resized
(noted as a warning).

Actions: the topic map's action source (default ``/vidplan/expert_action``, the sim expert's commands). A recording
of the robot has no expert: when the default action topic is absent (not named in the topic map) the actions are the
measured EE pose and the measured gripper closure (``gripper.topic``, default ``/joint_states``) — the pose part is
the measured pose in either case (``action_pose: measured``); a warning says so and ``input.action_source`` records
which it was. An action topic the topic map names explicitly is required.

Model directory (``--model DIR``): the parts its index ``DIR/bundle.json`` names (:mod:`vidplan_core.runtime.loader`;
an index naming a part that is not there is bad input, exit 2), or without an index the layout
:class:`vidplan_core.runtime.bundle.PlannerModels` saves, plus optional parts::

    DIR/autoencoder/  DIR/flow_map/            required (diffusers-style: config.json + safetensors)
    DIR/uq_head/  DIR/reward_head/             optional (their metrics are null with the reason when absent)
    DIR/world_model/                           optional: the EDM teacher, predicts instead of the flow map with
                                               ``teacher_steps`` > 0 (or give ``teacher_dir``)
    DIR/semantic/                              optional; the shadow planner needs it
``heads/uq_head``, ``heads/reward_head`` and ``vae/`` are accepted as alternative names.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bags import BagError, BagReader, BagWriter, find_bags
from vidplan_core.data.convert import ConvertError, TopicMap, expand_inputs, resolve_camera_topics
from vidplan_core.data.messages import Codec
from vidplan_core.eval import metrics as M
from vidplan_core.images import image_size
from vidplan_core.spaces import VIEW_ORDER

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "SCHEMA",
    "Bundle",
    "EvalBagConfig",
    "EvalBagError",
    "EvalBagResult",
    "ReliabilityAccumulator",
    "eval_bag",
    "finite_or_null",
    "image_size_from_cdr",
    "load_bundle",
]

SCHEMA = "vidplan-eval-bag/1"
EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 3
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STORAGE_MAGIC = {".mcap": b"\x89MCAP0\r\n", ".db3": b"SQLite format 3\x00"}  # first bytes of each storage format
MODEL_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError, UnicodeDecodeError)
EMPTY_BIN = "a null entry is an empty confidence bin (its count is 0)"
PSNR_MSE_FLOOR = 1e-10  # identical images would give +inf dB; floor the MSE so PSNR stays finite (≤ 100 dB)


class EvalBagError(ValueError):
    """The recording or the model cannot be evaluated; lists every problem (naming bag, topic and what is wrong)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("cannot evaluate:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class EvalBagConfig:
    """Settings of one evaluation.

    Attributes:
        flow_steps: K of the flow-map sampler (1, 2, 4, ...).
        max_steps: evaluate at most this many windows, spread evenly over the episode (0 = all).
        device: torch device ("cpu", "cuda", "cuda:1", or "auto").
        seed: seed of the flow map's initial noise (window i uses seed + i).
        gamma: discount per model-rate frame of the Monte-Carlo value; None = the bundle's (``bundle.json``
            ``value_gamma``) or 0.97 (the converter's default).
        success: success label to use instead of (or in the absence of) the recorded one; None = recorded.
        shadow: run the planner in shadow mode (needs joint states and a buildable planning backend).
        shadow_every: plan at every n-th evaluated window (planning is the expensive part).
        shadow_max: plan at most this many times (0 = no limit).
        examples: number of windows drawn as prediction strips (recorded / predicted / uncertainty).
        salvage: evaluate what can be read from a truncated/corrupt bag (else it is an error).
        progress: show a progress bar (tqdm, on stderr).
        element_samples: latent elements per window kept for the element-level entropy–error correlation.
        planner: the shadow planner's :class:`~vidplan_core.planning.session.SessionConfig` (or its dict / YAML
            path); None = its defaults.
        teacher_steps: 0 = predict with the flow map (K = ``flow_steps``); N > 0 = with the EDM teacher, Euler
            sampler with N noise levels and the same initial noise (the teacher-vs-flow-map comparison).
        teacher_dir: the teacher's directory (a saved WorldModel); None = ``<model_dir>/world_model``.
        controllability: also predict every window with shuffled and mirrored actions and another noise draw
            (3 more rollouts, 2 more decodes per window); False = the section is null.
        episode: for a LeRobot dataset (DROID) as input: the episode index to evaluate.
        mapping: for a LeRobot dataset: its mapping (a shipped name such as ``droid``, or a YAML path).
    """

    flow_steps: int = 1
    max_steps: int = 0
    device: str = "cpu"
    seed: int = 0
    gamma: float | None = None
    success: bool | None = None
    shadow: bool = True
    shadow_every: int = 1
    shadow_max: int = 0
    examples: int = 2
    salvage: bool = True
    progress: bool = True
    element_samples: int = 2048
    planner: Any = None
    teacher_steps: int = 0
    teacher_dir: str | None = None
    controllability: bool = True
    episode: int = 0
    mapping: str = "droid"


@dataclass
class EvalBagResult:
    """What :func:`eval_bag` wrote: the metrics dict, paths, and the exit code (0 complete, 3 partial)."""

    metrics: dict[str, Any]
    out_dir: Path
    metrics_path: Path
    report_path: Path
    plots: dict[str, Path]
    exit_code: int


# ------------------------------------------------------------------------------------------------- model bundle


@dataclass
class Bundle:
    """The models of a bundle directory (see the module docstring); absent optional parts are None with a reason."""

    path: Path
    autoencoder: Any
    flow_map: Any
    uq_head: Any | None
    reward_head: Any | None
    semantic_dir: Path | None
    info: dict[str, Any]
    missing: dict[str, str] = field(default_factory=dict)
    index: Any = None  # vidplan_core.runtime.loader.BundleIndex

    @property
    def num_history(self) -> int:
        return int(self.flow_map.model.config.num_history)

    @property
    def horizon(self) -> int:
        return int(self.flow_map.model.config.num_future)

    @property
    def fps(self) -> float:
        return float(self.flow_map.model.config.fps)

    @property
    def view_size(self) -> tuple[int, int]:
        c = self.autoencoder.config
        return int(c.view_height), int(c.view_width)

    @property
    def views(self) -> Any:
        """The model's :class:`~vidplan_core.spaces.ViewPreparation` (workspace crops of its action maps): the
        recording's images are cut exactly as the planner node cuts live ones."""
        from vidplan_core.models.action_maps import normalised_view_geometry
        from vidplan_core.spaces import ViewPreparation

        maps = self.flow_map.model.config.action_maps
        return ViewPreparation.from_geometry(normalised_view_geometry(maps) if maps else None, *self.view_size)


def load_bundle(model_dir: str | Path, device: str = "cpu") -> Bundle:
    """Load the models eval-bag needs from a bundle directory (strict, safetensors only), through the one
    model-directory loader (:mod:`vidplan_core.runtime.loader`): the parts its index ``bundle.json`` names, or those
    of the layout when it has none.

    Raises:
        EvalBagError: the directory or a required model is missing, the index names a part that is not there (the
            message names the key and the path), a model does not load (the message of
            :class:`vidplan_core.models.ModelLoadError` names file and mismatch), or the models disagree on the
            latent shape.
    """
    from vidplan_core.models import ModelLoadError
    from vidplan_core.runtime.loader import CONVENTIONS, BundleError, load_part, read_bundle_index

    root = Path(model_dir)
    if not root.is_dir():
        raise EvalBagError(f"model directory {root} does not exist")
    try:
        index = read_bundle_index(root)
    except BundleError as exc:
        raise EvalBagError(str(exc)) from exc
    sections = {"autoencoder": True, "flow_map": True, "uq_head": False, "reward_head": False}
    models: dict[str, Any] = {}
    missing: dict[str, str] = {}
    problems: list[str] = []
    for sec, required in sections.items():
        models[sec] = None
        if index.path(sec) is None:
            msg = (f"model directory {root} has no {' or '.join(n + '/' for n in CONVENTIONS[sec])} (with "
                   f"config.json)" + ("" if index.inferred else f"; its index {index.source} names no {sec}"))
            if required:
                problems.append(msg)
            else:
                missing[sec] = msg
            continue
        try:
            models[sec] = load_part(index, sec, device=device)
        except (ModelLoadError, BundleError) as exc:  # these name file and problem (a checksum mismatch, ...)
            problems.append(_unloadable(f"model directory {root}: {sec}", index.path(sec), exc, str(exc)))
        except (*MODEL_READ_ERRORS, *_safetensor_errors()) as exc:  # e.g. a truncated safetensors file
            problems.append(_unloadable(f"model directory {root}: {sec}", index.path(sec), exc))
    if problems:
        raise EvalBagError(problems)
    lat = tuple(models["autoencoder"].latent_shape)
    for sec in ("flow_map", "uq_head", "reward_head"):
        m = models[sec]
        if m is None:
            continue
        shape = tuple(m.model.latent_shape) if sec == "flow_map" else (
            m.config.latent_channels, m.config.latent_height, m.config.latent_width)
        if shape != lat:
            problems.append(f"model directory {root}: {sec} expects latents {shape}, the autoencoder makes {lat}")
    if problems:
        raise EvalBagError(problems)
    sem = index.path("semantic")
    if sem is None:
        missing["semantic"] = f"model directory {root} has no semantic/ model"
    info: dict[str, Any] = {}
    if index.value_gamma is not None:
        info["value_gamma"] = index.value_gamma
    elif (root / "model.json").is_file():  # metadata file of earlier bundles
        try:
            info = json.loads((root / "model.json").read_text())
        except json.JSONDecodeError as exc:
            raise EvalBagError(f"{root / 'model.json'}: invalid JSON ({exc})") from exc
    return Bundle(root, models["autoencoder"], models["flow_map"], models["uq_head"], models["reward_head"], sem,
                  info, missing, index)


def _safetensor_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError  # not an OSError/ValueError: the reader's own exception

    return (SafetensorError,)


def unreadable_model_file(directory: str | Path) -> tuple[Path, str] | None:
    """The first file under ``directory`` that cannot be read as what its name says (``*.safetensors``: header and
    every tensor's byte range inside the file; ``*.json``: JSON), with the reason; None when all read."""
    from safetensors import safe_open

    for f in sorted(Path(directory).rglob("*")):
        if f.suffix == ".safetensors" and f.is_file():
            try:
                with safe_open(str(f), framework="numpy") as st:
                    for key in st.keys():
                        st.get_slice(key)
            except Exception as exc:  # anything the reader raises means the file is damaged
                return f, f"truncated or corrupt: not a complete safetensors file ({type(exc).__name__}: {exc})"
        elif f.suffix == ".json" and f.is_file():
            try:
                json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                return f, f"not valid JSON ({exc})"
    return None


def _unloadable(what: str, directory: Path | None, exc: BaseException, otherwise: str = "") -> str:
    """The message for a model part that raised ``exc`` while loading: the damaged file when one is found, else
    ``otherwise`` (or the exception)."""
    bad = unreadable_model_file(directory) if directory is not None and Path(directory).is_dir() else None
    if bad is not None:
        return f"{what}: {bad[0]} is {bad[1]}"
    return otherwise or f"{what} does not load from {directory}: {type(exc).__name__}: {exc}"


def _default_teacher_dir(model_dir: str | Path) -> Path:
    """Where the bundle keeps its EDM teacher: the index's ``world_model`` part, else ``<model_dir>/world_model``
    (the index is checked later, with the models, after the bag)."""
    from vidplan_core.runtime.loader import BundleError, read_bundle_index

    try:
        p = read_bundle_index(model_dir, check=False).path("world_model")
    except BundleError:
        p = None
    return p if p is not None else Path(model_dir) / "world_model"


# ------------------------------------------------------------------------------------------------- the recording


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
class _Scan:
    topics: dict[str, tuple[str, int]]  # name → (type, messages read)
    sizes: dict[str, tuple[int, int]]  # camera topic → (H, W)
    damaged: bool
    recovered: bool  # opened with BagReader(recover=True) (the storage file could not be opened normally)
    readable: int  # messages readable before the damage (all of them when undamaged)
    warnings: list[str]
    duration_s: float
    topic_map: TopicMap  # the caller's, compressed camera topics resolved (convert.resolve_camera_topics)


def _scan(bag: Path, tm: TopicMap, salvage: bool) -> _Scan:
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
    return _Scan(topics, sizes, damaged, recovered, sum(counts.values()), warnings, dur, tm)


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


def _action_source(tm: TopicMap, scan: _Scan, bag: Path) -> tuple[TopicMap, str]:
    """The topic map to convert with, and a note when the default action topic is absent and the measured EE pose
    and gripper closure stand in for it (a robot recording has no expert; see the module docstring)."""
    if tm.action is None or "action" in tm.model_fields_set or scan.topics.get(tm.action, ("", 0))[1] > 0:
        return tm, ""
    grip = tm.gripper.topic or "none configured"
    return tm.model_copy(update={"action": None}), (
        f"bag {bag} has no {tm.action} (the default action source: the sim expert's commands; robot recordings have "
        f"none): actions are the measured EE pose ({tm.ee_pose}) and the measured gripper closure ({grip}); name an "
        f"action topic in a --topic-map to use recorded commands")


def _write_salvaged(bag: Path, scan: _Scan, dest: Path, warnings: list[str]) -> None:
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
class _Episode:
    frames: np.ndarray  # (T, 3, 3, H, W) uint8
    actions: np.ndarray  # (T, 7)
    joints: np.ndarray  # (T, J)
    timestamps_ns: np.ndarray
    success: bool | None
    instruction: str
    joint_names: list[str]
    source_size: tuple[int, int]


def _has_label(bag: Path, scan: _Scan, tm: TopicMap) -> bool:
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
MOVING_THRESHOLD = 0.05


def _moving_psnr(sse: dict[str, np.ndarray], n: np.ndarray) -> dict[str, Any]:
    """PSNR [dB] of the prediction and of the copy baseline on the pixels that change, pooled over windows and
    views per horizon step, and the gain (prediction − copy) per step and pooled over all steps
    (``gain_db_mean``); None where no pixel changed. ``values``: pixel-channel values pooled. With
    ``sse["copy_decoded"]`` also the gain over copying the *decoded* current frame (the autoencoder's
    reconstruction — the copy a latent model can output, so its error is the model's, not the autoencoder's)."""
    def db(e: np.ndarray) -> list[float | None]:
        return [None if k == 0 else 10 * math.log10(1.0 / max(x / k, PSNR_MSE_FLOOR))
                for x, k in zip(e, n, strict=True)]

    def pooled(key: str) -> float | None:
        tot = float(n.sum())
        return None if tot == 0 else 10 * math.log10(1.0 / max(float(sse[key].sum()) / tot, PSNR_MSE_FLOOR))

    pred, copy = db(sse["prediction"]), db(sse["copy"])
    gain = [None if a is None else a - b for a, b in zip(pred, copy, strict=True)]
    p_all, c_all = pooled("prediction"), pooled("copy")
    out = {"threshold": MOVING_THRESHOLD, "values": int(n.sum()), "psnr_db": pred, "copy_psnr_db": copy,
           "gain_db": gain, "gain_db_mean": None if p_all is None else p_all - c_all}
    if "copy_decoded" in sse:  # the current frame through the autoencoder: the copy the model itself could output
        cd = db(sse["copy_decoded"])
        d_all = pooled("copy_decoded")
        out.update(copy_decoded_psnr_db=cd,
                   gain_vs_decoded_copy_db=[None if a is None else a - b for a, b in zip(pred, cd, strict=True)],
                   gain_vs_decoded_copy_db_mean=None if p_all is None else p_all - d_all)
    return out


def _prepare(bag: Path, tm: TopicMap, bundle: Bundle, cfg: EvalBagConfig, work: Path, scan: _Scan,
             warnings: list[str]) -> tuple[_Episode, bool, str]:
    """Convert the recording (or its salvaged copy) to model-rate frames with the data engineer's converter.

    Returns (episode, label_known, label_source).
    """
    from safetensors.numpy import load_file

    from vidplan_core.data.convert import convert_bags

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
    return (_Episode(data["frames"], data["actions"].astype(np.float64), data["joint_positions"].astype(np.float64),
                     data["timestamps_ns"], success, ep.instruction, list(meta.joint_names), src_hw),
            label_known, label_source)


# ------------------------------------------------------------------------------------------------- metrics helpers


class ReliabilityAccumulator:
    """Streaming reliability diagram / ECE over ``n_bins`` equal-width confidence bins (same binning as
    :func:`vidplan_core.eval.metrics.reliability_diagram`), so millions of latent elements need no memory."""

    def __init__(self, n_bins: int = 15):
        self.n_bins = n_bins
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins, np.int64)
        self.conf_sum = np.zeros(n_bins)
        self.acc_sum = np.zeros(n_bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        c = np.asarray(confidence, np.float64).reshape(-1)
        a = np.asarray(correct, np.float64).reshape(-1)
        idx = np.clip(np.digitize(c, self.edges[1:-1], right=True), 0, self.n_bins - 1)
        self.count += np.bincount(idx, minlength=self.n_bins)
        self.conf_sum += np.bincount(idx, weights=c, minlength=self.n_bins)
        self.acc_sum += np.bincount(idx, weights=a, minlength=self.n_bins)

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def diagram(self) -> dict[str, list]:
        """Like :func:`~vidplan_core.eval.metrics.reliability_diagram` (NaN in empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(self.count > 0, self.conf_sum / np.maximum(self.count, 1), np.nan)
            acc = np.where(self.count > 0, self.acc_sum / np.maximum(self.count, 1), np.nan)
        return {"edges": self.edges.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist(),
                "count": self.count.tolist()}

    def ece(self) -> float:
        if self.n == 0:
            raise ValueError("ECE of an empty set")
        m = self.count > 0
        return float(np.sum(np.abs(self.acc_sum[m] - self.conf_sum[m])) / self.n)

    def accuracy(self) -> float:
        return float(self.acc_sum.sum() / max(self.n, 1))


def finite_or_null(obj: Any, reasons: dict[str, str], path: str = "",
                   reason_for: Callable[[str], str] | None = None) -> Any:
    """Copy of a JSON-like tree with numpy scalars/arrays as Python values and every NaN/Inf replaced by ``None``;
    each replacement (and each ``None`` already there) gets its reason in ``reasons[path]`` (``reason_for(path)``
    or a generic one, unless a reason was registered for that path or a parent before)."""

    def why(p: str) -> str:
        return reason_for(p) if reason_for else "not a finite number"

    if isinstance(obj, dict):
        return {k: finite_or_null(v, reasons, f"{path}.{k}" if path else str(k), reason_for) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v, reasons, f"{path}[{i}]", reason_for) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist(), reasons, path, reason_for)
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        if math.isfinite(v):
            return v
        if not _has_reason(reasons, path):
            reasons[path] = why(path)
        return None
    if obj is None and not _has_reason(reasons, path):
        reasons[path] = why(path)
    return obj


def _has_reason(reasons: dict[str, str], path: str) -> bool:
    p = path
    while p:
        if p in reasons:
            return True
        cut = max(p.rfind("."), p.rfind("["))
        if cut <= 0:
            break
        p = p[:cut]
    return False


def _corr(x: np.ndarray, y: np.ndarray, what: str, nulls: dict[str, str], key: str) -> dict[str, Any] | None:
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.size < 3:
        nulls[key] = f"{what}: only {x.size} samples (need ≥ 3)"
        return None
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        nulls[key] = f"{what}: one of the two samples is constant, correlation undefined"
        return None
    out = M.rank_correlations(x, y)
    out["n"] = int(x.size)
    return out


def _rotation_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Geodesic angle [rad] between Euler-xyz orientations (H, 3) and (H, 3)."""
    from scipy.spatial.transform import Rotation

    from vidplan_core.spaces import EULER_SEQ

    r = Rotation.from_euler(EULER_SEQ, pred).inv() * Rotation.from_euler(EULER_SEQ, ref)
    return np.abs(r.magnitude())


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalBagError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return device


# ------------------------------------------------------------------------------------------------- shadow planner


def _load_scorer(bundle: Bundle, device: str) -> tuple[Any | None, str]:
    """The bundle's semantic scorer, or (None, why not)."""
    if bundle.semantic_dir is None:
        return None, bundle.missing.get("semantic", "no semantic model in the bundle")
    from vidplan_core.models import ModelLoadError
    from vidplan_core.runtime.loader import load_semantic_scorer

    try:
        return load_semantic_scorer(bundle.semantic_dir, device=device), ""  # SigLIP/CLIP or the grounded scorer
    except (ModelLoadError, *MODEL_READ_ERRORS, *_safetensor_errors()) as exc:
        bad = unreadable_model_file(bundle.semantic_dir)
        if bad is not None:  # a damaged file is bad input, not a missing optional part
            raise EvalBagError(f"model directory {bundle.path}: semantic model: {bad[0]} is {bad[1]}") from exc
        return None, f"semantic model {bundle.semantic_dir} does not load: {exc}"


def _make_shadow_planner(bundle: Bundle, scorer: Any, cfg: EvalBagConfig, device: str, session_cfg: Any
                         ) -> tuple[Any | None, str]:
    """A :class:`~vidplan_core.planning.session.PlanningSession` on the torch backend over the bundle's models
    (shared with the evaluation, not loaded twice: the one model-directory loader,
    :func:`vidplan_core.runtime.loader.load_planner_backend`, is handed them), or (None, why not)."""
    try:
        from vidplan_core.kinematics import PandaKinematics
        from vidplan_core.models.configs import ModelSuite
        from vidplan_core.planning.session import PlanningSession
        from vidplan_core.runtime.bundle import PlannerModels
        from vidplan_core.runtime.loader import load_planner_backend
    except ImportError as exc:
        return None, f"the planning runtime is not available ({exc})"
    if bundle.uq_head is None or bundle.reward_head is None:
        return None, "the planner needs the UQ and reward heads; the bundle lacks " + ", ".join(
            k for k in ("uq_head", "reward_head") if getattr(bundle, k) is None)
    try:
        # the teacher (world_model) is not used by the planner graphs; the flow map is
        suite = ModelSuite(bundle.autoencoder, None, bundle.flow_map, bundle.uq_head, bundle.reward_head)
        models = PlannerModels(suite, scorer, config_name=bundle.index.config if bundle.index is not None else None)
        backend = load_planner_backend(bundle.path, "torch", device=device, flow_steps=cfg.flow_steps,
                                       models=models).backend
        session = PlanningSession(backend, PandaKinematics(), session_cfg)
    except Exception as exc:  # any failure to build the planner only disables shadow mode, with the reason
        return None, f"cannot build the planner from {bundle.path}: {type(exc).__name__}: {exc}"
    return session, ""


def _session_config(planner: Any) -> Any:
    """The shadow planner's SessionConfig: from THE planner configuration (None = the shipped planning/planner.yaml,
    or a planner YAML path: :func:`vidplan_core.planning.config.load_planning_config`), a SessionConfig, or a dict
    (a PlanningConfig's or, for older callers, a SessionConfig's keys). Errors are ConfigErrors naming file and key."""
    from vidplan_core.config import validate_model
    from vidplan_core.planning.config import PlanningConfig, load_planning_config
    from vidplan_core.planning.session import SessionConfig

    if isinstance(planner, SessionConfig):
        return planner
    if isinstance(planner, dict):
        if set(planner) <= set(PlanningConfig.model_fields):
            return validate_model(PlanningConfig, planner, "planner config").bounded().session
        return validate_model(SessionConfig, planner, "planner config")
    return load_planning_config(planner).session


def _text_embedding(scorer: Any, session: Any, instruction: str, device: str) -> Any:
    """(1, D) instruction embedding exactly as the planner's backend computes it."""
    import torch

    if session is not None and hasattr(session.backend, "text_embedding"):
        try:
            return session.backend.text_embedding(instruction)
        except Exception:
            pass
    from vidplan_core.runtime.bundle import PlannerModels

    ids = torch.as_tensor(PlannerModels(None, scorer).tokenize(instruction), device=device)
    with torch.no_grad():
        return scorer.encode_text(input_ids=ids).float()


# ------------------------------------------------------------------------------------------------- evaluation


def _window_starts(T: int, history: int, horizon: int, max_steps: int) -> list[int]:
    last = T - history - horizon
    if last < 0:
        return []
    starts = list(range(0, last + 1))
    if max_steps and len(starts) > max_steps:
        idx = np.unique(np.round(np.linspace(0, len(starts) - 1, max_steps)).astype(int))
        starts = [starts[i] for i in idx]
    return starts


def _lerobot_episode(root: Path, cfg: EvalBagConfig, bundle: Bundle) -> tuple[_Episode, float]:
    """One episode of a LeRobot dataset (DROID) at the model's rate and views, read in place; and its duration [s]."""
    from vidplan_core.data.lerobot import LeRobotError, LeRobotSource

    try:
        src = LeRobotSource(root, cfg.mapping, [cfg.episode])
        e = src.episodes[0]
        s = src.signals(e, bundle.fps)
        frames = src.frames(e, s["video_times"], bundle.views)
    except (LeRobotError, ValueError) as exc:  # ValueError: a view whose aspect ratio the model's crop refuses
        raise EvalBagError(f"LeRobot dataset {root}, episode {cfg.episode}: {exc}") from exc
    success = bool(cfg.success) if cfg.success is not None else bool(s["success"])
    src_hw = src.video_size(VIEW_ORDER[0]) or tuple(frames.shape[-2:])
    ep = _Episode(frames, s["actions"].astype(np.float64), s["joint_positions"].astype(np.float64),
                  s["timestamps_ns"], success, s["instruction"], list(src.mapping.joint_names), src_hw)
    return ep, float(e.length / src.fps)


def eval_bag(bag: str | Path, model_dir: str | Path, out: str | Path, topic_map: TopicMap | None = None,
             config: EvalBagConfig | None = None) -> EvalBagResult:
    """Evaluate the bundle in ``model_dir`` on the recording ``bag``; write metrics.json, plots and report.html.

    Args:
        bag: rosbag2 directory (mcap or sqlite3; a split recording directory is accepted).
        model_dir: model bundle (see the module docstring).
        out: output directory (created; files of earlier runs with the same names are replaced).
        topic_map: where the signals are (default: vidplan's topics), see :class:`vidplan_core.data.convert.TopicMap`.
        config: :class:`EvalBagConfig`.

    Returns:
        :class:`EvalBagResult` (``exit_code`` 0 complete, 3 partial: the salvaged part of a damaged bag).

    Raises:
        EvalBagError: bad input that leaves nothing to evaluate (see the module docstring).
    """
    cfg = config or EvalBagConfig()
    tm = topic_map or TopicMap()
    bag = Path(bag)
    out = Path(out)
    if cfg.flow_steps < 1:
        raise EvalBagError(f"--flow-steps must be ≥ 1, got {cfg.flow_steps}")
    if cfg.teacher_steps < 0:
        raise EvalBagError(f"--teacher-steps must be ≥ 0, got {cfg.teacher_steps}")
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else _default_teacher_dir(model_dir)
    if cfg.teacher_steps and not (teacher_dir / "config.json").is_file():
        raise EvalBagError(f"--teacher-steps {cfg.teacher_steps}: no EDM teacher at {teacher_dir} (deployment "
                           f"bundles such as models/demo leave it in the training run; pass --teacher DIR)")
    session_cfg = _session_config(cfg.planner) if cfg.shadow else None  # a bad planner config: ConfigError now
    from vidplan_core.data.lerobot import LeRobotError, LeRobotSource, is_lerobot_dataset

    lerobot = is_lerobot_dataset(bag)
    warnings: list[str] = []
    nulls: dict[str, str] = {}
    if lerobot:  # a LeRobot / DROID dataset: one episode read in place; keys and files checked before the models
        try:
            LeRobotSource(bag, cfg.mapping, [cfg.episode])
        except LeRobotError as exc:
            raise EvalBagError(f"LeRobot dataset {bag}, episode {cfg.episode}: {exc}") from exc
        scan = _Scan({}, {}, False, False, 0, [], 0.0, tm)
        action_note = ""
    else:
        try:
            find_bags(bag)  # a split recording (numbered bags) counts as one episode, read merged
            episodes = expand_inputs([bag])
        except (BagError, ConvertError) as exc:
            raise EvalBagError(str(exc)) from exc
        if len(episodes) > 1:
            raise EvalBagError(f"{bag} holds {len(episodes)} episodes ({', '.join(e.name for e in episodes[:3])}, "
                               f"...); eval-bag evaluates one episode: pass one of them")
        scan = _scan(bag, tm, cfg.salvage)  # the bag first: bad input fails fast, before torch and the models load
        warnings += scan.warnings
        tm = scan.topic_map
        tm, action_note = _action_source(tm, scan, bag)
    if action_note:
        warnings.append(action_note)
    import torch  # heavy imports after the bag checks, so bad input fails in a second

    from vidplan_core.models import normalized_entropy, to_bins
    from vidplan_core.runtime.bundle import make_noise

    device = _resolve_device(cfg.device)
    t_load = time.perf_counter()
    bundle = load_bundle(model_dir, device=device)
    t_load = time.perf_counter() - t_load
    if lerobot:
        ep, scan.duration_s = _lerobot_episode(bag, cfg, bundle)
        label_known = True
        label_source = "--success" if cfg.success is not None else f"LeRobot (mapping {cfg.mapping})"
    else:
        with tempfile.TemporaryDirectory(prefix="vidplan-eval-bag-") as tmp:
            ep, label_known, label_source = _prepare(bag, tm, bundle, cfg, Path(tmp), scan, warnings)
    T = len(ep.frames)
    Th, H = bundle.num_history, bundle.horizon
    starts = _window_starts(T, Th, H, cfg.max_steps)
    if not starts:
        raise EvalBagError(f"bag {bag}: {T} frames at {bundle.fps:g} Hz after conversion "
                           f"({'salvaged part, ' if scan.damaged else ''}{scan.duration_s:.2f} s of messages); "
                           f"one window needs {Th} history + {H} future frames = {(Th + H) / bundle.fps:.1f} s")
    if tuple(ep.source_size) != bundle.view_size:
        warnings.append(f"camera images of {ep.source_size[0]}x{ep.source_size[1]} (HxW) were resized to the "
                        f"model's {bundle.view_size[0]}x{bundle.view_size[1]} views")
    if cfg.success is not None and label_known and label_source == "--success":
        warnings.append(f"success label set on the command line: {cfg.success}")
    gamma = cfg.gamma if cfg.gamma is not None else float(bundle.info.get("value_gamma", 0.97))

    ae, fm, uq, rw = bundle.autoencoder, bundle.flow_map, bundle.uq_head, bundle.reward_head
    dev = torch.device(device)
    lat_times: dict[str, list[float]] = {k: [] for k in ("encode_frame", "rollout", "decode", "uq_head",
                                                           "reward_head", "planner")}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # 1. encode every frame once (the planner encodes each new frame once and caches it: per-frame latency)
    frames_t = torch.from_numpy(ep.frames)
    lat_true_l, recon_psnr, recon_l = [], {v: [] for v in VIEW_ORDER}, []
    with torch.no_grad():
        for i in range(0, T, 8):
            x = frames_t[i:i + 8].to(dev, torch.float32).div_(255.0)
            sync()
            t0 = time.perf_counter()
            z = ae.encode(x)
            sync()
            dt = time.perf_counter() - t0
            lat_times["encode_frame"] += [dt / len(x)] * len(x)
            lat_true_l.append(z)
            rec = ae.decode(z).float().cpu().numpy()
            recon_l.append(rec.astype(np.float32))
            tgt = x.float().cpu().numpy()
            for vi, v in enumerate(VIEW_ORDER):
                mse = np.maximum(np.mean((rec[:, vi] - tgt[:, vi]) ** 2, axis=(-3, -2, -1)), PSNR_MSE_FLOOR)
                recon_psnr[v] += (10 * np.log10(1.0 / mse)).tolist()
    lat_true = torch.cat(lat_true_l)  # (T, C, h, w)
    recon = np.concatenate(recon_l)  # (T, V, 3, h, w) decoded frames: what the model's own copy baseline looks like
    actions_t = torch.from_numpy(ep.actions).to(dev, torch.float32)

    # reward target: V(τ) = γ^(F−τ)·success needs the episode's end and its label
    reward_reason = ""
    if rw is None:
        reward_reason = bundle.missing.get("reward_head", "no reward head in the bundle")
    elif ep.success is None:
        reward_reason = (f"no success label in bag {bag} (topic {tm.episode_info or tm.success} or a sidecar); "
                         f"pass --success true|false to evaluate the reward head")
    elif scan.damaged:
        reward_reason = ("the bag is truncated/corrupt: the episode's last frame F is lost, so the Monte-Carlo "
                         "value γ^(F−τ)·success of the salvaged frames is unknown")
    values = None
    if not reward_reason:
        from vidplan_core.data.schema import mc_values

        values = mc_values(T, bool(ep.success), gamma).astype(np.float64)

    # shadow planner and the instruction embedding (a text-conditioned world model gets it, as in the planner)
    shadow_reason = ""
    session = None
    uses_text = fm.model.config.text_embed_dim is not None
    scorer, scorer_reason = (None, "")
    if cfg.shadow or uses_text:
        scorer, scorer_reason = _load_scorer(bundle, device)
    if not cfg.shadow:
        shadow_reason = "shadow mode switched off (--no-shadow)"
    elif ep.joints.shape[1] < 7:
        shadow_reason = (f"bag {bag} has no arm joint states ({tm.joint_states or 'joint_states not mapped'}): the "
                         f"planner's basis proposals need the 7 joint positions")
    elif scorer is None:
        shadow_reason = f"the planner needs the semantic model: {scorer_reason}"
    else:
        session, shadow_reason = _make_shadow_planner(bundle, scorer, cfg, device, session_cfg)
    text_emb = None
    if uses_text:
        if scorer is None:
            warnings.append(f"the world model is text-conditioned but {scorer_reason}: predictions are made "
                            f"without the instruction embedding (the planner would use it)")
        else:
            try:
                text_emb = _text_embedding(scorer, session, ep.instruction, device)
            except Exception as exc:  # a broken text tower must not stop the video evaluation
                warnings.append(f"cannot embed the instruction {ep.instruction!r} ({type(exc).__name__}: {exc}): "
                                f"predictions are made without it")

    teacher = None
    if cfg.teacher_steps:
        from vidplan_core.models import WorldModel

        try:
            teacher = WorldModel.load(teacher_dir, device=device)
        except Exception as exc:
            raise EvalBagError(_unloadable("the EDM teacher", teacher_dir, exc)) from exc

    # 2. windows
    psnr_w = np.zeros((len(starts), H, len(VIEW_ORDER)))
    copy_w = np.zeros_like(psnr_w)  # baseline: the current frame copied into the future (what must be predicted)
    # pooled squared errors on the pixels that change (|future − current| > MOVING_THRESHOLD in some channel):
    # what the copy baseline cannot get right and planning needs (robot, pushed objects) — per horizon step
    moving_sse = {"prediction": np.zeros(H), "copy": np.zeros(H), "copy_decoded": np.zeros(H)}
    moving_n = np.zeros(H)
    ssim_w = np.zeros_like(psnr_w)
    lpips_fn, lpips_reason = M.make_lpips(device)  # None where the package or its weights are not available
    lpips_w = np.zeros_like(psnr_w)
    lmse_w = np.zeros((len(starts), H))
    rel_uq = ReliabilityAccumulator(15)
    uq_frame_ent, uq_frame_err, uq_frame_exp = [], [], []
    el_ent, el_err = [], []
    rng = np.random.default_rng(cfg.seed)
    rw_pred: dict[str, list] = {"on_predicted": [], "on_recorded": []}
    rw_rel = {"on_predicted": ReliabilityAccumulator(15), "on_recorded": ReliabilityAccumulator(15)}
    rw_points: list[tuple[int, int, float, float]] = []  # (frame τ, horizon step, predicted E[V], target V)
    shadow_rows: list[dict[str, Any]] = []
    shadow_status: dict[str, int] = {}
    shadow_stage: dict[str, list[float]] = {}
    example_idx = set(np.unique(np.round(np.linspace(0, len(starts) - 1, max(cfg.examples, 0))).astype(int)).tolist()
                      ) if cfg.examples > 0 else set()
    examples: list[dict[str, Any]] = []

    from vidplan_core.sampling import edm_sample, flow_map_sample  # torch: imported once a model is loaded

    def rollout(hist: Any, acts: Any, noise: Any) -> Any:  # (1, T, C, h, w), (1, T+H, 7), (1, H, C, h, w)
        if teacher is not None:
            return edm_sample(teacher, hist, acts, num_steps=cfg.teacher_steps, noise=noise, text_embeds=text_emb)
        return flow_map_sample(fm, hist, acts, num_steps=cfg.flow_steps, noise=noise, text_embeds=text_emb)

    ctl, ctl_shuffled = None, None
    if cfg.controllability:
        from vidplan_core.eval import controllability as CTL

        ctl = CTL.ControllabilityAccumulator(H)
        ctl_shuffled = CTL.shuffled_chunks(ep.actions, [s + Th - 1 for s in starts], H)
        if ctl_shuffled is None:
            ctl.shuffle_reason = (f"only {len(starts)} window: no other window's actions to shuffle in (needs ≥ 2 "
                                  f"windows; a longer bag or a larger --max-steps)")
    else:
        nulls["controllability"] = "switched off (EvalBagConfig.controllability = False / --no-controllability)"

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc=f"eval-bag {bag.name}", unit="step", leave=False)
    plans_done = 0
    for wi, s in enumerate(starts):
        c = s + Th - 1  # current frame
        fut = np.arange(c + 1, c + 1 + H)
        with torch.no_grad():
            hist = lat_true[s:s + Th][None]
            acts = actions_t[s:s + Th + H][None]
            # the planner's noise for this cycle (same seed → same noise in every runtime)
            noise = torch.from_numpy(make_noise(cfg.seed + s, (H, *lat_true.shape[1:]))).to(dev)
            sync()
            t0 = time.perf_counter()
            pred = rollout(hist, acts, noise)
            sync()
            lat_times["rollout"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pred_img = ae.decode(pred)[0]  # (H, 3, 3, h, w)
            sync()
            lat_times["decode"].append(time.perf_counter() - t0)
            true_lat = lat_true[fut]
            pred_np = pred_img.float().cpu().numpy()
            tgt_np = ep.frames[fut].astype(np.float64) / 255.0
            now_np = ep.frames[c].astype(np.float64) / 255.0
            for h in range(H):
                for vi in range(len(VIEW_ORDER)):
                    mse = max(float(np.mean((pred_np[h, vi] - tgt_np[h, vi]) ** 2)), PSNR_MSE_FLOOR)
                    psnr_w[wi, h, vi] = 10 * math.log10(1.0 / mse)
                    mse = max(float(np.mean((now_np[vi] - tgt_np[h, vi]) ** 2)), PSNR_MSE_FLOOR)
                    copy_w[wi, h, vi] = 10 * math.log10(1.0 / mse)
                    ssim_w[wi, h, vi] = M.ssim(pred_np[h, vi], tgt_np[h, vi])
                    if lpips_fn is not None:
                        lpips_w[wi, h, vi] = lpips_fn(pred_np[h, vi], tgt_np[h, vi])
                    moving = np.abs(tgt_np[h, vi] - now_np[vi]).max(axis=0) > MOVING_THRESHOLD  # (h, w)
                    if moving.any():
                        moving_sse["prediction"][h] += float(((pred_np[h, vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_sse["copy"][h] += float(((now_np[vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_sse["copy_decoded"][h] += float(((recon[c, vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_n[h] += 3 * int(moving.sum())
            err = (pred[0] - true_lat).abs()  # (H, C, h, w)
            lmse_w[wi] = ((pred[0] - true_lat) ** 2).mean(dim=(1, 2, 3)).float().cpu().numpy()
            uq_map = None
            if uq is not None:
                t0 = time.perf_counter()
                logits = uq(pred)[0]  # (H, C, h, w, B)
                sync()
                lat_times["uq_head"].append(time.perf_counter() - t0)
                probs = logits.float().softmax(-1)
                target = to_bins(err.float(), 0.0, float(uq.config.max_error), int(uq.config.num_bins))
                conf, pbin = probs.max(-1)
                rel_uq.add(conf.cpu().numpy(), (pbin == target).float().cpu().numpy())
                ent = normalized_entropy(logits.float())  # (H, C, h, w)
                exp_err = (probs * uq.centers.to(probs)).sum(-1)
                uq_frame_ent += ent.mean(dim=(1, 2, 3)).cpu().tolist()
                uq_frame_err += err.float().mean(dim=(1, 2, 3)).cpu().tolist()
                uq_frame_exp += exp_err.mean(dim=(1, 2, 3)).cpu().tolist()
                flat_e, flat_x = ent.reshape(-1).cpu().numpy(), err.reshape(-1).float().cpu().numpy()
                k = min(cfg.element_samples, flat_e.size)
                pick = rng.choice(flat_e.size, size=k, replace=False)
                el_ent.append(flat_e[pick])
                el_err.append(flat_x[pick])
                uq_map = ent.mean(dim=1).cpu().numpy()  # (H, h, w): mean over latent channels
            if values is not None:
                fut_acts = acts[:, Th:]
                tv = torch.as_tensor(values[fut], dtype=torch.float32, device=dev)
                tbin = to_bins(tv, 0.0, 1.0, int(rw.config.num_bins))
                for kind, lat in (("on_predicted", pred), ("on_recorded", true_lat[None])):
                    t0 = time.perf_counter()
                    lg = rw(lat, fut_acts)[0].float()  # (H, B)
                    sync()
                    if kind == "on_predicted":
                        lat_times["reward_head"].append(time.perf_counter() - t0)
                    p = lg.softmax(-1)
                    conf, pb = p.max(-1)
                    ev = (p * rw.centers.to(p)).sum(-1)
                    rw_rel[kind].add(conf.cpu().numpy(), (pb == tbin).float().cpu().numpy())
                    rw_pred[kind].append(np.stack([ev.cpu().numpy(), values[fut]], axis=1))
                    if kind == "on_predicted":
                        rw_points += [(int(fut[h]), h, float(ev[h]), float(values[fut[h]])) for h in range(H)]
            if ctl is not None:  # same history, same noise, other actions (common random numbers)
                ctl.add(CTL.evaluate_window(
                    lambda a, z, hist=hist: rollout(hist, torch.as_tensor(a, dtype=torch.float32, device=dev)[None],
                                                    z)[0],
                    ep.actions[s:s + Th + H], Th, true_lat, noise,
                    torch.from_numpy(CTL.other_noise(cfg.seed + s, tuple(noise.shape[1:]))).to(dev),
                    shuffled_future=None if ctl_shuffled is None else ctl_shuffled[wi],
                    decode=lambda z: ae.decode(z[None])[0].float().cpu().numpy(), target_images=tgt_np,
                    pred_true=pred[0], pred_true_images=pred_np))
        if wi in example_idx:
            examples.append({"start": s, "frame": c, "recorded": tgt_np, "predicted": pred_np, "uq_map": uq_map,
                             "psnr": psnr_w[wi].mean(axis=1).tolist()})
        # shadow planner
        if session is not None and wi % max(cfg.shadow_every, 1) == 0 and (not cfg.shadow_max
                                                                           or plans_done < cfg.shadow_max):
            t0 = time.perf_counter()
            try:
                result, _props = session.plan(ep.frames[s:s + Th], ep.actions[s:s + Th], ep.joints[c, :7],
                                              ep.instruction, seed=cfg.seed + s)
            except Exception as exc:  # a failing planner is a finding, not a crash of the evaluation
                shadow_status["error"] = shadow_status.get("error", 0) + 1
                if shadow_status["error"] <= 3:  # the first few are enough to diagnose
                    warnings.append(f"shadow planner failed at frame {c}: {type(exc).__name__}: {exc}")
            else:
                lat_times["planner"].append(time.perf_counter() - t0)
                plans_done += 1
                shadow_status[result.status] = shadow_status.get(result.status, 0) + 1
                for k, v in result.timings.items():
                    shadow_stage.setdefault(k, []).append(float(v))
                ch = result.chunk
                ref = ep.actions[fut]
                n = min(len(ch.position), H)
                shadow_rows.append({
                    "position_m": np.linalg.norm(ch.position[:n] - ref[:n, :3], axis=1),
                    "rotation_rad": _rotation_errors(ch.euler[:n], ref[:n, 3:6]),
                    "gripper": np.abs(ch.gripper[:n] - ref[:n, 6]),
                })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # 3. aggregate
    views = list(VIEW_ORDER)
    prediction = {
        "psnr_db": {**{v: psnr_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                    "mean": psnr_w.mean(axis=(0, 2)).tolist()},
        "ssim": {**{v: ssim_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                 "mean": ssim_w.mean(axis=(0, 2)).tolist()},
        "latent_mse": {"per_step": lmse_w.mean(0).tolist(), "mean": float(lmse_w.mean())},
        "psnr_db_mean": float(psnr_w.mean()),
        "copy_last_frame_psnr_db": {"per_step": copy_w.mean(axis=(0, 2)).tolist(), "mean": float(copy_w.mean())},
        "moving_pixels": _moving_psnr(moving_sse, moving_n),
        "ssim_mean": float(ssim_w.mean()),
        "lpips": ({**{v: lpips_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                   "mean": lpips_w.mean(axis=(0, 2)).tolist()} if lpips_fn is not None else None),
        "reconstruction_psnr_db": {v: float(np.mean(recon_psnr[v])) for v in views},
    }
    if lpips_fn is None:
        nulls["prediction.lpips"] = lpips_reason
    uq_out: dict[str, Any] | None
    if uq is None:
        uq_out = None
        nulls["uq"] = bundle.missing.get("uq_head", "no UQ head in the bundle")
    else:
        diag = rel_uq.diagram()
        if 0 in diag["count"]:
            for q in ("confidence", "accuracy"):
                nulls[f"uq.reliability.{q}"] = EMPTY_BIN
        uq_out = {
            "ece": rel_uq.ece(),
            "bin_accuracy": rel_uq.accuracy(),
            "elements": rel_uq.n,
            "num_bins": int(uq.config.num_bins),
            "max_error": float(uq.config.max_error),
            "reliability": diag,
            "mean_normalized_entropy": float(np.mean(uq_frame_ent)),
            "mean_abs_error": float(np.mean(uq_frame_err)),
            "expected_error_mae": float(np.mean(np.abs(np.asarray(uq_frame_exp) - np.asarray(uq_frame_err)))),
            "per_frame": {"normalized_entropy": uq_frame_ent, "abs_error": uq_frame_err,
                          "expected_error": uq_frame_exp},
            "entropy_error_correlation": {
                "per_element": _corr(np.concatenate(el_ent), np.concatenate(el_err), "per-element entropy vs error",
                                     nulls, "uq.entropy_error_correlation.per_element"),
                "per_frame": _corr(np.asarray(uq_frame_ent), np.asarray(uq_frame_err), "per-frame mean entropy vs "
                                   "mean error", nulls, "uq.entropy_error_correlation.per_frame"),
            },
        }
    reward_out: dict[str, Any] | None = None
    if reward_reason:
        nulls["reward"] = reward_reason
    else:
        reward_out = {"gamma": gamma, "success": bool(ep.success), "num_bins": int(rw.config.num_bins)}
        for kind in ("on_predicted", "on_recorded"):
            pv = np.concatenate(rw_pred[kind])
            diag = rw_rel[kind].diagram()
            if 0 in diag["count"]:
                for q in ("confidence", "accuracy"):
                    nulls[f"reward.{kind}.reliability.{q}"] = EMPTY_BIN
            reward_out[kind] = {"bin_accuracy": rw_rel[kind].accuracy(), "ece": rw_rel[kind].ece(),
                                "value_mae": float(np.mean(np.abs(pv[:, 0] - pv[:, 1]))),
                                "frames": len(pv), "reliability": diag}
        reward_out["points"] = [list(p) for p in rw_points]
    shadow_out: dict[str, Any] | None = None
    if shadow_rows:
        n = min(len(r["position_m"]) for r in shadow_rows)
        agg = {k: np.stack([r[k][:n] for r in shadow_rows]) for k in ("position_m", "rotation_rad", "gripper")}
        shadow_out = {"plans": len(shadow_rows), "status": shadow_status,
                      **{f"{k}_per_step": v.mean(0).tolist() for k, v in agg.items()},
                      **{f"{k}_mean": float(v.mean()) for k, v in agg.items()},
                      "stage_latency": {k: M.latency_summary(v) for k, v in shadow_stage.items()}}
    else:
        nulls["shadow"] = shadow_reason or ("the planner failed at every step (see warnings)" if shadow_status
                                            else "no window was planned")
    ctl_out: dict[str, Any] | None = None
    if ctl is not None:
        ctl_out, ctl_nulls = ctl.summary("controllability")
        nulls.update(ctl_nulls)
    latency = {k: M.latency_summary(v) for k, v in lat_times.items() if v}
    latency["model_load_s"] = t_load
    status = "partial" if scan.damaged else "complete"
    metrics: dict[str, Any] = {
        "schema": SCHEMA,
        "status": status,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bag": str(bag),
        "model": str(bundle.path),
        "input": {
            "salvaged": scan.damaged,
            "topics": {t: {"type": ty, "messages": n} for t, (ty, n) in sorted(scan.topics.items())},
            "duration_s": scan.duration_s,
            "frames": T,
            "fps": bundle.fps,
            "source_image_size": list(ep.source_size),
            "model_view_size": list(bundle.view_size),
            "success": ep.success,
            "label_source": label_source if ep.success is not None else None,
            "instruction": ep.instruction,
            "joint_names": ep.joint_names,
            "action_source": (f"LeRobot mapping {cfg.mapping}" if lerobot
                              else tm.action or f"measured: {tm.ee_pose} + gripper {tm.gripper.topic}"),
            "lerobot_episode": cfg.episode if lerobot else None,
        },
        "settings": {"flow_steps": cfg.flow_steps, "teacher_steps": cfg.teacher_steps,
                     "predictor": (f"teacher N={cfg.teacher_steps}" if teacher is not None
                                   else f"flow map K={cfg.flow_steps}"),
                     "max_steps": cfg.max_steps, "device": device, "seed": cfg.seed,
                     "history": Th, "horizon": H, "gamma": gamma,
                     "text_conditioning": text_emb is not None, "topic_map": tm.model_dump(exclude_none=True)},
        "windows": len(starts),
        "window_starts": starts,
        "prediction": prediction,
        "uq": uq_out,
        "reward": reward_out,
        "shadow": shadow_out,
        "controllability": ctl_out,
        "latency": latency,
        "warnings": warnings,
    }
    if ep.success is None:
        nulls["input.success"] = "no success label recorded (and none given with --success)"
        nulls["input.label_source"] = "no success label"
    reasons: dict[str, str] = dict(nulls)
    clean = finite_or_null(metrics, reasons)
    clean["null_reasons"] = reasons

    out.mkdir(parents=True, exist_ok=True)
    from vidplan_core.eval import plots as P
    from vidplan_core.eval.report import write_report

    plots = P.write_plots(clean, examples, out / "plots")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(clean, indent=2, allow_nan=False))
    report_path = write_report(clean, plots, out / "report.html")
    return EvalBagResult(clean, out, metrics_path, report_path, plots,
                         EXIT_PARTIAL if scan.damaged else EXIT_OK)
