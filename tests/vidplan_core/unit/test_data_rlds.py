"""RLDS / TFDS datasets (DROID's RLDS release) without TensorFlow: the TFRecord reader (CRCs, corrupt and truncated
records), the source read in place (training) and the import into shards, on a dataset written in DROID's layout by
an independent TFRecord writer (tests/rlds_fixture.py), and the errors of bad input."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lerobot_fixture import assert_windows_agree
from rlds_fixture import CAMS, NAME, file_path, instruction, signals, write_rlds

from vidplan_core.data.dataset import WindowDataset
from vidplan_core.data.lerobot_stream import LeRobotOptions
from vidplan_core.data.rlds import RLDSError, RLDSSource, is_rlds_dataset, load_rlds_mapping, read_features_json
from vidplan_core.data.rlds_import import import_rlds
from vidplan_core.data.schema import validate_dataset
from vidplan_core.data.sources import EpisodeSource, is_in_place_dataset
from vidplan_core.data.tfrecord_io import TFRecordError, iter_records, masked_crc32c, scan_records
from vidplan_core.spaces import ViewPreparation

LENGTHS = (21, 19, 16)  # steps at 15 Hz → 7, 7, 6 frames at 5 Hz; episodes 0, 1 in shard 0, episode 2 in shard 1


def _which(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, episode, view) each decoded frame shows, from its flat colour (see rlds_fixture)."""
    m = frames.astype(np.float64).mean(axis=(-2, -1))  # (N, V, 3)
    return np.round(m[..., 0] / 8), np.round((m[..., 1] - 20) / 40), np.round((m[..., 2] - 30) / 60)


@pytest.fixture(scope="module")
def rlds_dir(tmp_path_factory) -> Path:
    return write_rlds(tmp_path_factory.mktemp("rlds"), LENGTHS)


