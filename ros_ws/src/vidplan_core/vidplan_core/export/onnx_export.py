"""``vidplan export``: every planner graph to ONNX, simplified, verified against torch, with a manifest.

Graphs (see :mod:`vidplan_core.runtime.graphs`): ``encode``, ``text``, ``decode`` (debug pictures),
``rollout_k{K}_n{N}``, ``heads_n{N}``, ``semantic_n{N}`` and the joint ``value_grad_k{K}_n{M}`` (objective and its
gradient w.r.t. the actions, traced through autograd by :func:`~vidplan_core.export.grad_graph.trace_grad_graph`).
Shapes are static per graph; the onnxruntime backend splits a call over the exported batch sizes. All graphs read
their weights from one shared, deduplicated ``weights.onnx.data`` (:mod:`vidplan_core.export.compact`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vidplan_core.export.compact import SHARED_DATA_NAME, compact_export, external_data_files
from vidplan_core.export.grad_graph import trace_grad_graph
from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle import PlannerModels
from vidplan_core.runtime.graphs import ObjectiveConfig, graph_io
from vidplan_core.runtime.manifest import GraphEntry, Manifest, file_sha256
from vidplan_core.runtime.torch_backend import build_graphs
from vidplan_core.sampling import time_grid

__all__ = ["ExportError", "export_planner"]

Simplifier = Literal["onnxslim", "onnxsim", "none"]


class ExportError(BackendError):
    """Export failed, or the exported graph does not match torch within tolerance."""


def _example_actions(models: PlannerModels, n: int, gen: torch.Generator) -> torch.Tensor:
    norm = models.suite.flow_map.model.normalizer
    u = torch.rand(n, models.horizon, 7, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    return torch.as_tensor(norm.denormalize(u.numpy()), dtype=torch.float32)


def _simplify(path: Path, how: Simplifier) -> str:
    import onnx

    if how == "none":
        return "none"
    model = onnx.load(str(path))
    try:
        if how == "onnxslim":
            import onnxslim

            model = onnxslim.slim(model)
        else:
            import onnxsim

            model, ok = onnxsim.simplify(model)
            if not ok:
                return "onnxsim-check-failed(kept original)"
        onnx.save(model, str(path))
        return how
    except Exception as exc:  # a failed simplification keeps the verified original graph
        return f"{how}-failed({type(exc).__name__}; kept original)"


def _export_one(module: Callable[..., Any], args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
                outputs: list[str], opset: int, grad: bool) -> None:
    """Export one graph; ``grad`` graphs are first traced through autograd into plain aten ops."""
    if grad:
        gm = trace_grad_graph(module, args).eval()
        # optimize=False: onnxscript's rewriter needs tens of minutes on the ~12k-node gradient graph of even the
        # tiny model; the graph is already decomposed, and onnxslim (below) folds constants and removes dead nodes.
        torch.onnx.export(gm, args, str(path), dynamo=True, input_names=inputs, output_names=outputs,
                          opset_version=opset, verbose=False, optimize=False)
        return
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=inputs, output_names=outputs,
                          opset_version=opset, verbose=False, optimize=True)


def _verify(path: Path, module: Callable[..., Any], args: tuple[torch.Tensor, ...], inputs: list[str],
            tol: float, name: str) -> tuple[float, float]:
    """Max abs / relative error of onnxruntime vs torch on ``args``; ExportError above ``tol`` (relative)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.detach().cpu().numpy() for k, v in zip(inputs, args, strict=True)})
    with torch.no_grad() if not name.startswith("value_grad") else torch.enable_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    abs_err, rel_err = 0.0, 0.0
    for g, r in zip(got, ref, strict=True):
        r = r.detach().float().cpu().numpy()
        if g.shape != r.shape:
            raise ExportError(f"{name}: onnxruntime output shape {g.shape} differs from torch {r.shape}")
        e = float(np.abs(g - r).max()) if r.size else 0.0
        abs_err = max(abs_err, e)
        rel_err = max(rel_err, e / (float(np.abs(r).max()) + 1e-12))
    if not np.isfinite(rel_err) or rel_err > tol:
        raise ExportError(f"{name}: onnxruntime differs from torch by {rel_err:.2e} (relative, max |Δ| "
                          f"{abs_err:.2e}) > tolerance {tol:.0e}")
    return abs_err, rel_err


