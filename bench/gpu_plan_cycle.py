"""Full-config plan cycle on one GPU (H100/H200): bf16 autocast + torch.compile / CUDA graphs, N=6, H=5,
5 refinement iterations, K=1 and K=4. Reports seconds per cycle by stage and MFU against the FLOP count of
``bench/results/flops_full.json`` (the world-model issue's FLOP benchmark).

    python bench/gpu_plan_cycle.py                     # on the GPU machine (full config, cuda, bf16, compile)
    python bench/gpu_plan_cycle.py --device cpu --config tiny --no-compile --no-bf16 --repeats 1   # smoke run

Random weights (compute does not depend on the values); the semantic scorer is a random SigLIP-base-sized tower
(``--siglip base``) so that the semantic stage has the real cost. Writes bench/results/gpu_plan_cycle.{json,md}
(or gpu_plan_cycle_smoke.* for non-CUDA runs, so a smoke run never overwrites GPU numbers).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results"
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM) per NVIDIA datasheets


def _scorer(models, kind: str):
    """Replace the small random scorer by a random one with a SigLIP-base-sized vision tower (768 wide, 12 layers,
    224 px, patch 16: the cost bench/flops_full.py counts per image), for ``kind="base"``.

    CLIP-shaped, not SigLIP: the world model is conditioned on the scorer's text embedding (``text_embed_dim``, 512 in
    the full config), and only CLIP has a visual projection from the 768-wide tower into that space. A SigLIP-base
    tower without one scored 768-wide patches against 512-wide text and every plan held (seen on an H200)."""
    from transformers import CLIPConfig, CLIPModel

    from vidplan_core.models.semantic import SemanticScorer

    if kind != "base":
        return models
    d = models.suite.flow_map.model.config.text_embed_dim or 512
    tok = models.scorer.tokenizer
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16)
    text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                vocab_size=len(tok), max_position_embeddings=12, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=d))
    models.scorer = SemanticScorer(clip, tok)
    return models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="full")
    p.add_argument("--device", default="cuda")
    p.add_argument("--ks", default="1,4")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--bf16", dest="bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--siglip", default="base", choices=["base", "small"])
    p.add_argument("--tiny-decoder", dest="tiny_decoder", action=argparse.BooleanOptionalAction, default=True,
                   help="score through a tiny decoder (64 channels, as bench/flops_full.py counts it): the product's "
                        "path; --no-tiny-decoder decodes with the full VAE")
    p.add_argument("--stem", default=None, help="output name under bench/results (default gpu_plan_cycle, or "
                                                "gpu_plan_cycle_smoke off CUDA)")
    args = p.parse_args(argv)

    from vidplan_core.planning.planner import GradientPlanner, PlannerConfig
    from vidplan_core.planning.proposals import perturbation_proposals
    from vidplan_core.runtime.base import PlanningContext
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.torch_backend import TorchBackend

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --config tiny for a smoke check")
    if not cuda:
        torch.set_num_threads(1)  # smoke runs share 2 CPU cores: oversubscribed threads are ~10× slower
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    models = _scorer(random_planner_models(args.config, seed=0), args.siglip if cuda else "small")
    if args.tiny_decoder:
        from vidplan_core.models.tiny_decoder import TinyDecoder

        models.tiny_decoder = TinyDecoder.for_autoencoder(models.suite.autoencoder, channels=64).eval()
    cfg = models.suite.autoencoder.config
    pose = np.array([0.45, 0.05, 0.30, np.pi - 0.02, 0.0, 0.0, 0.0])
    frames = np.random.default_rng(0).integers(0, 255, (models.num_history, 3, 3, cfg.view_height, cfg.view_width),
                                               dtype=np.uint8)
    ctx = PlanningContext(frames, np.repeat(pose[None], models.num_history, 0), "pick up the red cube")
    props = perturbation_proposals(np.repeat(pose[None], models.horizon, 0), args.n, rng=0)
    flops_file = OUT / "flops_full.json"
    flops = json.loads(flops_file.read_text()) if flops_file.is_file() else None
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)
    res: dict = {"benchmark": "gpu_plan_cycle", "device": device_name, "config": args.config, "N": args.n,
                 "H": models.horizon, "refine_iters": args.iters, "bf16": args.bf16 and cuda,
                 "compile": args.compile, "cuda_graphs": args.cuda_graphs and cuda, "torch": torch.__version__,
                 "measured_on_gpu": cuda, "decoder": "tiny (64 ch)" if args.tiny_decoder else "vae",
                 "command": "python bench/gpu_plan_cycle.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "by_K": {}}
    for k in [int(x) for x in args.ks.split(",")]:
        be = TorchBackend(models, flow_steps=k, device=args.device, compile=args.compile and not args.cuda_graphs,
                          cuda_graphs=args.cuda_graphs and cuda, bf16=args.bf16 and cuda)
        # every refinement iteration runs (no early stop, no skip on a small random-weight gradient): the cycle
        # as flops_full.json counts it, the worst case of the shipped planner
        planner = GradientPlanner(be, PlannerConfig(refine_iters=args.iters, refine_tol=0.0, min_grad=0.0))
        t = time.perf_counter()
        def plan(planner=planner, k=k):
            r = planner.plan(ctx, props)
            if "total" not in r.timings:  # a hold: the planner caught an error and said why
                raise SystemExit(f"K={k}: the planner held instead of planning: {r.status}: {r.reason}")
            return r

        for _ in range(2):  # warm-up: compilation, CUDA graph capture, cuDNN autotuning
            r = plan()
        warm = time.perf_counter() - t
        cyc, stages = [], []
        for _ in range(args.repeats):
            r = plan()
            cyc.append(r.timings["total"])
            stages.append(r.timings)
        med = statistics.median(cyc)
        entry = {"cycle_s": med, "cycles_s": cyc, "warmup_s": warm, "status": r.status, "reason": r.reason,
                 "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                 "stages_s": {s: statistics.median(st.get(s, 0.0) for st in stages)
                              for s in ("encode", "rollout", "heads", "semantic", "select", "refinement")}}
        if flops and args.config == "full":
            f = flops["plan_cycle"]["by_K_tiny" if args.tiny_decoder else "by_K"].get(f"K{k}", {}).get("total_flops")
            if f:
                entry["flops"] = f
                entry["achieved_tflops"] = f / med / 1e12
                if peak:
                    entry["mfu"] = f / med / peak
        res["by_K"][f"K{k}"] = entry
        print(f"K={k}: {med:.3f} s/cycle {entry['stages_s']}", flush=True)
    OUT.mkdir(exist_ok=True)
    stem = args.stem or ("gpu_plan_cycle" if cuda else "gpu_plan_cycle_smoke")
    (OUT / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (OUT / f"{stem}.md").write_text(summary(res))
    print(summary(res))
    return 0


def summary(res: dict) -> str:
    goals = {"K1": 0.25, "K4": 1.0}
    paper = {"K1": 0.48, "K4": 2.6}
    lines = [f"# gpu_plan_cycle — {res['config']} config, N={res['N']}, H={res['H']}, {res['refine_iters']} "
             "refinement iterations", "",
             f"Device: {res['device']}; bf16={res['bf16']}, torch.compile={res['compile']}, "
             f"CUDA graphs={res['cuda_graphs']}, torch {res['torch']}; scoring decoder: {res.get('decoder')}.", "",
             f"Command: `{res.get('command')}`.", ""]
    if not res["measured_on_gpu"]:
        lines += ["**Smoke run only (no GPU): these numbers say nothing about the GPU goal; the GPU numbers are "
                  "unmeasured.**", ""]
    lines += ["| K | s/cycle | rollout | heads | semantic | refinement | MFU | goal | paper |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k, e in res["by_K"].items():
        s = e["stages_s"]
        mfu = f"{100 * e['mfu']:.1f} %" if "mfu" in e else "n/a"
        goal = goals.get(k)
        met = ("met" if e["cycle_s"] <= goal else "not met") if (goal and res["measured_on_gpu"]) else "unmeasured"
        lines.append(f"| {k[1:]} | {e['cycle_s']:.3f} | {s['rollout']:.3f} | {s['heads']:.3f} | {s['semantic']:.3f} | "
                     f"{s['refinement']:.3f} | {mfu} | ≤ {goal} s: {met} | {paper.get(k)} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
