"""The vidplan episode dataset: on-disk schema, validation, statistics and the train/val split.

A dataset is a directory (LeRobot-like: one metadata file + one data file per episode)::

    DATASET/
      meta.json                      # DatasetMeta (below): schema version, rates, views, action layout,
                                     # action statistics, episode list with split
      shards/episode_000000.safetensors
      shards/episode_000001.safetensors
      ...
      latents/<vae-hash>/episode_000000.safetensors   # optional cached VAE latents (see vidplan_core.data.latents)

``meta.json`` (:class:`DatasetMeta`):

- ``schema_version``: ``"vidplan-dataset/1"``.
- ``fps``: frame rate of the shards [Hz] = the world model's rate (5 Hz by default; ``source_rate_hz`` is the
  recording's control/camera rate, 15 Hz for DROID and our simulation).
- ``image_size``: per view ``[H, W]`` [px]; all views have the same size (they are stacked vertically).
- ``view_order``: ``["left", "right", "wrist"]`` (:data:`vidplan_core.spaces.VIEW_ORDER`).
- ``action_layout``: ``["x", "y", "z", "rx", "ry", "rz", "gripper"]``: EE position [m] and Euler xyz [rad] in the
  robot base frame, gripper 0 open .. 1 closed (:mod:`vidplan_core.spaces`).
- ``action_stats``: p01/p99 (+ circular centre of the angles) of the TRAIN split's actions,
  :meth:`vidplan_core.spaces.ActionNormalizer.state_dict`; load with :meth:`DatasetMeta.normalizer`.
- ``value_gamma``: discount γ per model-rate frame of the Monte-Carlo value target
  ``V(τ) = γ^(F−τ)·success`` (F = index of the last frame), see :func:`mc_values`.
- ``joint_names``: names of the columns of ``joint_positions``.
- ``episodes``: list of :class:`EpisodeMeta` (index, name, shard path, length in frames, task kind, instruction,
  success, seed, clutter, split ``train``/``val``, source bag).

Shard ``shards/<name>.safetensors`` of an episode of T frames at ``fps`` (tensor, dtype, shape):

=================== ========= ====================== ====================================================
key                 dtype     shape                  meaning
=================== ========= ====================== ====================================================
``frames``          uint8     (T, 3, 3, H, W)        RGB frames, views in ``view_order``, channels first
``actions``         float32   (T, 7)                 EE action at each frame (``action_layout``): by default
                                                     the measured EE pose with the commanded gripper (the
                                                     topic map can take the commanded pose instead)
``ee_pose``         float32   (T, 6)                 measured EE pose, xyz [m] + Euler xyz [rad]
``gripper``         float32   (T,)                   measured gripper closure 0 open .. 1 closed
``joint_positions`` float32   (T, J)                 arm joint positions [rad] (``joint_names``)
``timestamps_ns``   int64     (T,)                   time of each frame in the recording [ns]
=================== ========= ====================== ====================================================

Frame τ of an episode pairs the images at time ``timestamps_ns[τ]`` with ``actions[τ]``; a world-model window
of T_h history + H future frames uses the actions of all its frames (the future ones are the plan).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidplan_core.config import format_validation_error
from vidplan_core.spaces import ACTION_DIM, ACTION_NAMES, MODEL_RATE_HZ, VIEW_ORDER, ActionNormalizer

__all__ = [
    "SCHEMA_VERSION",
    "SHARD_KEYS",
    "DatasetError",
    "DatasetMeta",
    "EpisodeMeta",
    "load_meta",
    "mc_values",
    "save_meta",
    "split_episodes",
    "validate_dataset",
    "write_shard",
]

SCHEMA_VERSION = "vidplan-dataset/1"
META_NAME = "meta.json"
SHARD_DIR = "shards"
#: key → (dtype, shape template); "T" = episode length, "H"/"W" = view size, "J" = number of joints.
SHARD_KEYS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "frames": ("uint8", ("T", len(VIEW_ORDER), 3, "H", "W")),
    "actions": ("float32", ("T", ACTION_DIM)),
    "ee_pose": ("float32", ("T", 6)),
    "gripper": ("float32", ("T",)),
    "joint_positions": ("float32", ("T", "J")),
    "timestamps_ns": ("int64", ("T",)),
}


class DatasetError(ValueError):
    """A dataset directory that is missing, malformed or inconsistent; the message lists every problem found
    (file, key, expected, got)."""

    def __init__(self, root: str | Path, problems: list[str]):
        self.root = Path(root)
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"dataset {self.root}:\n" + "\n".join(f"  - {p}" for p in shown))


class EpisodeMeta(BaseModel):
    """One episode of the dataset (an entry of ``meta.json``'s ``episodes``)."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    name: str = Field(min_length=1)
    shard: str = Field(description="path of the shard relative to the dataset root")
    length: int = Field(gt=0, description="frames at the dataset's fps")
    task: str = Field(default="", description="task kind (put / touch / push) or '' when unknown")
    instruction: str = ""
    success: bool
    seed: int | None = None
    clutter: int | None = None
    split: Literal["train", "val"] = "train"
    source: str = Field(default="", description="the bag this episode was converted from")


class DatasetMeta(BaseModel):
    """Contents of ``meta.json`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: str = SCHEMA_VERSION
    fps: float = Field(default=MODEL_RATE_HZ, gt=0, description="frame rate of the shards [Hz] (model rate)")
    source_rate_hz: float | None = Field(default=None, description="camera/control rate of the recordings [Hz]")
    image_size: dict[str, tuple[int, int]] = Field(description="view → [H, W] in pixels")
    view_order: list[str] = Field(default_factory=lambda: list(VIEW_ORDER))
    action_layout: list[str] = Field(default_factory=lambda: list(ACTION_NAMES))
    action_units: str = "x,y,z in m (robot base frame); rx,ry,rz Euler xyz in rad; gripper 0 open .. 1 closed"
    action_stats: dict[str, list[float]] = Field(description="ActionNormalizer.state_dict() of the train split")
    value_gamma: float = Field(default=0.97, gt=0, le=1)
    joint_names: list[str] = Field(default_factory=list)
    base_frame: str = "panda_link0"
    episodes: list[EpisodeMeta]
    info: dict[str, Any] = Field(default_factory=dict, description="free-form provenance (converter, topic map)")

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema version {v!r} is not supported; expected {SCHEMA_VERSION!r}")
        return v

    @field_validator("view_order")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        if list(v) != list(VIEW_ORDER):
            raise ValueError(f"view order must be {list(VIEW_ORDER)}, got {v}")
        return v

    @field_validator("action_layout")
    @classmethod
    def _layout(cls, v: list[str]) -> list[str]:
        if list(v) != list(ACTION_NAMES):
            raise ValueError(f"action layout must be {list(ACTION_NAMES)}, got {v}")
        return v

    @property
    def view_hw(self) -> tuple[int, int]:
        """(H, W) of one view [px]."""
        return tuple(self.image_size[VIEW_ORDER[0]])  # type: ignore[return-value]

    def normalizer(self) -> ActionNormalizer:
        """The action normaliser fitted on the train split."""
        return ActionNormalizer.from_state_dict(self.action_stats)

    def split(self, name: str) -> list[EpisodeMeta]:
        """Episodes of split ``name`` (``train`` / ``val``; ``all`` for every episode)."""
        if name == "all":
            return list(self.episodes)
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {name!r}")
        return [e for e in self.episodes if e.split == name]


def mc_values(length: int, success: bool, gamma: float) -> np.ndarray:
    """Monte-Carlo value target per frame: ``V(τ) = γ^(F−τ)·success``, F = length − 1; (length,) float32 in [0, 1]."""
    tau = np.arange(length, dtype=np.float64)
    return (gamma ** (length - 1 - tau) * float(bool(success))).astype(np.float32)


def split_episodes(n: int, val_fraction: float, seed: int = 0) -> list[str]:
    """Split labels (``train``/``val``) for ``n`` episodes, by episode, seeded. At least one validation episode
    when ``n >= 2`` and ``val_fraction > 0``; at least one training episode always."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    order = np.random.default_rng(seed).permutation(n)
    labels = ["train"] * n
    for i in order[:n_val]:
        labels[int(i)] = "val"
    return labels


def write_shard(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write one episode shard (safetensors), checking keys, dtypes and shapes against :data:`SHARD_KEYS`."""
    from safetensors.numpy import save_file

    problems = _check_arrays(str(path), {k: (str(v.dtype), tuple(v.shape)) for k, v in tensors.items()}, None)
    if problems:
        raise DatasetError(Path(path).parent, problems)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)  # a crash never leaves a half-written shard under the final name


def save_meta(root: str | Path, meta: DatasetMeta) -> Path:
    """Write ``meta.json`` atomically."""
    path = Path(root) / META_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(meta.model_dump_json(indent=2))
    tmp.replace(path)
    return path


def load_meta(root: str | Path) -> DatasetMeta:
    """Read and validate ``meta.json`` (schema only; :func:`validate_dataset` also checks the shards)."""
    from pydantic import ValidationError


    root = Path(root)
    path = root / META_NAME
    if not path.is_file():
        raise DatasetError(root, [f"{META_NAME} not found (is this a dataset written by 'vidplan data convert'?)"])
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(root, [f"{META_NAME}: invalid JSON ({exc})"]) from exc
    try:
        return DatasetMeta.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(root, [f"{META_NAME}: {k}: {r}" for k, r in format_validation_error(exc)]) from exc


def _check_arrays(where: str, found: dict[str, tuple[str, tuple[int, ...]]],
                  expect: dict[str, int] | None) -> list[str]:
    """Problems of one shard's (dtype, shape) per key against SHARD_KEYS; ``expect`` fixes T/H/W/J if given."""
    problems: list[str] = []
    missing = [k for k in SHARD_KEYS if k not in found]
    if missing:
        problems.append(f"{where}: missing tensor(s) {missing}")
    dims: dict[str, int] = dict(expect or {})
    for key, (dtype, tmpl) in SHARD_KEYS.items():
        if key not in found:
            continue
        got_dtype, shape = found[key]
        if got_dtype != dtype:
            problems.append(f"{where}: '{key}' has dtype {got_dtype}, expected {dtype}")
        if len(shape) != len(tmpl):
            problems.append(f"{where}: '{key}' has shape {shape}, expected {_fmt(tmpl)}")
            continue
        for size, t in zip(shape, tmpl, strict=False):
            if isinstance(t, int):
                ok = size == t
            else:
                ok = dims.setdefault(t, size) == size
            if not ok:
                problems.append(f"{where}: '{key}' has shape {shape}, expected {_fmt(tmpl, dims)}")
                break
    return problems


def _fmt(tmpl: tuple[Any, ...], dims: dict[str, int] | None = None) -> str:
    dims = dims or {}
    return "(" + ", ".join(str(dims.get(t, t)) if isinstance(t, str) else str(t) for t in tmpl) + ")"


def validate_dataset(root: str | Path, splits: tuple[str, ...] = ("train", "val")) -> DatasetMeta:
    """Load ``meta.json`` and check every shard of ``splits`` without loading frames (safetensors headers only).

    Checks: files exist; every tensor has the documented dtype and shape; frame sizes match ``image_size``; the
    length matches the episode entry; the joint count matches ``joint_names``; action statistics are finite;
    the train split is not empty.

    Raises:
        DatasetError: listing every problem (shard file, key, expected vs found) — before any training work starts.
    """
    from safetensors import safe_open

    root = Path(root)
    meta = load_meta(root)
    problems: list[str] = []
    sizes = {tuple(v) for v in meta.image_size.values()}
    if set(meta.image_size) != set(VIEW_ORDER):
        problems.append(f"{META_NAME}: image_size must name the views {list(VIEW_ORDER)}, "
                        f"got {sorted(meta.image_size)}")
    if len(sizes) != 1:
        problems.append(f"{META_NAME}: all views must have the same size to be stacked, got {meta.image_size}")
    try:
        norm = meta.normalizer()
        if not (np.isfinite(norm.p01).all() and np.isfinite(norm.p99).all()):
            problems.append(f"{META_NAME}: action_stats hold non-finite values")
    except (KeyError, ValueError) as exc:
        problems.append(f"{META_NAME}: action_stats: {exc}")
    if "train" in splits and not meta.split("train"):
        problems.append(f"{META_NAME}: the train split has no episodes")
    names = [e.name for e in meta.episodes]
    if len(set(names)) != len(names):
        problems.append(f"{META_NAME}: episode names are not unique")
    h, w = meta.view_hw if sizes else (None, None)
    for ep in meta.episodes:
        if ep.split not in splits:
            continue
        path = root / ep.shard
        if not path.is_file():
            problems.append(f"{ep.shard}: shard of episode {ep.name} not found")
            continue
        try:
            with safe_open(str(path), framework="numpy") as f:
                found = {}
                for k in f.keys():
                    sl = f.get_slice(k)
                    found[k] = (_st_dtype(sl.get_dtype()), tuple(sl.get_shape()))
        except Exception as exc:
            problems.append(f"{ep.shard}: cannot be read as safetensors ({type(exc).__name__}: {exc})")
            continue
        expect = {"T": ep.length, "H": h, "W": w, "J": len(meta.joint_names)}
        problems += _check_arrays(ep.shard, found, expect)
    if problems:
        raise DatasetError(root, problems)
    return meta


def _st_dtype(name: str) -> str:
    return {"U8": "uint8", "F32": "float32", "I64": "int64", "F64": "float64", "F16": "float16", "I32": "int32",
            "BF16": "bfloat16", "BOOL": "bool", "I8": "int8", "U16": "uint16", "I16": "int16"}.get(name, name.lower())
