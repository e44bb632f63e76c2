"""Export compaction: graphs share one deduplicated weights file, float16 storage where exact, no debug metadata,
and onnxruntime computes bit-identical outputs before and after."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vidplan_core.export.compact import SHARED_DATA_NAME, compact_export, external_data_files


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 256)
        self.b = nn.Linear(256, 64)

    def forward(self, x):
        # x[:, 0]: a Gather whose index is a 0-d initializer (compaction once turned it into shape (1,))
        return self.b(torch.nn.functional.gelu(self.a(x))) + x[:, 0, None]


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def two_graphs(tmp_path):
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():  # layer a: weights rounded to float16 (as after half-precision storage); b: not
        net.a.weight.copy_(net.a.weight.half().float())
        net.a.bias.copy_(net.a.bias.half().float())
    for n in (2, 4):  # the same weights in two graphs, as rollout and value-and-grad graphs share the flow map
        torch.onnx.export(net, (torch.randn(n, 64),), str(tmp_path / f"net_n{n}.onnx"), dynamo=True,
                          input_names=["x"], output_names=["y"], verbose=False)
    return tmp_path, net


def test_compaction_is_lossless_and_shares_one_file(two_graphs):
    d, net = two_graphs
    rng = np.random.default_rng(1)
    xs = {n: rng.standard_normal((n, 64)).astype(np.float32) for n in (2, 4)}
    before = {n: _run(d / f"net_n{n}.onnx", xs[n]) for n in (2, 4)}
    had_metadata = any(len(node.metadata_props) for node in onnx.load(str(d / "net_n2.onnx")).graph.node)

    stats = compact_export(d, ["net_n2.onnx", "net_n4.onnx"])

    for n in (2, 4):
        after = _run(d / f"net_n{n}.onnx", xs[n])
        assert np.array_equal(after.view(np.uint32), before[n].view(np.uint32)), n  # bit-identical
        assert external_data_files(d / f"net_n{n}.onnx") == [SHARED_DATA_NAME]
        g = onnx.load(str(d / f"net_n{n}.onnx"), load_external_data=False).graph
        assert not any(len(node.metadata_props) for node in g.node)
        dtypes = {t.name: t.data_type for t in g.initializer}
        # layer a's weight is stored as float16 behind a Cast; layer b's (not exactly representable) stays float32
        assert onnx.TensorProto.FLOAT16 in dtypes.values() and onnx.TensorProto.FLOAT in dtypes.values()
        assert any(node.op_type == "Cast" and node.output[0] in {i for n2 in g.node for i in n2.input}
                   for node in g.node)
    assert had_metadata  # the exporter's debug metadata existed and was removed
    assert sorted(p.name for p in d.glob("*.data")) == [SHARED_DATA_NAME]  # the per-graph files are gone
    # a.weight + a.bias are half (in each graph); a.weight and b.weight are stored once each, shared by both graphs
    assert stats.initializers >= 8 and stats.stored_tensors == 2 and stats.half_tensors == 4
    # one copy: a in float16 + b in float32 (+ alignment), not two float32 copies
    a_bytes = net.a.weight.numel() * 2
    b_bytes = net.b.weight.numel() * 4
    size = (d / SHARED_DATA_NAME).stat().st_size
    assert a_bytes + b_bytes <= size <= a_bytes + b_bytes + 4 * 65536 + 2 * 1024 * 4
    assert stats.bytes_after < 0.5 * stats.bytes_before


def test_compaction_twice_is_stable(two_graphs):
    d, _ = two_graphs
    x = np.ones((2, 64), np.float32)
    compact_export(d, ["net_n2.onnx", "net_n4.onnx"])
    first, y1 = (d / SHARED_DATA_NAME).read_bytes(), _run(d / "net_n2.onnx", x)
    compact_export(d, ["net_n2.onnx", "net_n4.onnx"])  # re-reads its own shared file while writing a new one
    assert (d / SHARED_DATA_NAME).read_bytes() == first
    assert np.array_equal(_run(d / "net_n2.onnx", x), y1)
