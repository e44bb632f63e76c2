"""PlannerModels: loading a planner model directory, and model/config mismatches as clear start-up errors; the one
loader of a model directory (vidplan_core.runtime.loader) and its index bundle.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vidplan_core.runtime import bundle_index as BI
from vidplan_core.runtime import loader as L
from vidplan_core.runtime import warm_up as W
from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle import random_planner_models
from vidplan_core.runtime.torch_backend import TorchBackend


def test_load_model_directory_and_mismatches(tmp_path):
    torch.set_num_threads(1)
    m = random_planner_models("tiny", seed=0)
    m.suite.save(tmp_path)
    m.scorer.model.save_pretrained(tmp_path / "semantic")
    m.scorer.tokenizer.save_pretrained(tmp_path / "semantic")
    loaded = L.load_planner_models(tmp_path)
    assert loaded.horizon == 3 and loaded.num_history == 2 and loaded.uses_text
    sd0, sd1 = m.suite.flow_map.state_dict(), loaded.suite.flow_map.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)

    with pytest.raises(BackendError, match=r"semantic model directory .* does not exist"):
        L.load_planner_models(tmp_path, semantic_dir=tmp_path / "nope")
    with pytest.raises(BackendError, match="does not exist"):
        L.load_planner_models(tmp_path / "missing")
    # a scorer whose embedding width differs from the world model's text conditioning
    other = random_planner_models("tiny", seed=0)
    other.suite.flow_map.model.register_to_config(text_embed_dim=24)
    with pytest.raises(BackendError, match="text embeddings of width 24"):
        TorchBackend(other)
    with pytest.raises(BackendError, match="CUDA"):
        TorchBackend(m, bf16=True) if not torch.cuda.is_available() else pytest.skip("CUDA present")


# ------------------------------------------------------------------------------------------------------ the index
# One loader for a model directory (vidplan_core.runtime.loader), driven by its index bundle.json.
DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("indexed") / "model"
    random_planner_models("tiny", seed=0, tiny_decoder=True).save(d)  # with every optional model part
    return d


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_save_writes_the_index_and_loading_goes_through_it(saved, tmp_path):
    idx = json.loads((saved / BI.BUNDLE_INDEX).read_text())
    sums = idx.pop("checksums")
    parts = (*BI.MODEL_PARTS, "tiny_decoder")
    assert idx == {"format": "vidplan-bundle/1", "config": "tiny",
                   "parts": {p: p for p in parts}}  # the teacher too: the suite has one
    assert set(sums) == set(parts) and sums["semantic"].keys() == {"model.safetensors"}
    idx["checksums"] = sums
    d = _copy(saved, tmp_path)
    # the index, not the layout, says where a part is
    (d / "heads").mkdir()
    shutil.move(d / "uq_head", d / "heads" / "uq")
    idx["parts"]["uq_head"] = "heads/uq"
    (d / BI.BUNDLE_INDEX).write_text(json.dumps(idx))
    lb = L.load_planner_backend(d, "torch", threads=1)
    assert isinstance(lb.backend, TorchBackend) and lb.kind == "torch"
    assert lb.view_size == (16, 16) and (lb.num_history, lb.horizon) == (2, 3) and lb.warnings == []
    assert lb.index.source == d / BI.BUNDLE_INDEX and lb.index.config == "tiny" and lb.models.config_name == "tiny"
    assert L.load_planner_models(d).suite.uq_head is not None
    # saving again re-indexes what is there and keeps the configuration name
    lb.models.save(tmp_path / "again")
    again = BI.read_bundle_index(tmp_path / "again")
    assert again.config == "tiny" and again.parts["uq_head"] == "uq_head"


def test_an_index_naming_a_missing_part_is_an_error_naming_key_and_path(saved, tmp_path):
    d = _copy(saved, tmp_path)
    shutil.rmtree(d / "reward_head")
    for backend in ("torch", "onnxruntime", "tensorrt"):  # before any runtime is touched, whichever is asked for
        with pytest.raises(BI.BundleError, match=r"parts\.reward_head names .*reward_head, which does not exist") as e:
            L.load_planner_backend(d, backend)
        assert e.value.key == "parts.reward_head" and e.value.path == d / "reward_head"
        assert isinstance(e.value, BackendError)
    with pytest.raises(BackendError, match=r"parts\.reward_head"):
        L.load_planner_models(d)
    assert "parts.reward_head" in BI.bundle_problems(d, "torch")[0]
    # an export the index names but that is gone
    d2 = _copy(saved, tmp_path / "b")
    idx = json.loads((d2 / BI.BUNDLE_INDEX).read_text())
    (d2 / BI.BUNDLE_INDEX).write_text(json.dumps({**idx, "export": {"path": "onnx", "manifest": "onnx/manifest.json"}}))
    with pytest.raises(BI.BundleError, match=r"export\.path names .*onnx, which does not exist") as e:
        L.load_planner_backend(d2, "torch")
    assert e.value.key == "export.path"
    # a bad index: typo'd key, unknown part, another format, not JSON, absolute path — each named
    for bad, key in (({**idx, "part": {}}, "part"), ({**idx, "parts": {"flowmap": "flow_map"}}, "parts.flowmap"),
                     ({**idx, "format": "vidplan-bundle/9"}, "format"),
                     ({**idx, "parts": {"flow_map": str(d2 / "flow_map")}}, "parts.flow_map")):
        (d2 / BI.BUNDLE_INDEX).write_text(json.dumps(bad))
        with pytest.raises(BI.BundleError, match=key.replace(".", r"\.")) as e:
            BI.read_bundle_index(d2)
        assert e.value.key == key and str(d2 / BI.BUNDLE_INDEX) in str(e.value)
    (d2 / BI.BUNDLE_INDEX).write_text("{not json")
    with pytest.raises(BI.BundleError, match="invalid JSON"):
        BI.read_bundle_index(d2)
    # what the directory lacks for the backend asked for
    d3 = _copy(saved, tmp_path / "c")
    shutil.rmtree(d3 / "semantic")
    BI.write_bundle_index(d3)  # re-indexed after removing a part on purpose
    assert "semantic" not in BI.read_bundle_index(d3).parts
    with pytest.raises(BI.BundleError, match=r"names no 'semantic' \(the torch backend\)"):
        L.load_planner_backend(d3, "torch")
    with pytest.raises(BI.BundleError, match=r"names no 'export' \(the onnxruntime backend\)"):
        L.load_planner_backend(d3, "onnxruntime")
    with pytest.raises(BI.BundleError, match="does not exist"):
        L.load_planner_backend(tmp_path / "nope")


def test_a_directory_without_an_index_loads_by_the_layout(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / BI.BUNDLE_INDEX).unlink()
    (d / "heads").mkdir()
    shutil.move(d / "reward_head", d / "heads" / "reward_head")  # the alternative names of earlier bundles
    shutil.move(d / "autoencoder", d / "vae")
    idx = BI.read_bundle_index(d)
    assert idx.inferred and idx.source is None and idx.config is None and idx.export is None
    assert idx.parts["reward_head"] == "heads/reward_head" and idx.parts["autoencoder"] == "vae"
    lb = L.load_planner_backend(d, "torch")
    assert isinstance(lb.backend, TorchBackend) and lb.view_size == (16, 16)
    shutil.rmtree(d / "flow_map")
    with pytest.raises(BI.BundleError, match=r"model directory .* has no flow_map/ \(the torch backend; a part is a "
                                            r"directory with config\.json\)"):
        L.load_planner_backend(d, "torch")
    # a metadata bundle.json of earlier versions (no format) keeps working: layout inferred, value_gamma kept
    (d / BI.BUNDLE_INDEX).write_text(json.dumps({"value_gamma": 0.9}))
    legacy = BI.read_bundle_index(d)
    assert legacy.inferred and legacy.value_gamma == 0.9


def test_export_is_recorded_in_the_index_when_inside_the_model_directory(saved, tmp_path):
    d = _copy(saved, tmp_path)
    assert BI.record_export(d, tmp_path / "elsewhere") is None
    assert "export" not in json.loads((d / BI.BUNDLE_INDEX).read_text())
    (d / "onnx_k4").mkdir()
    (d / "onnx_k4" / "manifest.json").write_text("{}")  # record_export only needs the manifest to be there
    assert BI.record_export(d, d / "onnx_k4") == d / BI.BUNDLE_INDEX
    idx = json.loads((d / BI.BUNDLE_INDEX).read_text())
    assert idx["export"] == {"path": "onnx_k4", "manifest": "onnx_k4/manifest.json"} and idx["config"] == "tiny"
    assert BI.read_bundle_index(d).export_dir == d / "onnx_k4"
    # an index-less directory with an export in it gets one
    d2 = _copy(saved, tmp_path / "b")
    (d2 / BI.BUNDLE_INDEX).unlink()
    (d2 / "onnx").mkdir()
    (d2 / "onnx" / "manifest.json").write_text("{}")
    assert BI.infer_bundle_index(d2).export == BI.ExportEntry(path="onnx", manifest="onnx/manifest.json")
    BI.record_export(d2, d2 / "onnx")
    assert json.loads((d2 / BI.BUNDLE_INDEX).read_text())["export"]["path"] == "onnx"


def test_the_bundled_demo_has_an_index_and_loads_through_it():
    idx = BI.read_bundle_index(DEMO)
    assert idx.source == DEMO / BI.BUNDLE_INDEX and idx.config == "demo"
    assert "world_model" not in idx.parts  # the teacher is not shipped
    # the planner's parts, the behaviour-cloned nominal policy, the semantic reward's tiny decoder and the scorer the
    # world model was trained with (semantic/ is the one retrained on decoded views)
    assert set(idx.parts) == {*BI.PLANNER_PARTS, "policy", "tiny_decoder", "text_conditioner"}
    assert idx.export_dir == DEMO / "onnx"
    assert idx.checksums["text_conditioner"] != idx.checksums["semantic"]
    assert idx.view_size("torch") == idx.view_size("onnxruntime") == (48, 80)
    assert BI.bundle_problems(DEMO, "torch") == BI.bundle_problems(DEMO, "onnxruntime") == []
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend

    lb = L.load_planner_backend(DEMO, "onnxruntime", threads=1)
    assert isinstance(lb.backend, OnnxRuntimeBackend) and lb.view_size == (48, 80) and lb.horizon == 5
    # its export scores with the tiny decoder: no fallback warning
    assert lb.backend.manifest.model["scoring_decoder"] == "tiny" and lb.warnings == []
    # and conditions the world model on the text_conditioner's embedding (its own graph), not the scorer's
    assert lb.backend.manifest.model["text_conditioner"] is True and "cond_text_proj" in lb.backend.manifest.graphs
    assert lb.models is None and lb.with_objective(None) is lb.backend


def test_planner_node_eval_sim_and_eval_bag_use_the_one_loader(saved, monkeypatch):
    """The planner node, eval sim and eval-bag's shadow planner all build their backend with load_planner_backend,
    from the same directory, and get the same backend type."""
    calls: list[tuple[Path, str]] = []
    real = L.load_planner_backend

    def spy(model_dir, backend="torch", *a, **kw):
        calls.append((Path(model_dir), backend))
        return real(model_dir, backend, *a, **kw)

    monkeypatch.setattr(L, "load_planner_backend", spy)
    made = {}
    from vidplan_app.jobs.closed_loop import ClosedLoopConfig
    from vidplan_app.jobs.closed_loop_policies import load_backends

    loaded = load_backends(ClosedLoopConfig(model=str(saved)), need_no_uq=True)
    made["eval sim"] = loaded.backends["default"]
    assert isinstance(loaded.backends["no-uq"], TorchBackend) and loaded.backends["no-uq"].objective.kappa == 0.0
    assert loaded.backends["no-uq"].models is loaded.backends["default"].models  # same weights, not loaded twice

    from vidplan_core.eval.bag_bundle import load_bundle
    from vidplan_core.eval.bag_config import EvalBagConfig
    from vidplan_core.eval.bag_shadow import load_scorer, make_shadow_planner

    bundle = load_bundle(saved)
    scorer, why = load_scorer(bundle, "cpu")
    session, why = make_shadow_planner(bundle, scorer, EvalBagConfig(), "cpu", None)
    assert session is not None, why
    made["eval-bag"] = session.backend
    assert session.backend.models.suite.flow_map is bundle.flow_map  # handed the evaluation's models

    try:
        from vidplan_ros.planner_node import load_backend
    except ImportError:  # rclpy not installed here: the node's loader is checked by tests/vidplan_ros/integration
        load_backend = None
    if load_backend is not None:
        made["planner node"] = load_backend(str(saved), "torch").backend
    assert {type(b) for b in made.values()} == {TorchBackend}
    assert calls == [(saved, "torch")] * len(made), (calls, list(made))  # one call per caller


def test_eval_sim_fails_before_any_episode_when_the_index_names_a_missing_part(saved, tmp_path):
    """run_closed_loop loads the models first: ClosedLoopError naming key and path (the CLI prints it and exits 2),
    nothing written, no episode run."""
    pytest.importorskip("mujoco")
    from vidplan_app.jobs.closed_loop import ClosedLoopConfig, ClosedLoopError, run_closed_loop

    d = _copy(saved, tmp_path)
    shutil.rmtree(d / "uq_head")
    out = tmp_path / "run"
    cfg = ClosedLoopConfig(model=str(d), episodes=1, clutter=[0], tasks=["touch"], variants=["vidplan"])
    with pytest.raises(ClosedLoopError, match=r"parts\.uq_head names .*uq_head, which does not exist"):
        run_closed_loop(cfg, out, env_factory=lambda: pytest.fail("an episode was started"))
    assert not out.exists() or not any(out.iterdir())
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    r = CliRunner().invoke(app, ["eval", "sim", "--model", str(d), "--out", str(out), "--episodes", "1", "--clutter",
                                 "0", "--variants", "vidplan", "--no-progress"])
    assert r.exit_code == 2 and "parts.uq_head" in r.output, r.output
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------------------ checksums
def test_the_index_records_weight_checksums_and_loading_verifies_them(saved, tmp_path):
    """bundle.json holds the sha256 of every part's weight files; a changed, missing or unlisted weight file is a
    BundleError naming the file before anything loads (torch; the ONNX export has its own manifest hashes)."""
    import hashlib

    d = _copy(saved, tmp_path)
    idx = json.loads((d / BI.BUNDLE_INDEX).read_text())
    f = d / "flow_map" / "diffusion_pytorch_model.safetensors"
    assert idx["checksums"]["flow_map"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest()}
    lb = L.load_planner_backend(d, "torch", threads=1)
    assert lb.warnings == [] and BI.bundle_problems(d, "torch") == []
    # one byte changed: a mismatch naming the file, from every path that loads the part
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    for load in (lambda: L.load_planner_backend(d, "torch"), lambda: L.load_planner_models(d),
                 lambda: L.load_part(BI.read_bundle_index(d), "flow_map")):
        with pytest.raises(BI.BundleError, match=r"checksum mismatch for .*flow_map/diffusion_pytorch_model") as e:
            load()
        assert e.value.key == "checksums.flow_map" and e.value.path == f
    assert "checksum mismatch" in BI.bundle_problems(d, "torch")[0]
    # the semantic part (loaded outside load_part) is verified too
    d2 = _copy(saved, tmp_path / "b")
    (d2 / "semantic" / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(BI.BundleError, match=r"checksum mismatch for .*semantic/model\.safetensors"):
        L.load_planner_backend(d2, "torch")
    # a weight file the index does not list, and a listed one that is gone
    d3 = _copy(saved, tmp_path / "c")
    shutil.copy(d3 / "uq_head" / "diffusion_pytorch_model.safetensors", d3 / "uq_head" / "extra.safetensors")
    with pytest.raises(BI.BundleError, match=r"uq_head/extra\.safetensors is a weight file the index's "
                                            r"checksums\.uq_head does not list") as e:
        L.load_planner_backend(d3, "torch")
    assert e.value.key == "checksums.uq_head"
    (d3 / "uq_head" / "extra.safetensors").unlink()
    (d3 / "reward_head" / "diffusion_pytorch_model.safetensors").rename(d3 / "reward_head" / "moved.bin")
    with pytest.raises(BI.BundleError, match=r"checksums\.reward_head lists .*reward_head/diffusion_pytorch_model"
                                            r"\.safetensors, which does not exist"):
        L.load_planner_backend(d3, "torch")
    # checksums for a part the index does not name: the index is wrong
    bad = json.loads((d3 / BI.BUNDLE_INDEX).read_text())
    del bad["parts"]["world_model"]
    (d3 / BI.BUNDLE_INDEX).write_text(json.dumps(bad))
    with pytest.raises(BI.BundleError, match=r"checksums\.world_model is for a part the index does not name"):
        BI.read_bundle_index(d3)
    # a malformed digest is an index error naming the key
    bad = json.loads((saved / BI.BUNDLE_INDEX).read_text())
    bad["checksums"]["flow_map"] = {f.name: "abc"}
    (d3 / BI.BUNDLE_INDEX).write_text(json.dumps(bad))
    with pytest.raises(BI.BundleError, match=r"checksums\.flow_map"):
        BI.read_bundle_index(d3)


def test_an_index_without_checksums_loads_with_a_warning(saved, tmp_path):
    """Bundles indexed before checksums existed (and index-less layouts) still load; the loader says the weights
    are unverified, once; re-indexing records them."""
    d = _copy(saved, tmp_path)
    idx = json.loads((d / BI.BUNDLE_INDEX).read_text())
    del idx["checksums"]
    (d / BI.BUNDLE_INDEX).write_text(json.dumps(idx))
    lb = L.load_planner_backend(d, "torch", threads=1)
    assert len(lb.warnings) == 1 and "has no checksums" in lb.warnings[0] and "unverified" in lb.warnings[0]
    assert "write_bundle_index" in lb.warnings[0]
    BI.write_bundle_index(d)
    assert L.load_planner_backend(d, "torch", threads=1, warm=False).warnings == []
    (d / BI.BUNDLE_INDEX).unlink()
    lb = L.load_planner_backend(d, "torch", threads=1, warm=False)
    assert len(lb.warnings) == 1 and "no bundle.json, so no checksums" in lb.warnings[0]


def test_the_bundled_demo_records_checksums_of_its_weights():
    idx = BI.read_bundle_index(DEMO)
    parts = (*BI.PLANNER_PARTS, "policy", "tiny_decoder", "text_conditioner")
    assert set(idx.checksums) == set(parts)
    for part in parts:  # verified against the files (the weights are those committed)
        assert BI.verify_checksums(idx, part) is None


# ------------------------------------------------------------------------------------------------------ warm-up
def _poison(d: Path, part: str) -> str:
    """Set one weight tensor of ``part`` to NaN and re-index (so the checksums accept it); returns its name."""
    from safetensors.torch import load_file, save_file

    f = next((d / part).glob("*.safetensors"))
    sd = load_file(f)
    key = [k for k in sd if k.endswith("weight") and sd[k].ndim >= 2][-1]
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, f, metadata={"format": "pt"})
    BI.write_bundle_index(d)
    return key


@pytest.mark.parametrize("part, what", [("flow_map", "predicted latents"), ("uq_head", "h_bar, uq_map"),
                                        ("reward_head", "value, value_entropy"), ("semantic", "semantic_score")])
def test_warm_up_fails_start_up_naming_the_part_with_nan_weights(saved, tmp_path, part, what):
    """NaN weights used to pass start-up and fail every control cycle; the one loader's warm-up pass names the part."""
    d = _copy(saved, tmp_path)
    _poison(d, part)
    with pytest.raises(W.WarmUpError, match=rf"warm-up produced NaN/Inf in .*{what}.* of '{part}'") as e:
        L.load_planner_backend(d, "torch", threads=1)
    assert e.value.part == part and e.value.key == f"parts.{part}" and e.value.path == d / part
    assert isinstance(e.value, BackendError) and str(d / part) in str(e.value)
    # warm=False loads it (for tools that inspect a broken bundle); warm_up on it raises the same
    lb = L.load_planner_backend(d, "torch", threads=1, warm=False)
    with pytest.raises(W.WarmUpError):
        W.warm_up(lb.backend, lb.index)


