"""`vidplan data generate` on the real MuJoCo scene: bag contents, sidecars, resume, settings mismatch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vidplan_app.jobs.generate import GenerateConfig, GenerateError, generate_dataset
from vidplan_core.data.bags import BagReader
from vidplan_core.data.messages import Codec
from vidplan_core.images import decode_image
from vidplan_core.topics import DEPRECATED_INSTRUCTION_TOPIC, INSTRUCTION_TOPIC

pytest.importorskip("mujoco", reason="MuJoCo is needed for the simulation")
if not os.environ.get("VIDPLAN_MENAGERIE_DIR"):
    pytest.skip("VIDPLAN_MENAGERIE_DIR unset: source scripts/env.sh (the Panda model is needed)",
                allow_module_level=True)


def test_generate_bags_and_resume(tmp_path):
    cfg = GenerateConfig(episodes=2, width=24, height=16, max_steps=9, settle_steps=0, camera_rate_hz=5.0)
    out = tmp_path / "bags"
    infos = generate_dataset(out, cfg)
    assert [i["name"] for i in infos] == ["episode_000000", "episode_000001"]
    assert [i["task"] for i in infos] == ["put", "touch"]  # kinds in turn
    with BagReader(out / "episode_000000") as r:
        t = r.topics
        assert t["/cameras/left/image_raw"].message_count == 4  # steps 0, 3, 6, 9 at 5 Hz
        assert t["/joint_states"].message_count == 10 and t["/ee_pose"].message_count == 10
        assert t["/vidplan/expert_action"].message_count == 9
        assert t["/vidplan/expert_action"].msgtype == "vidplan_interfaces/msg/PlanChunk"
        c = Codec()
        msgs = list(r.messages(["/cameras/wrist/image_raw", "/vidplan/episode", "/joint_states", INSTRUCTION_TOPIC]))
        img = next(m for m in msgs if m.topic == "/cameras/wrist/image_raw")
        rgb = decode_image(c.deserialize(img.data, img.msgtype))
        assert rgb.shape == (16, 24, 3) and rgb.std() > 0  # a rendered image, not a blank one
        js = c.deserialize(next(m for m in msgs if m.topic == "/joint_states").data, "sensor_msgs/msg/JointState")
        assert list(js.name)[-2:] == ["panda_finger_joint1", "panda_finger_joint2"] and len(js.position) == 9
        info = json.loads(c.deserialize(next(m for m in msgs if m.topic == "/vidplan/episode").data,
                                        "std_msgs/msg/String").data)
        # the instruction on its new topic only (the deprecated /vidplan/task is for reading old bags)
        assert DEPRECATED_INSTRUCTION_TOPIC not in t
        said = c.deserialize(next(m for m in msgs if m.topic == INSTRUCTION_TOPIC).data, "std_msgs/msg/String").data
    side = json.loads((out / "episode_000000.json").read_text())
    assert info == side and side["seed"] == 0 and isinstance(side["success"], bool)
    assert said == side["instruction"]
    assert side["instruction"].startswith("put the ")

    # resume: episode 1 lost its sidecar (interrupted) and a half-written episode lies in .partial
    mtime0 = (out / "episode_000000" / "metadata.yaml").stat().st_mtime_ns
    (out / "episode_000001.json").unlink()
    (out / ".partial" / "episode_000002").mkdir(parents=True)
    infos2 = generate_dataset(out, cfg.model_copy(update={"episodes": 3}))
    assert len(infos2) == 3 and not (out / ".partial").exists()
    assert (out / "episode_000000" / "metadata.yaml").stat().st_mtime_ns == mtime0  # skipped
    assert infos2[1]["seed"] == 1 and infos2[1]["instruction"] == infos[1]["instruction"]  # redone identically
    with BagReader(out / "episode_000001") as r:
        assert r.topics["/ee_pose"].message_count == 10
    with pytest.raises(GenerateError, match="width"):
        generate_dataset(out, cfg.model_copy(update={"width": 32}))


def test_generate_settings_are_checked(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="camera rate"):
        GenerateConfig(camera_rate_hz=4.0)
    with pytest.raises(ValidationError, match="clutter"):
        GenerateConfig(clutter=[5])
    with pytest.raises(ValidationError, match="task kind"):
        GenerateConfig(tasks=["fly"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("not ours")
    with pytest.raises(GenerateError, match="not a generation output"):
        generate_dataset(tmp_path / "x", GenerateConfig(episodes=1))
    assert np.isfinite(GenerateConfig().noise_std).all()


def test_resuming_into_a_directory_of_other_settings_names_what_differs(tmp_path):
    from vidplan_app.jobs.generate import MANIFEST, _prepare_output

    out = tmp_path / "gen"
    out.mkdir()
    (out / MANIFEST).write_text(GenerateConfig(seed=0, episodes=3).model_dump_json())
    _prepare_output(out, GenerateConfig(seed=0, episodes=5))  # more episodes: a resume
    with pytest.raises(GenerateError, match="other settings \\(seed: 0 → 1\\)"):
        _prepare_output(out, GenerateConfig(seed=1, episodes=3))
