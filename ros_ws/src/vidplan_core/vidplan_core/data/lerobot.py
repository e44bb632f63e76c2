"""LeRobot datasets (DROID included) as a vidplan data source: read in place, or imported into shards.

A LeRobotDataset directory (``codebase_version`` v2.0/v2.1 or v3.0 in ``meta/info.json``) holds per-frame signals in
parquet and camera streams in mp4 (h264, AV1, ...). vidplan reads it *directly*: the episode index comes from the
metadata and the parquet columns, frames are decoded from the videos (PyAV) only for the frames a window needs, at
the model rate. DROID is 1.7 TB; nothing is copied. ``vidplan data import lerobot`` writes the same episodes as
vidplan shards (:mod:`vidplan_core.data.schema`) for a user who wants a local subset.

Layouts (both read; paths come from ``info.json``'s ``data_path`` / ``video_path`` templates):

- v2.x: ``data/chunk-XXX/episode_NNNNNN.parquet`` (one episode per file), ``videos/chunk-XXX/<video key>/
  episode_NNNNNN.mp4``, ``meta/episodes.jsonl`` (episode_index, tasks, length), ``meta/tasks.jsonl``.
- v3.0: ``data/chunk-XXX/file-XXX.parquet`` (many episodes per file), ``videos/<video key>/chunk-XXX/file-XXX.mp4``
  (episodes concatenated; an episode is ``[from_timestamp, to_timestamp)`` of its file), ``meta/episodes/chunk-XXX/
  file-XXX.parquet`` (one row per episode: length, tasks, file indices, video spans), ``meta/tasks.parquet``.

Which feature is which signal is a :class:`LeRobotMapping` (YAML; ``droid`` ships in ``data/mappings/droid.yaml``):
the three views, the EE pose (xyz [m] + Euler xyz [rad], base frame), the gripper (0 open .. 1 closed), joints, the
action (by default the measured pose + gripper, DROID's convention and vidplan's), the instruction and success.

Frames at the model rate: the frame grid starts at the episode's first timestamp and steps by 1/fps; each grid time
takes the nearest parquet row, and each view the video frame at that row's timestamp (within half a source frame).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vidplan_core.config import format_validation_error
from vidplan_core.data.schema import (
    DatasetError,
)
from vidplan_core.spaces import MODEL_RATE_HZ, VIEW_ORDER, ViewPreparation

__all__ = [
    "MAPPINGS_DIR",
    "LeRobotEpisode",
    "LeRobotError",
    "LeRobotMapping",
    "LeRobotSource",
    "is_lerobot_dataset",
    "load_mapping",
    "load_mapping_file",
    "parse_episode_selection",
]

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
LEROBOT_PREFIX = "lerobot:"  # EpisodeMeta.shard of an episode read in place: "lerobot:<episode_index>"


class LeRobotError(DatasetError):
    """A LeRobot dataset that cannot be read as mapped: missing key or file, short video, bad mapping (every problem
    listed, naming key, file and what was expected)."""


class Feature(BaseModel):
    """One parquet feature, or a slice of a vector feature: ``{key: observation.state, index: [0, 6]}``."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)
    index: tuple[int, int] | None = Field(default=None, description="[start, stop) of a vector feature")

    def take(self, table: dict[str, np.ndarray], where: str) -> np.ndarray:
        """(N, d) float64 values of this feature for the rows of ``table``."""
        if self.key not in table:
            raise LeRobotError(where, [f"feature {self.key!r} not in the parquet data"])
        col = np.asarray(table[self.key], dtype=np.float64)
        col = col.reshape(len(col), -1)
        if self.index is not None:
            a, b = self.index
            if b > col.shape[1] or a < 0 or a >= b:
                raise LeRobotError(where, [f"feature {self.key!r} has {col.shape[1]} values, the mapping takes "
                                           f"[{a}, {b})"])
            col = col[:, a:b]
        return col