def test_warm_up_of_good_models_leaves_random_state_and_results_alone(saved):
    """The warm-up pass is invisible to planning: global RNG states unchanged, same rollout as without it."""
    import numpy as np

    from vidplan_core.runtime.base import PlanningContext

    cold = L.load_planner_backend(saved, "torch", threads=1, warm=False)
    warm = L.load_planner_backend(saved, "torch", threads=1)
    np.random.seed(3)
    torch.manual_seed(3)
    np_state, t_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    assert W.warm_up(warm.backend, warm.index) > 0
    assert (np.random.get_state()[1] == np_state).all() and torch.equal(torch.random.get_rng_state(), t_state)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 3, 3, 16, 16), dtype=np.uint8)
    pose = np.array([0.4, 0.0, 0.4, np.pi, 0.0, 0.0, 0.0])
    acts = np.tile(pose, (2, 3, 1)) + rng.normal(0, 0.01, (2, 3, 7))
    outs = []
    for lb in (cold, warm):
        lb.backend.set_context(PlanningContext(frames, np.tile(pose, (2, 1)), "push the green block", seed=5))
        outs.append(lb.backend.rollout(acts))
    for k, v in outs[0].arrays().items():
        np.testing.assert_array_equal(v, outs[1].arrays()[k], err_msg=k)


def test_a_siglip_text_conditioner_conditions_and_must_share_the_tokenizer():
    """SigLIP bundles: the text_conditioner's embedding is the world model's input (the scorer's scores); one with
    another vocabulary is refused (the planner tokenises once, with the scorer's tokenizer)."""
    import dataclasses

    from vidplan_core.models.siglip import build_tokenizer

    m, other = random_planner_models("tiny", seed=0), random_planner_models("tiny", seed=1)
    kept = dataclasses.replace(m, scorer=other.scorer, text_conditioner=m.scorer)
    tb = TorchBackend(kept)
    ids = torch.as_tensor(m.tokenize("push the green block"))
    with torch.no_grad():
        assert torch.allclose(tb.conditioning_embedding("push the green block"), m.scorer.encode_text(input_ids=ids))
        assert torch.allclose(tb.text_embedding("push the green block"), other.scorer.encode_text(input_ids=ids))
    other.scorer.tokenizer = build_tokenizer(["a wholly different vocabulary"], max_len=12)
    with pytest.raises(BackendError, match="does not tokenise like the semantic scorer"):
        dataclasses.replace(m, text_conditioner=other.scorer).check()
