"""The bundled demo models (models/demo, re-created by `make demo-models`): they load strictly, stay within the size
budget, their ONNX manifest's hashes match the files, and one plan cycle on them — torch and onnxruntime — gives a
finite chunk inside the action statistics' range."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidplan_core.planning.planner import GradientPlanner, PlannerConfig
from vidplan_core.planning.proposals import perturbation_proposals
from vidplan_core.runtime.base import PlanningContext
from vidplan_core.runtime.bundle import PlannerModels
from vidplan_core.runtime.loader import load_planner_models
from vidplan_core.runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "models" / "demo"
POSE = np.array([0.45, 0.0, 0.35, np.pi, 0.0, 0.0, 0.0])
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models() -> PlannerModels:
    torch.set_num_threads(1)
    return load_planner_models(DEMO)


def _ctx(models: PlannerModels) -> PlanningContext:
    cfg = models.suite.autoencoder.config
    frames = np.random.default_rng(0).integers(0, 255, (models.num_history, 3, 3, cfg.view_height, cfg.view_width),
                                               dtype=np.uint8)
    return PlanningContext(frames, np.repeat(POSE[None], models.num_history, 0), "put the red cube in the bowl",
                           seed=0)


def test_layout_size_and_card():
    for part in ("autoencoder", "flow_map", "uq_head", "reward_head", "semantic", "onnx"):
        assert (DEMO / part).is_dir(), f"models/demo/{part} missing: run `make demo-models`"
    files = [p for p in DEMO.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 60 * 10**6  # the budget (see models/README.md)
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")], "weights must be safetensors"
    card = (DEMO / "MODEL_CARD.md").read_text()
    for needle in ("Held-out evaluation", "prediction PSNR", "UQ ECE", "reward-head", "grounded semantic scorer",
                   "teacher N=50", "flow map K=4", "## Controllability", "shuffled / true", "## Goals"):
        assert needle in card, needle


def test_metrics_json_states_every_goal_with_its_value():
    """models/demo/metrics.json (written by scripts/model_card.py): every goal of the demo-models issue with its
    measured value and whether it is met, consistent with the value (a goal the value misses is never marked met)."""
    m = json.loads((DEMO / "metrics.json").read_text())
    assert m["schema"] == "vidplan-model-metrics/1"
    names = {"controllability_ratio_h5", "psnr_gain_vs_copy_moving_db", "grounding_unseen_acc", "uq_ece",
             "uq_entropy_error_spearman", "flow_map_k1_minus_teacher_db", "flow_map_k1_speedup"}
    assert names <= set(m["goals"])
    for name, g in m["goals"].items():
        op, bound = g["goal"].split()
        assert np.isfinite(g["value"]) and g["value"] == m[name], name
        assert g["met"] == (g["value"] >= float(bound) if op == ">=" else g["value"] <= float(bound)), name
    card = (DEMO / "MODEL_CARD.md").read_text()
    assert all(f"`{n}`" in card for n in names)  # the card's Goals table shows the same goals


def test_manifest_hashes_match():
    man = load_manifest(DEMO / "onnx", verify_hashes=True)  # raises ManifestError on any mismatch
    raw = json.loads((DEMO / "onnx" / "manifest.json").read_text())
    assert raw and man is not None
    # one shared weights file, hashed; no per-graph copies left over
    assert list(man.data_files) == ["weights.onnx.data"]
    assert sorted(p.name for p in (DEMO / "onnx").glob("*.data")) == ["weights.onnx.data"]


def test_half_precision_storage_is_what_both_runtimes_compute_with(models):
    """The world-model weights are stored in float16 and computed in float32: torch and onnxruntime (whose graphs
    also store them as float16) give the same rollout to float32 rounding."""
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
    from vidplan_core.runtime.torch_backend import TorchBackend

    w = models.suite.flow_map.state_dict()
    big = [v for v in w.values() if v.is_floating_point() and v.numel() > 1000]
    assert big and all(torch.equal(v, v.half().float()) for v in big)
    ctx = _ctx(models)
    tb, ob = TorchBackend(models, flow_steps=1), OnnxRuntimeBackend(DEMO / "onnx", threads=1)
    props = perturbation_proposals(np.repeat(POSE[None], tb.horizon, 0), 4, rng=3).actions
    tb.set_context(ctx)
    ob.set_context(ctx)
    rt, ro = tb.rollout(props), ob.rollout(props)
    for k in ("latents", "h_bar", "value"):
        a, b = getattr(ro, k), getattr(rt, k)
        assert np.abs(a - b).max() <= 1e-4 * (np.abs(b).max() + 1e-12), k


def test_one_plan_cycle_torch_and_onnxruntime(models):
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
    from vidplan_core.runtime.torch_backend import TorchBackend

    ctx = _ctx(models)
    for backend in (TorchBackend(models, flow_steps=1), OnnxRuntimeBackend(DEMO / "onnx", threads=1)):
        props = perturbation_proposals(np.repeat(POSE[None], backend.horizon, 0), 4, rng=0)
        res = GradientPlanner(backend, PlannerConfig(refine_iters=1)).plan(ctx, props)
        assert res.status == "ok", (backend.name, res.reason)
        assert res.chunk.is_finite() and np.isfinite(res.scores).all() and np.isfinite(res.uncertainty).all()
        assert res.chunk.actions.shape == (backend.horizon, 7)
