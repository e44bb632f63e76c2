"""LeRobot datasets into vidplan shards (``vidplan data import lerobot``): the dataset metadata of a source's
episodes (lengths, labels, split, action statistics from parquet only) and the resumable import."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.config import changed_settings
from vidplan_core.data.lerobot import LEROBOT_PREFIX, LeRobotEpisode, LeRobotError, LeRobotMapping, LeRobotSource
from vidplan_core.data.schema import (
    SHARD_DIR,
    DatasetError,
    DatasetMeta,
    EpisodeMeta,
    save_meta,
    split_episodes,
    write_shard,
)
from vidplan_core.spaces import MODEL_RATE_HZ, VIEW_ORDER, ActionNormalizer, ViewPreparation

__all__ = [
    "import_lerobot",
    "lerobot_meta",
    "prepare_import_dir",
]


def lerobot_meta(source: LeRobotSource, size: tuple[int, int], fps: float = MODEL_RATE_HZ,
                 val_fraction: float = 0.1, split_seed: int = 0, value_gamma: float = 0.97,
                 progress: Callable[[Sequence[Any]], Iterable[Any]] | None = None,
                 shard: Callable[[LeRobotEpisode], str] | None = None,
                 signals: dict[int, dict[str, Any]] | None = None) -> DatasetMeta:
    """A :class:`DatasetMeta` for the source's episodes at ``fps`` and view ``size`` (H, W): lengths, labels, the
    split (by episode, seeded) and the train split's action statistics — read from parquet only (no video).

    ``shard`` names each episode's shard (default ``lerobot:<index>``: read in place); ``signals`` is filled with
    each episode's :meth:`LeRobotSource.signals` when given.
    """
    sigs = signals if signals is not None else {}
    eps = source.episodes
    for ep in (progress(eps) if progress else eps):
        sigs[ep.index] = source.signals(ep, fps)
    splits = split_episodes(len(eps), val_fraction, split_seed)
    metas = []
    for n, (ep, split) in enumerate(zip(eps, splits, strict=True)):
        s = sigs[ep.index]
        metas.append(EpisodeMeta(index=n, name=f"episode_{ep.index:06d}",
                                 shard=shard(ep) if shard else f"{LEROBOT_PREFIX}{ep.index}",
                                 length=len(s["timestamps_ns"]), instruction=s["instruction"], success=s["success"],
                                 split=split, source=f"{source.root}#{ep.index}"))
    train = [sigs[ep.index]["actions"] for ep, sp in zip(eps, splits, strict=True) if sp == "train"]
    return DatasetMeta(
        fps=fps, source_rate_hz=source.fps, image_size={v: tuple(size) for v in VIEW_ORDER},
        action_stats=ActionNormalizer.fit(np.concatenate(train)).state_dict(), value_gamma=value_gamma,
        joint_names=list(source.mapping.joint_names), base_frame=source.mapping.base_frame, episodes=metas,
        info={"converter": "lerobot", "lerobot_root": str(source.root), "codebase_version": source.version,
              "mapping": source.mapping.model_dump(mode="json"), "val_fraction": val_fraction,
              "split_seed": split_seed, "view_preparation": ViewPreparation(int(size[0]), int(size[1])).as_dict(),
              "source_image_size": list(source.video_size(VIEW_ORDER[0]) or [])})


def prepare_import_dir(out: Path, settings: dict[str, Any], error: type[DatasetError]) -> None:
    """Make ``out`` an import directory of ``settings`` (kept in ``out/import.json``): new or empty, or an earlier
    import of the same settings (resumed); ``error`` when it holds another import or other files."""
    marker = out / "import.json"
    if marker.is_file():
        if diff := changed_settings(json.loads(marker.read_text()), settings):
            raise error(out, [f"holds an import with other settings ({diff}); use another --out"])
    elif out.exists() and any(out.iterdir()):
        raise error(out, ["exists and is not empty (and is not an earlier import)"])
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(settings, indent=2))


def import_lerobot(root: str | Path, out: str | Path, size: tuple[int, int],
                   mapping: str | Path | LeRobotMapping | None = None, episodes: Sequence[int] | None = None,
                   fps: float = MODEL_RATE_HZ, val_fraction: float = 0.1, split_seed: int = 0,
                   value_gamma: float = 0.97, progress: Callable[[Sequence[Any]], Iterable[Any]] | None = None
                   ) -> DatasetMeta:
    """Convert (a subset of) a LeRobot dataset into vidplan shards at ``out`` (``vidplan data import lerobot``).

    Resumable: ``out/import.json`` records the settings; a rerun with the same ones skips episodes whose shard is
    already written (shards are written atomically), a rerun with others is refused. ``meta.json`` is written last.

    Raises:
        LeRobotError: the source cannot be read as mapped (before any shard is written), or ``out`` holds an import
            of other settings.
    """
    src = LeRobotSource(root, mapping, episodes)
    out = Path(out)
    settings = {"root": str(Path(root).resolve()), "mapping": src.mapping.model_dump(mode="json"),
                "episodes": [e.index for e in src.episodes], "size": list(size), "fps": fps,
                "val_fraction": val_fraction, "split_seed": split_seed, "value_gamma": value_gamma}
    prepare_import_dir(out, settings, LeRobotError)
    views = ViewPreparation(int(size[0]), int(size[1]))
    sigs: dict[int, dict[str, Any]] = {}
    meta = lerobot_meta(src, size, fps, val_fraction, split_seed, value_gamma,
                        shard=lambda ep: f"{SHARD_DIR}/episode_{ep.index:06d}.safetensors", signals=sigs)
    for ep in (progress(src.episodes) if progress else src.episodes):
        path = out / SHARD_DIR / f"episode_{ep.index:06d}.safetensors"
        if path.is_file():
            continue  # written by an interrupted earlier run
        s = sigs[ep.index]
        tensors = {k: s[k] for k in ("actions", "ee_pose", "gripper", "joint_positions", "timestamps_ns")}
        tensors["frames"] = src.frames(ep, s["video_times"], views)
        write_shard(path, tensors)
    meta.info["converter"] = "vidplan data import lerobot"
    save_meta(out, meta)
    return meta
