"""Lossless compaction of an export directory: one deduplicated weights file shared by all graphs.

Why: the planner's graphs all hold the same networks. The rollout and the value-and-grad graph both carry the
whole flow map, the value-and-grad graph also carries the heads, and each of them writes its own copy of the
weights. torch's exporter also attaches debugging metadata (FX node, class hierarchy, source location) to every
node, which is most of the bytes of a large gradient graph (14 of 14.3 MB for the demo's). For the bundled demo
models this made the export 3 times bigger than the weights.

What :func:`compact_export` does, without changing any number the graphs compute:

1. removes per-node debugging metadata (``metadata_props``, ``doc_string``);
2. stores a float32 initializer as float16 followed by a ``Cast`` to float32 when every value is exactly
   representable in float16 (true for weights saved with half-precision storage, see
   :meth:`vidplan_core.models._io.StrictLoadMixin.save`); onnxruntime and TensorRT fold the ``Cast`` when
   the session or engine is built, so the graph computes with the very same float32 values;
3. writes every initializer of at least ``min_external_bytes`` into one external-data file, each distinct byte
   string once, and points every graph at it (ONNX external data: location, offset, length).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SHARED_DATA_NAME", "CompactStats", "compact_export", "external_data_files"]

SHARED_DATA_NAME = "weights.onnx.data"
_ALIGN_LARGE, _ALIGN_THRESHOLD, _ALIGN_SMALL = 1 << 16, 1 << 20, 64  # page-aligned big tensors can be mmapped


@dataclass
class CompactStats:
    """What :func:`compact_export` did (bytes are on-disk sizes of graphs + their data files)."""

    bytes_before: int
    bytes_after: int
    initializers: int
    stored_tensors: int
    half_tensors: int

    def summary(self) -> str:
        return (f"{self.bytes_before / 1e6:.1f} MB → {self.bytes_after / 1e6:.1f} MB; {self.initializers} "
                f"initializers stored as {self.stored_tensors} distinct tensors, {self.half_tensors} in float16")


def external_data_files(onnx_path: str | Path) -> list[str]:
    """Names of the external-data files an ONNX graph references (relative to its directory), sorted."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sorted({e.value for g in _graphs(model.graph) for t in g.initializer for e in t.external_data
                   if e.key == "location"})


def _graphs(graph):
    """The subgraphs of ``graph``'s nodes (If / Loop / Scan bodies), recursively, then ``graph`` itself.

    Children first: rewriting a graph re-inserts its nodes (protobuf copies them), so a subgraph must already be
    in its final form when its parent is rewritten."""
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _graphs(g)
    yield graph


def _exact_half(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as float16 when that round-trips bit-exactly to the same float32 values, else None."""
    if arr.dtype != np.float32 or not np.isfinite(arr).all():
        return None
    half = arr.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32).view(np.uint32), arr.view(np.uint32)) else None


class _SharedData:
    """Append-only writer of the shared external-data file, one copy per distinct byte string."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")
        self.index: dict[tuple[str, int], tuple[int, int]] = {}

    def put(self, raw: bytes) -> tuple[int, int]:
        key = (hashlib.sha256(raw).hexdigest(), len(raw))
        if key not in self.index:
            align = _ALIGN_LARGE if len(raw) >= _ALIGN_THRESHOLD else _ALIGN_SMALL
            pos = self.f.tell()
            pad = (-pos) % align
            self.f.write(b"\0" * pad)
            self.index[key] = (pos + pad, len(raw))
            self.f.write(raw)
        return self.index[key]

    def close(self) -> None:
        self.f.close()


def _compact_graph(graph, d: Path, shared: _SharedData, data_name: str, half: bool,
                   min_external_bytes: int) -> tuple[int, int]:
    """Compact one (sub)graph in place; returns (initializers seen, stored as float16)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    for node in graph.node:  # debug metadata (nested graphs are visited by the caller)
        del node.metadata_props[:]
        node.doc_string = ""
    input_names = {i.name for i in graph.input}
    casts, new_inits, n_half = [], [], 0
    for t in graph.initializer:
        if t.data_location != TensorProto.EXTERNAL and t.ByteSize() < min_external_bytes:
            new_inits.append(t)  # small constants (shapes, indices) stay in the graph untouched
            continue
        arr = numpy_helper.to_array(t, base_dir=str(d))  # reads external data from the old files
        stored, stored_name = arr, t.name
        h = _exact_half(arr) if half and t.name not in input_names and arr.nbytes >= min_external_bytes else None
        if h is not None:
            stored, stored_name = h, f"{t.name}__fp16"
            casts.append(helper.make_node("Cast", [stored_name], [t.name], name=f"{t.name}__to_fp32",
                                          to=TensorProto.FLOAT))
            n_half += 1
        # (np.ascontiguousarray would turn a 0-d scalar into shape (1,): Gather indices then keep a dim)
        nt = numpy_helper.from_array(stored if stored.flags.c_contiguous else stored.copy(order="C"), stored_name)
        if nt.ByteSize() >= min_external_bytes and nt.HasField("raw_data"):
            offset, length = shared.put(nt.raw_data)
            set_external_data(nt, data_name, offset=offset, length=length)  # needs raw_data still set
            nt.data_location = TensorProto.EXTERNAL
            nt.ClearField("raw_data")
        new_inits.append(nt)
    n_init = len(graph.initializer)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    if casts:  # the casts produce the original names before any consumer runs
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(casts + nodes)
    return n_init, n_half


def compact_export(directory: str | Path, graph_files: list[str], data_name: str = SHARED_DATA_NAME,
                   half: bool = True, min_external_bytes: int = 1024) -> CompactStats:
    """Rewrite ``graph_files`` (names in ``directory``) in place to share one deduplicated weights file.

    Args:
        directory: the export directory.
        graph_files: the ONNX files to compact (every graph of the export: the shared file replaces their own
            external-data files, which are deleted).
        data_name: name of the shared external-data file (overwritten).
        half: store float32 initializers that are exactly representable in float16 as float16 + Cast.
        min_external_bytes: smaller initializers stay inside the graph file.

    Returns:
        :class:`CompactStats`.
    """
    import onnx

    d = Path(directory)
    old_data: set[Path] = set()
    before = 0
    for name in graph_files:
        before += (d / name).stat().st_size
        old_data |= {d / f for f in external_data_files(d / name)}
        old_data.add(d / f"{name}.data")  # torch's own file, orphaned if a simplifier re-embedded the weights
    before += sum(p.stat().st_size for p in old_data if p.is_file())

    tmp_data = d / (data_name + ".tmp")
    shared = _SharedData(tmp_data)
    n_init = n_half = 0
    protos: dict[str, bytes] = {}
    try:
        for name in sorted(graph_files):
            model = onnx.load(str(d / name), load_external_data=False)
            for graph in _graphs(model.graph):  # subgraphs too: their old data files are deleted below
                seen, halved = _compact_graph(graph, d, shared, data_name, half, min_external_bytes)
                n_init, n_half = n_init + seen, n_half + halved
            protos[name] = model.SerializeToString()
    finally:
        shared.close()
    stored_tensors = len(shared.index)
    for p in old_data:
        if p.name != data_name and p.is_file():
            p.unlink()
    tmp_data.replace(d / data_name)
    for name, blob in protos.items():
        (d / name).write_bytes(blob)
    after = sum((d / n).stat().st_size for n in graph_files) + (d / data_name).stat().st_size
    return CompactStats(before, after, n_init, stored_tensors, n_half)
