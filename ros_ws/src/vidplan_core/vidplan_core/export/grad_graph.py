"""Trace a function that returns gradients into a plain forward graph that ONNX can express.

ONNX has no autograd, and the exporters cannot export ``torch.autograd.grad``. The recipe (PLATFORM.md, checked
to 1e-9 against autograd in onnxruntime):

1. trace the whole ``value_and_grad`` function with ``make_fx`` and ``core_aten_decompositions()`` — the backward
   pass becomes ordinary aten ops (attention decomposed into matmuls and softmax);
2. rewrite the two backward ops that survive decomposition and have no ONNX counterpart:
   ``convolution_backward`` → the transposed convolution of the output gradient (the adjoint of a convolution),
   ``upsample_nearest2d_backward`` → sum over the k×k blocks (= ``avg_pool2d`` × k²);
3. re-trace and export the resulting ``GraphModule`` with ``torch.onnx.export(..., dynamo=True)``.

Shapes are specialised at trace time (``make_fx`` with real tensors), so a graph is exported per batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.fx.experimental.proxy_tensor import make_fx

__all__ = ["trace_grad_graph"]

aten = torch.ops.aten


def _conv_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                   groups, output_mask):
    """Input gradient of a (non-transposed) convolution as a transposed convolution; weight/bias grads are None."""
    if transposed:
        raise NotImplementedError("convolution_backward of a transposed convolution is not supported for export")
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("weight/bias gradients requested: freeze the parameters (requires_grad=False) "
                                  "before tracing a value-and-grad graph")
    if not output_mask[0]:
        return None, None, None
    nd = inp.dim() - 2
    k = weight.shape[2:]
    out_pad = []
    for i in range(nd):
        full = (grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1
        out_pad.append(inp.shape[2 + i] - full)
    gi = aten.convolution(grad_out, weight, None, list(stride), list(padding), list(dilation), True, out_pad, groups)
    return gi, None, None


def _upsample_nearest_backward(grad_out, output_size, input_size, scales_h=None, scales_w=None):
    """Input gradient of nearest upsampling by integer factors: sum over each k_h×k_w block."""
    kh = output_size[0] // input_size[2]
    kw = output_size[1] // input_size[3]
    if kh * input_size[2] != output_size[0] or kw * input_size[3] != output_size[1]:
        raise NotImplementedError(f"nearest upsampling by a non-integer factor ({input_size} → {output_size})")
    return aten.avg_pool2d(grad_out, [kh, kw], [kh, kw]) * float(kh * kw)


_REWRITES = {
    aten.convolution_backward.default: _conv_backward,
    aten.upsample_nearest2d_backward.default: _upsample_nearest_backward,
}


def trace_grad_graph(fn: Callable[..., tuple[torch.Tensor, ...]], example_inputs: Sequence[torch.Tensor]
                     ) -> torch.fx.GraphModule:
    """Trace ``fn`` (which may call ``torch.autograd.grad``) into an exportable aten ``GraphModule``.

    Args:
        fn: function of tensors returning a tuple of tensors (e.g. ``(J, dJ/da)``); parameters it closes over must
            have ``requires_grad=False``.
        example_inputs: tensors of the exact shapes the graph will be used with.

    Returns:
        A GraphModule without backward-only ops, ready for ``torch.onnx.export(gm, inputs, dynamo=True)``.
    """
    from torch._decomp import core_aten_decompositions
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dec = core_aten_decompositions()
    with sdpa_kernel(SDPBackend.MATH):  # attention as plain matmul/softmax (and their plain backward)
        gm = make_fx(fn, decomposition_table=dec, tracing_mode="real")(*example_inputs)
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _REWRITES:
            node.target = _REWRITES[node.target]
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
        gm = make_fx(gm, decomposition_table=dec, tracing_mode="real")(*example_inputs)
    left = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise RuntimeError(f"backward ops left in the traced graph (no ONNX rewrite known): {left}")
    return gm