class LeRobotMapping(BaseModel):
    """Which LeRobot feature is which vidplan signal (a YAML file; every key documented in ``droid.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    cameras: dict[str, str] = Field(description="view (left, right, wrist) → video feature key")
    ee_pose: Feature = Field(description="EE pose xyz [m] + Euler xyz [rad] in the robot base frame (6 values)")
    gripper: Feature = Field(description="gripper closure, 0 open .. 1 closed (1 value)")
    gripper_invert: bool = Field(default=False, description="the feature is an opening (1 open): use 1 − value")
    joint_positions: Feature | None = Field(default=None, description="arm joints [rad] (optional)")
    joint_names: list[str] = Field(default_factory=list, description="names of the joint_positions columns")
    action: Literal["measured"] | Feature = Field(
        default="measured", description="'measured': the measured EE pose + gripper at each frame (DROID, vidplan); "
        "or a feature of 7 values (pose + gripper)")
    instruction: str = Field(default="task", description="'task': the episode's LeRobot task; else a string "
                             "feature (the episode's first non-empty value)")
    success: bool | str = Field(default=True, description="a constant, or a boolean feature (its last value)")
    base_frame: str = "panda_link0"

    @field_validator("cameras")
    @classmethod
    def _views(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != set(VIEW_ORDER):
            raise ValueError(f"cameras must name the views {list(VIEW_ORDER)}, got {sorted(v)}")
        return v

    def features(self) -> list[str]:
        """Every feature key the mapping reads."""
        keys = [self.ee_pose.key, self.gripper.key, *self.cameras.values()]
        if self.joint_positions is not None:
            keys.append(self.joint_positions.key)
        if isinstance(self.action, Feature):
            keys.append(self.action.key)
        if self.instruction != "task":
            keys.append(self.instruction)
        if isinstance(self.success, str):
            keys.append(self.success)
        return keys


def load_mapping(name_or_path: str | Path | LeRobotMapping | None) -> LeRobotMapping:
    """A mapping by name (a file in :data:`MAPPINGS_DIR`, e.g. ``droid``) or path; None → ``droid``."""
    return load_mapping_file(name_or_path, LeRobotMapping, MAPPINGS_DIR, LeRobotError, "mapping")


def load_mapping_file(name_or_path: Any, cls: type, directory: Path, error: type[DatasetError], what: str) -> Any:
    """``name_or_path`` as a ``cls`` mapping: an instance as is, a YAML path, or the name of a shipped file in
    ``directory`` (None → ``droid``); ``error`` names the file and every invalid key (``what``: for the message)."""
    if isinstance(name_or_path, cls):
        return name_or_path
    p = Path(name_or_path or "droid")
    if not p.is_file():
        shipped = directory / f"{p.name}.yaml"
        if not shipped.is_file():
            names = sorted(f.stem for f in directory.glob("*.yaml"))
            raise error(p, [f"{what} file not found (shipped {what}s: {names})"])
        p = shipped
    try:
        return cls.model_validate(yaml.safe_load(p.read_text()) or {})
    except ValidationError as exc:
        raise error(p, [f"{k}: {r}" for k, r in format_validation_error(exc)]) from exc


def is_lerobot_dataset(root: str | Path) -> bool:
    """True when ``root`` is a LeRobot dataset (``meta/info.json``) rather than a vidplan one (``meta.json``)."""
    return (Path(root) / "meta" / "info.json").is_file() and not (Path(root) / "meta.json").is_file()


def parse_episode_selection(spec: str | None) -> list[int] | None:
    """``"0:10"``, ``"3,5,8"``, ``"0:100:10"`` or ``"0:5,20"`` → episode indices; None/"" → all."""
    if not spec:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                nums = [int(x) for x in part.split(":")]
                out += list(range(*nums))
            else:
                out.append(int(part))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"episode selection {spec!r}: {part!r} is not N, A:B or A:B:STEP") from exc
    return sorted(set(out))


@dataclass
class LeRobotEpisode:
    """One episode of a LeRobot dataset: where its rows and video spans are."""

    index: int
    length: int  # frames at the dataset's fps
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float, float | None]] = field(default_factory=dict)  # key → (file, from, to) [s]


def _read_parquet(path: Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name).to_pylist()
        out[name] = np.asarray(col, dtype=object) if col and isinstance(col[0], str) else np.asarray(col)
    return out


class LeRobotSource:
    """A LeRobot dataset read in place (see the module docstring).

    Args:
        root: dataset directory (``meta/info.json``).
        mapping: a :class:`LeRobotMapping`, a shipped mapping name (``droid``) or a YAML path.
        episodes: episode indices to use (default: all).

    Raises:
        LeRobotError: no ``info.json``, an unsupported version, a mapped key missing from the features, a selected
            episode unknown or its files missing — every problem listed before any frame is decoded.
    """

    def __init__(self, root: str | Path, mapping: str | Path | LeRobotMapping | None = None,
                 episodes: Sequence[int] | None = None):
        self.root = Path(root)
        self.mapping = load_mapping(mapping)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise LeRobotError(self.root, ["meta/info.json not found (not a LeRobot dataset)"])
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        self.version = str(self.info.get("codebase_version", ""))
        if not self.version.startswith(("v2.", "v3.")):
            raise LeRobotError(self.root, [f"meta/info.json: codebase_version {self.version!r} is not supported "
                                           f"(v2.0, v2.1 or v3.0)"])
        self.fps = float(self.info["fps"])
        feats = self.info.get("features", {})
        problems = [f"meta/info.json: mapped feature {k!r} is not a feature of this dataset (features: "
                    f"{sorted(feats)[:30]})" for k in self.mapping.features()
                    if k not in feats and k != "task"]
        for view, k in self.mapping.cameras.items():
            if k in feats and feats[k].get("dtype") != "video":
                problems.append(f"meta/info.json: camera {view} maps to {k!r}, whose dtype is "
                                f"{feats[k].get('dtype')!r}, not 'video'")
        if problems:
            raise LeRobotError(self.root, problems)
        self._tasks = self._read_tasks()
        all_eps = self._read_episodes()
        if episodes is not None:
            unknown = sorted(set(episodes) - set(all_eps))
            if unknown:
                raise LeRobotError(self.root, [f"episode(s) {unknown[:10]} not in the dataset (it has "
                                               f"{len(all_eps)} episodes)"])
            all_eps = {i: all_eps[i] for i in sorted(set(episodes))}
        self.episodes: list[LeRobotEpisode] = list(all_eps.values())
        self._file: tuple[Any, dict[str, np.ndarray]] = (None, {})
        missing = sorted({str(p.relative_to(self.root)) for e in self.episodes
                          for p in [e.data_file, *(v[0] for v in e.videos.values())] if not p.is_file()})
        if missing:
            raise LeRobotError(self.root, [f"{m}: file not found" for m in missing])

    # ------------------------------------------------------------------------------------------ metadata
    def _read_tasks(self) -> dict[int, str]:
        meta = self.root / "meta"
        if (meta / "tasks.jsonl").is_file():
            rows = [json.loads(line) for line in (meta / "tasks.jsonl").read_text().splitlines() if line.strip()]
            return {int(r["task_index"]): str(r["task"]) for r in rows}
        if (meta / "tasks.parquet").is_file():
            # v3: the task text is the (pandas) index of the table, stored as a column by pyarrow
            t = _read_parquet(meta / "tasks.parquet")
            text = t["task"] if "task" in t else next(v for k, v in t.items() if k != "task_index")
            return {int(i): str(s) for i, s in zip(t["task_index"], text, strict=True)}
        return {}

    def _read_episodes(self) -> dict[int, LeRobotEpisode]:
        meta = self.root / "meta"
        keys = sorted(set(self.mapping.cameras.values()))
        out: dict[int, LeRobotEpisode] = {}
        if self.version.startswith("v2."):
            path = meta / "episodes.jsonl"
            if not path.is_file():
                raise LeRobotError(self.root, ["meta/episodes.jsonl not found (v2 layout)"])
            size = int(self.info.get("chunks_size", 1000))
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                r = json.loads(line)
                i = int(r["episode_index"])
                fmt = dict(episode_chunk=i // size, episode_index=i)
                vids = {k: (self.root / self.info["video_path"].format(video_key=k, **fmt), 0.0, None) for k in keys}
                out[i] = LeRobotEpisode(i, int(r["length"]), list(r.get("tasks", [])),
                                        self.root / self.info["data_path"].format(**fmt), vids)
            return out
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotError(self.root, ["meta/episodes/chunk-*/file-*.parquet not found (v3 layout)"])
        for f in files:
            t = _read_parquet(f)
            need = ["episode_index", "length", "data/chunk_index", "data/file_index"]
            need += [f"videos/{k}/{c}" for k in keys for c in ("chunk_index", "file_index", "from_timestamp")]
            absent = [c for c in need if c not in t]
            if absent:
                raise LeRobotError(self.root, [f"{f.relative_to(self.root)}: column(s) {absent} missing"])
            for n in range(len(t["episode_index"])):
                i = int(t["episode_index"][n])
                vids = {}
                for k in keys:
                    path = self.root / self.info["video_path"].format(
                        video_key=k, chunk_index=int(t[f"videos/{k}/chunk_index"][n]),
                        file_index=int(t[f"videos/{k}/file_index"][n]))
                    to = t.get(f"videos/{k}/to_timestamp")
                    vids[k] = (path, float(t[f"videos/{k}/from_timestamp"][n]), None if to is None else float(to[n]))
                data = self.root / self.info["data_path"].format(chunk_index=int(t["data/chunk_index"][n]),
                                                                 file_index=int(t["data/file_index"][n]))
                tasks = t["tasks"][n] if "tasks" in t else []
                out[i] = LeRobotEpisode(i, int(t["length"][n]), [str(x) for x in tasks], data, vids)
        return out

    # ------------------------------------------------------------------------------------------ signals
    def table(self, ep: LeRobotEpisode) -> dict[str, np.ndarray]:
        """The episode's parquet rows (mapped columns + timestamp, frame_index, task_index), ordered by frame."""
        import pyarrow.parquet as pq

        m = self.mapping
        want = {"timestamp", "frame_index", "episode_index", "task_index"} | {
            k for k in m.features() if k not in m.cameras.values()}
        have = set(pq.read_schema(ep.data_file).names)
        where = f"{ep.data_file.relative_to(self.root)}"
        missing = sorted(k for k in want - have if k not in ("task_index", "episode_index", "frame_index"))
        if missing:
            raise LeRobotError(self.root, [f"{where}: column(s) {missing} missing"])
        cols = sorted(want & have)
        if self.version.startswith("v3."):  # many episodes per file: read it once, index its episodes once
            if self._file[0] != (ep.data_file, tuple(cols)):
                whole = _read_parquet(ep.data_file, cols)
                order = np.argsort(np.asarray(whole["episode_index"]), kind="stable")
                whole = {k: v[order] for k, v in whole.items()}
                ids, first, count = np.unique(whole["episode_index"], return_index=True, return_counts=True)
                spans = {int(i): (int(a), int(a + n)) for i, a, n in zip(ids, first, count, strict=True)}
                self._file = ((ep.data_file, tuple(cols)), (whole, spans))
            whole, spans = self._file[1]
            a, b = spans.get(ep.index, (0, 0))
            t = {k: v[a:b] for k, v in whole.items()}
        else:
            t = _read_parquet(ep.data_file, cols)
        if len(t["timestamp"]) != ep.length:
            raise LeRobotError(self.root, [f"{where}: episode {ep.index} has {len(t['timestamp'])} rows, the "
                                           f"metadata says {ep.length}"])
        if "frame_index" in t:
            order = np.argsort(t["frame_index"], kind="stable")
            t = {k: v[order] for k, v in t.items()}
        return t

    def signals(self, ep: LeRobotEpisode, fps: float = MODEL_RATE_HZ) -> dict[str, Any]:
        """The episode's non-image signals at ``fps`` [Hz] (shard keys except ``frames``) plus labels.

        Returns a dict: ``actions`` (T, 7), ``ee_pose`` (T, 6), ``gripper`` (T,), ``joint_positions`` (T, J) float32,
        ``timestamps_ns`` (T,) int64 (episode time), ``video_times`` (T,) float64 [s] (episode time of the source
        frame each model frame shows), ``instruction`` str, ``success`` bool.
        """
        m = self.mapping
        t = self.table(ep)
        where = str(ep.data_file.relative_to(self.root))
        ts = np.asarray(t["timestamp"], dtype=np.float64)
        grid = np.arange(ts[0], ts[-1] + 1e-6, 1.0 / fps)
        j = np.clip(np.searchsorted(ts, grid), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(grid), int)
        if len(ts) > 1:
            j = np.where(grid - ts[j - 1] <= ts[j] - grid, j - 1, j)
        rows = {k: v[j] for k, v in t.items()}
        ee = m.ee_pose.take(rows, where)
        if ee.shape[1] != 6:
            raise LeRobotError(self.root, [f"{where}: ee_pose {m.ee_pose.key!r} gives {ee.shape[1]} values, not 6"])
        grip = m.gripper.take(rows, where)[:, 0]
        if m.gripper_invert:
            grip = 1.0 - grip
        if m.action == "measured":
            actions = np.concatenate([ee, grip[:, None]], axis=1)
        else:
            actions = m.action.take(rows, where)
            if actions.shape[1] != 7:
                raise LeRobotError(self.root, [f"{where}: action {m.action.key!r} gives {actions.shape[1]} values, "
                                               "not 7 (pose + gripper)"])
        joints = m.joint_positions.take(rows, where) if m.joint_positions is not None else np.zeros((len(grid), 0))
        out: dict[str, Any] = {"actions": actions.astype(np.float32), "ee_pose": ee.astype(np.float32),
                               "gripper": grip.astype(np.float32), "joint_positions": joints.astype(np.float32),
                               "timestamps_ns": np.round(grid * 1e9).astype(np.int64),
                               "video_times": ts[j]}
        for k in ("actions", "ee_pose", "gripper", "joint_positions"):
            if not np.isfinite(out[k]).all():
                raise LeRobotError(self.root, [f"{where}: non-finite values in {k} of episode {ep.index}"])
        out["instruction"] = self._instruction(ep, t)
        out["success"] = (bool(np.asarray(t[m.success]).reshape(len(ts), -1)[-1, 0])
                          if isinstance(m.success, str) else bool(m.success))
        return out

    def _instruction(self, ep: LeRobotEpisode, t: dict[str, np.ndarray]) -> str:
        key = self.mapping.instruction
        if key == "task":
            if "task_index" in t and len(t["task_index"]) and int(t["task_index"][0]) in self._tasks:
                return self._tasks[int(t["task_index"][0])]
            return ep.tasks[0] if ep.tasks else ""
        return next((str(s) for s in t[key] if str(s).strip()), "")

    # ------------------------------------------------------------------------------------------ frames
    def frames(self, ep: LeRobotEpisode, times: np.ndarray, views: ViewPreparation) -> np.ndarray:
        """Frames of every view at episode times ``times`` [s] (increasing), prepared by ``views``.

        Returns:
            uint8 (N, 3, 3, H, W), views in :data:`VIEW_ORDER`.

        Raises:
            LeRobotError: a video without a frame within half a source frame of a requested time (shorter than
                its parquet index), or undecodable.
        """
        times = np.asarray(times, dtype=np.float64)
        out = np.zeros((len(times), len(VIEW_ORDER), 3, views.height, views.width), dtype=np.uint8)
        for vi, view in enumerate(VIEW_ORDER):
            path, t0, _ = ep.videos[self.mapping.cameras[view]]
            for n, img in enumerate(_decode_at(path, t0 + times, tol=0.5 / self.fps + 1e-4, root=self.root)):
                out[n, vi] = views.prepare_one(view, img).transpose(2, 0, 1)
        return out

    def video_size(self, view: str) -> tuple[int, int] | None:
        """(H, W) of a view's video from ``info.json`` (None if not recorded)."""
        f = self.info.get("features", {}).get(self.mapping.cameras[view], {})
        vi = f.get("info") or {}
        if "video.height" in vi:
            return int(vi["video.height"]), int(vi["video.width"])
        return None


