"""Write small LeRobot datasets in the documented layouts (v2.1 and v3.0) with real mp4 files, for tests.

Every frame of episode e at source frame k shows a known picture: each view a flat colour whose red channel encodes
the frame index (8·k), green the episode (40·e + 20), blue the view (60·v + 30) — so a decoded, resized frame says
which (episode, frame, view) it came from even after lossy compression. Signals are known functions of (e, k):
cartesian_position = [0.4 + 0.001k, 0.01e, 0.3, 0.1, 0.2, 0.3 + 0.01k], gripper = k / (length − 1).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

CAMS = ("observation.images.exterior_1_left", "observation.images.exterior_2_left", "observation.images.wrist_left")
H, W = 48, 64


def picture(e: int, k: int, v: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (8 * k) % 256
    img[..., 1] = 40 * e + 20
    img[..., 2] = 60 * v + 30
    return img


def signals(e: int, length: int) -> dict[str, np.ndarray]:
    k = np.arange(length, dtype=np.float64)
    cart = np.stack([0.4 + 0.001 * k, 0.01 * e + 0 * k, 0.3 + 0 * k, 0.1 + 0 * k, 0.2 + 0 * k, 0.3 + 0.01 * k], 1)
    return {"cart": cart, "grip": (k / max(length - 1, 1))[:, None], "joints": np.tile(np.arange(7) * 0.1, (length, 1))}


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "libx264") -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = Fraction(1, fps)
        if codec == "libx264":
            s.options = {"crf": "10", "g": "4"}
        for n, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = n
            f.time_base = Fraction(1, fps)
            c.mux(s.encode(f))
        c.mux(s.encode())


def _features(fps: int) -> dict:
    vid = {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
           "info": {"video.height": H, "video.width": W, "video.fps": fps, "video.codec": "h264"}}
    return {**{c: vid for c in CAMS},
            "observation.state.cartesian_position": {"dtype": "float64", "shape": [6]},
            "observation.state.gripper_position": {"dtype": "float64", "shape": [1]},
            "observation.state.joint_position": {"dtype": "float64", "shape": [7]},
            "language_instruction": {"dtype": "string", "shape": [1]},
            "is_episode_successful": {"dtype": "bool", "shape": [1]},
            "timestamp": {"dtype": "float32", "shape": [1]}, "frame_index": {"dtype": "int64", "shape": [1]},
            "episode_index": {"dtype": "int64", "shape": [1]}, "index": {"dtype": "int64", "shape": [1]},
            "task_index": {"dtype": "int64", "shape": [1]}}


def instruction(e: int) -> str:
    return f"put the marker {e} in the bowl"


def _rows(e: int, length: int, fps: int, start: int, success: bool) -> dict[str, list]:
    s = signals(e, length)
    return {"observation.state.cartesian_position": s["cart"].tolist(),
            "observation.state.gripper_position": s["grip"].tolist(),
            "observation.state.joint_position": s["joints"].tolist(),
            "language_instruction": [instruction(e)] * length,
            "is_episode_successful": [success] * length,
            "timestamp": (np.arange(length) / fps).astype(np.float32).tolist(),
            "frame_index": list(range(length)), "episode_index": [e] * length,
            "index": list(range(start, start + length)), "task_index": [e] * length}


def write_dataset(root: Path, version: str = "v3.0", lengths: tuple[int, ...] = (31, 25, 19), fps: int = 15,
                  success: tuple[bool, ...] = (True, False, True), short_video: int | None = None,
                  codec: str = "libx264") -> Path:
    """A LeRobot dataset at ``root``; ``short_video=e`` cuts episode e's wrist video by 6 frames (bad input);
    ``codec``: libx264 (h264) or libsvtav1 (AV1, LeRobot's default)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta").mkdir(parents=True, exist_ok=True)
    n = len(lengths)
    info = {"codebase_version": version, "robot_type": "franka", "fps": fps, "total_episodes": n,
            "total_frames": int(sum(lengths)), "chunks_size": 1000, "features": _features(fps),
            "splits": {"train": f"0:{n}"}}
    pics = {(e, v): [picture(e, k, v) for k in range(L)] for e, L in enumerate(lengths) for v in range(3)}
    if short_video is not None:
        pics[(short_video, 2)] = pics[(short_video, 2)][:-6]
    if version.startswith("v2"):
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        start = 0
        eps, tasks = [], []
        for e, L in enumerate(lengths):
            p = root / info["data_path"].format(episode_chunk=0, episode_index=e)
            p.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(_rows(e, L, fps, start, success[e])), p)
            start += L
            for v, cam in enumerate(CAMS):
                write_video(root / info["video_path"].format(episode_chunk=0, video_key=cam, episode_index=e),
                            pics[(e, v)], fps, codec)
            eps.append({"episode_index": e, "tasks": [instruction(e)], "length": L})
            tasks.append({"task_index": e, "task": instruction(e)})
        (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eps))
        (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tasks))
    else:
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        rows: dict[str, list] = {}
        start = 0
        for e, L in enumerate(lengths):
            for k, v in _rows(e, L, fps, start, success[e]).items():
                rows.setdefault(k, []).extend(v)
            start += L
        p = root / info["data_path"].format(chunk_index=0, file_index=0)
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows), p)
        # all episodes concatenated in one file per camera; each episode is a [from, to) span of it
        ep_rows: dict[str, list] = {"episode_index": [], "tasks": [], "length": [], "data/chunk_index": [],
                                    "data/file_index": [], "dataset_from_index": [], "dataset_to_index": []}
        for cam in CAMS:
            for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
                ep_rows[f"videos/{cam}/{c}"] = []
        for v, cam in enumerate(CAMS):
            frames = [img for e in range(n) for img in pics[(e, v)]]
            write_video(root / info["video_path"].format(video_key=cam, chunk_index=0, file_index=0), frames, fps,
                        codec)
        start = 0
        for e, L in enumerate(lengths):
            ep_rows["episode_index"].append(e)
            ep_rows["tasks"].append([instruction(e)])
            ep_rows["length"].append(L)
            ep_rows["data/chunk_index"].append(0)
            ep_rows["data/file_index"].append(0)
            ep_rows["dataset_from_index"].append(start)
            ep_rows["dataset_to_index"].append(start + L)
            for v, cam in enumerate(CAMS):
                # an episode's span of the concatenated file (a shortened video shifts the spans after it)
                before = sum(len(pics[(q, v)]) for q in range(e))
                ep_rows[f"videos/{cam}/chunk_index"].append(0)
                ep_rows[f"videos/{cam}/file_index"].append(0)
                ep_rows[f"videos/{cam}/from_timestamp"].append(before / fps)
                ep_rows[f"videos/{cam}/to_timestamp"].append((before + len(pics[(e, v)])) / fps)
            start += L
        mp = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        mp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(ep_rows), mp)
        pq.write_table(pa.table({"task_index": list(range(n)),
                                 "__index_level_0__": [instruction(e) for e in range(n)]}),
                       root / "meta" / "tasks.parquet")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return root


def assert_windows_agree(shards: Path, root: Path, opts) -> None:
    """The training windows of imported ``shards`` equal those read in place from ``root`` (a LeRobot or RLDS
    dataset, training options ``opts``), split by split: frames, actions, values, instructions."""
    from vidplan_core.data.dataset import WindowDataset

    for split in ("train", "val"):
        a = WindowDataset(shards, split, history=2, future=3)
        b = WindowDataset(root, split, history=2, future=3, lerobot=opts, view_size=(16, 16))
        assert len(a) == len(b) > 0
        assert b.meta.action_stats == a.meta.action_stats
        for n in range(len(a)):
            x, y = a[n], b[n]
            for key in ("frames", "actions", "actions_norm", "value", "valid", "start"):
                np.testing.assert_array_equal(x[key].numpy(), y[key].numpy(), err_msg=f"{split} window {n}: {key}")
            assert x["instruction"] == y["instruction"]
