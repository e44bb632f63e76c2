"""Datasets read in place — LeRobot (:mod:`vidplan_core.data.lerobot`) and RLDS/TFDS (:mod:`vidplan_core.data.rlds`)
— behind one interface: what the training stream (:mod:`vidplan_core.data.lerobot_stream`) and the imports use of a
source (:class:`EpisodeSource`), which layout a directory has, and the source and metadata for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vidplan_core.data.lerobot import LeRobotSource, is_lerobot_dataset
from vidplan_core.data.lerobot_import import lerobot_meta
from vidplan_core.data.rlds import RLDSSource, is_rlds_dataset, load_rlds_mapping
from vidplan_core.data.rlds_import import rlds_meta
from vidplan_core.data.schema import DatasetMeta
from vidplan_core.spaces import MODEL_RATE_HZ, ViewPreparation

__all__ = [
    "EpisodeSource",
    "is_in_place_dataset",
    "open_source",
    "source_meta",
]


@runtime_checkable
class EpisodeSource(Protocol):
    """A dataset read in place, episode by episode (:class:`~vidplan_core.data.lerobot.LeRobotSource`,
    :class:`~vidplan_core.data.rlds.RLDSSource`).

    Attributes:
        root: the dataset directory; fps: the recording's rate [Hz]; version: the layout's or dataset's version;
        mapping: which key is which signal (``joint_names``, ``base_frame``, ``model_dump()``); episodes: the
        selected episodes (each with an ``index``).
    """

    root: Path
    fps: float
    version: str
    mapping: Any
    episodes: Sequence[Any]

    def signals(self, ep: Any, fps: float = MODEL_RATE_HZ) -> dict[str, Any]:
        """Non-image signals at ``fps`` [Hz]: actions (T, 7), ee_pose (T, 6), gripper (T,), joint_positions (T, J)
        float32, timestamps_ns (T,) int64, video_times (T,) float64 [s], instruction str, success bool."""
        ...

    def frames(self, ep: Any, times: np.ndarray, views: ViewPreparation) -> np.ndarray:
        """uint8 (N, 3, 3, H, W) frames of every view at episode times ``times`` [s]."""
        ...

    def video_size(self, view: str) -> tuple[int, int] | None:
        """(H, W) [px] of a view's source images, if recorded."""
        ...


def is_in_place_dataset(root: str | Path) -> bool:
    """True when ``root`` is read in place (a LeRobot or an RLDS/TFDS dataset) rather than a vidplan dataset."""
    return is_lerobot_dataset(root) or is_rlds_dataset(root)


def open_source(root: str | Path, mapping: str | Path | None = None,
                episodes: Sequence[int] | None = None) -> LeRobotSource | RLDSSource:
    """The source of a dataset read in place: an :class:`RLDSSource` for a TFDS directory (``mapping`` a shipped
    RLDS mapping name or YAML), else a :class:`LeRobotSource`. Raises the source's error (every problem listed)."""
    if is_rlds_dataset(root) and not is_lerobot_dataset(root):
        return RLDSSource(root, load_rlds_mapping(mapping), episodes)
    return LeRobotSource(root, mapping, episodes)


def source_meta(source: LeRobotSource | RLDSSource, size: tuple[int, int], fps: float = MODEL_RATE_HZ,
                val_fraction: float = 0.1, split_seed: int = 0, value_gamma: float = 0.97,
                progress: Callable[[Sequence[Any]], Iterable[Any]] | None = None,
                signals: dict[int, dict[str, Any]] | None = None) -> DatasetMeta:
    """The :class:`DatasetMeta` of a source read in place at ``fps`` [Hz] and view ``size`` (H, W) [px]
    (:func:`~vidplan_core.data.lerobot_import.lerobot_meta` or :func:`~vidplan_core.data.rlds_import.rlds_meta`)."""
    fn = rlds_meta if isinstance(source, RLDSSource) else lerobot_meta
    return fn(source, size, fps, val_fraction, split_seed, value_gamma, progress=progress,  # type: ignore[arg-type]
              signals=signals)
