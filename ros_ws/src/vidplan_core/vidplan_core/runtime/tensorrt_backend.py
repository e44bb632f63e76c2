"""Native TensorRT backend: runs the engines built by ``vidplan export --tensorrt`` on the robot's GPU.

UNTESTED HERE: TensorRT cannot be installed on the development machines and they have no GPU. Written against the
TensorRT 10 Python API (``Runtime.deserialize_cuda_engine``, ``IExecutionContext.set_tensor_address``,
``execute_async_v3``) with torch CUDA tensors as buffers. Import is lazy: constructing the backend without TensorRT
or CUDA raises :class:`~vidplan_core.runtime.base.BackendError` at start-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput, check_actions
from vidplan_core.runtime.manifest import load_manifest
from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
from vidplan_core.runtime.tensorrt_engines import EngineCache, Precision, require_tensorrt

__all__ = ["TensorRTBackend"]


class _Engine:
    """One deserialized engine with torch-allocated I/O (static shapes from the manifest)."""

    def __init__(self, trt, runtime, path: Path, inputs: dict[str, list[int]], outputs: dict[str, list[int]]):
        import torch

        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path} (stale engine? delete it to rebuild)")
        self.ctx = self.engine.create_execution_context()
        self.inputs, self.outputs = inputs, outputs
        self.out_bufs = {}
        for name, shape in outputs.items():
            dt = torch.float32
            self.out_bufs[name] = torch.empty(shape, dtype=dt, device="cuda")
            self.ctx.set_tensor_address(name, self.out_bufs[name].data_ptr())
        self.stream = torch.cuda.Stream()

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        keep = []
        for name in self.inputs:
            t = torch.as_tensor(feed[name], device="cuda").contiguous()
            keep.append(t)
            self.ctx.set_input_shape(name, tuple(t.shape))
            self.ctx.set_tensor_address(name, t.data_ptr())
        # The inputs were copied on the current (default) stream; the engine runs on its own stream, which must
        # wait for those copies (a host-to-device copy from pageable memory may still be in flight on return).
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            if not self.ctx.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execution failed")
        self.stream.synchronize()
        return [self.out_bufs[n].cpu().numpy() for n in self.outputs]


class TensorRTBackend(OnnxRuntimeBackend):
    """Same graphs and batching as :class:`OnnxRuntimeBackend`, executed by TensorRT engines.

    Args:
        export_dir: ``vidplan export`` directory.
        engine_dir: engine cache (default ``<export_dir>/engines``); missing engines are built on first use.
        precision: "fp16", "bf16" or "fp32".
        flow_steps: K.
    """

    name = "tensorrt"

    def __init__(self, export_dir: str | Path, engine_dir: str | Path | None = None, precision: Precision = "fp16",
                 flow_steps: int | None = None):
        trt = require_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise BackendError("the TensorRT backend needs a CUDA GPU; none is visible to torch")
        manifest = load_manifest(export_dir)
        self._trt_manifest = manifest
        cache = EngineCache(engine_dir or Path(export_dir) / "engines")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        # Reuse the onnxruntime backend's bookkeeping (manifest checks, batching, tokenizer) and replace every graph
        # but the text tower by an engine. The text graph (int64 token ids, run once per instruction) stays on a CPU
        # session. The VAE encoder must not: for the full configuration it is TFLOPs per history frame, seconds per
        # cycle on a CPU (it used to stay there too).
        super().__init__(export_dir, flow_steps=flow_steps, provider="cpu", verify_hashes=False)
        for name in list(self._sessions):
            if name in ("text", "cond_text"):
                continue
            g = manifest.graphs[name]
            path = cache.get(name, manifest.path(name), manifest.content_sha256(name), precision)
            eng = _Engine(trt, runtime, path, g.inputs, g.outputs)
            self._sessions[name] = _SessionShim(eng)
        self.precision = precision
        self._t0 = time.perf_counter()

    def set_context(self, ctx: PlanningContext) -> float:
        return super().set_context(ctx)

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        return super().rollout(check_actions(actions, self.horizon))


class _SessionShim:
    """Looks like an onnxruntime session (``run(None, feed)``) for the shared batching code."""

    def __init__(self, engine: _Engine):
        self.engine = engine

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.engine(feed)

    def get_providers(self) -> list[str]:
        return ["TensorRT"]