def _decode_at(path: Path, times: np.ndarray, tol: float, root: Path) -> Iterable[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of the video at ``path`` nearest to each of the increasing ``times`` [s] (file
    time); decodes from the keyframe before the first time and stops after the last."""
    import av

    rel = path.relative_to(root) if path.is_relative_to(root) else path
    if len(times) == 0:
        return
    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.* — name the file
        raise LeRobotError(root, [f"{rel}: cannot be opened as a video ({exc})"]) from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        start = float(times[0]) - 1.0
        if start > 0:
            container.seek(int(start / tb), stream=stream, backward=True, any_frame=False)
        i, prev, prev_t = 0, None, -np.inf
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                ft = frame.pts * tb
                while i < len(times) and ft >= times[i]:
                    pick, pt = (frame, ft) if prev is None or ft - times[i] <= times[i] - prev_t else (prev, prev_t)
                    if abs(pt - times[i]) > tol:
                        raise LeRobotError(root, [f"{rel}: no frame within {tol:.3f} s of {times[i]:.3f} s (nearest "
                                                  f"{pt:.3f} s)"])
                    yield pick.to_ndarray(format="rgb24")
                    i += 1
                if i == len(times):
                    return
                prev, prev_t = frame, ft
        except av.error.FFmpegError as exc:
            raise LeRobotError(root, [f"{rel}: decoding failed near {prev_t:.3f} s ({exc})"]) from exc
        while i < len(times):  # after the last frame: it may still be within tolerance of the last times
            if prev is None or abs(prev_t - times[i]) > tol:
                last = "no frames" if prev is None else f"its last frame is at {prev_t:.3f} s"
                raise LeRobotError(root, [f"{rel}: video ends before {times[i]:.3f} s ({last}); it is shorter than "
                                          f"its parquet index"])
            yield prev.to_ndarray(format="rgb24")
            i += 1
