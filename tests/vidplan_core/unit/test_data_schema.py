"""Dataset schema: writing and validating shards, statistics, the episode split, windows and value targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidplan_core.data.dataset import FrameCaptionDataset, WindowDataset, window_starts
from vidplan_core.data.schema import (
    DatasetError,
    DatasetMeta,
    EpisodeMeta,
    load_meta,
    mc_values,
    save_meta,
    split_episodes,
    validate_dataset,
    write_shard,
)
from vidplan_core.spaces import VIEW_ORDER, ActionNormalizer

H, W, J = 8, 12, 7


def _episode(T: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = np.zeros((T, 3, 3, H, W), np.uint8)
    frames[:] = (np.arange(T) * 10 % 256).astype(np.uint8)[:, None, None, None, None]  # value = 10·frame
    actions = np.concatenate([rng.uniform(0.3, 0.6, (T, 3)), np.tile([np.pi - 0.01, 0.0, 0.1], (T, 1)),
                              rng.integers(0, 2, (T, 1))], axis=1).astype(np.float32)
    return {"frames": frames, "actions": actions, "ee_pose": actions[:, :6].copy(), "gripper": actions[:, 6].copy(),
            "joint_positions": rng.normal(size=(T, J)).astype(np.float32),
            "timestamps_ns": (np.arange(T) * 200_000_000).astype(np.int64)}


def make_dataset(root, lengths=(9, 7, 6), successes=(True, False, True), splits=("train", "train", "val")):
    eps, acts = [], []
    for i, (T, ok, sp) in enumerate(zip(lengths, successes, splits, strict=True)):
        data = _episode(T, i)
        write_shard(root / "shards" / f"ep{i}.safetensors", data)
        acts.append(data["actions"])
        eps.append(EpisodeMeta(index=i, name=f"ep{i}", shard=f"shards/ep{i}.safetensors", length=T, task="put",
                               instruction=f"put the red cube in the bowl {i % 2}", success=ok, seed=i, split=sp))
    meta = DatasetMeta(image_size={v: (H, W) for v in VIEW_ORDER},
                       action_stats=ActionNormalizer.fit(np.concatenate(acts)).state_dict(), value_gamma=0.9,
                       joint_names=[f"j{k}" for k in range(J)], episodes=eps)
    save_meta(root, meta)
    return meta


def test_roundtrip_and_windows(tmp_path):
    make_dataset(tmp_path)
    meta = validate_dataset(tmp_path)
    assert meta.view_hw == (H, W) and len(meta.split("train")) == 2 and len(meta.split("val")) == 1
    ds = WindowDataset(tmp_path, "train", history=3, future=2)
    # padded starts -2..T-5 per episode: 9 → 7 windows, 7 → 5 windows
    assert len(ds) == len(window_starts(9, 3, 2)) + len(window_starts(7, 3, 2)) == 7 + 5
    first = ds[0]
    assert first["frames"].shape == (5, 3, 3, H, W)
    assert first["valid"].tolist() == [False, False, True, True, True]
    # padded history repeats frame 0; frames are in [0, 1]; frame k has value 10k/255
    vals = first["frames"][:, 0, 0, 0, 0].tolist()
    assert vals == pytest.approx([0, 0, 0, 10 / 255, 20 / 255], abs=1e-6)
    last = ds[6]  # episode 0's last window ends on its last frame
    assert int(last["start"]) == 4 and last["value"][-1].item() == pytest.approx(1.0)
    assert last["value"][0].item() == pytest.approx(0.9 ** 4)
    # normalised actions use the stored statistics
    norm = meta.normalizer()
    assert np.allclose(first["actions_norm"].numpy(), norm.normalize(first["actions"].numpy().astype(np.float64)),
                       atol=1e-5)
    # an unsuccessful episode has value 0 everywhere
    assert float(ds[7]["value"].abs().sum()) == 0.0 and float(ds[7]["success"]) == 0.0
    no_pad = WindowDataset(tmp_path, "val", history=3, future=2, pad_start=False)
    assert len(no_pad) == 2 and bool(no_pad[0]["valid"].all())


def test_frame_captions(tmp_path):
    make_dataset(tmp_path)
    ds = FrameCaptionDataset(tmp_path, "train")
    assert len(ds) == 9 + 7
    assert ds.captions == ["put the red cube in the bowl 0", "put the red cube in the bowl 1"]
    item = ds[10]
    assert item["instruction"] == ds.captions[int(item["task_id"])] and item["frames"].shape == (3, 3, H, W)


def test_mc_values_and_split():
    v = mc_values(4, True, 0.5)
    assert v.tolist() == [0.125, 0.25, 0.5, 1.0]
    assert mc_values(4, False, 0.5).tolist() == [0, 0, 0, 0]
    labels = split_episodes(10, 0.2, seed=3)
    assert labels.count("val") == 2 and labels == split_episodes(10, 0.2, seed=3)
    assert split_episodes(2, 0.1).count("val") == 1  # at least one validation episode
    assert split_episodes(1, 0.5) == ["train"]
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(3, 1.0)


def test_inconsistent_shards_fail_before_loading(tmp_path):
    make_dataset(tmp_path)
    # a shard whose frames have another size, and one whose actions are 6-D
    bad = _episode(7, 1)
    bad["frames"] = np.zeros((7, 3, 3, H + 2, W), np.uint8)
    from safetensors.numpy import save_file

    save_file(bad, str(tmp_path / "shards" / "ep1.safetensors"))
    bad2 = _episode(6, 2)
    bad2["actions"] = bad2["actions"][:, :6].copy()
    save_file(bad2, str(tmp_path / "shards" / "ep2.safetensors"))
    with pytest.raises(DatasetError) as err:
        WindowDataset(tmp_path, "all", history=2, future=1)
    text = str(err.value)
    assert "shards/ep1.safetensors" in text and "'frames'" in text and f"(7, 3, 3, {H}, {W})" in text
    assert "shards/ep2.safetensors" in text and "'actions'" in text and "(6, 7)" in text


def test_length_and_missing_files(tmp_path):
    meta = make_dataset(tmp_path)
    data = json.loads((tmp_path / "meta.json").read_text())
    data["episodes"][0]["length"] = 10  # shard holds 9 frames
    (tmp_path / "meta.json").write_text(json.dumps(data))
    (tmp_path / "shards" / "ep2.safetensors").unlink()
    with pytest.raises(DatasetError) as err:
        validate_dataset(tmp_path)
    assert "ep0" in str(err.value) and "(10, 3, 3" in str(err.value)
    assert "ep2 not found" in str(err.value)
    assert meta.schema_version == load_meta(tmp_path).schema_version


def test_bad_meta_and_shard_writer(tmp_path):
    with pytest.raises(DatasetError, match=r"meta\.json not found"):
        validate_dataset(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"schema_version": "other/9", "image_size": {}, "episodes": [],
                                                    "action_stats": {}}))
    with pytest.raises(DatasetError, match="schema version"):
        load_meta(tmp_path)
    data = _episode(3, 0)
    data["frames"] = data["frames"].astype(np.float32)
    with pytest.raises(DatasetError, match="'frames' has dtype float32, expected uint8"):
        write_shard(tmp_path / "x.safetensors", data)
    assert not (tmp_path / "x.safetensors").exists()
