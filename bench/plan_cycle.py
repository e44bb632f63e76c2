"""Plan-cycle latency by stage on CPU: torch eager vs onnxruntime, tiny and demo configs, N and K sweeps.

Stages: history encode (VAE, 2 new frames), rollout (K-step flow map, N candidates in one batch), heads (UQ +
reward), semantic (decode + SigLIP vision tower + patch map), refinement (one value-and-grad call of the
refinement loop, 1 candidate; a cycle with R iterations costs R + 1 of them). Random weights (compute does not
depend on the values). Both runtimes use 1 intra-op thread (the 2 cores are shared; torch with default threads
was 10× slower under load). onnxruntime graphs are exported once before timing (not timed); the value-and-grad
graph only for the first K (the slowest graph to trace).

Compute efficiency: the forward FLOPs of each (K, N) (convolutions and matrix products, counted with torch's
``FlopCounterMode`` on one torch forward; norms and element-wise ops are not counted) divided by each runtime's
forward time, against this core's practical peak (a 2048² float32 matrix product on 1 thread, measured in torch and
in onnxruntime, whose BLAS libraries differ). It says how much faster any runtime could still be on this CPU, and
whether cost per candidate can fall with N at all.

    python bench/plan_cycle.py [--configs tiny,demo] [--repeats 3] [--quick]

Headline (``--headline models/demo``): the whole plan cycle as the planner node runs it — the bundle's trained
models, the planner configuration's defaults (``planning/planner.yaml``: N = its candidate count, refinement with its
stopping rules), :class:`~vidplan_core.planning.session.PlanningSession.plan` timed end to end on fresh simulated
scenes (``bench/_scenes.py``, seeds the models never trained on) — for torch on 1 thread and onnxruntime on 1 and 2
threads, each with the bundle's tiny decoder for scoring and with the full VAE decoder (its own export, made here),
side by side in one run. Writes the ``headline`` entry of plan_cycle.json.

Writes bench/results/plan_cycle.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results"


def _ctx(models, seed: int = 0):
    from vidplan_core.runtime.base import PlanningContext

    cfg = models.suite.autoencoder.config
    pose = np.array([0.45, 0.05, 0.30, np.pi - 0.02, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (models.num_history, 3, 3, cfg.view_height, cfg.view_width), dtype=np.uint8)
    return PlanningContext(frames, np.repeat(pose[None], models.num_history, 0), "pick up the red cube"), pose


def _props(models, pose, n: int) -> np.ndarray:
    from vidplan_core.planning.proposals import perturbation_proposals

    return perturbation_proposals(np.repeat(pose[None], models.horizon, 0), n, rng=0).actions


def _forward_gflop(be, models, n: int) -> dict[str, float]:
    """Conv + matmul GFLOP per stage (rollout, heads, semantic) of one forward of ``n`` candidates (torch backend)."""
    from torch.utils.flop_counter import FlopCounterMode

    ctx, pose = _ctx(models)
    be.set_context(ctx)
    with FlopCounterMode(display=False) as fc:
        be.rollout(_props(models, pose, n))
    counts = fc.get_flop_counts()
    return {stage: sum(counts.get(f"{graph}Graph", {}).values()) / 1e9
            for stage, graph in (("rollout", "Rollout"), ("heads", "Heads"), ("semantic", "Semantic"))}


def _gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """float32 GFLOP/s of a size × size matrix product on one thread, best of ``repeats``, in torch (its BLAS) and in
    onnxruntime (MLAS): the two libraries may not use the same vector width on the same core."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    t_torch = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", io[:2], io[2:])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                                  ir_version=9).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feed = {"a": a.numpy(), "b": b.numpy()}
    sess.run(None, feed)
    t_ort = min(_timed(lambda: sess.run(None, feed)) for _ in range(repeats))
    return {"torch": 2 * size ** 3 / t_torch / 1e9, "onnxruntime": 2 * size ** 3 / t_ort / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _time_backend(be, models, ns, repeats: int, do_grad: bool) -> dict:
    ctx, pose = _ctx(models)
    res: dict = {}
    enc = []
    for r in range(repeats):  # fresh frames each time: the encode stage encodes all T history frames
        c, _ = _ctx(models, seed=100 + r)
        enc.append(be.set_context(c))
    res["encode_s"] = statistics.median(enc)
    be.set_context(ctx)
    for n in ns:
        a = _props(models, pose, n)
        be.rollout(a)  # warm-up
        st = {"rollout": [], "heads": [], "semantic": []}
        for _ in range(repeats):
            out = be.rollout(a)
            for k in st:
                st[k].append(out.timings[k])
        res[f"N{n}"] = {k + "_s": statistics.median(v) for k, v in st.items()}
    if do_grad:
        a = _props(models, pose, 1)
        be.value_and_grad(a)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            be.value_and_grad(a)
            ts.append(time.perf_counter() - t)
        res["value_and_grad_s"] = statistics.median(ts)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,demo")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ns", default="1,6,16,32")
    p.add_argument("--ks", default="1,2,4")
    p.add_argument("--quick", action="store_true", help="N=1,6 and K=1 only (smoke run)")
    p.add_argument("--note", default="", help="what else ran on the machine (printed with the config's table)")
    p.add_argument("--headline", default=None, metavar="MODEL_DIR",
                   help="measure the whole planner cycle on this bundle instead of the config sweeps")
    p.add_argument("--scenes", type=int, default=6, help="--headline: simulated scenes (one cycle each per repeat)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.headline:
        return headline_main(args, argv)
    from vidplan_core.export.onnx_export import export_planner
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
    from vidplan_core.runtime.torch_backend import TorchBackend

    ns = [1, 6] if args.quick else [int(x) for x in args.ns.split(",")]
    ks = [1] if args.quick else [int(x) for x in args.ks.split(",")]
    results: dict = {"benchmark": "plan_cycle", "machine": platform.platform(), "cpu_threads_used": 1,
                     "torch": torch.__version__,
                     "command": "python bench/plan_cycle.py " + shlex.join(argv or sys.argv[1:]),
                     "repeats": args.repeats, "configs": {}}
    prev = OUT / "plan_cycle.json"
    if prev.is_file():  # runs per config merge into one result file (each config's numbers from one run)
        results["configs"] = json.loads(prev.read_text()).get("configs", {})
    for cfg in args.configs.split(","):
        t_cfg = time.perf_counter()
        models = random_planner_models(cfg, seed=0)
        r: dict = {"command": "python bench/plan_cycle.py " + shlex.join(argv or sys.argv[1:]),
                   "horizon": models.horizon, "num_history": models.num_history,
                   "latent": list(models.suite.autoencoder.latent_shape), "torch": {}, "onnxruntime": {},
                   "export_s": {}, "note": args.note, "load_avg_1min_start": round(os.getloadavg()[0], 2)}
        # N sweep at K=1, K sweep at N=6 (exports are slow on the shared cores; each graph is traced per shape)
        n_at = {k: (ns if k == ks[0] else [6]) for k in ks}
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            export_planner(models, tmp, flow_steps=tuple(ks), batch_sizes=tuple(ns), grad_batch_sizes=(1,),
                           grad_flow_steps=(ks[0],),
                           batch_sizes_by_k={k: tuple(v) for k, v in n_at.items()}, simplify="onnxslim",
                           verify=False, progress=lambda s, c=cfg: print(f"  [{c}] {s}", flush=True))
            r["export_s"] = time.perf_counter() - t
            r["gemm_peak_gflops"] = _gemm_peak_gflops()
            r["gflop"] = {}
            for k in ks:
                tb = TorchBackend(models, flow_steps=k)
                r["gflop"][f"K{k}"] = {f"N{n}": _forward_gflop(tb, models, n) for n in n_at[k]}
                r["torch"][f"K{k}"] = _time_backend(tb, models, n_at[k], args.repeats, do_grad=(k == ks[0]))
                ob = OnnxRuntimeBackend(tmp, flow_steps=k, threads=1, verify_hashes=False, require_grad=(k == ks[0]))
                r["onnxruntime"][f"K{k}"] = _time_backend(ob, models, n_at[k], args.repeats, do_grad=(k == ks[0]))
                print(f"[{cfg}] K={k}: torch {json.dumps(r['torch'][f'K{k}'])}\n"
                      f"[{cfg}] K={k}: ort   {json.dumps(r['onnxruntime'][f'K{k}'])}", flush=True)
        r["wall_s"] = time.perf_counter() - t_cfg
        r["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
        results["configs"][cfg] = r
        OUT.mkdir(exist_ok=True)
        (OUT / "plan_cycle.json").write_text(json.dumps(results, indent=2))
        (OUT / "plan_cycle.md").write_text(summary(results))
    print(summary(results))
    return 0


HEADLINE_SETTINGS = (("torch_1thread", "torch", 1), ("ort_1thread", "onnxruntime", 1),
                     ("ort_2threads", "onnxruntime", 2))


def _headline_cycles(session, scenes, repeats: int) -> dict:
    """Median wall time of ``session.plan`` over scenes × repeats (after one warm-up cycle), with the stage times and
    refinement iterations of those cycles."""
    sc0 = scenes[0]
    session.plan(sc0.history, sc0.poses, sc0.q, sc0.instruction, seed=99)  # warm-up (first-call allocations)
    walls, iters, calls, stages = [], [], [], {}
    for r in range(repeats):
        for sc in scenes:
            t = time.perf_counter()
            res, _ = session.plan(sc.history, sc.poses, sc.q, sc.instruction, seed=r)
            walls.append(time.perf_counter() - t)
            iters.append(max(len(res.objective_trace) - 1, 0))
            calls.append(len(res.objective_trace))  # value-and-grad evaluations (a skipped refinement made one)
            for k, v in res.timings.items():
                stages.setdefault(k, []).append(v)
    return {"cycle_s_median": statistics.median(walls), "cycle_s_p95": float(np.percentile(walls, 95)),
            "cycles": len(walls), "refine_iterations_mean": float(np.mean(iters)),
            "value_grad_calls_mean": float(np.mean(calls)),
            "stages_s_median": {k: statistics.median(v) for k, v in stages.items() if k != "total"}}


def headline_main(args, argv) -> int:
    """``--headline MODEL_DIR``: see the module docstring."""
    import copy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _scenes import home_scenes

    from vidplan_core.export.onnx_export import export_planner
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.runtime.loader import load_planner_backend, load_planner_models
    from vidplan_core.runtime.manifest import load_manifest
    from vidplan_core.runtime.torch_backend import TorchBackend

    model_dir = Path(args.headline)
    planning = load_planning_config()
    session_cfg = planning.session
    models = load_planner_models(model_dir)
    if models.tiny_decoder is None:
        raise SystemExit(f"{model_dir} has no tiny_decoder: nothing to compare (vidplan train tiny-decoder)")
    full_models = copy.copy(models)
    full_models.tiny_decoder = None
    base = load_planner_backend(model_dir, "torch", threads=1, models=models, warm=False)
    scenes = list(home_scenes(base, args.scenes))
    index_export = base.index.export_dir
    man = load_manifest(index_export)
    if man.model.get("scoring_decoder") != "tiny":
        raise SystemExit(f"the export in {index_export} does not score with the tiny decoder: re-export the bundle")
    batches = sorted({g.batch for n, g in man.graphs.items() if n.startswith("rollout") and g.batch})
    load_start = round(os.getloadavg()[0], 2)
    out: dict = {"model": str(model_dir), "planner_config": "planning/planner.yaml (defaults)",
                 "candidates": None, "scenes": args.scenes, "repeats": args.repeats,
                 "load_avg_1min_start": load_start, "tiny": {}, "full": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        export_planner(full_models, tmp, flow_steps=(planning.flow_steps or 1,), batch_sizes=tuple(batches),
                       grad_batch_sizes=(1,), simplify="none", verify=False,
                       progress=lambda s: print(f"  [full-decoder export] {s}", flush=True))
        out["full_decoder_export_s"] = time.perf_counter() - t
        for decoder, ms, export in (("tiny", models, index_export), ("full", full_models, Path(tmp))):
            for name, kind, threads in HEADLINE_SETTINGS:
                if kind == "torch":
                    torch.set_num_threads(threads)
                    be = TorchBackend(ms, flow_steps=planning.flow_steps or 1)
                else:
                    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend

                    be = OnnxRuntimeBackend(export, flow_steps=planning.flow_steps or 1, threads=threads)
                session = PlanningSession(be, PandaKinematics(), session_cfg)
                out["candidates"] = session.num_candidates
                out[decoder][name] = _headline_cycles(session, scenes, args.repeats)
                print(f"[{decoder} decoder] {name}: {json.dumps(out[decoder][name])}", flush=True)
        torch.set_num_threads(1)
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    out["command"] = "python bench/plan_cycle.py " + shlex.join(argv or sys.argv[1:])
    out["note"] = args.note
    out.update({f"demo_cycle_s_{name}": out["tiny"][name]["cycle_s_median"] for name, _, _ in HEADLINE_SETTINGS})
    prev = OUT / "plan_cycle.json"
    results = json.loads(prev.read_text()) if prev.is_file() else {"benchmark": "plan_cycle", "configs": {}}
    results["headline"] = out
    results["headline_machine"] = platform.platform()
    OUT.mkdir(exist_ok=True)
    prev.write_text(json.dumps(results, indent=2))
    (OUT / "plan_cycle.md").write_text(summary(results))
    print(summary(results))
    return 0


def _headline_md(h: dict, machine: str) -> list[str]:
    goals = {"ort_1thread": 0.8, "ort_2threads": 0.5}
    lines = ["## Headline: the whole plan cycle on the bundle, tiny vs full decoder for scoring", "",
             f"Machine: {machine}. `{h['command']}` — {h.get('note') or ''} (1-min load average "
             f"{h['load_avg_1min_start']} at the start, {h['load_avg_1min_end']} at the end). Model `{h['model']}`, "
             f"planner {h['planner_config']}: N = {h['candidates']} candidates, refinement as configured; "
             f"{h['scenes']} simulated scenes (seeds 0..{h['scenes'] - 1}) × {h['repeats']} repeats per row, after "
             f"one warm-up cycle. Both decoders measured side by side in this run.", "",
             "| runtime | decoder | cycle s (median) | p95 s | rollout s | heads s | semantic s | refinement s | "
             "refine iters (mean) | goal |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, _, _ in HEADLINE_SETTINGS:
        for dec in ("tiny", "full"):
            r = h[dec][name]
            st = r["stages_s_median"]
            goal = ""
            if dec == "tiny" and name in goals:
                goal = f"≤ {goals[name]} s: {'met' if r['cycle_s_median'] <= goals[name] else 'NOT met'}"
            lines.append(f"| {name} | {dec} | {r['cycle_s_median']:.3f} | {r['cycle_s_p95']:.3f} | "
                         f"{st.get('rollout', 0):.3f} | {st.get('heads', 0):.3f} | {st.get('semantic', 0):.3f} | "
                         f"{st.get('refinement', 0):.3f} | {r['refine_iterations_mean']:.2f} | {goal} |")
    lines.append("")
    for name, _, _ in HEADLINE_SETTINGS:
        t, f = h["tiny"][name]["cycle_s_median"], h["full"][name]["cycle_s_median"]
        sem_t, sem_f = (h[d][name]["stages_s_median"].get("semantic", 0) for d in ("tiny", "full"))
        lines.append(f"- {name}: whole cycle {f / t:.2f}× faster with the tiny decoder; semantic stage "
                     f"{sem_f / max(sem_t, 1e-9):.2f}×")
    lines.append("")
    return lines


def _fwd(d: dict, n: int) -> float:
    x = d[f"N{n}"]
    return x["rollout_s"] + x["heads_s"] + x["semantic_s"]


def summary(res: dict) -> str:
    lines = ["# plan_cycle — plan-cycle latency by stage (CPU)", "",
             f"Machine: {res['machine']}, 1 intra-op thread per runtime (2 cores shared with other jobs), torch "
             f"{res['torch']}. Median of {res['repeats']} repeats; random weights. Each table's torch and "
             "onnxruntime rows were measured side by side in one run (commands and machine load per config below; "
             "on a busy machine expect ±30 % noise on single numbers). The config sweeps use random weights and "
             "the full VAE decoder; the headline uses the bundle.", ""]
    if res.get("headline"):
        lines += _headline_md(res["headline"], res.get("headline_machine", res.get("machine", "?")))
    for cfg, r in res["configs"].items():
        lines += [f"## {cfg} (H={r['horizon']}, T={r['num_history']}, latent {r['latent']})", "",
                  f"`{r.get('command', res['command'])}`"
                  + (f" — {r['note']}" if r.get("note") else "")
                  + (f" (1-min load average {r['load_avg_1min_start']} at the start, {r['load_avg_1min_end']} at the "
                     "end)" if "load_avg_1min_end" in r else ""), "",
                  "| K | N | runtime | rollout s | heads s | semantic s | forward total s | GFLOP | GFLOP/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for kk in r["torch"]:
            for rt in ("torch", "onnxruntime"):
                d = r[rt].get(kk, {})
                for key, v in d.items():
                    if key.startswith("N"):
                        tot = v["rollout_s"] + v["heads_s"] + v["semantic_s"]
                        gf = sum(r.get("gflop", {}).get(kk, {}).get(key, {}).values())
                        flops = f"{gf:.1f} | {gf / tot:.1f}" if gf else "– | –"
                        lines.append(f"| {kk[1:]} | {key[1:]} | {rt} | {v['rollout_s']:.3f} | {v['heads_s']:.3f} | "
                                     f"{v['semantic_s']:.3f} | {tot:.3f} | {flops} |")
        lines.append("")
        for rt in ("torch", "onnxruntime"):
            d = r[rt].get("K1", {})
            if d:
                vg = (f"; one refinement iteration (value_and_grad, K=1, N=1) {d['value_and_grad_s']:.3f} s"
                      if "value_and_grad_s" in d else "")
                lines.append(f"- {rt}: history encode ({r['num_history']} frames) {d['encode_s']:.3f} s{vg}")
        t1, o1 = r["torch"].get("K1", {}), r["onnxruntime"].get("K1", {})
        ns = [int(k[1:]) for k in t1 if k.startswith("N")]
        if ns:
            sp = {n: _fwd(t1, n) / _fwd(o1, n) for n in ns}
            lines.append("- speed-up onnxruntime vs torch eager (forward stages, K=1): "
                         + ", ".join(f"N={n}: {v:.2f}×" for n, v in sp.items()))
            if "value_and_grad_s" in o1 and "value_and_grad_s" in t1:
                vg = t1["value_and_grad_s"] / o1["value_and_grad_s"]
                lines.append(f"- speed-up on value_and_grad (K=1): {vg:.2f}×")
                if 6 in ns:  # the cycle: N=6 proposals, 5 refinement iterations (R + 1 value-and-grad calls)
                    cyc = {rt: d["encode_s"] + _fwd(d, 6) + 6 * d["value_and_grad_s"]
                           for rt, d in (("torch", t1), ("onnxruntime", o1))}
                    lines.append(f"- one plan cycle, K=1, N=6, 5 refinement iterations (encode + forward + 6 "
                                 f"value-and-grad calls): torch {cyc['torch']:.2f} s, onnxruntime "
                                 f"{cyc['onnxruntime']:.2f} s ({cyc['torch'] / cyc['onnxruntime']:.2f}×)")
            if len(ns) > 1:
                n0, n1 = min(ns), max(ns)
                lines.append(f"- batching (torch, K=1): N={n1} costs {_fwd(t1, n1) / _fwd(t1, n0):.1f}× N={n0} "
                             f"(linear would be {n1 / n0:.0f}×); onnxruntime {_fwd(o1, n1) / _fwd(o1, n0):.1f}×")
        g1 = r.get("gflop", {}).get("K1", {})
        if g1 and ns and "gemm_peak_gflops" in r:
            pk = r["gemm_peak_gflops"]
            lines.append(f"- compute (K=1): a 2048² float32 matrix product on this core runs at {pk['torch']:.0f} "
                         f"GFLOP/s in torch and {pk['onnxruntime']:.0f} GFLOP/s in onnxruntime (1 thread each). Best "
                         "GFLOP/s per stage over N, torch / onnxruntime, and the stage's share of the counted FLOPs: "
                         + "; ".join(
                             f"{st} {max(g1[f'N{n}'][st] / t1[f'N{n}'][st + '_s'] for n in ns):.0f} / "
                             f"{max(g1[f'N{n}'][st] / o1[f'N{n}'][st + '_s'] for n in ns):.0f} "
                             f"({g1[f'N{ns[0]}'][st] / sum(g1[f'N{ns[0]}'].values()):.0%})"
                             for st in ("rollout", "heads", "semantic")))
            lines.append("- counted GFLOP per candidate: " + ", ".join(
                f"N={n}: {sum(g1[f'N{n}'].values()) / n:.2f}" for n in ns)
                + " — the work grows linearly with N (every candidate is its own rollout, decode and heads), so on a "
                "compute-bound CPU the time does too; batching only amortises per-call overhead")
        kks = sorted(int(k[1:]) for k in r["torch"])
        if len(kks) > 1:
            n = 6 if "N6" in r["torch"][f"K{kks[0]}"] else ns[0]
            ro = {k: r["torch"][f"K{k}"][f"N{n}"]["rollout_s"] for k in kks}
            lines.append(f"- rollout cost vs K (torch, N={n}): " + ", ".join(
                f"K={k}: {v:.3f} s ({v / ro[kks[0]]:.2f}× K={kks[0]})" for k, v in ro.items()))
        if cfg == "demo" and ns:
            ok = min(sp.values()) >= 1.5
            lines.append(f"- goal onnxruntime ≥ 1.5× torch eager on demo: {'met' if ok else 'NOT met'} "
                         f"(min {min(sp.values()):.2f}×)")
        lines.append("")
    lines.append("Wall time per config (including exports): "
                 + ", ".join(f"{c} {r['wall_s']:.0f} s (export {r['export_s']:.0f} s)"
                             for c, r in res["configs"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
