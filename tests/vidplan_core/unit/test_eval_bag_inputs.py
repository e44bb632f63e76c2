"""eval-bag on the inputs a robot user actually has: a damaged model file (exit 2 naming the file, no traceback), an
empty or foreign "bag" (exit 2 saying so, not a list of missing topics), and a recording made exactly as README's
recorder command shows (no expert action, no label), which evaluates with the default topic map.

Bags and the tiny random bundle come from the helpers of tests/vidplan_core/unit/test_eval_bag.py (loaded by path).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidplan_app.cli import app
from vidplan_core.eval.bag_bundle import unreadable_model_file
from vidplan_core.eval.bag_eval import EvalBagConfig, EvalBagError, eval_bag

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("eval_bag_helpers", Path(__file__).with_name("test_eval_bag.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return helpers.save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    return helpers.write_episode_bag(tmp_path_factory.mktemp("bags") / "episode", n=30, h=16, w=16)


def _cfg(**kw):
    return EvalBagConfig(**{"max_steps": 1, "progress": False, "examples": 1, "element_samples": 64,
                            "shadow": False, **kw})


def _cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["eval-bag", *map(str, args), "--no-progress"])
    return r.exit_code, r.output + (repr(r.exception) if r.exception and not isinstance(r.exception, SystemExit)
                                    else "")


def _truncate(f: Path, keep: float) -> Path:
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    return f


# ---------------------------------------------------------------------------------------------- damaged model files


@pytest.mark.parametrize(("part", "name", "keep"), [
    ("flow_map", "diffusion_pytorch_model.safetensors", 0.0005),  # cut inside the header
    ("autoencoder", "diffusion_pytorch_model.safetensors", 0.6),  # header intact, tensors cut short
    ("uq_head", "diffusion_pytorch_model.safetensors", 0.6),  # an optional part: still bad input, not "absent"
])
def test_truncated_safetensors_is_bad_input_naming_the_file(tmp_path, bundle, small_bag, part, name, keep):
    broken = shutil.copytree(bundle, tmp_path / "model")
    bad = _truncate(broken / part / name, keep)
    with pytest.raises(EvalBagError) as err:
        eval_bag(small_bag, broken, tmp_path / "out", config=_cfg())
    assert str(bad) in str(err.value) and "truncated or corrupt" in str(err.value), str(err.value)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_truncated_model_file_exits_2_from_the_cli_without_a_traceback(tmp_path, bundle, small_bag):
    broken = shutil.copytree(bundle, tmp_path / "model")
    bad = _truncate(broken / "flow_map" / "diffusion_pytorch_model.safetensors", 0.0005)
    code, out = _cli(small_bag, "--model", broken, "--out", tmp_path / "out", "--no-shadow")
    assert code == 2, out
    assert str(bad) in out and "Traceback" not in out and "SafetensorError(" not in out, out


def test_a_damaged_semantic_model_is_bad_input_too(tmp_path, bundle, small_bag):
    # the shadow planner needs it: a damaged file must not pass as "no semantic model" (a null with a reason)
    broken = shutil.copytree(bundle, tmp_path / "model")
    bad = _truncate(broken / "semantic" / "model.safetensors", 0.5)
    with pytest.raises(EvalBagError) as err:
        eval_bag(small_bag, broken, tmp_path / "out", config=_cfg(shadow=True))
    assert str(bad) in str(err.value), str(err.value)


def test_unreadable_model_file_finds_the_damaged_file_only(tmp_path, bundle):
    copy = shutil.copytree(bundle, tmp_path / "model")
    assert unreadable_model_file(copy) is None  # an intact bundle reads
    (copy / "reward_head" / "config.json").write_text("{not json")
    path, why = unreadable_model_file(copy)
    assert path == copy / "reward_head" / "config.json" and "not valid JSON" in why


# ---------------------------------------------------------------------------------------------- empty / foreign bags


def test_zero_byte_bag_is_reported_empty(tmp_path, bundle):
    bag = tmp_path / "rec_empty"
    bag.mkdir()
    (bag / "rec_empty_0.mcap").write_bytes(b"")
    for salvage in (True, False):
        with pytest.raises(EvalBagError) as err:
            eval_bag(bag, bundle, tmp_path / "out", config=_cfg(salvage=salvage))
        msg = str(err.value)
        assert f"bag {bag} is empty" in msg and "rec_empty_0.mcap (0 bytes)" in msg, msg
        assert "missing topic" not in msg, msg
    code, out = _cli(bag, "--model", bundle, "--out", tmp_path / "cli")
    assert code == 2 and "is empty" in out, out


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("notes.mcap", b"these are my notes, not a recording\n" * 20, "an mcap"),
    ("episode.db3", b"PK\x03\x04 a zip archive renamed" * 20, "a sqlite3"),
])
def test_a_file_that_is_not_a_bag_is_named(tmp_path, bundle, name, content, kind):
    bag = tmp_path / "not_a_bag"
    bag.mkdir()
    (bag / name).write_bytes(content)
    with pytest.raises(EvalBagError) as err:
        eval_bag(bag, bundle, tmp_path / "out", config=_cfg())
    msg = str(err.value)
    assert f"{name} is not {kind} (or rosbag2) file" in msg and str(bag) in msg, msg


def test_an_empty_last_part_of_a_split_recording_is_salvaged_around(tmp_path, bundle, small_bag):
    # an interrupted recorder can leave its newest split part as a 0-byte file without metadata.yaml: damage to
    # salvage around (the complete parts are evaluated), not an "empty bag"
    rec = tmp_path / "rec"
    shutil.copytree(small_bag, rec / "rec_0")
    (rec / "rec_1").mkdir()
    (rec / "rec_1" / "rec_1_0.mcap").write_bytes(b"")
    res = eval_bag(rec, bundle, tmp_path / "out", config=_cfg())
    assert res.metrics["status"] == "partial" and res.metrics["windows"] >= 1, res.metrics["warnings"]
    assert any("rec_1_0.mcap" in w for w in res.metrics["warnings"]), res.metrics["warnings"]


# ---------------------------------------------------------------------------------------------- README's recording


def _readme_recorder_topics() -> list[str]:
    text = (REPO / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("ros2 run vidplan_ros recorder_node"))
    inner = re.search(r"topics:=\"\[(.*?)\]\"", line).group(1)
    return [t.strip().strip("'").split(":")[0] for t in inner.split(",")]  # NAME or NAME:TYPE (recorded unseen)


def test_a_recording_made_as_readme_shows_evaluates_with_the_default_topic_map(tmp_path, bundle):
    topics = _readme_recorder_topics()
    # the recorder stores exactly these topics (BagWriter, as the helper): no expert action, no episode label
    bag = helpers.write_episode_bag(tmp_path / "bags" / "rec_20260101_120000", n=30, h=16, w=16,
                                    skip_topic="/vidplan/expert_action", label=False,
                                    instruction="touch the red cube")
    meta = (bag / "metadata.yaml").read_text()
    assert sorted(re.findall(r"name: (/\S+)", meta)) == sorted(topics), (topics, meta)
    code, out = _cli(bag, "--model", bundle, "--out", tmp_path / "out", "--no-shadow", "--max-steps", "1")
    assert code == 0, out
    assert "has no /vidplan/expert_action" in out and "measured EE pose" in out, out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["status"] == "complete" and m["input"]["action_source"].startswith("measured"), m["input"]
    assert m["input"]["instruction"] == "touch the red cube"  # from /vidplan/instruction, as README records it
    assert m["reward"] is None and "--success" in m["null_reasons"]["reward"]  # no label: says how to give one
    # an action topic the topic map names explicitly stays required
    tmap = tmp_path / "map.yaml"
    tmap.write_text("action: /vidplan/expert_action\n")
    code, out = _cli(bag, "--model", bundle, "--out", tmp_path / "o2", "--topic-map", tmap, "--no-shadow")
    assert code == 2 and "missing topic /vidplan/expert_action" in out, out
