"""Bags → shards: resampling to the model rate, image decoding/resizing, actions, labels, topic maps, bad bags.

The bags are written here with the real rosbags writer and CDR serialiser (vidplan_core.data.bags / messages), at
15 Hz with frame-identifying images, so the test knows which source message each 5 Hz frame must come from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidplan_core.data.bag_writer import BagWriter
from vidplan_core.data.convert import ConvertError, convert_bags, expand_inputs
from vidplan_core.data.dataset import WindowDataset
from vidplan_core.data.messages import Codec
from vidplan_core.data.schema import validate_dataset
from vidplan_core.data.topic_map import TopicMap
from vidplan_core.images import encode_compressed
from vidplan_core.spaces import VIEW_ORDER
from vidplan_core.topics import DEPRECATED_INSTRUCTION_TOPIC, INSTRUCTION_TOPIC

SRC_H, SRC_W = 12, 20
T0 = 1_000_000_000
DT = 1_000_000_000 // 15


def _img(k: int, view: int, hw: tuple[int, int] = (SRC_H, SRC_W)) -> np.ndarray:
    img = np.zeros((*hw, 3), np.uint8)
    img[..., 0] = k  # red = message index
    img[..., 1] = 50 * view  # green = view index
    img[..., 2] = 200
    if hw != (SRC_H, SRC_W):  # blue = a column ramp, so a crop shows where it cut
        img[..., 2] = np.linspace(0, 255, hw[1]).astype(np.uint8)[None]
    return img


def write_bag(path, n=31, *, cams=None, success=True, instruction="touch the red cube", with_info=True,
              with_action=True, gripper_float=None, bool_success=None, bgr=False, hw=(SRC_H, SRC_W), compressed="",
              instruction_topics=None):
    """A 15 Hz recording with n samples per stream. EE x = 0.3 + 0.01·k, commanded x = 0.3 + 0.01·(k + 1).
    compressed="jpeg"|"png": cameras as image_transport records them (CompressedImage on <topic>/compressed).
    instruction_topics: topic → text, each written once (std_msgs/String) at the start, as a sim publishes it."""
    cams = cams or {v: f"/cameras/{v}/image_raw" for v in VIEW_ORDER}
    if compressed:
        cams = {v: f"{t}/compressed" for v, t in cams.items()}
    with BagWriter(path) as w:
        c = Codec(w.definitions)
        for v in VIEW_ORDER:
            w.add_topic(cams[v], "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
        w.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        if with_action:
            w.add_topic("/vidplan/expert_action", "vidplan_interfaces/msg/PlanChunk")
        if with_info:
            w.add_topic("/vidplan/episode", "std_msgs/msg/String")
        if gripper_float:
            w.add_topic(gripper_float, "std_msgs/msg/Float32")
        if bool_success:
            w.add_topic(bool_success, "std_msgs/msg/Bool")
        for topic, text in (instruction_topics or {}).items():
            w.add_topic(topic, "std_msgs/msg/String")
            w.write(topic, T0, c.string(text))
        names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
        for k in range(n):
            t = T0 + k * DT
            for vi, v in enumerate(VIEW_ORDER):
                rgb = _img(k, vi, hw)
                if compressed:
                    fmt, data = encode_compressed(rgb, compressed, quality=95)
                    msg = c.type("sensor_msgs/msg/CompressedImage")(header=c.header(t, v), format=fmt,
                                                                   data=np.frombuffer(data, np.uint8))
                    w.write(cams[v], t, c.serialize(msg))
                elif bgr:
                    Image = c.type("sensor_msgs/msg/Image")
                    data = np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1)
                    w.write(cams[v], t, c.serialize(Image(header=c.header(t, v), height=SRC_H, width=SRC_W,
                                                          encoding="bgr8", is_bigendian=0, step=3 * SRC_W, data=data)))
                else:
                    w.write(cams[v], t, c.image(t, v, rgb))
            pose = np.array([0.3 + 0.01 * k, 0.0, 0.4, np.pi - 0.05, 0.0, 0.1, 0.0])
            w.write("/ee_pose", t, c.pose_stamped(t, "panda_link0", pose))
            width = 0.08 * (1 - min(k / 20, 1.0))  # closes over the first 20 samples
            w.write("/joint_states", t, c.joint_state(t, names, np.r_[np.full(7, 0.1 * k), width / 2, width / 2]))
            if with_action:
                cmd = pose.copy()
                cmd[0] += 0.01
                cmd[6] = 1.0 if k >= 10 else 0.0
                w.write("/vidplan/expert_action", t, c.plan_chunk(t, "panda_link0", cmd[None], 1 / 15))
            if gripper_float:
                w.write(gripper_float, t, c.serialize(c.type("std_msgs/msg/Float32")(data=0.5)))
        if with_info:
            w.write("/vidplan/episode", T0 + n * DT, c.json_string({"success": success, "instruction": instruction,
                                                                     "task": "touch", "seed": 7, "clutter": 2}))
        if bool_success:
            w.write(bool_success, T0 + n * DT, c.serialize(c.type("std_msgs/msg/Bool")(data=success)))
    return path


def test_convert_resamples_and_labels(tmp_path):
    bags = tmp_path / "bags"
    bags.mkdir()
    write_bag(bags / "ep_a", success=True)
    write_bag(bags / "ep_b", n=25, success=False, instruction="touch the blue ball")
    for name in ("ep_a", "ep_b"):  # sidecars make the directory a set of episodes (as `data generate` writes it)
        (bags / f"{name}.json").write_text(json.dumps({"note": "sidecar"}))
    assert [p.name for p in expand_inputs([bags])] == ["ep_a", "ep_b"]
    out = tmp_path / "ds"
    meta = convert_bags([bags], out, size=(6, 10), val_fraction=0.5, value_gamma=0.9)
    assert meta.fps == 5.0 and meta.view_hw == (6, 10) and meta.source_rate_hz == pytest.approx(15.0, rel=1e-3)
    assert [e.split for e in meta.episodes].count("val") == 1
    ep = {e.name: e for e in meta.episodes}
    assert ep["ep_a"].success and not ep["ep_b"].success and ep["ep_a"].seed == 7 and ep["ep_a"].clutter == 2
    assert ep["ep_a"].instruction == "touch the red cube" and ep["ep_a"].length == 11  # 0..2 s at 5 Hz
    assert ep["ep_b"].length == 9
    validate_dataset(out)
    from safetensors.numpy import load_file

    s = load_file(str(out / "shards" / "ep_a.safetensors"))
    # frame j comes from message 3j: red channel = 3j, green = 50·view (resizing keeps flat colours)
    assert s["frames"].shape == (11, 3, 3, 6, 10)
    assert s["frames"][:, 0, 0, 0, 0].tolist() == [3 * j for j in range(11)]
    assert s["frames"][4, :, 1, 0, 0].tolist() == [0, 50, 100]
    assert np.allclose(s["ee_pose"][:, 0], 0.3 + 0.01 * 3 * np.arange(11), atol=1e-6)
    # default actions: measured pose + commanded gripper (held; closes from message 10 on)
    assert np.allclose(s["actions"][:, :6], s["ee_pose"]) and s["actions"][:, 6].tolist() == [0] * 4 + [1] * 7
    # action_pose=command: the commanded target (one step ahead of the measured pose)
    convert_bags([bags / "ep_a"], tmp_path / "ds_cmd", TopicMap(action_pose="command"))
    c = load_file(str(tmp_path / "ds_cmd" / "shards" / "ep_a.safetensors"))
    assert np.allclose(c["actions"][:, 0], 0.3 + 0.01 * (3 * np.arange(11) + 1), atol=1e-6)
    assert c["actions"][:, 6].tolist() == [0, 0, 0, 0] + [1] * 7
    # measured gripper from the finger joints: closure = 1 - width / 0.08
    assert np.allclose(s["gripper"], np.minimum(3 * np.arange(11) / 20, 1.0), atol=1e-5)
    assert np.allclose(s["joint_positions"][:, 0], 0.1 * 3 * np.arange(11), atol=1e-5)
    assert np.all(np.diff(s["timestamps_ns"]) == 200_000_000)
    # action statistics come from the train split only and are usable by the dataset
    train_name = meta.split("train")[0].name
    acts = load_file(str(out / "shards" / f"{train_name}.safetensors"))["actions"]
    assert meta.action_stats["p01"][0] == pytest.approx(np.percentile(acts[:, 0], 1), abs=1e-6)
    ds = WindowDataset(out, "all", history=2, future=3)
    assert len(ds) > 0 and ds[0]["frames"].shape == (5, 3, 3, 6, 10)


def test_missing_topics_fail_before_work(tmp_path):
    write_bag(tmp_path / "good", success=True)
    write_bag(tmp_path / "no_action", with_action=False)
    write_bag(tmp_path / "no_label", with_info=False)
    out = tmp_path / "ds"
    with pytest.raises(ConvertError) as err:
        convert_bags([tmp_path / "good", tmp_path / "no_action", tmp_path / "no_label"], out)
    text = str(err.value)
    assert "no_action" in text and "missing topic /vidplan/expert_action" in text
    assert "no_label" in text and "no success label" in text
    assert "good" not in text.replace("no_", "")  # only the bad bags are named
    assert not (out / "shards").exists()  # nothing written
    with pytest.raises(ConvertError, match="does not exist"):
        convert_bags([tmp_path / "nope"], out)
    # a truncated storage file is reported with the bag's name
    mcap = next((tmp_path / "good").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:2000])
    with pytest.raises(ConvertError, match="good"):
        convert_bags([tmp_path / "good"], out)


def test_instruction_from_its_topic_or_an_old_bags_deprecated_one(tmp_path):
    """Without episode info the instruction comes from /vidplan/instruction; a bag recorded before the topic was
    renamed has it on /vidplan/task, which is read instead; where a bag has both, the new one counts. A topic map
    with ``instruction: null`` reads neither, and an instruction topic of another type is named before any work."""
    texts = {"new": {INSTRUCTION_TOPIC: "touch the red cube"},
             "old": {DEPRECATED_INSTRUCTION_TOPIC: "push the blue ball"},
             "both": {DEPRECATED_INSTRUCTION_TOPIC: "push the blue ball", INSTRUCTION_TOPIC: "touch the red cube"}}
    for name, topics in texts.items():
        write_bag(tmp_path / name, n=16, with_info=False, bool_success="/label/success", instruction_topics=topics)
    bags = [tmp_path / name for name in texts]
    tm = TopicMap(success="/label/success")
    assert tm.instruction == INSTRUCTION_TOPIC
    meta = convert_bags(bags, tmp_path / "ds", tm, val_fraction=0.0)
    got = {e.name: e.instruction for e in meta.episodes}
    assert got == {"new": "touch the red cube", "old": "push the blue ball", "both": "touch the red cube"}, got
    meta = convert_bags(bags, tmp_path / "ds_none", tm.model_copy(update={"instruction": None}), val_fraction=0.0)
    assert [e.instruction for e in meta.episodes] == ["", "", ""]
    c = Codec()
    with BagWriter(tmp_path / "typed") as w:  # a bag whose /vidplan/instruction is not a std_msgs/String
        for v in VIEW_ORDER:
            w.add_topic(f"/cameras/{v}/image_raw", "sensor_msgs/msg/Image")
        w.add_topic(INSTRUCTION_TOPIC, "std_msgs/msg/Bool")
        w.write(INSTRUCTION_TOPIC, T0, c.serialize(c.type("std_msgs/msg/Bool")(data=True)))
    with pytest.raises(ConvertError, match=f"instruction topic {INSTRUCTION_TOPIC} has type std_msgs/msg/Bool"):
        convert_bags([tmp_path / "typed"], tmp_path / "ds_typed", tm)


def test_robot_topic_map(tmp_path):
    cams = {"left": "/ext1/color", "right": "/ext2/color", "wrist": "/wrist/color"}
    write_bag(tmp_path / "robot", cams=cams, with_info=False, with_action=False, gripper_float="/gripper/position",
              bool_success="/label/success", bgr=True)
    tm = TopicMap(cameras=cams, action=None, gripper={"topic": "/gripper/position"}, episode_info=None,
                  success="/label/success", sidecar=False)
    with pytest.raises(ConvertError, match="/cameras/left/image_raw"):  # the default map does not fit this bag
        convert_bags([tmp_path / "robot"], tmp_path / "x")
    meta = convert_bags([tmp_path / "robot"], tmp_path / "ds", tm, val_fraction=0.0)
    from safetensors.numpy import load_file

    s = load_file(str(tmp_path / "ds" / "shards" / "robot.safetensors"))
    assert meta.view_hw == (SRC_H, SRC_W) and meta.episodes[0].success
    assert s["frames"][2, 1, :, 0, 0].tolist() == [6, 50, 200]  # bgr8 decoded to RGB
    assert np.allclose(s["actions"][:, 0], s["ee_pose"][:, 0]) and np.allclose(s["actions"][:, 6], 0.5)


def test_topic_map_yaml_errors(tmp_path):
    from vidplan_core.config import ConfigError
    from vidplan_core.data.topic_map import load_topic_map

    p = tmp_path / "map.yaml"
    p.write_text("cameras: {left: /a, right: /b}\nee_pos: /x\n")
    with pytest.raises(ConfigError) as err:
        load_topic_map(p)
    assert "cameras" in str(err.value) and "ee_pos" in str(err.value) and str(p) in str(err.value)


def test_workspace_crop_is_the_planners_and_recorded(tmp_path):
    """--crop workspace cuts every frame exactly as the planner node cuts live images (the same
    ViewPreparation), records it in the dataset, and training refuses a world model that cuts otherwise."""
    from safetensors.numpy import load_file

    from vidplan_core.calibration import workspace_views
    from vidplan_core.config import ConfigError
    from vidplan_core.models.action_maps import resolve_action_map_spec
    from vidplan_core.training.recipes import _check_views

    views = workspace_views(6, 10)
    assert set(views.crops) == {"left", "right"}  # the wrist camera moves: never cropped
    write_bag(tmp_path / "ep", n=7, hw=(36, 64))  # the calibration's 16:9 at 64×36
    meta = convert_bags([tmp_path / "ep"], tmp_path / "ds", views=views)
    assert meta.view_hw == (6, 10) and meta.info["view_preparation"] == views.as_dict()
    frames = load_file(str(tmp_path / "ds" / "shards" / "ep.safetensors"))["frames"]
    for vi, v in enumerate(VIEW_ORDER):
        want = views.prepare_one(v, _img(3, vi, (36, 64))).transpose(2, 0, 1)
        np.testing.assert_array_equal(frames[1, vi], want)
    assert not np.array_equal(frames[1, 0, 2], frames[1, 2, 2])  # cropped left ≠ whole wrist (blue ramp)
    # the world model must cut camera images the same way
    cropped = resolve_action_map_spec({"calibration": "default", "crop": "workspace"}, (6, 10))
    _check_views(meta, cropped, str(tmp_path / "ds"))
    with pytest.raises(ConfigError, match=r"view_preparation.*crop left.*whole views"):
        _check_views(meta, resolve_action_map_spec({"calibration": "default"}, (6, 10)), str(tmp_path / "ds"))
    with pytest.raises(ConfigError, match="whole views"):
        _check_views(meta, None, str(tmp_path / "ds"))
    # images of another aspect ratio (12×20: 1.67, the calibration 1.78) are refused, naming both
    write_bag(tmp_path / "odd", n=4)
    with pytest.raises(ConvertError, match=r"20x12 image \(aspect 1.667\).*1.778"):
        convert_bags([tmp_path / "odd"], tmp_path / "ds2", views=views)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_recordings_convert_like_raw_ones(tmp_path, fmt):
    """A bag recorded with compressed cameras (CompressedImage on <topic>/compressed, image_transport's name) is read
    through the default topic map: the same frames as the raw recording (PNG exactly, JPEG within its error), and
    eval-bag's scan finds the cameras and their size the same way."""
    from safetensors.numpy import load_file

    from vidplan_core.eval.bag_recording import scan_bag

    write_bag(tmp_path / "raw" / "ep", n=16)
    write_bag(tmp_path / "cmp" / "ep", n=16, compressed=fmt)
    convert_bags([tmp_path / "raw" / "ep"], tmp_path / "ds_raw", size=(6, 10))
    meta = convert_bags([tmp_path / "cmp" / "ep"], tmp_path / "ds_cmp", size=(6, 10))
    assert meta.info["topic_map"]["cameras"]["left"] == "/cameras/left/image_raw"  # the map as given
    assert meta.info["source_image_size"] == [SRC_H, SRC_W]
    raw = load_file(str(tmp_path / "ds_raw" / "shards" / "ep.safetensors"))["frames"].astype(int)
    cmp = load_file(str(tmp_path / "ds_cmp" / "shards" / "ep.safetensors"))["frames"].astype(int)
    assert raw.shape == cmp.shape
    if fmt == "png":
        np.testing.assert_array_equal(cmp, raw)
    else:
        assert np.abs(cmp - raw).max() <= 8
    scan = scan_bag(tmp_path / "cmp" / "ep", TopicMap(), salvage=False)
    assert scan.topic_map.cameras["wrist"] == "/cameras/wrist/image_raw/compressed"
    assert scan.sizes["/cameras/wrist/image_raw/compressed"] == (SRC_H, SRC_W)
