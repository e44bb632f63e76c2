"""eval-bag (vidplan_core.eval.bag_eval) on bags written here with the real rosbags writer and CDR serialiser, and a
tiny random model bundle saved with ModelSuite.save: metrics finite (or null with a reason), plots and report
written; bad input (missing, truncated, corrupt bags, missing topics, mismatched image sizes, short bags, broken
model directories) gives a clear error naming the bag / topic / problem, and a truncated bag is salvaged.
"""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pytest

from vidplan_core.data.bag_writer import BagWriter
from vidplan_core.data.messages import Codec
from vidplan_core.eval import metrics as M
from vidplan_core.eval.bag_bundle import load_bundle
from vidplan_core.eval.bag_eval import EXIT_OK, EXIT_PARTIAL, EvalBagConfig, EvalBagError, eval_bag
from vidplan_core.eval.bag_metrics import ReliabilityAccumulator, finite_or_null
from vidplan_core.eval.bag_recording import image_size_from_cdr
from vidplan_core.runtime.bundle_index import write_bundle_index
from vidplan_core.spaces import VIEW_ORDER
from vidplan_core.topics import INSTRUCTION_TOPIC

T0 = 1_000_000_000
DT = 1_000_000_000 // 15
Q0 = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


@functools.cache
def _kin():
    from vidplan_core.kinematics import PandaKinematics

    return PandaKinematics()


