"""RLDS datasets in the TFDS format (DROID's RLDS release) as a vidplan data source, read without TensorFlow.

The same two uses as :mod:`vidplan_core.data.lerobot`: read in place (training, :class:`RLDSSource` behind the
training stream) or imported into vidplan shards (``vidplan data import rlds``, :mod:`vidplan_core.data.rlds_import`).
:class:`RLDSSource` offers what :class:`~vidplan_core.data.lerobot.LeRobotSource` offers to both (``root``, ``fps``,
``version``, ``mapping``, ``episodes``, :meth:`~RLDSSource.signals`, :meth:`~RLDSSource.frames`,
:meth:`~RLDSSource.video_size`; see :class:`vidplan_core.data.sources.EpisodeSource`).

Format, as verified (sources named; no code copied):

- **TFRecord framing**: :mod:`vidplan_core.data.tfrecord_io` (records read one at a time, both CRC-32C checks; the
  ``tfrecord`` package's writer frames records the same way, and the tests write with it).
- **Files of a prepared TFDS dataset** (tensorflow/datasets ``core/naming.py``, ``core/proto/dataset_info.proto``):
  a version directory holding ``dataset_info.json`` (the ``DatasetInfo`` proto as JSON: ``name``, ``version``,
  ``splits`` = ``[{name, shardLengths: ["n", ...] (int64 as strings), numBytes, filepathTemplate}]``, newer
  versions ``fileFormat``), ``features.json`` (the feature tree) and the shards, named by the default template
  ``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``, e.g. ``droid-train.tfrecord-00000-of-02048`` (indices padded to
  5 digits). One record = one ``tf.train.Example`` = one episode; TFDS reads a split's episodes in shard order, then
  record order — :attr:`RLDSEpisode.index` is that position.
- **How an episode is serialised** (tensorflow/datasets ``core/example_serializer.py``,
  ``core/features/dataset_feature.py``, ``core/features/sequence_feature.py``, ``core/features/image_feature.py``,
  ``core/utils/py_utils.py`` ``flatten_nest_dict``): the nested feature dict is flattened with ``/`` into the
  Example's keys; the RLDS ``steps`` feature is a ``tfds.features.Dataset`` (a ``Sequence`` with one level of
  nesting, ``sequence_rank`` 1), so each step feature is ONE key (``steps/observation/cartesian_position``) holding
  all steps' values stacked and flattened (T·6 values for a (6,) tensor). Numeric values go to ``float_list`` (float32
  — float64 features lose precision there) or ``int64_list`` (booleans as 0/1), strings/text to ``bytes_list``; an
  ``Image`` is serialised as its encoded bytes (JPEG/PNG per ``encodingFormat``), one ``bytes_list`` entry per step.
  Episode-level features (``episode_metadata/file_path``) hold one value. ``Tensor`` features with ``encoding`` other
  than ``none`` (bytes/zlib) are stored differently and are refused here, naming the key.
- **features.json** of DROID (the DROID project's own documentation of its RLDS schema: peterdavidfagan/R2D2
  ``docs/the-droid-dataset.md``, the repository's earlier name; droid-dataset/droid ``docs/the-droid-dataset.md``
  lists the same fields as a Python dict): ``steps`` = {``is_first``, ``is_last``, ``is_terminal`` (bool scalars),
  ``language_instruction``, ``language_instruction_2``, ``language_instruction_3`` (Text), ``observation`` =
  {``exterior_image_1_left``, ``exterior_image_2_left``, ``wrist_image_left``: Image (180, 320, 3) uint8 JPEG;
  ``cartesian_position`` (6), ``gripper_position`` (1), ``joint_position`` (7): float64}, ``action_dict`` =
  {cartesian_position (6), cartesian_velocity (6), gripper_position (1), gripper_velocity (1), joint_position (7),
  joint_velocity (7)}, ``action`` (7) float64, ``discount``, ``reward`` float32 scalars, ``language_embedding*``
  (512) float32}; ``episode_metadata`` = {``file_path``, ``recording_folderpath``: Text}. DROID runs at 15 Hz (the
  DROID dataset card); RLDS stores no time stamps, so the mapping says the rate (``fps``).
- **Success label**: DROID's RLDS release keeps failed episodes; Physical-Intelligence/openpi
  ``src/openpi/training/droid_rlds_dataset.py`` keeps the successful ones by matching ``episode_metadata/file_path``
  against ``.*success.*``. The shipped mapping does the same (``success: {key: ..., pattern: success}``).

Not verified on a real DROID RLDS shard (none is reachable here): the facts above rest on the TFDS source and the
DROID/openpi documentation and code; the tests read a dataset written in that layout by an independent TFRecord
writer. The pose convention (cartesian_position = xyz [m] + extrinsic Euler xyz [rad] in the robot base frame) and
the gripper sense (0 open .. 1 closed) are those of the LeRobot port of the same data (``mappings/droid.yaml``).

Which key is which signal is an :class:`RLDSMapping` (YAML; ``droid`` ships in ``data/mappings/rlds/droid.yaml`` —
a folder of its own, so LeRobot mapping names stay what they were). Frames at the model rate: step k is at time k/fps;
the grid steps by 1/model-rate from 0 and takes the nearest step (15 Hz → 5 Hz: every third step), as the LeRobot
source does. Records are read one at a time (seek to the episode's offset, read it, check both CRCs); a shard's
record offsets are found once by reading the 12-byte headers only. The last record read stays parsed, so an
episode's signals and frames cost one read. An RLDS episode is ONE record, images included: the metadata pass reads
every selected episode's whole record (LeRobot's reads parquet only), and a window read in place reads its episode's
record again — fine for a selection of episodes; for repeated training on many, import them into shards.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.lerobot import Feature
from vidplan_core.data.rlds_mapping import (
    RLDS_MAPPINGS_DIR,
    RLDSError,
    RLDSMapping,
    SuccessPattern,
    TfdsFeature,
    load_rlds_mapping,
    read_features_json,
)
from vidplan_core.data.tfrecord_io import TFRecordError, example_pb2, read_record, scan_records
from vidplan_core.spaces import MODEL_RATE_HZ, VIEW_ORDER, ViewPreparation

__all__ = [
    "RLDS_MAPPINGS_DIR",
    "RLDSEpisode",
    "RLDSError",
    "RLDSMapping",
    "RLDSSource",
    "SuccessPattern",
    "TfdsFeature",
    "is_rlds_dataset",
    "load_rlds_mapping",
    "read_features_json",
]

RLDS_PREFIX = "rlds:"  # EpisodeMeta.shard of an episode read in place: "rlds:<episode index>"
_DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


# ---------------------------------------------------------------------------------------------- the dataset
def _version_dir(root: Path) -> Path | None:
    """The TFDS version directory at or just below ``root`` (``droid/`` → ``droid/1.0.1/`` when it is the only one)."""
    if (root / "dataset_info.json").is_file() and (root / "features.json").is_file():
        return root
    below = [p for p in sorted(root.glob("*/dataset_info.json")) if (p.parent / "features.json").is_file()]
    return below[0].parent if len(below) == 1 else None


def is_rlds_dataset(root: str | Path) -> bool:
    """True when ``root`` (or its only version subdirectory) is a prepared TFDS dataset (dataset_info.json +
    features.json) rather than a vidplan (``meta.json``) or LeRobot (``meta/info.json``) one."""
    root = Path(root)
    return root.is_dir() and not (root / "meta.json").is_file() and _version_dir(root) is not None


@dataclass
class RLDSEpisode:
    """One episode of an RLDS split: where its record is."""

    index: int  # position in the split (shard order, then record order: TFDS's read order)
    shard: Path
    record: int  # record number in the shard


class RLDSSource:
    """An RLDS (TFDS) dataset read in place (see the module docstring).

    Args:
        root: the TFDS version directory (``dataset_info.json``, ``features.json``, shards), or its parent when it
            holds one version.
        mapping: an :class:`RLDSMapping`, a shipped mapping name (``droid``) or a YAML path.
        episodes: episode indices (positions in the split) to use (default: all).
        split: the TFDS split (default: the mapping's, ``train``).

    Raises:
        RLDSError: not a TFDS dataset, a mapped key missing from features.json (named, with the keys present) or of
            the wrong kind, a camera whose image shape is not (H, W, 3), a non-TFRecord file format, an unknown split,
            missing shard files, an empty split or selection, unknown episodes — every problem listed before any
            record is read.
    """

    def __init__(self, root: str | Path, mapping: str | Path | RLDSMapping | None = None,
                 episodes: Sequence[int] | None = None, split: str | None = None):
        given = Path(root)
        vdir = _version_dir(given) if given.is_dir() else None
        if vdir is None:
            raise RLDSError(given, ["dataset_info.json + features.json not found here or in a single version "
                                    "subdirectory (not a prepared TFDS/RLDS dataset)"])
        self.root = vdir
        self.mapping = load_rlds_mapping(mapping)
        self.split = split or self.mapping.split
        self.fps = float(self.mapping.fps)
        try:
            self.info: dict[str, Any] = json.loads((vdir / "dataset_info.json").read_text())
        except json.JSONDecodeError as exc:
            raise RLDSError(vdir, [f"dataset_info.json: invalid JSON ({exc})"]) from exc
        self.name = str(self.info.get("name", ""))
        self.version = str(self.info.get("version", ""))
        self.features = read_features_json(vdir / "features.json")
        problems = self._check_mapping()
        if problems:
            raise RLDSError(vdir, problems)
        shards, lengths = self._shards()
        total = int(sum(lengths))
        if total == 0:
            raise RLDSError(vdir, [f"split {self.split!r} has no episodes (empty dataset)"])
        all_eps = [RLDSEpisode(i, shard, r) for i, (shard, r) in enumerate(
            (s, r) for s, n in zip(shards, lengths, strict=True) for r in range(n))]
        if episodes is not None:
            unknown = sorted(set(episodes) - set(range(total)))
            if unknown:
                raise RLDSError(vdir, [f"episode(s) {unknown[:10]} not in split {self.split!r} (it has {total} "
                                       "episodes)"])
            all_eps = [all_eps[i] for i in sorted(set(episodes))]
        if not all_eps:
            raise RLDSError(vdir, ["the episode selection is empty"])
        self.episodes: list[RLDSEpisode] = all_eps
        self._offsets: dict[Path, tuple[list[int], TFRecordError | None]] = {}
        self._last: tuple[int, Any] | None = None  # (episode index, parsed features) of the last record read
        self._signals: dict[tuple[int, float], dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers may pickle the source: the parsed record (a protobuf) and the caches stay behind
        state = dict(self.__dict__)
        state.update(_last=None, _offsets={}, _signals={})
        return state

    # ------------------------------------------------------------------------------------------ metadata
    def _check_mapping(self) -> list[str]:
        m, feats = self.mapping, self.features
        listing = f"(features: {sorted(feats)})"
        problems = [f"features.json: mapped key {k!r} is not a feature of this dataset {listing}"
                    for k in dict.fromkeys(m.features()) if k not in feats]
        for view, k in m.cameras.items():
            f = feats.get(k)
            if f is None:
                continue
            if f.kind != "image" or not f.in_steps:
                problems.append(f"features.json: camera {view} maps to {k!r}, a {f.kind} feature "
                                f"{'of the steps' if f.in_steps else 'of the episode'}, not a per-step image")
            elif len(f.shape) != 3 or f.shape[2] != 3 or f.dtype != "uint8":
                problems.append(f"features.json: camera {view} ({k!r}) has shape {f.shape} {f.dtype}, expected "
                                "(H, W, 3) uint8")
            elif f.encoding not in ("jpeg", "png"):
                problems.append(f"features.json: camera {view} ({k!r}) is encoded as {f.encoding!r}, not jpeg/png")
        numeric = [("ee_pose", m.ee_pose, 6), ("gripper", m.gripper, 1), ("joint_positions", m.joint_positions, None)]
        if isinstance(m.action, Feature):
            numeric.append(("action", m.action, 7))
        for name, feat, width in numeric:
            f = feats.get(feat.key) if feat is not None else None
            if f is None:
                continue
            if f.kind != "tensor" or not f.in_steps or f.dtype in ("string", ""):
                problems.append(f"features.json: {name} maps to {feat.key!r}, which is not a numeric per-step tensor "
                                f"({f.kind}, {f.dtype}, {'steps' if f.in_steps else 'episode'})")
                continue
            if f.encoding != "none":
                problems.append(f"features.json: {feat.key!r} is stored with encoding {f.encoding!r} (only 'none', "
                                "plain value lists, is read)")
            d = f.size
            a, b = feat.index if feat.index is not None else (0, d if d is not None else -1)
            if d is None:
                problems.append(f"features.json: {feat.key!r} has an unknown dimension in {f.shape}")
            elif not 0 <= a < b <= d:
                problems.append(f"features.json: {name} {feat.key!r} has {d} values per step, the mapping takes "
                                f"[{a}, {b})")
            elif width is not None and b - a != width:
                problems.append(f"features.json: {name} {feat.key!r} [{a}, {b}) gives {b - a} values, not {width}")
        f = feats.get(m.instruction)
        if f is not None and f.kind != "text" and f.dtype != "string":
            problems.append(f"features.json: instruction {m.instruction!r} is a {f.kind} ({f.dtype}), not text")
        if isinstance(m.success, str) and m.success in feats and feats[m.success].kind == "text":
            problems.append(f"mapping: success {m.success!r} is a text feature: use {{key: {m.success}, pattern: "
                            "REGEX}")
        if isinstance(m.success, SuccessPattern):
            f = feats.get(m.success.key)
            if f is not None and f.kind != "text" and f.dtype != "string":
                problems.append(f"features.json: success pattern key {m.success.key!r} is not text")
            try:
                re.compile(m.success.pattern)
            except re.error as exc:
                problems.append(f"mapping: success pattern {m.success.pattern!r} is not a regular expression ({exc})")
        return problems

    def _shards(self) -> tuple[list[Path], list[int]]:
        """The split's shard files in order and their episode counts (``shardLengths``, else counted)."""
        fmt = str(self.info.get("fileFormat") or "tfrecord")
        if fmt != "tfrecord":
            raise RLDSError(self.root, [f"dataset_info.json: file format {fmt!r} is not supported (TFRecord only)"])
        splits = {str(s.get("name")): s for s in self.info.get("splits", [])}
        entry = splits.get(self.split)
        if entry is None and splits:
            raise RLDSError(self.root, [f"dataset_info.json: no split {self.split!r} (splits: {sorted(splits)})"])
        lengths = [int(n) for n in (entry or {}).get("shardLengths", [])]
        if lengths:
            tmpl = str(entry.get("filepathTemplate") or _DEFAULT_TEMPLATE)
            n = len(lengths)
            shards = [self.root / (tmpl.replace("{DATASET}", self.name).replace("{SPLIT}", self.split)
                                   .replace("{FILEFORMAT}", fmt).replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{n:05d}")
                                   .replace("{SHARD_INDEX}", f"{i:05d}").replace("{NUM_SHARDS}", f"{n:05d}"))
                      for i in range(n)]
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise RLDSError(self.root, [f"{m}: shard file not found (dataset_info.json lists {n} shards)"
                                            for m in missing])
            return shards, lengths
        # no shard lengths recorded: the files of the split in shard order, their records counted from the headers
        shards = sorted(self.root.glob(f"*-{self.split}.{fmt}-*"))
        counts = []
        for s in shards:
            offsets, err = scan_records(s)
            if err is not None:
                raise err
            counts.append(len(offsets))
        return shards, counts

    # ------------------------------------------------------------------------------------------ records
    def _where(self, ep: RLDSEpisode) -> str:
        return f"{ep.shard.name} record {ep.record} (episode {ep.index})"

    def _features_of(self, ep: RLDSEpisode) -> Any:
        """The parsed Example's feature map of an episode (the record read once, both CRCs checked)."""
        if self._last is not None and self._last[0] == ep.index:
            return self._last[1]
        if ep.shard not in self._offsets:
            self._offsets[ep.shard] = scan_records(ep.shard)
        offsets, err = self._offsets[ep.shard]
        if ep.record >= len(offsets):
            if err is not None:
                raise err
            raise RLDSError(self.root, [f"{ep.shard.name}: has {len(offsets)} records, dataset_info.json says more "
                                        f"(episode {ep.index} is record {ep.record})"])
        data = read_record(ep.shard, offsets[ep.record])
        try:
            fmap = example_pb2().Example.FromString(data).features.feature
        except Exception as exc:  # google.protobuf.message.DecodeError: name the record
            raise RLDSError(self.root, [f"{self._where(ep)}: not a tf.train.Example ({exc})"]) from exc
        self._last = (ep.index, fmap)
        return fmap

    def _values(self, fmap: Any, key: str, ep: RLDSEpisode) -> Any:
        """The value list of ``key`` in an episode's record (a repeated protobuf field)."""
        if key not in fmap:
            raise RLDSError(self.root, [f"{self._where(ep)}: key {key!r} missing from the record (keys: "
                                        f"{sorted(fmap.keys())})"])
        feat = fmap[key]
        kind = feat.WhichOneof("kind")
        return getattr(feat, kind).value if kind else []

    def _per_step(self, fmap: Any, feat: Feature, steps: int, ep: RLDSEpisode) -> np.ndarray:
        """(steps, b − a) float64 values of a mapped per-step tensor."""
        vals = np.asarray(self._values(fmap, feat.key, ep), dtype=np.float64)
        d = self.features[feat.key].size or 1
        if vals.size != steps * d:
            raise RLDSError(self.root, [f"{self._where(ep)}: {feat.key!r} has {vals.size} values, expected "
                                        f"{steps} steps × {d}"])
        vals = vals.reshape(steps, d)
        return vals[:, feat.index[0]:feat.index[1]] if feat.index is not None else vals

    def _strings(self, fmap: Any, key: str, ep: RLDSEpisode) -> list[str]:
        return [bytes(v).decode("utf-8", errors="replace") for v in self._values(fmap, key, ep)]

    def steps(self, ep: RLDSEpisode) -> int:
        """Number of steps of the episode (at :attr:`fps`)."""
        fmap = self._features_of(ep)
        key = self.mapping.ee_pose.key
        return len(self._values(fmap, key, ep)) // (self.features[key].size or 1)

    # ------------------------------------------------------------------------------------------ signals
    def signals(self, ep: RLDSEpisode, fps: float = MODEL_RATE_HZ) -> dict[str, Any]:
        """The episode's non-image signals at ``fps`` [Hz] (shard keys except ``frames``) plus labels.

        Returns a dict: ``actions`` (T, 7), ``ee_pose`` (T, 6), ``gripper`` (T,), ``joint_positions`` (T, J) float32,
        ``timestamps_ns`` (T,) int64 (episode time, step k at k/fps_source), ``video_times`` (T,) float64 [s] (the
        time of the step each model frame shows), ``instruction`` str, ``success`` bool. Computed once per episode
        and rate (kept: a few kB per episode).

        Raises:
            RLDSError / TFRecordError: the record is corrupt, truncated or lacks a mapped key; an episode without
                steps; value counts that do not fit the steps; non-finite values.
        """
        memo = (ep.index, float(fps))
        if memo in self._signals:
            return self._signals[memo]
        m = self.mapping
        fmap = self._features_of(ep)
        steps = self.steps(ep)
        if steps == 0:
            raise RLDSError(self.root, [f"{self._where(ep)}: the episode has no steps"])
        ts = np.arange(steps, dtype=np.float64) / self.fps
        grid = np.arange(0.0, ts[-1] + 1e-6, 1.0 / fps)
        j = np.clip(np.round(grid * self.fps).astype(np.int64), 0, steps - 1)  # nearest step (ties: round half even)
        ee = self._per_step(fmap, m.ee_pose, steps, ep)[j]
        grip = self._per_step(fmap, m.gripper, steps, ep)[j, 0]
        if m.gripper_invert:
            grip = 1.0 - grip
        actions = (np.concatenate([ee, grip[:, None]], axis=1) if m.action == "measured"
                   else self._per_step(fmap, m.action, steps, ep)[j])
        joints = (self._per_step(fmap, m.joint_positions, steps, ep)[j] if m.joint_positions is not None
                  else np.zeros((len(grid), 0)))
        out: dict[str, Any] = {"actions": actions.astype(np.float32), "ee_pose": ee.astype(np.float32),
                               "gripper": grip.astype(np.float32), "joint_positions": joints.astype(np.float32),
                               "timestamps_ns": np.round(grid * 1e9).astype(np.int64), "video_times": ts[j]}
        for k in ("actions", "ee_pose", "gripper", "joint_positions"):
            if not np.isfinite(out[k]).all():
                raise RLDSError(self.root, [f"{self._where(ep)}: non-finite values in {k}"])
        out["instruction"] = next((s for s in self._strings(fmap, m.instruction, ep) if s.strip()), "")
        out["success"] = self._success(fmap, ep)
        self._signals[memo] = out
        return out

    def _success(self, fmap: Any, ep: RLDSEpisode) -> bool:
        s = self.mapping.success
        if isinstance(s, bool):
            return s
        if isinstance(s, SuccessPattern):
            vals = self._strings(fmap, s.key, ep)
            return bool(vals) and re.search(s.pattern, vals[-1]) is not None
        vals = self._values(fmap, s, ep)
        return bool(len(vals)) and float(vals[-1]) != 0.0

    # ------------------------------------------------------------------------------------------ frames
    def frames(self, ep: RLDSEpisode, times: np.ndarray, views: ViewPreparation) -> np.ndarray:
        """Frames of every view at episode times ``times`` [s] (step k at k/fps), prepared by ``views``.

        Returns:
            uint8 (N, 3, 3, H, W), views in :data:`VIEW_ORDER`.

        Raises:
            RLDSError: no step within half a step of a time; an image that does not decode or whose size is not the
                features.json shape (key, episode and step named).
        """
        times = np.asarray(times, dtype=np.float64)
        fmap = self._features_of(ep)
        steps = self.steps(ep)
        k = np.round(times * self.fps).astype(np.int64)
        bad = np.flatnonzero((k < 0) | (k >= steps) | (np.abs(k / self.fps - times) > 0.5 / self.fps + 1e-6))
        if bad.size:
            raise RLDSError(self.root, [f"{self._where(ep)}: no step at {times[bad[0]]:.3f} s (the episode has "
                                        f"{steps} steps at {self.fps:g} Hz)"])
        out = np.zeros((len(times), len(VIEW_ORDER), 3, views.height, views.width), dtype=np.uint8)
        uniq, inverse = np.unique(k, return_inverse=True)
        for vi, view in enumerate(VIEW_ORDER):
            key = self.mapping.cameras[view]
            images = self._values(fmap, key, ep)
            if len(images) != steps:
                raise RLDSError(self.root, [f"{self._where(ep)}: {key!r} has {len(images)} images for {steps} "
                                            "steps"])
            prepared = np.stack([views.prepare_one(view, self._decode(images[int(s)], key, int(s), ep))
                                 for s in uniq])
            out[:, vi] = prepared[inverse.reshape(-1)].transpose(0, 3, 1, 2)
        return out

    def _decode(self, data: bytes, key: str, step: int, ep: RLDSEpisode) -> np.ndarray:
        """(H, W, 3) uint8 RGB of one encoded image, its size checked against features.json."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL.UnidentifiedImageError, OSError: name the image
            raise RLDSError(self.root, [f"{self._where(ep)}: {key!r} step {step} does not decode as an image "
                                        f"({exc})"]) from exc
        want = self.features[key].shape
        if any(w is not None and w != g for w, g in zip(want, img.shape, strict=True)):
            raise RLDSError(self.root, [f"{self._where(ep)}: {key!r} step {step} decodes to shape {img.shape}, "
                                        f"features.json says {want} (H, W, C)"])
        return img

    def video_size(self, view: str) -> tuple[int, int] | None:
        """(H, W) of a view's images from features.json (None if a dimension is unknown)."""
        shape = self.features[self.mapping.cameras[view]].shape
        return None if shape[0] is None or shape[1] is None else (int(shape[0]), int(shape[1]))
