"""Torch datasets over a vidplan episode dataset (:mod:`vidplan_core.data.schema`): windows of history + future.

A window starting at frame ``s`` covers frames ``s .. s + history + future − 1`` at the dataset's rate (the model
rate, 5 Hz by default): ``history`` context frames (DESIGN: 6 for ``full``) followed by ``future`` predicted frames
(5). With ``pad_start=True`` windows may start before the episode (``s < 0``): the missing history repeats the
first frame and its action, as at the start of a real episode where the planner has seen only one frame.
Every window has a complete future (``s + history + future <= length``).

``root`` may also be a LeRobot dataset (DROID, ...) or an RLDS/TFDS one (DROID's RLDS release): it is then read in
place (:mod:`vidplan_core.data.lerobot`, :mod:`vidplan_core.data.rlds`), decoding per window only the frames it shows,
resized to ``view_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.lerobot_stream import open_stream
from vidplan_core.data.schema import DatasetError, DatasetMeta, EpisodeMeta, mc_values, validate_dataset
from vidplan_core.data.sources import is_in_place_dataset

__all__ = ["FrameCaptionDataset", "WindowDataset", "dataset_meta", "window_starts"]


def dataset_meta(root: str | Path, lerobot: Any = None, view_size: tuple[int, int] | None = None,
                 splits: tuple[str, ...] = ("train", "val")) -> DatasetMeta:
    """The metadata of a dataset: a vidplan dataset validated (:func:`validate_dataset`), or a LeRobot dataset read
    in place at ``view_size`` (H, W) with ``lerobot`` options
    (:class:`~vidplan_core.data.lerobot_stream.LeRobotOptions`).

    Raises:
        DatasetError: a bad dataset (every problem listed), or a LeRobot dataset without ``view_size``.
    """
    if is_in_place_dataset(root):  # LeRobot or RLDS
        if view_size is None:
            raise DatasetError(root, ["a LeRobot dataset is read at the model's view size; none was given"])
        return open_stream(root, lerobot, view_size).meta
    return validate_dataset(root, splits=splits)


def window_starts(length: int, history: int, future: int, stride: int = 1, pad_start: bool = True) -> list[int]:
    """Start frames of the windows of an episode with ``length`` frames (see the module docstring)."""
    span = history + future
    first = -(history - 1) if pad_start else 0
    last = length - span
    return list(range(first, last + 1, max(1, stride)))


class WindowDataset:
    """Windows of ``history`` + ``future`` frames from the episodes of one split (a ``torch.utils.data.Dataset``).

    Args:
        root: dataset directory (validated with :func:`validate_dataset` first; a bad shard raises
            :class:`~vidplan_core.data.schema.DatasetError` before anything is loaded).
        split: "train", "val" or "all".
        history, future: frames of context and of prediction (model rate).
        stride: frames between window starts.
        pad_start: allow windows whose history begins before the episode (first frame repeated).
        frames: return frames (set False when only latents are needed, to save memory and time).
        latents_dir: directory of cached latents (``latents/<tag>`` written by
            :func:`vidplan_core.data.latents.cache_latents`); adds ``latents``.
        max_episodes: use only the first N episodes of the split (tests, quick runs).
        lerobot: options of a LeRobot ``root`` (:class:`~vidplan_core.data.lerobot_stream.LeRobotOptions`;
            default DROID's mapping, every episode).
        view_size: (H, W) [px] frames of a LeRobot ``root`` are resized to (a vidplan dataset has its own size).

    Each item is a dict of tensors (W = history + future):

    - ``frames``: float32 (W, 3, 3, H, W_px) in [0, 1] (the models' convention), views (left, right, wrist) — stack with
      :func:`vidplan_core.spaces.stack_views` for the (C, 3H, W) layout of the world model.
    - ``latents``: float32 (W, C, h, w) cached latents of the stacked frames (if ``latents_dir``).
    - ``actions``: float32 (W, 7) raw EE actions; ``actions_norm``: (W, 7) p01/p99-normalised.
    - ``value``: float32 (W,) Monte-Carlo value target γ^(F−τ)·success; ``success``: float32 ().
    - ``valid``: bool (W,) False for padded history frames.
    - ``episode``: int64 () index in meta.json; ``start``: int64 () first frame (may be negative).
    - ``instruction``: str.
    """

    def __init__(self, root: str | Path, split: str = "train", history: int = 6, future: int = 5, stride: int = 1,
                 pad_start: bool = True, frames: bool = True, latents_dir: str | Path | None = None,
                 max_episodes: int | None = None, lerobot: Any = None, view_size: tuple[int, int] | None = None):
        if history < 1 or future < 0:
            raise ValueError(f"history must be >= 1 and future >= 0 frames, got {history} and {future}")
        self.root = Path(root)

        self.stream = open_stream(self.root, lerobot, view_size) if is_in_place_dataset(self.root) and view_size \
            else None
        self.meta: DatasetMeta = dataset_meta(self.root, lerobot, view_size,
                                              splits=("train", "val") if split == "all" else (split,))
        self.episodes: list[EpisodeMeta] = self.meta.split(split)[:max_episodes]
        self.history, self.future = int(history), int(future)
        self.span = self.history + self.future
        self.normalizer = self.meta.normalizer()
        self.want_frames = frames
        self.latents_dir = Path(latents_dir) if latents_dir is not None else None
        if self.latents_dir is not None and self.stream is not None:
            raise ValueError("latents are not cached for a LeRobot dataset read in place (set data.cache_latents: "
                             "false, or import it with 'vidplan data import lerobot')")
        if self.latents_dir is not None:
            missing = [e.name for e in self.episodes if not (self.latents_dir / f"{e.name}.safetensors").is_file()]
            if missing:
                raise FileNotFoundError(f"cached latents missing in {self.latents_dir} for episode(s) {missing[:5]} "
                                        f"(run 'vidplan data cache-latents')")
        self.index: list[tuple[int, int]] = []
        for i, ep in enumerate(self.episodes):
            self.index += [(i, s) for s in window_starts(ep.length, history, future, stride, pad_start)]
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._cache:  # shards are small at the model rate; keep them once loaded
            from safetensors.numpy import load_file

            ep = self.episodes[i]
            data = self.stream.arrays(ep) if self.stream is not None else load_file(str(self.root / ep.shard))
            out = {"actions": data["actions"], "value": mc_values(ep.length, ep.success, self.meta.value_gamma)}
            if self.want_frames and self.stream is None:
                out["frames"] = data["frames"]
            if self.latents_dir is not None:
                lat = load_file(str(self.latents_dir / f"{ep.name}.safetensors"))["latents"]
                if lat.shape[0] != ep.length:
                    raise ValueError(f"cached latents of {ep.name} have {lat.shape[0]} frames, expected {ep.length}")
                out["latents"] = lat
            self._cache[i] = out
        return self._cache[i]

    def frames(self, i: int, idx: np.ndarray) -> np.ndarray:
        """uint8 (len(idx), 3, 3, H, W): frames ``idx`` of the split's episode ``i`` (decoded on demand from a
        LeRobot dataset; from the loaded shard otherwise)."""
        if self.stream is not None:
            return self.stream.frames(self.episodes[i], idx)
        return self._episode(i)["frames"][idx]

    def __getitem__(self, k: int) -> dict[str, Any]:
        import torch

        i, start = self.index[k]
        ep = self.episodes[i]
        data = self._episode(i)
        idx = np.arange(start, start + self.span)
        valid = idx >= 0
        idx = np.clip(idx, 0, ep.length - 1)
        actions = data["actions"][idx].astype(np.float32)
        item: dict[str, Any] = {
            "actions": torch.from_numpy(actions),
            "actions_norm": torch.from_numpy(self.normalizer.normalize(actions.astype(np.float64)).astype(np.float32)),
            "value": torch.from_numpy(data["value"][idx]),
            "success": torch.tensor(float(ep.success)),
            "valid": torch.from_numpy(valid),
            "episode": torch.tensor(ep.index),
            "start": torch.tensor(start),
            "instruction": ep.instruction,
        }
        if self.want_frames:
            item["frames"] = torch.from_numpy(self.frames(i, idx)).float().div_(255.0)
        if "latents" in data:
            item["latents"] = torch.from_numpy(data["latents"][idx].astype(np.float32))
        return item


class FrameCaptionDataset:
    """Single frames with their episode's instruction (for the semantic image–text model).

    Each item: ``frames`` float32 (3, 3, H, W) in [0, 1] (views), ``instruction`` str, ``task_id`` int64 (index of
    the instruction in :attr:`captions`, so a batch can tell which pairs share a caption), ``episode`` int64.
    """

    def __init__(self, root: str | Path, split: str = "train", stride: int = 1, max_episodes: int | None = None,
                 lerobot: Any = None, view_size: tuple[int, int] | None = None):
        self.windows = WindowDataset(root, split, history=1, future=0, stride=1, pad_start=False,
                                     max_episodes=max_episodes, lerobot=lerobot, view_size=view_size)
        self.captions = sorted({e.instruction for e in self.windows.episodes})
        self.caption_index = {c: i for i, c in enumerate(self.captions)}
        self.index = [(i, t) for i, ep in enumerate(self.windows.episodes) for t in range(0, ep.length, max(1, stride))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, Any]:
        import torch

        i, t = self.index[k]
        ep = self.windows.episodes[i]
        frames = self.windows.frames(i, np.array([t]))[0]
        return {"frames": torch.from_numpy(frames).float().div_(255.0), "instruction": ep.instruction,
                "task_id": torch.tensor(self.caption_index[ep.instruction]), "episode": torch.tensor(ep.index)}
