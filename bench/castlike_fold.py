"""What the un-folded CastLike nodes of the exported value-and-grad graph cost in onnxruntime.

onnxruntime logs "Could not find a CPU kernel and hence can't constant fold CastLike node" when it loads the
value-and-grad graph: the torch.onnx (dynamo) export casts constants with ``CastLike(constant, tensor)``, whose
second input is a runtime tensor, so the optimiser cannot fold them. This benchmark rewrites every CastLike whose
target type is known statically into ``Cast(to=type)`` (then foldable), checks the outputs agree, and times both
graphs side by side in one process (alternating runs, same inputs, 1 intra-op thread): the ratio says whether a
folding pass belongs in the export.

    python bench/castlike_fold.py [--model models/demo] [--graph value_grad_k1_n1] [--runs 12]

Writes bench/results/castlike_fold.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"


def castlike_to_cast(model):
    """``model`` with each CastLike whose target's element type is known replaced by Cast(to=that type); returns
    (model, replaced, total CastLike nodes)."""
    from onnx import helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for n in model.graph.node:
        for a in n.attribute if n.op_type == "Constant" else ():
            if a.name == "value":
                types[n.output[0]] = a.t.data_type
    nodes, replaced, total = [], 0, 0
    for n in model.graph.node:
        if n.op_type == "CastLike":
            total += 1
            if types.get(n.input[1]):
                nodes.append(helper.make_node("Cast", [n.input[0]], list(n.output), name=f"{n.name}_cast",
                                              to=types[n.input[1]]))
                replaced += 1
                continue
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, replaced, total


def main(argv: list[str] | None = None) -> int:
    import onnx
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/demo", help="bundle whose onnx/ export is measured")
    ap.add_argument("--graph", default="value_grad_k1_n1", help="graph name in onnx/ (without .onnx)")
    ap.add_argument("--runs", type=int, default=12, help="timed runs per graph (alternating; 1 warm-up each)")
    ap.add_argument("--note", default="", help="free text for the results (machine state, ...)")
    args = ap.parse_args(argv)

    src = Path(args.model) / "onnx" / f"{args.graph}.onnx"
    if not src.is_file():
        print(f"no graph {src}", file=sys.stderr)
        return 2
    model = onnx.load(str(src))
    ops_before = len(model.graph.node)
    model, replaced, total = castlike_to_cast(model)

    def session(path: str):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory() as tmp:
        folded_path = str(Path(tmp) / "folded.onnx")
        onnx.save(model, folded_path, save_as_external_data=True, location="folded.data")
        t0 = time.perf_counter()
        original = session(str(src))
        load_original = time.perf_counter() - t0
        t0 = time.perf_counter()
        folded = session(folded_path)
        load_folded = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        feeds = {}
        for i in original.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            if i.type == "tensor(float)":
                feeds[i.name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
            else:
                feeds[i.name] = np.zeros(shape, {"tensor(int64)": np.int64, "tensor(uint8)": np.uint8}[i.type])
        out_a, out_b = original.run(None, feeds), folded.run(None, feeds)  # also the warm-up
        max_abs = max(float(np.max(np.abs(a - b))) for a, b in zip(out_a, out_b, strict=True))
        times: dict[str, list[float]] = {"original": [], "cast": []}
        for k in range(args.runs):
            order = (("original", original), ("cast", folded)) if k % 2 == 0 else (("cast", folded),
                                                                                  ("original", original))
            for name, s in order:
                t0 = time.perf_counter()
                s.run(None, feeds)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"benchmark": "castlike_fold", "machine": platform.platform(), "onnxruntime": ort.__version__,
           "command": "python bench/castlike_fold.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "note": args.note, "graph": str(src), "nodes": ops_before, "castlike": total, "replaced": replaced,
           "max_abs_output_diff": max_abs, "runs": args.runs, "median_s": med, "ratio_cast_over_original":
           med["cast"] / med["original"], "session_load_s": {"original": load_original, "cast": load_folded},
           "times_s": times}
    OUT.mkdir(exist_ok=True)
    (OUT / "castlike_fold.json").write_text(json.dumps(res, indent=1))
    (OUT / "castlike_fold.md").write_text(summary(res))
    print(summary(res))
    return 0


def summary(r: dict) -> str:
    m = r["median_s"]
    return "\n".join([
        "# castlike_fold — un-folded CastLike nodes in the value-and-grad graph", "",
        f"Machine: {r['machine']}, onnxruntime {r['onnxruntime']}, 1 intra-op thread. `{r['command']}`"
        + (f" — {r['note']}" if r["note"] else ""), "",
        f"Graph `{r['graph']}`: {r['nodes']} nodes, {r['castlike']} CastLike, {r['replaced']} rewritten to Cast "
        f"(outputs differ by at most {r['max_abs_output_diff']:.2g}).", "",
        "| graph | median per call | session load |", "|---|---|---|",
        f"| as exported (CastLike) | {m['original'] * 1e3:.1f} ms | {r['session_load_s']['original']:.1f} s |",
        f"| CastLike → Cast (foldable) | {m['cast'] * 1e3:.1f} ms | {r['session_load_s']['cast']:.1f} s |", "",
        f"Ratio {r['ratio_cast_over_original']:.3f} over {r['runs']} alternating runs each, side by side in one "
        "process.", ""])


if __name__ == "__main__":
    raise SystemExit(main())
