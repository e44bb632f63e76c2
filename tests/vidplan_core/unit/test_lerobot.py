"""LeRobot / DROID datasets: read in place (the training data source) and imported into shards — both layouts
(v2.1, v3.0) with real mp4 files, the shipped DROID mapping, and the errors of bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lerobot_fixture import CAMS, assert_windows_agree, instruction, signals, write_dataset

from vidplan_core.data.lerobot import LeRobotError, LeRobotSource, load_mapping, parse_episode_selection
from vidplan_core.data.lerobot_import import import_lerobot
from vidplan_core.data.lerobot_stream import LeRobotOptions
from vidplan_core.data.schema import validate_dataset
from vidplan_core.spaces import ViewPreparation

LENGTHS = (31, 25, 19)  # frames at 15 Hz → 11, 9, 7 frames at 5 Hz


def _which(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source frame, episode, view) each decoded frame shows, from its flat colour (see lerobot_fixture)."""
    m = frames.astype(np.float64).mean(axis=(-2, -1))  # (N, V, 3)
    return np.round(m[..., 0] / 8), np.round((m[..., 1] - 20) / 40), np.round((m[..., 2] - 30) / 60)


@pytest.fixture(scope="module", params=["v2.1", "v3.0"])
def lerobot_dir(request, tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp(request.param.replace(".", "")) / "ds", request.param, LENGTHS)


def test_episodes_signals_and_frames_at_the_model_rate(lerobot_dir):
    src = LeRobotSource(lerobot_dir, "droid")
    assert [(e.index, e.length) for e in src.episodes] == [(0, 31), (1, 25), (2, 19)]
    views = ViewPreparation(24, 32)
    for ep in src.episodes:
        s = src.signals(ep, fps=5.0)
        k = np.arange(0, ep.length, 3)  # 15 Hz source, 5 Hz model: every third frame
        assert len(s["timestamps_ns"]) == len(k)
        np.testing.assert_allclose(s["video_times"], k / 15, atol=1e-6)
        np.testing.assert_array_equal(s["timestamps_ns"], np.round(k / 15 * 1e9).astype(np.int64))
        want = signals(ep.index, ep.length)
        np.testing.assert_allclose(s["ee_pose"], want["cart"][k], atol=1e-6)
        np.testing.assert_allclose(s["gripper"], want["grip"][k, 0], atol=1e-6)
        np.testing.assert_allclose(s["actions"], np.concatenate([want["cart"], want["grip"]], 1)[k], atol=1e-6)
        np.testing.assert_allclose(s["joint_positions"], want["joints"][k], atol=1e-6)
        assert s["instruction"] == instruction(ep.index)
        assert s["success"] == (ep.index != 1)
        frames = src.frames(ep, s["video_times"], views)
        assert frames.shape == (len(k), 3, 3, 24, 32) and frames.dtype == np.uint8
        f, e, v = _which(frames)
        np.testing.assert_array_equal(f, np.repeat(k[:, None], 3, 1))  # the right source frame, despite h264
        assert (e == ep.index).all()
        np.testing.assert_array_equal(v, np.tile(np.arange(3), (len(k), 1)))


def test_av1_videos_decode_to_the_right_frames(tmp_path):
    """AV1 (libsvtav1 → dav1d), LeRobot's default codec, in the v3 layout (episodes concatenated in one file)."""
    src = LeRobotSource(write_dataset(tmp_path / "av1", "v3.0", (16, 13), success=(True, True), codec="libsvtav1"))
    for ep in src.episodes:
        s = src.signals(ep)
        f, e, v = _which(src.frames(ep, s["video_times"], ViewPreparation(24, 32)))
        k = np.arange(0, ep.length, 3)
        np.testing.assert_array_equal(f, np.repeat(k[:, None], 3, 1))
        assert (e == ep.index).all() and (v == np.arange(3)).all()