def _copy(rlds_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / NAME / "1.0.0"
    shutil.copytree(rlds_dir, dst)
    return dst


def _shard(vdir: Path, i: int) -> Path:
    return vdir / f"{NAME}-train.tfrecord-{i:05d}-of-00002"


def test_tfrecord_framing_and_crcs(rlds_dir):
    import crc32c
    from tfrecord import TFRecordWriter, example_pb2

    # CRC-32C's check value, and the mask as the independent writer computes it
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    for data in (b"", b"x", bytes(range(256)) * 3):
        assert struct.pack("<I", masked_crc32c(data)) == TFRecordWriter.masked_crc(data)
    recs = list(iter_records(_shard(rlds_dir, 0)))
    assert len(recs) == 2 and recs[0][0] == 0
    offsets, err = scan_records(_shard(rlds_dir, 0))
    assert err is None and offsets == [off for off, _ in recs]
    ex = example_pb2.Example.FromString(recs[1][1]).features.feature
    assert len(ex[CAMS[0]].bytes_list.value) == LENGTHS[1]  # one JPEG per step
    assert len(ex["steps/observation/cartesian_position"].float_list.value) == LENGTHS[1] * 6  # steps × 6, flattened
    assert list(ex["steps/is_first"].int64_list.value[:2]) == [1, 0]  # booleans as int64


def test_features_json_flattened_as_the_example_keys(rlds_dir):
    feats = read_features_json(rlds_dir / "features.json")
    f = feats["steps/observation/cartesian_position"]
    assert (f.kind, f.dtype, f.shape, f.in_steps, f.size) == ("tensor", "float64", (6,), True, 6)
    im = feats[CAMS[2]]
    assert (im.kind, im.shape, im.encoding, im.in_steps) == ("image", (32, 48, 3), "jpeg", True)
    assert feats["episode_metadata/file_path"].kind == "text" and not feats["episode_metadata/file_path"].in_steps
    assert feats["steps/is_first"].shape == ()


def test_episodes_signals_and_frames_at_the_model_rate(rlds_dir):
    assert is_rlds_dataset(rlds_dir) and is_rlds_dataset(rlds_dir.parent) and is_in_place_dataset(rlds_dir)
    src = RLDSSource(rlds_dir.parent, "droid")  # the parent of a single version directory is accepted
    assert isinstance(src, EpisodeSource) and src.root == rlds_dir and src.fps == 15.0
    assert [(e.index, e.shard.name[-14:], e.record) for e in src.episodes] == [
        (0, "00000-of-00002", 0), (1, "00000-of-00002", 1), (2, "00001-of-00002", 0)]
    assert src.video_size("left") == (32, 48)
    views = ViewPreparation(16, 24)
    for ep in src.episodes:
        s = src.signals(ep, fps=5.0)
        length = LENGTHS[ep.index]
        k = np.arange(0, length, 3)  # 15 Hz steps, 5 Hz model: every third step
        assert len(s["timestamps_ns"]) == len(k)
        np.testing.assert_allclose(s["video_times"], k / 15, atol=1e-9)
        np.testing.assert_array_equal(s["timestamps_ns"], np.round(k / 15 * 1e9).astype(np.int64))
        want = signals(ep.index, length)
        # TFDS stores float64 features as float32: compare at float32 precision
        np.testing.assert_allclose(s["ee_pose"], want["cart"][k], atol=1e-6)
        np.testing.assert_allclose(s["gripper"], want["grip"][k, 0], atol=1e-6)
        np.testing.assert_allclose(s["actions"], np.concatenate([want["cart"], want["grip"]], 1)[k], atol=1e-6)
        np.testing.assert_allclose(s["joint_positions"], want["joints"][k], atol=1e-6)
        assert s["instruction"] == instruction(ep.index)  # the first step's is empty: the first non-empty one
        assert s["success"] == ("success" in file_path(ep.index, ep.index != 1)) == (ep.index != 1)
        frames = src.frames(ep, s["video_times"], views)
        assert frames.shape == (len(k), 3, 3, 16, 24) and frames.dtype == np.uint8
        f, e, v = _which(frames)
        np.testing.assert_array_equal(f, np.repeat(k[:, None], 3, 1))  # the right step of every view, despite JPEG
        assert (e == ep.index).all()
        np.testing.assert_array_equal(v, np.tile(np.arange(3), (len(k), 1)))
    # a selection of episodes, in another split name: named
    assert [e.index for e in RLDSSource(rlds_dir, episodes=[2, 0]).episodes] == [0, 2]
    with pytest.raises(RLDSError, match=r"episode\(s\) \[5\] not in split 'train' \(it has 3 episodes\)"):
        RLDSSource(rlds_dir, episodes=[0, 5])
    with pytest.raises(RLDSError, match=r"no split 'val' \(splits: \['train'\]\)"):
        RLDSSource(rlds_dir, split="val")


def _run_import(root: Path, out: Path, *args: str):
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    return CliRunner().invoke(app, ["data", "import", "rlds", str(root), "--out", str(out), *args])


def test_import_and_in_place_windows_agree(rlds_dir, tmp_path):
    """The two paths — shards written by `vidplan data import rlds` and windows read in place — give the same
    windows: frames, actions, values, instructions."""
    out = tmp_path / "shards"
    res = _run_import(rlds_dir, out, "--size", "16x16", "--val-fraction", "0.34")
    assert res.exit_code == 0, res.output
    assert "3 episodes (2 train, 1 val), 20 frames at 5 Hz, views 16x16" in res.output
    meta = validate_dataset(out)
    assert [e.instruction for e in meta.episodes] == [instruction(i) for i in range(3)]
    assert [e.success for e in meta.episodes] == [True, False, True]
    assert [e.length for e in meta.episodes] == [7, 7, 6]
    assert meta.source_rate_hz == 15.0 and meta.info["converter"] == "vidplan data import rlds"
    assert meta.info["tfds_name"] == NAME and meta.info["source_image_size"] == [32, 48]
    opts = LeRobotOptions(val_fraction=0.34)  # the same training options as for a LeRobot root
    assert_windows_agree(out, rlds_dir, opts)


def test_import_resumes_and_refuses_other_settings(rlds_dir, tmp_path):
    out = tmp_path / "out"
    import_rlds(rlds_dir, out, (16, 16), episodes=[0, 2])
    last = out / "shards" / "episode_000002.safetensors"
    first = last.read_bytes()
    last.unlink()  # as if interrupted before the last shard
    (out / "meta.json").unlink()
    meta = import_rlds(rlds_dir, out, (16, 16), episodes=[0, 2])
    assert [e.name for e in meta.episodes] == ["episode_000000", "episode_000002"]
    assert last.read_bytes() == first
    validate_dataset(out)
    with pytest.raises(RLDSError, match=r"other settings.*size"):
        import_rlds(rlds_dir, out, (24, 24), episodes=[0, 2])
    res = _run_import(rlds_dir, tmp_path / "bad", "--size", "16x16", "--mapping", "nosuch")
    assert res.exit_code == 2 and "shipped RLDS mappings: ['droid']" in res.output, res.output


def test_a_corrupt_record_is_named_and_the_others_still_read(rlds_dir, tmp_path):
    vdir = _copy(rlds_dir, tmp_path)
    shard = _shard(vdir, 0)
    offsets, _ = scan_records(shard)
    raw = bytearray(shard.read_bytes())
    raw[offsets[1] + 12 + 100] ^= 0xFF  # a data byte of the second record (episode 1)
    shard.write_bytes(bytes(raw))
    src = RLDSSource(vdir)
    src.signals(src.episodes[0])  # the record before it reads
    src.signals(src.episodes[2])  # and the other shard
    with pytest.raises(TFRecordError, match=rf"tfrecord-00000-of-00002:\n.*byte offset {offsets[1]}: corrupt: the CRC "
                                            "of the .* data bytes"):
        src.signals(src.episodes[1])
    # a corrupt length field: named the same way by the reader
    raw = bytearray(_shard(rlds_dir, 0).read_bytes())
    raw[offsets[1] + 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=rf"byte offset {offsets[1]}: corrupt: the CRC of the length"):
        list(iter_records(shard))
    assert scan_records(shard)[0] == offsets[:1]


def test_a_truncated_last_record_is_named_and_the_records_before_it_read(rlds_dir, tmp_path):
    vdir = _copy(rlds_dir, tmp_path)
    shard = _shard(vdir, 0)
    offsets, _ = scan_records(shard)
    shard.write_bytes(shard.read_bytes()[:-50])  # the last record loses its end
    got = []
    with pytest.raises(TFRecordError, match=rf"{shard.name}:\n.*byte offset {offsets[1]}: truncated"):
        for off, _ in iter_records(shard):
            got.append(off)
    assert got == offsets[:1]
    src = RLDSSource(vdir)
    np.testing.assert_allclose(src.signals(src.episodes[0])["ee_pose"][:, 0], 0.4 + 0.001 * np.arange(0, 21, 3),
                               atol=1e-6)
    with pytest.raises(TFRecordError, match=rf"byte offset {offsets[1]}: truncated: the record needs"):
        src.signals(src.episodes[1])
    with pytest.raises(TFRecordError, match="truncated: the file ends 5 bytes into the 12-byte header"):
        shard.write_bytes(shard.read_bytes()[:offsets[1] + 5])
        list(iter_records(shard))


def test_bad_input_is_named_before_any_record_is_read(rlds_dir, tmp_path):
    # a mapped key the dataset does not have: named, with the keys present
    m = load_rlds_mapping("droid").model_copy(deep=True)
    m.gripper.key = "steps/observation/gripper_width"
    with pytest.raises(RLDSError, match=r"mapped key 'steps/observation/gripper_width' is not a feature .*"
                                        r"'steps/observation/gripper_position'"):
        RLDSSource(rlds_dir, m)
    # a key in features.json but not in the record: named with the record's keys
    vdir = _copy(rlds_dir, tmp_path / "a")
    feats = json.loads((vdir / "features.json").read_text())
    obs = feats["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["observation"]
    obs["featuresDict"]["features"]["gripper_width"] = obs["featuresDict"]["features"]["gripper_position"]
    (vdir / "features.json").write_text(json.dumps(feats))
    src = RLDSSource(vdir, m)
    with pytest.raises(RLDSError, match=r"record 0 \(episode 0\): key 'steps/observation/gripper_width' missing from "
                                        r"the record \(keys: \[.*'steps/observation/gripper_position'"):
        src.signals(src.episodes[0])
    # images of another size than features.json says: named with the key, episode and step
    img = obs["featuresDict"]["features"]["wrist_image_left"]["image"]
    img["shape"]["dimensions"] = ["40", "48", "3"]
    (vdir / "features.json").write_text(json.dumps(feats))
    src = RLDSSource(vdir)
    with pytest.raises(RLDSError, match=r"'steps/observation/wrist_image_left' step 0 decodes to shape \(32, 48, 3\), "
                                        r"features.json says \(40, 48, 3\)"):
        src.frames(src.episodes[0], np.array([0.0]), ViewPreparation(8, 8))
    img["shape"]["dimensions"] = ["32", "48", "1"]  # not an RGB camera: refused up front
    (vdir / "features.json").write_text(json.dumps(feats))
    with pytest.raises(RLDSError, match=r"camera wrist .* has shape \(32, 48, 1\) uint8, expected \(H, W, 3\)"):
        RLDSSource(vdir)
    # an empty split; a missing shard file; not a TFDS directory
    vdir = _copy(rlds_dir, tmp_path / "b")
    info = json.loads((vdir / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"] = ["0", "0"]
    (vdir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(RLDSError, match=r"split 'train' has no episodes \(empty dataset\)"):
        RLDSSource(vdir)
    _shard(vdir, 1).unlink()
    with pytest.raises(RLDSError, match=r"droid_mini-train.tfrecord-00001-of-00002: shard file not found"):
        RLDSSource(vdir)
    with pytest.raises(RLDSError, match=r"dataset_info.json \+ features.json not found"):
        RLDSSource(tmp_path)
    assert not is_rlds_dataset(tmp_path / "a")  # the version directory is two levels down: not taken


def test_the_shipped_droid_mapping_names_droids_rlds_keys():
    m = load_rlds_mapping("droid")
    assert m.cameras == {"left": CAMS[0], "right": CAMS[1], "wrist": CAMS[2]}
    assert m.ee_pose.key == "steps/observation/cartesian_position" and m.ee_pose.index == (0, 6)
    assert m.gripper.key == "steps/observation/gripper_position" and not m.gripper_invert
    assert m.joint_positions is not None and m.joint_positions.key == "steps/observation/joint_position"
    assert m.instruction == "steps/language_instruction" and m.action == "measured"
    assert (m.success.key, m.success.pattern) == ("episode_metadata/file_path", "success")
    assert (m.fps, m.split, len(m.joint_names)) == (15.0, "train", 7)


def test_a_lerobot_root_still_reads_through_the_lerobot_source(tmp_path):
    """The training stream now opens its source by layout: a LeRobot root keeps the LeRobot source and metadata."""
    from lerobot_fixture import write_dataset

    from vidplan_core.data.lerobot import LeRobotSource
    from vidplan_core.data.sources import open_source

    root = write_dataset(tmp_path / "lerobot", "v2.1", (10, 7), success=(True, False))
    assert is_in_place_dataset(root) and not is_rlds_dataset(root)
    src = open_source(root, "droid")
    assert isinstance(src, LeRobotSource) and isinstance(src, EpisodeSource)
    ds = WindowDataset(root, "all", history=1, future=0, lerobot=LeRobotOptions(val_fraction=0.0), view_size=(8, 8))
    assert ds.meta.info["converter"] == "lerobot" and [e.shard for e in ds.meta.episodes] == ["lerobot:0", "lerobot:1"]
    assert [e.length for e in ds.meta.episodes] == [4, 3] and len(ds) == 7
    assert ds[0]["frames"].shape == (1, 3, 3, 8, 8)
