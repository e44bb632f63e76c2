"""TensorRT engine cache keying (builder injected) and the native TensorRT backend (skipped here: not installable)."""

from __future__ import annotations

import importlib.util

import pytest

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.tensorrt_engines import EngineCache, EngineKey


def test_engine_cache_rebuilds_only_when_the_key_changes(tmp_path):
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    builds: list[tuple[str, str]] = []

    def builder(path, precision):  # stands in for TensorRT's builder, which cannot be installed here
        builds.append((path.name, precision))
        return f"engine-{precision}".encode()

    cache = EngineCache(tmp_path / "engines", builder=builder, trt_version="10.9.0", gpu="NVIDIA H100")
    p1 = cache.get("rollout_k1_n6", onnx, "a" * 64, "fp16")
    p2 = cache.get("rollout_k1_n6", onnx, "a" * 64, "fp16")
    assert p1 == p2 and len(builds) == 1 and p1.read_bytes() == b"engine-fp16"
    cache.get("rollout_k1_n6", onnx, "a" * 64, "bf16")  # precision changes the key
    cache.get("rollout_k1_n6", onnx, "b" * 64, "fp16")  # re-exported ONNX changes the key
    assert len(builds) == 3
    other = EngineCache(tmp_path / "engines", builder=builder, trt_version="10.9.0", gpu="NVIDIA H200")
    other.get("rollout_k1_n6", onnx, "a" * 64, "fp16")  # another GPU changes the key
    newer = EngineCache(tmp_path / "engines", builder=builder, trt_version="10.10.0", gpu="NVIDIA H100")
    newer.get("rollout_k1_n6", onnx, "a" * 64, "fp16")  # another TensorRT changes the key
    assert len(builds) == 5
    again = EngineCache(tmp_path / "engines", builder=builder, trt_version="10.9.0", gpu="NVIDIA H100")
    again.get("rollout_k1_n6", onnx, "a" * 64, "fp16")  # a new process finds the cached engine
    assert len(builds) == 5
    keys = {EngineKey("a" * 64, v, g, p).digest() for v in ("1", "2") for g in ("x", "y") for p in ("fp16", "bf16")}
    assert len(keys) == 8


def test_missing_tensorrt_is_a_clear_startup_error(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this test checks the error without it")
    from vidplan_core.runtime.tensorrt_backend import TensorRTBackend

    with pytest.raises(BackendError, match="TensorRT is not installed"):
        TensorRTBackend(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT cannot be installed on this machine (its -libs wheels come from an unreachable "
                           "index) and there is no GPU; the native engine backend runs on the robot's GPU only")
def test_tensorrt_backend_matches_onnxruntime(tmp_path):  # pragma: no cover - needs TensorRT and a GPU
    import numpy as np

    from vidplan_core.export.onnx_export import export_planner
    from vidplan_core.runtime.base import PlanningContext
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
    from vidplan_core.runtime.tensorrt_backend import TensorRTBackend

    models = random_planner_models("tiny")
    export_planner(models, tmp_path, batch_sizes=(2,), simplify="none")
    cfg = models.suite.autoencoder.config
    pose = np.array([0.45, 0.05, 0.3, 3.1, 0, 0, 0])
    ctx = PlanningContext(np.zeros((2, 3, 3, cfg.view_height, cfg.view_width), np.uint8), np.repeat(pose[None], 2, 0),
                          "pick up the red cube")
    trt_be, ort_be = TensorRTBackend(tmp_path, precision="fp32"), OnnxRuntimeBackend(tmp_path)
    a = np.repeat(pose[None, None], 2, 0).repeat(3, 1)
    trt_be.set_context(ctx)
    ort_be.set_context(ctx)
    np.testing.assert_allclose(trt_be.rollout(a).latents, ort_be.rollout(a).latents, rtol=1e-3, atol=1e-3)


def test_engine_key_follows_the_shared_weights_file():
    """A graph whose weights live in the shared external-data file gets a new engine key when only the weights
    change (the graph file itself is then byte-identical)."""
    from vidplan_core.runtime.manifest import GraphEntry, Manifest

    def manifest(weights_sha: str) -> Manifest:
        graphs = {"rollout_k1_n6": GraphEntry("rollout_k1_n6.onnx", "a" * 64, {}, {}, data=["weights.onnx.data"]),
                  "text": GraphEntry("text.onnx", "c" * 64, {}, {})}
        return Manifest(graphs=graphs, opset=18, model={}, data_files={"weights.onnx.data": weights_sha})

    m1, m2 = manifest("1" * 64), manifest("2" * 64)
    assert m1.content_sha256("rollout_k1_n6") != m2.content_sha256("rollout_k1_n6")
    assert m1.content_sha256("rollout_k1_n6") != "a" * 64
    assert m1.content_sha256("text") == "c" * 64  # no external data: the graph file's own hash
