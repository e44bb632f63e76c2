"""A LeRobot dataset — or an RLDS/TFDS one (:mod:`vidplan_core.data.rlds`) — read in place as a training data source:
the options of the ``data.lerobot`` section of a training config and the stream of model-rate windows
(:func:`open_stream`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vidplan_core.data.lerobot import parse_episode_selection
from vidplan_core.data.schema import (
    EpisodeMeta,
)
from vidplan_core.data.sources import open_source, source_meta
from vidplan_core.spaces import MODEL_RATE_HZ, ViewPreparation

__all__ = [
    "LeRobotOptions",
    "LeRobotStream",
    "open_stream",
]


class LeRobotOptions(BaseModel):
    """How training reads a LeRobot dataset in place (``data.lerobot`` of a training config)."""

    model_config = ConfigDict(extra="forbid")
    mapping: str = Field(default="droid", description="a shipped mapping name or a mapping YAML path")
    episodes: str | None = Field(default=None, description="episode selection (A:B, A:B:STEP, N,M); None = all")
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="validation episodes (by episode, seeded)")
    split_seed: int = 0
    value_gamma: float = Field(default=0.97, gt=0, le=1)


class LeRobotStream:
    """A LeRobot dataset read in place at the model rate: its :class:`DatasetMeta` (computed from parquet, no video)
    and, per window, only the frames that window shows (decoded from the videos on demand).

    Args:
        root: LeRobot dataset directory.
        options: mapping, episode selection, split.
        view_size: (H, W) of a model view [px]; frames are resized to it as they are decoded.
        fps: model rate [Hz].
    """

    def __init__(self, root: str | Path, options: LeRobotOptions | None, view_size: tuple[int, int],
                 fps: float = MODEL_RATE_HZ):
        o = options or LeRobotOptions()
        self.source = open_source(root, o.mapping, parse_episode_selection(o.episodes))  # LeRobot or RLDS
        self.views = ViewPreparation(int(view_size[0]), int(view_size[1]))
        self.signals: dict[int, dict[str, Any]] = {}
        from tqdm.auto import tqdm

        # the metadata pass reads every selected episode's parquet rows (no video): a bar for DROID-sized selections
        bar = lambda eps: tqdm(eps, desc=f"index {self.source.root.name}", unit="episode",  # noqa: E731
                               disable=len(eps) < 200)
        self.meta = source_meta(self.source, view_size, fps, o.val_fraction, o.split_seed, o.value_gamma,
                                signals=self.signals, progress=bar)
        self._by_shard = {e.shard: self.source.episodes[n] for n, e in enumerate(self.meta.episodes)}

    def arrays(self, ep: EpisodeMeta) -> dict[str, np.ndarray]:
        """The episode's non-image shard arrays (actions, ee_pose, gripper, joint_positions, timestamps_ns)."""
        return self.signals[self._by_shard[ep.shard].index]

    def frames(self, ep: EpisodeMeta, idx: np.ndarray) -> np.ndarray:
        """uint8 (len(idx), 3, 3, H, W): the model-rate frames ``idx`` (in [0, length), may repeat)."""
        src = self._by_shard[ep.shard]
        uniq, inverse = np.unique(np.asarray(idx), return_inverse=True)
        times = self.signals[src.index]["video_times"][uniq]
        return self.source.frames(src, times, self.views)[inverse]


_STREAMS: dict[tuple[str, str, tuple[int, int], float], LeRobotStream] = {}


def open_stream(root: str | Path, options: LeRobotOptions | None, view_size: tuple[int, int],
                fps: float = MODEL_RATE_HZ) -> LeRobotStream:
    """One :class:`LeRobotStream` per (dataset, options, view size, rate) in this process (train and val windows
    share its metadata pass)."""
    key = (str(Path(root).resolve()), (options or LeRobotOptions()).model_dump_json(), tuple(view_size), float(fps))
    if key not in _STREAMS:
        _STREAMS[key] = LeRobotStream(root, options, view_size, fps)
    return _STREAMS[key]