def test_import_and_in_place_windows_agree(lerobot_dir, tmp_path):
    """The two paths — shards written by `vidplan data import lerobot` and windows decoded in place — give the same
    windows: frames, actions, values, instructions."""
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    out = tmp_path / "shards"
    res = CliRunner().invoke(app, ["data", "import", "lerobot", str(lerobot_dir), "--out", str(out), "--size",
                                   "16x16", "--val-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    assert "3 episodes (2 train, 1 val), 27 frames at 5 Hz" in res.output
    meta = validate_dataset(out)
    assert [e.instruction for e in meta.episodes] == [instruction(i) for i in range(3)]
    assert [e.success for e in meta.episodes] == [True, False, True]
    opts = LeRobotOptions(val_fraction=0.34)
    assert_windows_agree(out, lerobot_dir, opts)


def test_training_reads_a_lerobot_dataset_in_place(lerobot_dir, tmp_path):
    """semantic → vae → world model, each a few steps on the LeRobot dataset itself (no shards written); the world
    model with gradient checkpointing, accumulation and EMA (the full recipe's options)."""
    import torch
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    runs = tmp_path / "runs"
    common = ["--data", str(lerobot_dir), "--max-steps", "2", "--set", "train.progress=false", "--set",
              "train.val_every=2", "--set", "data.lerobot.mapping=droid", "--set", "data.lerobot.val_fraction=0.34"]
    inits = {"world-model": [f"init.semantic={runs / 'semantic' / 'final'}",
                             f"init.autoencoder={runs / 'vae' / 'final'}", "data.cache_latents=false",
                             # the full recipe's training options, on a real diffusers UNet
                             "train.gradient_checkpointing=true", "train.grad_accum_steps=2", "train.ema_decay=0.9"]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind in ("semantic", "vae", "world-model"):
            sets = [a for s in inits.get(kind, []) for a in ("--set", s)]
            res = CliRunner().invoke(app, ["train", kind, "--config", f"tiny-{kind}", "--out", str(runs / kind),
                                           *common, *sets])
            assert res.exit_code == 0, f"train {kind}: {res.output}\n{res.exception!r}"
            assert (runs / kind / "final").is_dir()
        # latents are not cached for a dataset read in place: a clear error before any work
        res = CliRunner().invoke(app, ["train", "world-model", "--config", "tiny-world-model", "--out",
                                       str(tmp_path / "wm2"), *common, "--set", inits["world-model"][0], "--set",
                                       inits["world-model"][1]])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 2 and "data.cache_latents" in res.output, res.output


def test_import_resumes_and_refuses_other_settings(tmp_path):
    src = write_dataset(tmp_path / "ds", "v3.0", LENGTHS)
    out = tmp_path / "out"
    import_lerobot(src, out, (16, 16), episodes=[0, 2])
    first = (out / "shards" / "episode_000002.safetensors").read_bytes()
    (out / "shards" / "episode_000002.safetensors").unlink()  # as if interrupted before the last shard
    (out / "meta.json").unlink()
    meta = import_lerobot(src, out, (16, 16), episodes=[0, 2])
    assert [e.name for e in meta.episodes] == ["episode_000000", "episode_000002"]
    assert (out / "shards" / "episode_000002.safetensors").read_bytes() == first
    validate_dataset(out)
    with pytest.raises(LeRobotError, match=r"other settings.*size"):
        import_lerobot(src, out, (24, 24), episodes=[0, 2])


def test_bad_input_is_named_before_any_work(tmp_path):
    src = write_dataset(tmp_path / "ds", "v2.1", LENGTHS, short_video=1)
    # a video shorter than its parquet index: the file and the time are named
    s = LeRobotSource(src)
    ep = s.episodes[1]
    with pytest.raises(LeRobotError, match=r"wrist_left/episode_000001\.mp4: video ends before"):
        s.frames(ep, s.signals(ep)["video_times"], ViewPreparation(8, 8))
    with pytest.raises(LeRobotError, match=r"episode\(s\) \[7\] not in the dataset"):
        LeRobotSource(src, episodes=[0, 7])
    # a mapped feature the dataset does not have
    info = json.loads((src / "meta" / "info.json").read_text())
    del info["features"]["observation.state.gripper_position"]
    (src / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(LeRobotError, match=r"'observation.state.gripper_position' is not a feature"):
        LeRobotSource(src)
    # a missing video file
    bad = write_dataset(tmp_path / "ds2", "v2.1", LENGTHS)
    shutil.rmtree(bad / "videos" / "chunk-000" / CAMS[0])
    with pytest.raises(LeRobotError, match=r"exterior_1_left/episode_000000.mp4: file not found"):
        LeRobotSource(bad)
    # not a LeRobot dataset; an unknown mapping; a bad selection
    with pytest.raises(LeRobotError, match=r"meta/info.json not found"):
        LeRobotSource(tmp_path)
    with pytest.raises(LeRobotError, match="shipped mappings: \\['droid'\\]"):
        load_mapping("nosuch")
    with pytest.raises(ValueError, match=r"'x' is not N, A:B or A:B:STEP"):
        parse_episode_selection("0:3,x")
    assert parse_episode_selection("0:3,7,2:10:4") == [0, 1, 2, 6, 7]


def test_the_shipped_droid_mapping_names_droids_keys():
    m = load_mapping("droid")
    assert m.cameras == {"left": CAMS[0], "right": CAMS[1], "wrist": CAMS[2]}
    assert m.ee_pose.key == "observation.state.cartesian_position" and m.ee_pose.index == (0, 6)
    assert m.gripper.key == "observation.state.gripper_position" and not m.gripper_invert
    assert (m.instruction, m.success) == ("language_instruction", "is_episode_successful")
    assert len(m.joint_names) == 7