def export_planner(models: PlannerModels, out_dir: str | Path, flow_steps: Sequence[int] = (1,),
                   batch_sizes: Sequence[int] = (1, 16), grad_batch_sizes: Sequence[int] = (1,),
                   objective: ObjectiveConfig | None = None, opset: int = 18, simplify: Simplifier = "onnxslim",
                   verify: bool = True, tol: float = 1e-4, seed: int = 0,
                   progress: Callable[[str], None] | None = None,
                   batch_sizes_by_k: dict[int, Sequence[int]] | None = None, compact: bool = True,
                   grad_flow_steps: Sequence[int] | None = None) -> Manifest:
    """Export the planner graphs of ``models`` into ``out_dir`` and write ``manifest.json``.

    Args:
        models: the models (float32, CPU).
        out_dir: created if missing; existing files with the same names are overwritten.
        flow_steps: K values to export rollout / value-and-grad graphs for.
        batch_sizes: candidate batch sizes N of the rollout, heads and semantic graphs.
        grad_batch_sizes: batch sizes of the value-and-grad graph (refinement usually uses 1).
        objective: refinement objective baked into the value-and-grad graph.
        opset: ONNX opset.
        simplify: "onnxslim", "onnxsim" or "none" (a failing simplifier keeps the original graph, noted).
        verify: compare every graph with torch in onnxruntime on fresh random inputs (relative error ≤ tol).
        progress: callback for one-line progress messages.
        batch_sizes_by_k: rollout batch sizes per K overriding ``batch_sizes`` (e.g. {4: (6,)}).
        compact: share one deduplicated weights file between the graphs and drop exporter debug metadata
            (lossless; :func:`vidplan_core.export.compact.compact_export`).
        grad_flow_steps: the K values that get value-and-grad graphs (default: all of ``flow_steps``; each is
            the slowest graph to trace).

    Returns:
        The written :class:`Manifest`.
    """
    say = progress or (lambda s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objective = objective or ObjectiveConfig()
    models.check()
    gen = torch.Generator().manual_seed(seed)
    T, H = models.num_history, models.horizon
    ae = models.suite.autoencoder
    C, h, w = ae.latent_shape
    vc = ae.config
    ids = torch.as_tensor(models.tokenize("pick up the red cube and put it in the bowl"))
    graphs0 = build_graphs(models, flow_steps[0], objective)
    conditioned = "cond_text" in graphs0  # a text_conditioner: the world model's own text embedding
    with torch.no_grad():
        text = graphs0["text"](ids)
        cond = graphs0["cond_text"](ids) if conditioned else text
    use_text = models.uses_text

    def ctx_args(n: int) -> tuple[torch.Tensor, ...]:
        hl = torch.randn(1, T, C, h, w, generator=gen)
        ha = _example_actions(models, 1, gen)[:, :T] if T <= H else _example_actions(models, 1, gen)[:, :1].expand(
            1, T, 7).contiguous()
        a = _example_actions(models, n, gen)
        nz = torch.randn(1, H, C, h, w, generator=gen)
        return (hl, ha, a, nz, cond) if use_text else (hl, ha, a, nz)

    jobs: list[tuple[str, torch.nn.Module | Callable[..., Any], Callable[[], tuple[torch.Tensor, ...]], bool,
                     int | None]] = []
    frames = lambda: (torch.rand(T, 3, 3, vc.view_height, vc.view_width, generator=gen),)  # noqa: E731
    jobs.append(("encode", graphs0["encode"], frames, False, None))
    grounded = models.scorer.kind == "grounded"
    if grounded:  # the frozen sentence encoder stays out of the export (installed with vidplan, 90 MB)
        with torch.no_grad():
            sentence = models.scorer.text_encoder(ids)
        jobs.append(("text_proj", graphs0["text_proj"], lambda: (sentence,), False, None))
        if conditioned:  # same sentence encoder (PlannerModels.check), its own projection
            jobs.append(("cond_text_proj", graphs0["cond_text_proj"], lambda: (sentence,), False, None))
    else:
        jobs.append(("text", graphs0["text"], lambda: (ids,), False, None))
        if conditioned:
            jobs.append(("cond_text", graphs0["cond_text"], lambda: (ids,), False, None))
    jobs.append(("decode", graphs0["decode"], lambda: (torch.randn(H, C, h, w, generator=gen),), False, None))
    lat_args = lambda n: (torch.randn(n, H, C, h, w, generator=gen), _example_actions(models, n, gen))  # noqa: E731
    for n in batch_sizes:
        jobs.append((f"heads_n{n}", graphs0["heads"], lambda n=n: lat_args(n), False, n))
        jobs.append((f"semantic_n{n}", graphs0["semantic"],
                     lambda n=n: (torch.randn(n, H, C, h, w, generator=gen), text), False, n))
    for k in flow_steps:
        gk = build_graphs(models, k, objective)
        for n in (batch_sizes_by_k or {}).get(k, batch_sizes):
            jobs.append((f"rollout_k{k}_n{n}", gk["rollout"], lambda n=n: ctx_args(n), False, n))
        for n in grad_batch_sizes if grad_flow_steps is None or k in grad_flow_steps else ():
            jobs.append((f"value_grad_k{k}_n{n}", gk["value_grad"], lambda n=n: ctx_args(n), True, n))

    exported = []
    for name, module, make_args, grad, batch in jobs:
        t0 = time.perf_counter()
        args = make_args()
        ins, outs = graph_io(name.rsplit("_n", 1)[0] if batch is not None else name)
        ins = ins[: len(args)]
        path = out / f"{name}.onnx"
        try:
            _export_one(module, args, path, ins, outs, opset, grad)
        except Exception as exc:
            raise ExportError(f"exporting {name} failed: {type(exc).__name__}: {exc}") from exc
        how = _simplify(path, simplify)
        exported.append((name, module, make_args, grad, batch, args, ins, outs))
        say(f"{name}: exported in {time.perf_counter() - t0:.1f} s, simplify={how}")
    if compact:
        stats = compact_export(out, [f"{e[0]}.onnx" for e in exported])
        say(f"compacted into {SHARED_DATA_NAME}: {stats.summary()}")

    # verification and the manifest see the final files (after simplification and compaction)
    entries: dict[str, GraphEntry] = {}
    data_files: dict[str, str] = {}
    for name, module, make_args, grad, batch, args, ins, outs in exported:
        path = out / f"{name}.onnx"
        abs_err = rel_err = None
        if verify:
            abs_err, rel_err = _verify(path, module, make_args(), ins, tol, name)
            say(f"{name}: onnxruntime vs torch max rel err {rel_err:.1e}")
        with torch.no_grad() if not grad else torch.enable_grad():
            res = module(*args)
        res = res if isinstance(res, tuple) else (res,)
        data = external_data_files(path)
        for f in data:
            data_files.setdefault(f, file_sha256(out / f))
        entries[name] = GraphEntry(
            file=path.name, sha256=file_sha256(path),
            inputs={k: list(v.shape) for k, v in zip(ins, args, strict=True)},
            outputs={k: list(v.shape) for k, v in zip(outs, res, strict=True)}, batch=batch,
            max_abs_err=abs_err, max_rel_err=rel_err, data=data)

    tok_dir = out / "tokenizer"
    models.scorer.tokenizer.save_pretrained(str(tok_dir))
    fm = models.suite.flow_map
    manifest = Manifest(graphs=entries, opset=opset, data_files=data_files, model={
        "horizon": H, "num_history": T, "latent_shape": [C, h, w], "flow_steps": sorted(set(flow_steps)),
        "time_grids": {str(k): [float(t) for t in time_grid(fm, k)] for k in flow_steps},
        "uses_text": use_text, "text_length": int(ids.shape[1]), "semantic_kind": models.scorer.kind,
        # what the semantic graphs decode with: the distilled tiny decoder, the full VAE decoder, or none (pixels)
        "scoring_decoder": ("tiny" if models.tiny_decoder is not None else
                            "none" if models.suite.autoencoder.config.kind == "pixel" else "full"),
        "text_encoder": models.scorer.config.text_encoder if grounded else None,
        # the world model and policy read the cond_text(_proj) graph's embedding, the semantic graph text(_proj)'s
        "text_conditioner": conditioned,
        "semantic_view": models.semantic_view, "centring_view": models.map_view_list[0],
        "map_views": list(models.map_view_list), "view_geometry": models.view_geometry(),
        "view_size": [vc.view_height, vc.view_width],
        "action_stats": fm.model.normalizer.state_dict(),
        "objective": {"weighting": objective.weighting, "kappa": objective.kappa, "beta": objective.beta},
        "tolerance": tol,
        # the heads graphs divide the UQ logits by it: a later `vidplan calibrate-uq --write` makes this export stale
        "uq_temperature": float(models.suite.uq_head.config.temperature),
    })
    manifest.directory = out
    manifest.save(out)
    return manifest
