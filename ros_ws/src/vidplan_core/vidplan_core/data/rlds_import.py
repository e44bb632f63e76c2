"""RLDS (TFDS) datasets into vidplan shards (``vidplan data import rlds``): the dataset metadata of a source's
episodes and the resumable import — the LeRobot import's machinery (:func:`~vidplan_core.data.lerobot_import.
lerobot_meta`: lengths, labels, seeded split, train-split action statistics) on an :class:`~vidplan_core.data.rlds.
RLDSSource`, with one read of each episode's record (an RLDS record holds the images and the signals together)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vidplan_core.data.lerobot_import import lerobot_meta, prepare_import_dir
from vidplan_core.data.rlds import RLDS_PREFIX, RLDSEpisode, RLDSError, RLDSMapping, RLDSSource
from vidplan_core.data.schema import SHARD_DIR, DatasetMeta, save_meta, write_shard
from vidplan_core.spaces import MODEL_RATE_HZ, ViewPreparation

__all__ = [
    "import_rlds",
    "rlds_meta",
]


def rlds_meta(source: RLDSSource, size: tuple[int, int], fps: float = MODEL_RATE_HZ, val_fraction: float = 0.1,
              split_seed: int = 0, value_gamma: float = 0.97,
              progress: Callable[[Sequence[Any]], Iterable[Any]] | None = None,
              shard: Callable[[RLDSEpisode], str] | None = None,
              signals: dict[int, dict[str, Any]] | None = None) -> DatasetMeta:
    """A :class:`DatasetMeta` for the source's episodes at ``fps`` [Hz] and view ``size`` (H, W) [px]: lengths,
    labels, the split (by episode, seeded) and the train split's action statistics.

    Reads each episode's record once (images are not decoded); ``shard`` names each episode's shard (default
    ``rlds:<index>``: read in place); ``signals`` is filled with each episode's :meth:`RLDSSource.signals`.
    ``info`` records the RLDS provenance (root, TFDS name, version and split, mapping, view preparation).
    """
    meta = lerobot_meta(source, size, fps, val_fraction, split_seed, value_gamma,  # type: ignore[arg-type]
                        progress=progress, shard=shard or (lambda ep: f"{RLDS_PREFIX}{ep.index}"), signals=signals)
    info = {k: v for k, v in meta.info.items() if k not in ("lerobot_root", "codebase_version")}
    meta.info = {**info, "converter": "rlds", "rlds_root": str(source.root), "tfds_name": source.name,
                 "tfds_version": source.version, "tfds_split": source.split}
    return meta


def import_rlds(root: str | Path, out: str | Path, size: tuple[int, int],
                mapping: str | Path | RLDSMapping | None = None, episodes: Sequence[int] | None = None,
                split: str | None = None, fps: float = MODEL_RATE_HZ, val_fraction: float = 0.1,
                split_seed: int = 0, value_gamma: float = 0.97,
                progress: Callable[[Sequence[Any]], Iterable[Any]] | None = None) -> DatasetMeta:
    """Convert (a subset of) an RLDS dataset into vidplan shards at ``out`` (``vidplan data import rlds``).

    Each episode's record is read once: its signals at ``fps`` [Hz] and its frames, resized to ``size`` (H, W) [px],
    go into ``out/shards/episode_NNNNNN.safetensors`` (NNNNNN = the episode's position in the split).

    Resumable: ``out/import.json`` records the settings; a rerun with the same ones skips the frames of episodes whose
    shard is already written (shards are written atomically), a rerun with others is refused. ``meta.json`` is
    written last.

    Raises:
        RLDSError: the source cannot be read as mapped (missing key, shard, empty selection: before any shard is
            written; a corrupt or truncated record when it is reached, naming file and offset — the shards before it
            stay written), or ``out`` holds an import of other settings.
    """
    src = RLDSSource(root, mapping, episodes, split)
    out = Path(out)
    settings = {"root": str(src.root.resolve()), "split": src.split, "mapping": src.mapping.model_dump(mode="json"),
                "episodes": [e.index for e in src.episodes], "size": list(size), "fps": fps,
                "val_fraction": val_fraction, "split_seed": split_seed, "value_gamma": value_gamma}
    prepare_import_dir(out, settings, RLDSError)
    views = ViewPreparation(int(size[0]), int(size[1]))
    name = lambda ep: f"{SHARD_DIR}/episode_{ep.index:06d}.safetensors"  # noqa: E731
    for ep in (progress(src.episodes) if progress else src.episodes):
        s = src.signals(ep, fps)  # kept by the source: the metadata below reads no record again
        path = out / name(ep)
        if path.is_file():
            continue  # written by an interrupted earlier run
        tensors = {k: s[k] for k in ("actions", "ee_pose", "gripper", "joint_positions", "timestamps_ns")}
        tensors["frames"] = src.frames(ep, s["video_times"], views)  # the same record, still parsed
        write_shard(path, tensors)
    meta = rlds_meta(src, size, fps, val_fraction, split_seed, value_gamma, shard=name)
    meta.info["converter"] = "vidplan data import rlds"
    save_meta(out, meta)
    return meta
