"""TensorRT engines for the exported graphs, with a cache that rebuilds only when its key changes.

Key = sha256 of (ONNX file sha256, TensorRT version, GPU name, precision). Engines are tied to all four — a new
driver stack, another GPU model or a re-exported graph needs a rebuild, anything else must not trigger one (the
"engine rebuilt at every launch" pain of Isaac ROS users). Layout::

    <cache_dir>/<graph>-<key[:16]>.engine   serialized engine
    <cache_dir>/<graph>-<key[:16]>.json     the key's parts (for humans and for `vidplan export --tensorrt`)

Written against TensorRT's documented Python API (TensorRT 10: ``trt.Builder``, ``OnnxParser``,
``build_serialized_network``). TensorRT cannot be installed on the development machines: the builder is untested
here; the cache logic is tested with its builder injected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.manifest import Manifest

__all__ = ["EngineCache", "EngineKey", "Precision", "build_engine", "gpu_name", "require_tensorrt",
           "tensorrt_version"]

Precision = Literal["fp32", "fp16", "bf16"]


def require_tensorrt():
    """Import ``tensorrt`` or raise BackendError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError("TensorRT is not installed (pip install tensorrt-cu12 matching the CUDA driver, or use "
                           "the onnxruntime backend)") from exc
    return trt


def tensorrt_version() -> str:
    return str(require_tensorrt().__version__)


def gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` (e.g. "NVIDIA H100 80GB HBM3"); BackendError without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError("no CUDA device: TensorRT engines need an NVIDIA GPU")
    return torch.cuda.get_device_name(device)


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on."""

    onnx_sha256: str  # Manifest.content_sha256: the graph file and its external-data files
    tensorrt_version: str
    gpu: str
    precision: Precision

    def digest(self) -> str:
        s = json.dumps([self.onnx_sha256, self.tensorrt_version, self.gpu, self.precision])
        return hashlib.sha256(s.encode()).hexdigest()


def build_engine(onnx_path: Path, precision: Precision = "fp16", workspace_gib: float = 8.0) -> bytes:
    """Build a serialized TensorRT engine from an ONNX file (static shapes) — needs TensorRT and a GPU."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path} ({precision})")
    return bytes(serialized)


class EngineCache:
    """Engine cache keyed by :class:`EngineKey` (see module docstring).

    Args:
        cache_dir: where engines live.
        builder: ``(onnx_path, precision) → engine bytes`` (default :func:`build_engine`).
        trt_version, gpu: override the detected values (tests; cross-checks).
    """

    def __init__(self, cache_dir: str | Path, builder: Callable[[Path, Precision], bytes] | None = None,
                 trt_version: str | None = None, gpu: str | None = None):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.builder = builder or build_engine
        self._trt_version, self._gpu = trt_version, gpu
        self.built: list[str] = []

    def key(self, onnx_sha256: str, precision: Precision) -> EngineKey:
        return EngineKey(onnx_sha256, self._trt_version or tensorrt_version(), self._gpu or gpu_name(), precision)

    def engine_path(self, graph: str, key: EngineKey) -> Path:
        return self.dir / f"{graph}-{key.digest()[:16]}.engine"

    def get(self, graph: str, onnx_path: Path, onnx_sha256: str, precision: Precision) -> Path:
        """Path of the engine for this graph and key, building it only if it is not cached yet."""
        key = self.key(onnx_sha256, precision)
        path = self.engine_path(graph, key)
        if not path.is_file():
            data = self.builder(Path(onnx_path), precision)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a crash never leaves a truncated engine under the final name
            path.with_suffix(".json").write_text(json.dumps({
                "graph": graph, "onnx_sha256": key.onnx_sha256, "tensorrt_version": key.tensorrt_version,
                "gpu": key.gpu, "precision": key.precision, "key": key.digest()}, indent=2))
            self.built.append(graph)
        return path

    def build_all(self, manifest: Manifest, precision: Precision,
                  graphs: list[str] | None = None) -> dict[str, Path]:
        """Engines for every graph of an export (or ``graphs``); returns graph → engine path."""
        names = graphs or sorted(manifest.graphs)
        return {g: self.get(g, manifest.path(g), manifest.content_sha256(g), precision) for g in names}
