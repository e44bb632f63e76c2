"""What an RLDS / TFDS dataset holds and which of it is which signal: the ``features.json`` tree
(:func:`read_features_json`) and the :class:`RLDSMapping` (YAML; ``droid`` ships in ``data/mappings/rlds/``).
Read by :mod:`vidplan_core.data.rlds`; the format's sources are named there."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vidplan_core.data.lerobot import MAPPINGS_DIR, Feature, LeRobotMapping, load_mapping_file
from vidplan_core.data.schema import DatasetError

__all__ = ["RLDS_MAPPINGS_DIR", "RLDSError", "RLDSMapping", "SuccessPattern", "TfdsFeature", "load_rlds_mapping",
           "read_features_json"]

RLDS_MAPPINGS_DIR = MAPPINGS_DIR / "rlds"


class RLDSError(DatasetError):
    """An RLDS dataset that cannot be read as mapped: missing key or shard, bad mapping, wrong image shape, unknown
    episode (every problem listed, naming the key, file or episode and what was expected)."""


@dataclass(frozen=True)
class TfdsFeature:
    """One leaf of a TFDS feature tree, by its flattened Example key.

    Attributes:
        key: e.g. ``steps/observation/cartesian_position``.
        kind: ``tensor`` (Tensor, Scalar, ClassLabel), ``image``, ``text`` or ``other``.
        dtype: numpy dtype name (``float64``, ``bool``, ``uint8``, ``string``, ...).
        shape: per-step shape for features under a Dataset/Sequence (None for an unknown dimension).
        in_steps: under a Dataset/Sequence feature (one value per step), else one value per episode.
        encoding: Tensor ``encoding`` (``none``, ``bytes``, ``zlib``) or Image ``encodingFormat`` (``jpeg``, ``png``).
    """

    key: str
    kind: str
    dtype: str
    shape: tuple[int | None, ...]
    in_steps: bool
    encoding: str = "none"

    @property
    def size(self) -> int | None:
        """Values per step (per episode outside steps); None when a dimension is unknown."""
        return None if any(d is None for d in self.shape) else int(np.prod(self.shape, dtype=np.int64))


def _shape(node: dict[str, Any]) -> tuple[int | None, ...]:
    dims = (node.get("shape") or {}).get("dimensions", [])
    return tuple(None if int(d) < 0 else int(d) for d in dims)


def read_features_json(path: str | Path) -> dict[str, TfdsFeature]:
    """The leaves of a TFDS ``features.json`` by flattened key (``/``-joined, as the Example's keys).

    Raises:
        RLDSError: unreadable JSON or a tree without ``featuresDict``.
    """
    path = Path(path)
    try:
        tree = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RLDSError(path.parent, [f"{path.name}: cannot be read as JSON ({exc})"]) from exc
    out: dict[str, TfdsFeature] = {}

    def walk(node: dict[str, Any], key: str, in_steps: bool) -> None:
        if "featuresDict" in node:
            for name, child in node["featuresDict"].get("features", {}).items():
                walk(child, f"{key}/{name}" if key else name, in_steps)
        elif "sequence" in node:  # tfds.features.Dataset (RLDS steps) and Sequence: one value per element
            walk(node["sequence"].get("feature", {}), key, True)
        elif "image" in node:
            im = node["image"]
            out[key] = TfdsFeature(key, "image", str(im.get("dtype", "uint8")), _shape(im), in_steps,
                                   str(im.get("encodingFormat") or "png"))  # TFDS encodes as PNG when unset
        elif "text" in node:
            out[key] = TfdsFeature(key, "text", "string", (), in_steps)
        elif "tensor" in node:
            t = node["tensor"]
            out[key] = TfdsFeature(key, "tensor", str(t.get("dtype", "")), _shape(t), in_steps,
                                   str(t.get("encoding", "none")))
        elif "classLabel" in node:
            out[key] = TfdsFeature(key, "tensor", "int64", (), in_steps)
        else:
            out[key] = TfdsFeature(key, "other", "", (), in_steps)

    if not isinstance(tree, dict) or "featuresDict" not in tree:
        raise RLDSError(path.parent, [f"{path.name}: no top-level featuresDict (not a TFDS features.json)"])
    walk(tree, "", False)
    return out


# ---------------------------------------------------------------------------------------------- mapping
class SuccessPattern(BaseModel):
    """Success from a string feature: the episode succeeded when its (last) value matches ``pattern`` (re.search)."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)
    pattern: str = Field(min_length=1)


class RLDSMapping(LeRobotMapping):
    """Which RLDS key is which vidplan signal: the LeRobot mapping's keys (views, EE pose, gripper, joints, action,
    instruction, success, base frame) with flattened Example keys (``steps/observation/cartesian_position``), plus the
    step rate and split (RLDS records neither time stamps nor a rate). Every key documented in
    ``data/mappings/rlds/droid.yaml``."""

    instruction: str = Field(default="steps/language_instruction", description="a text feature: the episode's first "
                             "non-empty value")
    success: bool | str | SuccessPattern = Field(
        default=True, description="a constant; a numeric/boolean feature (its last value ≠ 0); or {key, pattern}: a "
        "text feature whose (last) value matches the regular expression")
    fps: float = Field(default=15.0, gt=0, description="rate of the steps [Hz] (DROID: 15)")
    split: str = Field(default="train", min_length=1, description="the TFDS split to read")

    def features(self) -> list[str]:
        """Every key the mapping reads."""
        keys = [self.ee_pose.key, self.gripper.key, *self.cameras.values(), self.instruction]
        if self.joint_positions is not None:
            keys.append(self.joint_positions.key)
        if isinstance(self.action, Feature):
            keys.append(self.action.key)
        if isinstance(self.success, str):
            keys.append(self.success)
        elif isinstance(self.success, SuccessPattern):
            keys.append(self.success.key)
        return keys


def load_rlds_mapping(name_or_path: str | Path | RLDSMapping | None) -> RLDSMapping:
    """An RLDS mapping by name (a file in :data:`RLDS_MAPPINGS_DIR`, e.g. ``droid``) or path; None → ``droid``.

    The name ``droid`` is DROID's RLDS mapping here and its LeRobot mapping for a LeRobot dataset: the same training
    option (``data.lerobot.mapping: droid``) serves both layouts.
    """
    return load_mapping_file(name_or_path, RLDSMapping, RLDS_MAPPINGS_DIR, RLDSError, "RLDS mapping")
