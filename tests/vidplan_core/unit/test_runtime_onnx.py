"""Export of the tiny planner graphs to ONNX and the onnxruntime backend: parity with torch (rollout ≤ 1e-4
relative, value-and-grad ≤ 1e-4), manifest checks, provider errors, the planner on onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidplan_core.export.onnx_export import export_planner
from vidplan_core.planning.planner import GradientPlanner, PlannerConfig
from vidplan_core.planning.proposals import perturbation_proposals
from vidplan_core.runtime.base import BackendError, PlanningContext
from vidplan_core.runtime.bundle import random_planner_models
from vidplan_core.runtime.manifest import ManifestError, load_manifest
from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
from vidplan_core.runtime.torch_backend import TorchBackend

TINY_MAPS = Path(__file__).resolve().parents[2] / "data" / "models" / "tiny_action_maps.yaml"

# Exporting the value-and-grad graph traces ~12k ops: minutes on the 2 shared cores, hence slow + a longer timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

POSE = np.array([0.45, 0.05, 0.30, np.pi - 0.02, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    # the tiny model with spatial action maps, their input weights made non-zero: parity covers the maps' rendering
    # (and its gradient in value_grad), not only zeros; with a tiny decoder, so the semantic graphs' parity covers it
    models = random_planner_models(str(TINY_MAPS), seed=1, tiny_decoder=True)
    n = models.suite.flow_map.model.map_renderer.num_channels
    with torch.no_grad():
        w = models.suite.flow_map.model.unet.conv_in.weight
        w[:, -n:] = 0.1 * torch.randn(w[:, -n:].shape, generator=torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("tiny_export")
    # simplify="none", as make demo-models exports models/demo (onnxslim runs on the forward graphs in
    # tests/vidplan_app/e2e/test_pipeline.py; on this ~10k-node gradient graph it costs about a minute)
    manifest = export_planner(models, out, flow_steps=(1,), batch_sizes=(2,), grad_batch_sizes=(1,),
                              simplify="none", verify=True, tol=1e-4)
    return models, out, manifest


@pytest.fixture(scope="module")
def backends(exported):
    models, out, _ = exported
    return TorchBackend(models, flow_steps=1), OnnxRuntimeBackend(out, threads=1)


@pytest.fixture(scope="module")
def ctx(exported):
    models = exported[0]
    cfg = models.suite.autoencoder.config
    frames = np.random.default_rng(2).integers(0, 255, (models.num_history, 3, 3, cfg.view_height, cfg.view_width),
                                               dtype=np.uint8)
    return PlanningContext(frames, np.repeat(POSE[None], models.num_history, 0), "pick up the red cube", seed=5)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def test_manifest_contents(exported):
    _, out, manifest = exported
    names = set(manifest.graphs)
    assert {"encode", "text", "decode", "rollout_k1_n2", "heads_n2", "semantic_n2", "value_grad_k1_n1"} <= names
    for g in manifest.graphs.values():
        assert g.max_rel_err is not None and g.max_rel_err <= 1e-4
        assert len(g.sha256) == 64
    d = json.loads((out / "manifest.json").read_text())
    assert d["opset"] == 18 and d["versions"]["onnxruntime"] and d["model"]["horizon"] == 3
    assert d["model"]["scoring_decoder"] == "tiny"  # the semantic graphs decode with the bundle's tiny decoder
    assert d["graphs"]["value_grad_k1_n1"]["outputs"]["grad"] == [1, 3, 7]
    # compacted: every graph reads its weights from the one shared, hashed file
    assert list(d["data_files"]) == ["weights.onnx.data"] and len(d["data_files"]["weights.onnx.data"]) == 64
    assert all(set(g.data) <= {"weights.onnx.data"} for g in manifest.graphs.values())
    assert manifest.graphs["value_grad_k1_n1"].data == ["weights.onnx.data"]
    assert sorted(p.name for p in out.glob("*.data")) == ["weights.onnx.data"]


def test_rollout_parity(backends, ctx):
    tb, ob = backends
    props = perturbation_proposals(np.repeat(POSE[None], tb.horizon, 0), 3, rng=4).actions  # 3 = 2 + padded 1
    tb.set_context(ctx)
    ob.set_context(ctx)
    rt, ro = tb.rollout(props), ob.rollout(props)
    for k in ("latents", "h_bar", "uq_map", "value", "value_entropy", "semantic_score", "semantic_map"):
        a, b = getattr(ro, k), getattr(rt, k)
        assert a.shape == b.shape, k
        assert _rel(a, b) <= 1e-4, (k, _rel(a, b))


def test_scorer_text_follows_the_context_while_the_world_model_keeps_the_instruction(backends, ctx):
    """PlanningContext.target_text (a put's carry phase scores "the bowl"): both runtimes score the frames against it,
    alike, and predict the same frames as with the instruction alone."""
    from dataclasses import replace

    tb, ob = backends
    props = perturbation_proposals(np.repeat(POSE[None], tb.horizon, 0), 1, rng=4).actions
    ob.set_context(ctx)
    plain = ob.rollout(props)
    bowl = replace(ctx, target_text="the bowl")
    tb.set_context(bowl)
    ob.set_context(bowl)
    rt, ro = tb.rollout(props), ob.rollout(props)
    np.testing.assert_allclose(ro.latents, plain.latents, rtol=0, atol=1e-6)  # the same world-model input
    assert _rel(ro.semantic_map, plain.semantic_map) > 1e-3  # another text, another map
    for k in ("semantic_score", "semantic_map"):
        assert _rel(getattr(ro, k), getattr(rt, k)) <= 1e-4, (k, _rel(getattr(ro, k), getattr(rt, k)))


def test_value_and_grad_parity(backends, ctx):
    tb, ob = backends
    a = perturbation_proposals(np.repeat(POSE[None], tb.horizon, 0), 2, rng=7).actions[1:]
    tb.set_context(ctx)
    ob.set_context(ctx)
    (jt, gt), (jo, go) = tb.value_and_grad(a), ob.value_and_grad(a)
    assert np.abs(gt).max() > 0  # a real gradient, not zeros
    assert _rel(jo, jt) <= 1e-4 and _rel(go, gt) <= 1e-4, (_rel(jo, jt), _rel(go, gt))


def test_planner_runs_on_onnxruntime(backends, ctx):
    _, ob = backends
    props = perturbation_proposals(np.repeat(POSE[None], ob.horizon, 0), 4, rng=0)
    res = GradientPlanner(ob, PlannerConfig(refine_iters=2, min_grad=0.0)).plan(ctx, props)  # tiny model: tiny gradient
    assert res.status == "ok", res.reason
    assert len(res.objective_trace) == 3 and res.chunk.is_finite()


def test_batch_plan_and_padding_warning(backends):
    """Candidates are split over the exported sizes (here only 2); padding beyond a quarter is warned about, and a
    planning session asks for the warning with its own candidate count (basis directions + hold + toggle + nominal)."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.session import PlanningSession, ProposalConfig, SessionConfig

    _, ob = backends
    assert ob.batch_plan(4) == [2, 2] and ob.batch_plan(3) == [2, 2] and ob.batch_plan(1) == [2]
    assert ob.batching_note(4) is None and ob.batching_note(7) is None  # 8 of 7: within a quarter
    note = ob.batching_note(1)
    assert note is not None and "2.0x" in note and "--batch 1" in note
    one = SessionConfig(proposals=ProposalConfig(basis_directions=["+x"], include_hold=False, gripper_toggle=False))
    assert PlanningSession(ob, PandaKinematics(), one).num_candidates == 1
    assert PlanningSession(ob, PandaKinematics(), one).batching_notes() == [note]
    assert PlanningSession(ob, PandaKinematics(), SessionConfig()).num_candidates == 8  # 6 basis + hold + toggle
    assert PlanningSession(ob, PandaKinematics(), SessionConfig()).batching_notes() == []


def test_decode_parity_and_exports_without_the_decode_graph(backends, ctx, tmp_path, exported):
    """The debug-picture decode: onnxruntime matches torch; a wrong shape and an older export without the graph
    are BackendErrors that say what to do (the planner node then publishes no prediction pictures)."""
    tb, ob = backends
    tb.set_context(ctx)
    lat = tb.rollout(perturbation_proposals(np.repeat(POSE[None], tb.horizon, 0), 1, rng=3).actions).latents[0]
    ft, fo = tb.decode(lat), ob.decode(lat)
    cfg = exported[0].suite.autoencoder.config
    assert ft.shape == fo.shape == (tb.horizon, 3, 3, cfg.view_height, cfg.view_width)
    assert 0.0 <= fo.min() and fo.max() <= 1.0 and fo.std() > 0
    assert _rel(fo, ft) <= 1e-4, _rel(fo, ft)
    with pytest.raises(BackendError, match=r"decode: latents must be"):
        ob.decode(lat[:-1])
    old = tmp_path / "old_export"
    shutil.copytree(exported[1], old)
    d = json.loads((old / "manifest.json").read_text())
    (old / d["graphs"].pop("decode")["file"]).unlink()
    (old / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BackendError, match=r"no 'decode' graph .* re-export"):
        OnnxRuntimeBackend(old, threads=1).decode(lat)


def test_tampered_or_incomplete_export_is_a_startup_error(exported, tmp_path):
    _, out, _ = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    with open(bad / "heads_n2.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match=r"heads_n2.onnx: sha256 .* does not match"):
        OnnxRuntimeBackend(bad)
    (bad / "heads_n2.onnx").unlink()
    with pytest.raises(ManifestError, match=r"heads_n2.*missing"):
        load_manifest(bad)
    shutil.copy(out / "heads_n2.onnx", bad / "heads_n2.onnx")
    with open(bad / "weights.onnx.data", "r+b") as f:  # the weights the graphs share
        f.seek(4096)
        f.write(b"\1\2\3\4")
    with pytest.raises(ManifestError, match=r"weights\.onnx\.data: sha256 .* does not match"):
        OnnxRuntimeBackend(bad)
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        OnnxRuntimeBackend(tmp_path)


def test_unavailable_provider_and_steps_are_startup_errors(exported):
    _, out, _ = exported
    with pytest.raises(BackendError, match="TensorrtExecutionProvider is not available"):
        OnnxRuntimeBackend(out, provider="tensorrt")
    with pytest.raises(BackendError, match=r"flow_steps=4 was not exported \(available K: \[1\]\)"):
        OnnxRuntimeBackend(out, flow_steps=4)