def write_episode_bag(path, n=60, h=96, w=128, success=True, *, skip_topic=None, resize_at=None, label=True,
                      cam_topic="/cameras/{}/image_raw", instruction=None):
    """A 15 Hz episode like the robot records it: three rgb8 cameras (a red block moving right), /ee_pose,
    /joint_states (7 arm joints + 2 fingers), /vidplan/expert_action (PlanChunk) and /vidplan/episode (JSON label,
    written last). 96x128 images make ~7 MB, i.e. several 1 MiB mcap chunks (so a truncated file keeps some).
    ``cam_topic``: camera topic pattern (``{}`` = view), to test topic maps. ``instruction``: also record it once,
    first, on /vidplan/instruction (as the robot's recorder does when the instruction is given)."""
    with BagWriter(path) as wr:
        c = Codec(wr.definitions)
        topics = {cam_topic.format(v): "sensor_msgs/msg/Image" for v in VIEW_ORDER}
        topics.update({"/ee_pose": "geometry_msgs/msg/PoseStamped", "/joint_states": "sensor_msgs/msg/JointState",
                       "/vidplan/expert_action": "vidplan_interfaces/msg/PlanChunk"})
        if label:
            topics["/vidplan/episode"] = "std_msgs/msg/String"
        if instruction is not None:
            topics[INSTRUCTION_TOPIC] = "std_msgs/msg/String"
        topics.pop(skip_topic, None)
        for t, ty in topics.items():
            wr.add_topic(t, ty)
        if instruction is not None:
            wr.write(INSTRUCTION_TOPIC, T0, c.string(instruction))
        names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
        # the arm moves slowly; the EE pose is its forward kinematics, the command the next sample's pose
        qs = Q0 + np.linspace(0.0, 0.2, n + 1)[:, None] * np.array([1.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0])
        ee = np.array([_kin().fk_action(q, euler_center=np.array([np.pi, 0.0, 0.0])) for q in qs])
        for k in range(n):
            t = T0 + k * DT
            for vi, v in enumerate(VIEW_ORDER):
                hh, ww = (h // 2, w // 2) if resize_at is not None and k >= resize_at and vi == 1 else (h, w)
                img = np.full((hh, ww, 3), 40 + 60 * vi, np.uint8)
                x = (k * ww // n) % ww
                img[hh // 4: hh // 2, x: x + ww // 8] = (255, 40, 40)
                if cam_topic.format(v) in topics:
                    wr.write(cam_topic.format(v), t, c.image(t, f"{v}_optical", img))
            if "/ee_pose" in topics:
                wr.write("/ee_pose", t, c.pose_stamped(t, "panda_link0", ee[k]))
            wr.write("/joint_states", t, c.joint_state(t, names, np.r_[qs[k], 0.04, 0.04]))
            cmd = np.r_[ee[k + 1], 1.0 if k > n // 2 else 0.0]
            if "/vidplan/expert_action" in topics:
                wr.write("/vidplan/expert_action", t, c.plan_chunk(t, "panda_link0", cmd[None], 1 / 15))
        if label:
            wr.write("/vidplan/episode", T0 + n * DT, c.json_string({"success": success, "task": "touch",
                                                                     "instruction": "touch the red cube"}))
    return path


def save_tiny_bundle(d):
    """A random tiny model bundle as the planner loads it: ModelSuite directories + a small SigLIP in semantic/."""
    from vidplan_core.runtime.bundle import random_planner_models

    pm = random_planner_models("tiny", seed=0)
    pm.save(d)
    return d


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture(scope="module")
def episode_bag(tmp_path_factory):
    return write_episode_bag(tmp_path_factory.mktemp("bags") / "episode_a")


def _cfg(**kw):
    # one shadow plan, argmax only (the planner's gradient refinement is tested with the planner), keeps the
    # planner part to seconds on 2 cores
    return EvalBagConfig(**{"max_steps": 3, "progress": False, "examples": 1, "element_samples": 256,
                            "shadow_max": 1, "planner": {"gradopt": {"refine_iters": 0}}, **kw})


def _check_finite_or_explained(node, reasons, path=""):
    """Every number is finite; every null has a reason at its path or a parent path."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_finite_or_explained(v, reasons, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite_or_explained(v, reasons, f"{path}[{i}]")
    elif node is None:
        p = path
        while p and p not in reasons:
            cut = max(p.rfind("."), p.rfind("["))
            p = p[:cut] if cut > 0 else ""
        assert p, f"{path} is null without a reason in null_reasons"
    elif isinstance(node, float):
        assert math.isfinite(node), f"{path} = {node}"


# ---------------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("frame_id", ["", "a", "ab", "abc", "left_camera_optical_frame"])
def test_image_size_from_cdr_matches_the_serialiser(frame_id):
    c = Codec()
    data = c.image(T0, frame_id, np.zeros((7, 13, 3), np.uint8))
    assert image_size_from_cdr(data) == (7, 13)
    assert c.deserialize(data, "sensor_msgs/msg/Image").height == 7


def test_streaming_reliability_equals_the_batch_metric():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.0, 1.0, 5000)
    correct = (rng.uniform(size=5000) < conf ** 1.5).astype(float)
    acc = ReliabilityAccumulator(15)
    for part in np.array_split(np.arange(5000), 7):
        acc.add(conf[part], correct[part])
    ref = M.reliability_diagram(conf, correct, 15)
    assert acc.n == 5000 and acc.diagram()["count"] == ref["count"]
    np.testing.assert_allclose(acc.diagram()["accuracy"], ref["accuracy"], equal_nan=True)
    assert acc.ece() == pytest.approx(M.expected_calibration_error(conf, correct, 15), abs=1e-12)
    assert acc.accuracy() == pytest.approx(correct.mean())


def test_moving_pixel_psnr_is_pooled_per_step():
    from vidplan_core.eval.bag_metrics import moving_psnr

    out = moving_psnr({"prediction": np.array([0.01 * 300, 0.0]), "copy": np.array([0.1 * 300, 0.0])},
                       np.array([300.0, 0.0]))
    assert out["psnr_db"][0] == pytest.approx(20.0) and out["copy_psnr_db"][0] == pytest.approx(10.0)
    assert out["gain_db"] == [pytest.approx(10.0), None] and out["gain_db_mean"] == pytest.approx(10.0)
    assert moving_psnr({"prediction": np.zeros(2), "copy": np.zeros(2)}, np.zeros(2))["gain_db_mean"] is None


def test_finite_or_null_replaces_nan_and_records_reasons():
    reasons = {"a.known": "explained before"}
    out = finite_or_null({"a": {"x": np.float32(1.5), "y": float("nan"), "known": None,
                                "arr": np.array([1.0, np.inf])}, "n": np.int64(3), "flag": np.bool_(True)},
                         reasons)
    assert out == {"a": {"x": 1.5, "y": None, "known": None, "arr": [1.0, None]}, "n": 3, "flag": True}
    assert set(reasons) == {"a.known", "a.y", "a.arr[1]"} and reasons["a.known"] == "explained before"
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------------------------------------------------- evaluation


def test_eval_bag_writes_finite_metrics_plots_and_report(tmp_path, episode_bag, tiny_bundle):
    res = eval_bag(episode_bag, tiny_bundle, tmp_path / "out", config=_cfg(flow_steps=2))
    assert res.exit_code == EXIT_OK
    m = json.loads(res.metrics_path.read_text())  # strict JSON: no NaN/Infinity literals
    assert m["status"] == "complete" and not m["input"]["salvaged"]
    _check_finite_or_explained(m, m["null_reasons"])
    H = m["settings"]["horizon"]
    assert m["windows"] == 3 and m["settings"]["flow_steps"] == 2
    assert m["input"]["frames"] == 20  # 4 s at 5 Hz
    for key in ("psnr_db", "ssim"):
        for v in (*VIEW_ORDER, "mean"):
            assert len(m["prediction"][key][v]) == H
    assert all(0 < x < 100 for x in m["prediction"]["psnr_db"]["mean"])
    base = m["prediction"]["copy_last_frame_psnr_db"]  # the baseline a model has to beat
    assert len(base["per_step"]) == H and all(0 < x <= 100 for x in base["per_step"])
    assert all(-1 <= x <= 1 for x in m["prediction"]["ssim"]["mean"])
    assert len(m["prediction"]["latent_mse"]["per_step"]) == H and m["prediction"]["latent_mse"]["mean"] > 0
    # on the pixels that change, copying the current frame is worse than over the whole image (static pixels free)
    mv = m["prediction"]["moving_pixels"]
    assert mv["values"] > 0 and len(mv["gain_db"]) == H
    assert all(c < b for c, b in zip(mv["copy_psnr_db"], base["per_step"], strict=True)), (mv, base)
    assert all(g == pytest.approx(a - c) for g, a, c in zip(mv["gain_db"], mv["psnr_db"], mv["copy_psnr_db"],
                                                              strict=True))
    # UQ: calibration over every predicted latent element, correlations with p-values
    uq = m["uq"]
    assert 0 <= uq["ece"] <= 1 and uq["elements"] == 3 * H * 4 * 24 * 8
    assert sum(uq["reliability"]["count"]) == uq["elements"]
    corr = uq["entropy_error_correlation"]["per_element"]
    assert -1 <= corr["pearson_r"] <= 1 and 0 <= corr["spearman_p"] <= 1 and corr["n"] == 3 * 256
    # reward head vs the Monte-Carlo value of the success label (success=True, γ = 0.97)
    rw = m["reward"]
    assert rw["success"] is True and rw["on_predicted"]["frames"] == 3 * H
    targets = [p[3] for p in rw["points"]]
    assert all(0 < t <= 1 for t in targets)
    tau = np.array([p[0] for p in rw["points"]])
    np.testing.assert_allclose(targets, 0.97 ** (m["input"]["frames"] - 1 - tau), rtol=1e-6)
    # latency per stage
    for stage in ("encode_frame", "rollout", "decode", "uq_head", "reward_head"):
        assert m["latency"][stage]["count"] >= 1 and m["latency"][stage]["p95_ms"] > 0
    # the recorded 96x128 images were resized to the tiny model's 16x16 views, and the report says so
    assert m["input"]["source_image_size"] == [96, 128] and any("resized" in w for w in m["warnings"])
    # shadow mode: the planner (torch backend, basis proposals from the recorded joints) planned once. Its chunk
    # starts at the recorded EE pose: basis motion ≤ 0.05 m/s · 0.6 s, the recorded chunk moves ~1 cm per step:
    # together well below 0.2 m and 0.3 rad (a frame/unit mix-up would be metres / radians off)
    sh = m["shadow"]
    assert sh is not None, m["null_reasons"].get("shadow")
    assert sh["plans"] == 1 and sum(sh["status"].values()) == 1 and "error" not in sh["status"]
    assert len(sh["position_m_per_step"]) == H
    assert 0 <= sh["position_m_mean"] < 0.2 and 0 <= sh["rotation_rad_mean"] < 0.3 and 0 <= sh["gripper_mean"] <= 1
    assert m["latency"]["planner"]["count"] == 1 and m["settings"]["text_conditioning"] is True
    # controllability: the same 3 windows with shuffled and mirrored actions (same noise), ratios per step
    ctl = m["controllability"]
    assert ctl["windows"] == 3
    for v in ("true", "shuffled", "mirrored"):
        for q in ("latent_mse", "pixel_mse", "psnr_db"):
            assert len(ctl["error"][v][q]["per_step"]) == H
    assert ctl["error"]["true"]["latent_mse"]["per_step"] == pytest.approx(m["prediction"]["latent_mse"]["per_step"])
    assert ctl["error"]["true"]["psnr_db"]["per_step"] == pytest.approx(m["prediction"]["psnr_db"]["mean"])
    for v in ("shuffled", "mirrored"):
        assert len(ctl["ratio"][v]["per_step"]) == H and ctl["ratio"][v]["mean"] > 0
    d = ctl["latent_difference"]
    assert d["noise"]["window"] > 0 and d["action_vs_noise"]["mirrored"] > 0
    # plots and report
    for name in ("psnr_per_step", "ssim_per_step", "uq_reliability", "reward_value", "shadow_errors", "latency",
                 "controllability", "example_0"):
        assert res.plots[name].is_file() and res.plots[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = res.report_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    for p in res.plots.values():
        assert f"plots/{p.name}" in html
    assert str(episode_bag) in html and "Controllability" in html


def test_controllability_of_an_action_blind_model_is_exactly_one(tmp_path, episode_bag, tiny_bundle):
    """The tiny bundle with its action conditioning zeroed (the action MLP's last weights: every action gives the
    same token; the action maps' input weights) predicts the same with any actions under the same noise: ratio
    exactly 1.0, no action effect."""
    import torch

    from vidplan_core.models import FlowMap

    blind = shutil.copytree(tiny_bundle, tmp_path / "blind")
    fm = FlowMap.load(blind / "flow_map")
    with torch.no_grad():
        fm.model.action_encoder.action_encode[-1].weight.zero_()
        if fm.model.map_renderer is not None:  # and the spatial action maps' input weights
            fm.model.unet.conv_in.weight[:, -fm.model.map_renderer.num_channels:].zero_()
    fm.save_pretrained(blind / "flow_map")
    write_bundle_index(blind)  # the weights changed: record their checksums
    m = json.loads(eval_bag(episode_bag, blind, tmp_path / "out", config=_cfg(shadow=False, max_steps=2,
                                                                              examples=0)).metrics_path.read_text())
    c = m["controllability"]
    H = m["settings"]["horizon"]
    for v in ("shuffled", "mirrored"):
        assert c["ratio"][v] == {"per_step": [1.0] * H, "mean": 1.0}
        assert c["pixel_mse_ratio"][v]["mean"] == 1.0
    assert c["latent_difference"]["action_mirrored"]["window"] == 0.0
    assert c["latent_difference"]["action_vs_noise"] == {"mirrored": 0.0, "shuffled": 0.0}
    assert c["latent_difference"]["noise"]["window"] > 0


def test_controllability_with_one_window_and_switched_off(tmp_path, episode_bag, tiny_bundle):
    res = eval_bag(episode_bag, tiny_bundle, tmp_path / "one", config=_cfg(shadow=False, max_steps=1, examples=0))
    m = json.loads(res.metrics_path.read_text())
    _check_finite_or_explained(m, m["null_reasons"])
    c = m["controllability"]
    assert c["windows"] == 1 and c["ratio"]["shuffled"] is None and c["error"]["shuffled"] is None
    assert "only 1 window" in m["null_reasons"]["controllability.ratio.shuffled"]
    assert c["ratio"]["mirrored"]["mean"] > 0  # mirroring needs no other window
    assert "only 1 window" in res.report_path.read_text()
    m = eval_bag(episode_bag, tiny_bundle, tmp_path / "off",
                 config=_cfg(shadow=False, max_steps=1, examples=0, controllability=False)).metrics
    assert m["controllability"] is None and "switched off" in m["null_reasons"]["controllability"]


def test_truncated_bag_is_salvaged_and_reported_partial(tmp_path, episode_bag, tiny_bundle):
    bag = shutil.copytree(episode_bag, tmp_path / "cut")
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    # without salvage: a clear error naming the bag and the problem
    with pytest.raises(EvalBagError) as err:
        eval_bag(bag, tiny_bundle, tmp_path / "no", config=_cfg(salvage=False))
    assert str(bag) in str(err.value) and "truncated" in str(err.value)
    # with salvage: the complete chunks before the cut are evaluated, flagged partial
    res = eval_bag(bag, tiny_bundle, tmp_path / "out", config=_cfg(shadow=False))
    m = json.loads(res.metrics_path.read_text())
    assert res.exit_code == EXIT_PARTIAL and m["status"] == "partial" and m["input"]["salvaged"]
    assert 5 <= m["input"]["frames"] < 20 and m["windows"] >= 1
    assert any("truncated" in w for w in m["warnings"])
    _check_finite_or_explained(m, m["null_reasons"])
    # the episode's end and its label (written last) are lost: no Monte-Carlo value, said why
    assert m["reward"] is None and "truncated" in m["null_reasons"]["reward"]
    assert "Partial evaluation" in res.report_path.read_text()


def test_bag_corrupt_in_the_middle_is_salvaged_up_to_the_damage(tmp_path, episode_bag, tiny_bundle):
    bag = shutil.copytree(episode_bag, tmp_path / "mid")
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    n = len(data)
    data[n // 2: n // 2 + 300_000] = b"\xff" * 300_000  # the summary at the end stays intact: opens, fails reading
    mcap.write_bytes(bytes(data))
    with pytest.raises(EvalBagError, match="corrupt after"):
        eval_bag(bag, tiny_bundle, tmp_path / "no", config=_cfg(salvage=False))
    res = eval_bag(bag, tiny_bundle, tmp_path / "out", config=_cfg(max_steps=1, shadow=False))
    assert res.exit_code == EXIT_PARTIAL and res.metrics["input"]["salvaged"]
    assert 5 <= res.metrics["input"]["frames"] < 20 and any("corrupt after" in w for w in res.metrics["warnings"])


def test_label_given_on_the_command_line_when_the_bag_has_none(tmp_path, tiny_bundle):
    bag = write_episode_bag(tmp_path / "nolabel", n=24, h=16, w=16, label=False)
    m = eval_bag(bag, tiny_bundle, tmp_path / "a", config=_cfg(max_steps=1, shadow=False)).metrics
    assert m["reward"] is None and "--success" in m["null_reasons"]["reward"] and m["input"]["success"] is None
    m = eval_bag(bag, tiny_bundle, tmp_path / "b", config=_cfg(max_steps=1, shadow=False, success=False)).metrics
    assert m["input"]["success"] is False and m["input"]["label_source"] == "--success"
    assert all(p[3] == 0.0 for p in m["reward"]["points"])  # V = γ^(F−τ)·0


# ---------------------------------------------------------------------------------------------------- bad input


def test_missing_and_corrupt_bags_fail_naming_the_bag(tmp_path, tiny_bundle):
    with pytest.raises(EvalBagError, match="does not exist"):
        eval_bag(tmp_path / "nope", tiny_bundle, tmp_path / "o", config=_cfg())
    bad = tmp_path / "garbage"
    bad.mkdir()
    (bad / "garbage.mcap").write_bytes(b"this is not an mcap file" * 10)
    with pytest.raises(EvalBagError) as err:
        eval_bag(bad, tiny_bundle, tmp_path / "o", config=_cfg())
    assert str(bad) in str(err.value)
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_directory_of_episodes_is_refused(tmp_path, episode_bag, tiny_bundle):
    d = tmp_path / "generated"
    d.mkdir()
    for name in ("episode_000000", "episode_000001"):
        shutil.copytree(episode_bag, d / name)
        (d / f"{name}.json").write_text(json.dumps({"success": True}))
    with pytest.raises(EvalBagError, match="holds 2 episodes"):
        eval_bag(d, tiny_bundle, tmp_path / "o", config=_cfg())


def test_missing_topic_names_bag_and_topic(tmp_path, tiny_bundle):
    bag = write_episode_bag(tmp_path / "noee", n=24, h=16, w=16, skip_topic="/ee_pose")
    with pytest.raises(EvalBagError) as err:
        eval_bag(bag, tiny_bundle, tmp_path / "o", config=_cfg())
    assert str(bag) in str(err.value) and "/ee_pose" in str(err.value) and "missing topic" in str(err.value)


def test_mismatched_image_sizes_name_the_topic(tmp_path, tiny_bundle):
    bag = write_episode_bag(tmp_path / "resized", n=24, h=16, w=16, resize_at=10)
    with pytest.raises(EvalBagError) as err:
        eval_bag(bag, tiny_bundle, tmp_path / "o", config=_cfg())
    msg = str(err.value)
    assert str(bag) in msg and "/cameras/right/image_raw" in msg and "mismatched image sizes" in msg


def test_too_short_bag_and_broken_model_dir(tmp_path, tiny_bundle):
    bag = write_episode_bag(tmp_path / "short", n=9, h=16, w=16)  # 0.6 s: fewer frames than one window
    with pytest.raises(EvalBagError, match="one window needs"):
        eval_bag(bag, tiny_bundle, tmp_path / "o", config=_cfg())
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken")
    shutil.rmtree(broken / "flow_map")
    with pytest.raises(EvalBagError, match="flow_map"):
        eval_bag(bag, broken, tmp_path / "o", config=_cfg())
    with pytest.raises(EvalBagError, match="does not exist"):
        eval_bag(bag, tmp_path / "no-model", tmp_path / "o", config=_cfg())


def test_index_naming_a_missing_part_is_bad_input(tmp_path, episode_bag, tiny_bundle):
    """The bundle's index (bundle.json, written by save) names a part that is gone: an error naming the key and
    the path — even for a part eval-bag could do without (the UQ head), and for the teacher it is not asked to use."""
    for part in ("uq_head", "world_model"):
        broken = shutil.copytree(tiny_bundle, tmp_path / part)
        shutil.rmtree(broken / part)
        with pytest.raises(EvalBagError, match=rf"parts\.{part} names .*{part}, which does not exist"):
            eval_bag(episode_bag, broken, tmp_path / "o", config=_cfg(shadow=False))
    # without an index the same directory loads by its layout, the UQ metrics null with the reason
    # the CLI: exit code 2, the key and the path named, nothing written
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    r = CliRunner().invoke(app, ["eval-bag", str(episode_bag), "--model", str(tmp_path / "uq_head"), "--out",
                                 str(tmp_path / "cli"), "--no-progress", "--no-shadow"])
    assert r.exit_code == 2 and "parts.uq_head" in r.output and str(tmp_path / "uq_head") in r.output, r.output
    assert not (tmp_path / "cli" / "metrics.json").exists()
    # without an index the same directory loads by its layout, the UQ head absent with the reason
    no_index = tmp_path / "uq_head"
    (no_index / "bundle.json").unlink()
    b = load_bundle(no_index)
    assert b.uq_head is None and "uq_head/" in b.missing["uq_head"] and b.index.inferred


def test_teacher_predicts_instead_of_the_flow_map(tmp_path, episode_bag, tiny_bundle):
    """The model card's teacher row: the EDM teacher (N Euler steps, same initial noise) replaces the flow map."""
    cfg = {"shadow": False, "max_steps": 2}
    fm = json.loads(eval_bag(episode_bag, tiny_bundle, tmp_path / "fm", config=_cfg(**cfg)).metrics_path.read_text())
    te = json.loads(eval_bag(episode_bag, tiny_bundle, tmp_path / "te",
                             config=_cfg(teacher_steps=3, **cfg)).metrics_path.read_text())
    assert fm["settings"]["predictor"] == "flow map K=1" and te["settings"]["predictor"] == "teacher N=3"
    assert all(0 < x < 100 for x in te["prediction"]["psnr_db"]["mean"])
    assert te["prediction"]["latent_mse"]["per_step"] != fm["prediction"]["latent_mse"]["per_step"]
    # an explicit teacher directory works too; a bundle without the teacher is a clear error
    bare = shutil.copytree(tiny_bundle, tmp_path / "bare")
    shutil.move(bare / "world_model", tmp_path / "teacher")
    write_bundle_index(bare)  # re-indexed: its bundle.json no longer names the teacher (else: bad input, see below)
    explicit = _cfg(teacher_steps=3, teacher_dir=str(tmp_path / "teacher"), **cfg)
    te2 = eval_bag(episode_bag, bare, tmp_path / "te2", config=explicit)
    assert json.loads(te2.metrics_path.read_text())["prediction"] == te["prediction"]
    with pytest.raises(EvalBagError, match=r"no EDM teacher at .*bare/world_model"):
        eval_bag(episode_bag, bare, tmp_path / "o", config=_cfg(teacher_steps=3, **cfg))


def test_a_lerobot_droid_episode_is_evaluated_in_place(tmp_path, tiny_bundle):
    """eval-bag on a LeRobot dataset (the DROID mapping, real h264 videos): prediction quality, UQ, reward,
    controllability and the shadow planner on one episode, read in place; an unknown episode is named."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lerobot_fixture import instruction, write_dataset

    ds = write_dataset(tmp_path / "droid", "v3.0", (31, 25, 19), success=(True, False, True))
    res = eval_bag(ds, tiny_bundle, tmp_path / "out", config=_cfg(episode=1))
    assert res.exit_code == EXIT_OK
    m = json.loads(res.metrics_path.read_text())
    _check_finite_or_explained(m, m["null_reasons"])
    assert m["input"]["lerobot_episode"] == 1 and m["input"]["frames"] == 9  # 25 frames at 15 Hz → 9 at 5 Hz
    assert m["input"]["instruction"] == instruction(1) and m["input"]["success"] is False
    assert m["input"]["label_source"] == "LeRobot (mapping droid)"
    assert m["input"]["source_image_size"] == [48, 64]
    assert m["prediction"]["psnr_db_mean"] > 0 and m["controllability"] is not None and m["reward"] is not None
    import importlib.util

    if importlib.util.find_spec("lpips") is None:  # as on our machines: LPIPS is null, and the report says why
        assert m["prediction"]["lpips"] is None
        assert "not installed" in m["null_reasons"]["prediction.lpips"]
    with pytest.raises(EvalBagError, match=r"(?s)episode 7.*episode\(s\) \[7\] not in the dataset"):
        eval_bag(ds, tiny_bundle, tmp_path / "out2", config=_cfg(episode=7))


def test_calibrate_uq_fits_and_writes_the_temperature(tmp_path, episode_bag, tiny_bundle):
    from typer.testing import CliRunner

    from vidplan_app.cli import app
    from vidplan_core.eval.calibration import nll

    model = tmp_path / "model"
    shutil.copytree(tiny_bundle, model)
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "episode_a").symlink_to(episode_bag, target_is_directory=True)
    res = CliRunner().invoke(app, ["calibrate-uq", str(model), "--bags", str(bags), "--windows", "3", "--write"])
    assert res.exit_code == 0, res.output
    rep = json.loads((bags / "calibrate-uq" / "calibration.json").read_text())
    assert rep["previous_temperature"] == 1.0 and rep["episodes"] == 1 and rep["elements"] > 0
    assert rep["nll"]["after"] <= rep["nll"]["before"] + 1e-9
    cfg = json.loads((model / "uq_head" / "config.json").read_text())
    assert cfg["temperature"] == rep["temperature"] != 1.0
    assert json.loads((model / "uq_head" / "calibration.json").read_text()) == rep
    # the samples it fitted on are those eval-bag draws; refitting the calibrated head changes nothing
    with np.load(bags / "calibrate-uq" / "episode_a" / "uq_samples.npz") as d:
        assert d["logits"].shape == (rep["elements"], load_bundle(model).uq_head.config.num_bins)
        raw = d["logits"] * float(d["temperature"])
        assert nll(raw, d["bin"], rep["temperature"]) == pytest.approx(rep["nll"]["after"])
    res = CliRunner().invoke(app, ["calibrate-uq", str(model), "--bags", str(bags), "--windows", "3",
                                   "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "again" / "calibration.json").read_text())
    assert again["previous_temperature"] == rep["temperature"]
    assert again["temperature"] == pytest.approx(rep["temperature"], abs=2e-4)
    res = CliRunner().invoke(app, ["calibrate-uq", str(model), "--bags", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no recorded episodes" in res.output
