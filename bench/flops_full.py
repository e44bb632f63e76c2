"""FLOPs of the ``full`` configuration (SVD/Ctrl-World shape) and the physical-limit time of one plan cycle.

Counts with ``torch.utils.flop_counter.FlopCounterMode`` on the *meta* device (random-weight shapes only; compute
does not depend on the values), batch 1:
* flow map / world model: one forward (one network evaluation, NFE), forward + backward with gradients to the
  inputs only (planning: d value / d actions, weights frozen), forward + backward with weight gradients (training);
* UQ head, reward head (forward, forward + input-backward), VAE decode of the H predicted frames and the same with the
  tiny decoder for scoring (``training/configs/full-tiny-decoder.yaml``: DecoderTiny, 64 channels),
  optionally a SigLIP-base vision tower per image (the size of the semantic model is the user's choice).
Plan cycle (N proposals, H frames, C value-and-grad calls of the refinement, K flow steps):
    proposals  = N·K·NFE_fwd + N·(UQ_fwd + reward_fwd) + N·decode(H frames) + N·H·semantic_fwd
    refinement = C·(K·NFE_fwdbwd_inputs + reward_fwdbwd + UQ_fwdbwd)
The first table keeps the previous count's basis (N = 6, C = 5, full decoder) and swaps in the tiny decoder; the
second counts the planner as configured (``planning/planner.yaml``: N = its candidate count, C = the value-and-grad
calls per cycle measured by ``bench/plan_cycle.py --headline`` on models/demo, and at the cap refine_iters + 1).
Lower bound = FLOPs / 790 TFLOP/s (H200 dense bf16). Run: ``python bench/flops_full.py`` (≈ 1 min, no GPU).
Writes bench/results/flops_full.json and .md; the planner's GPU benchmark divides these by measured times (MFU).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidplan_core.models import FlowMap, RewardHead, TinyDecoder, UQHead, VideoAutoencoder, WorldModel
from vidplan_core.models.configs import load_suite_config

RESULTS = Path(__file__).parent / "results"
H200_BF16_FLOPS = 790e12
TINY_CHANNELS = 64  # training/configs/full-tiny-decoder.yaml


def count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def main() -> int:
    t_start = time.perf_counter()
    cfg, _ = load_suite_config("full")
    meta = torch.device("meta")
    with meta:
        ae = VideoAutoencoder(**cfg.autoencoder)
        C, h, w = ae.latent_shape
        lat = dict(latent_channels=C, latent_height=h, latent_width=w)
        wm = WorldModel(**cfg.world_model, **lat)
        fm = FlowMap(world_model={k: v for k, v in dict(wm.config).items() if not k.startswith("_")}, **cfg.flow_map)
        uq = UQHead(**cfg.uq_head, **lat)
        rh = RewardHead(**cfg.reward_head, **lat)
        tiny = TinyDecoder.for_autoencoder(ae, channels=TINY_CHANNELS)
    for m in (ae, wm, fm, uq, rh, tiny):
        m.to(meta)  # a few diffusers parameters (AlphaBlender.mix_factor) are created on CPU regardless
    c = wm.config
    T, H = c.num_history, c.num_future
    n_params = {"world_model": sum(p.numel() for p in wm.parameters()),
                "flow_map": sum(p.numel() for p in fm.parameters()),
                "uq_head": sum(p.numel() for p in uq.parameters()),
                "reward_head": sum(p.numel() for p in rh.parameters()),
                "autoencoder": sum(p.numel() for p in ae.parameters())}

    def inputs(B=1, grad=False):
        hist = torch.randn(B, T, C, h, w, device=meta)
        x = torch.randn(B, H, C, h, w, device=meta)
        act = torch.randn(B, T + H, 7, device=meta, requires_grad=grad)
        te = torch.randn(B, c.text_embed_dim, device=meta) if c.text_embed_dim else None
        return hist, x, act, te

    def fm_fwd():
        hist, x, act, te = inputs()
        with torch.no_grad():
            fm.jump(x, 0.3, 0.7, hist, act, te)

    def fm_fwdbwd_inputs():
        for p in fm.parameters():
            p.requires_grad_(False)
        hist, x, act, te = inputs(grad=True)
        fm.jump(x, 0.3, 0.7, hist, act, te).sum().backward()

    def fm_fwdbwd_train():
        for p in fm.parameters():
            p.requires_grad_(True)
        hist, x, act, te = inputs()
        fm.jump(x, 0.3, 0.7, hist, act, te).sum().backward()

    def heads(fwd_only: bool):
        def run():
            lat_in = torch.randn(1, H, C, h, w, device=meta, requires_grad=not fwd_only)
            act = torch.randn(1, H, 7, device=meta, requires_grad=not fwd_only)
            for m in (uq, rh):
                for p in m.parameters():
                    p.requires_grad_(False)
            if fwd_only:
                with torch.no_grad():
                    uq(lat_in), rh(lat_in, act)
            else:
                (uq.uncertainty(lat_in)["h"].sum() + rh.value(lat_in, act)["value"].sum()).backward()
        return run

    def vae_decode():
        with torch.no_grad():
            ae.decode(torch.randn(1, H, C, h, w, device=meta))

    def tiny_decode():
        with torch.no_grad():
            tiny.decode(torch.randn(1, H, C, h, w, device=meta), clamp=False)

    per_call = {}
    for name, fn in [("flow_map_fwd", fm_fwd), ("flow_map_fwd_bwd_inputs", fm_fwdbwd_inputs),
                     ("flow_map_fwd_bwd_train", fm_fwdbwd_train), ("heads_fwd", heads(True)),
                     ("heads_fwd_bwd_inputs", heads(False)), ("vae_decode_H_frames", vae_decode),
                     ("tiny_decode_H_frames", tiny_decode)]:
        t0 = time.perf_counter()
        per_call[name] = count(fn)
        print(f"{name}: {per_call[name] / 1e12:.3f} TFLOP ({time.perf_counter() - t0:.1f} s)", flush=True)
    # the teacher's one step = the flow map's forward minus the (t − s) embedding (negligible): count it too
    def wm_fwd():
        hist, x, act, te = inputs()
        with torch.no_grad():
            wm.denoise(x, 1.0, hist, act, te)
    per_call["world_model_fwd"] = count(wm_fwd)

    semantic = None
    try:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        with meta:
            sv = SiglipVisionModel(SiglipVisionConfig())  # SigLIP-base-patch16-224 vision tower shape
        with torch.no_grad():
            semantic = count(lambda: sv(pixel_values=torch.randn(1, 3, 224, 224, device=meta)))
        per_call["siglip_base_vision_fwd_per_image"] = semantic
    except Exception as exc:
        print(f"semantic tower not counted: {exc}")

    def cycle(n: int, calls: float, k: int, decoder: str) -> dict:
        prop = (n * k * per_call["flow_map_fwd"] + n * per_call["heads_fwd"]
                + n * per_call[f"{decoder}_decode_H_frames"] + n * H * (semantic or 0))
        ref = calls * (k * per_call["flow_map_fwd_bwd_inputs"] + per_call["heads_fwd_bwd_inputs"])
        world_only = n * k * per_call["flow_map_fwd"] + calls * k * per_call["flow_map_fwd_bwd_inputs"]
        return {"N": n, "value_grad_calls": calls, "K": k, "decoder": decoder, "proposals_flops": prop,
                "refinement_flops": ref, "total_flops": prop + ref, "flow_map_only_flops": world_only,
                "h200_lower_bound_s": (prop + ref) / H200_BF16_FLOPS,
                "h200_lower_bound_flow_map_only_s": world_only / H200_BF16_FLOPS}

    N, R = 6, 5
    cycles = {f"K{K}": cycle(N, R, K, "vae") for K in (1, 4)}  # the previous count's basis
    cycles_tiny = {f"K{K}": cycle(N, R, K, "tiny") for K in (1, 4)}
    from vidplan_core.planning.config import load_planning_config

    session = load_planning_config().session
    n_default = len(session.proposals.basis_directions) + int(session.proposals.include_hold) + int(
        session.proposals.gripper_toggle) + session.proposals.num_nominal
    cap = session.gradopt.refine_iters + 1
    measured = None
    pc = RESULTS / "plan_cycle.json"
    if pc.is_file():
        head = json.loads(pc.read_text()).get("headline") or {}
        measured = ((head.get("tiny") or {}).get("ort_1thread") or {}).get("value_grad_calls_mean")
    planner_cycles = {}
    for label, calls in (("cap", cap), ("measured", measured)):
        if calls is not None:
            for K in (1, 4):
                planner_cycles[f"{label}_K{K}"] = cycle(n_default, calls, K, "tiny")
    teacher50 = 50 * N * per_call["world_model_fwd"]
    out = {"benchmark": "flops_full", "machine": platform.platform(), "torch": torch.__version__,
           "command": "python bench/flops_full.py", "config": "full",
           "shapes": {"latent": [C, h, w], "history": T, "future": H, "views": 3,
                      "image_per_view": [cfg.autoencoder["view_height"], cfg.autoencoder["view_width"]]},
           "params": n_params, "per_call_flops_batch1": per_call,
           "plan_cycle": {"N_proposals": N, "H": H, "refinement_iters": R, "by_K": cycles, "by_K_tiny": cycles_tiny,
                          "planner_default": planner_cycles,
                          "note": "proposals batched (N x batch-1 FLOPs); refinement on the best proposal only; "
                                  "semantic = SigLIP-base vision tower on one view per predicted frame; by_K: the "
                                  "full VAE decoder (the previous count), by_K_tiny: the tiny decoder for scoring; "
                                  "planner_default: N and value-and-grad calls as the planner runs (cap and measured)"},
           "cycle_tflop_k1": cycles_tiny["K1"]["total_flops"] / 1e12,
           "cycle_tflop_k4": cycles_tiny["K4"]["total_flops"] / 1e12,
           "tiny_decoder_channels": TINY_CHANNELS,
           "teacher_50_step_rollout_of_N_proposals_flops": teacher50,
           "h200_peak_flops": H200_BF16_FLOPS, "wall_s": round(time.perf_counter() - t_start, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flops_full.json").write_text(json.dumps(out, indent=2))
    tf = lambda v: f"{v / 1e12:.2f}"  # noqa: E731
    md = ["# FLOPs of the `full` configuration (meta device, batch 1)", "",
          f"Command: `python bench/flops_full.py` ({platform.platform()}, torch {torch.__version__}).", "",
          f"Parameters: world model {n_params['world_model'] / 1e9:.3f} B, flow map {n_params['flow_map'] / 1e9:.3f} B,"
          f" UQ head {n_params['uq_head'] / 1e6:.1f} M, reward head {n_params['reward_head'] / 1e6:.1f} M, VAE "
          f"{n_params['autoencoder'] / 1e6:.1f} M.", "", "| call (batch 1) | TFLOP |", "|---|---|"]
    md += [f"| {k} | {tf(v)} |" for k, v in per_call.items()]
    head = ("| K | decoder | N | value-and-grad calls | proposals TFLOP | refinement TFLOP | total TFLOP | H200 lower "
            "bound (790 TFLOP/s) | flow map only |")

    def row(v: dict) -> str:
        return (f"| {v['K']} | {v['decoder']} | {v['N']} | {v['value_grad_calls']:.2f} | {tf(v['proposals_flops'])} | "
                f"{tf(v['refinement_flops'])} | {tf(v['total_flops'])} | {v['h200_lower_bound_s'] * 1e3:.1f} ms | "
                f"{v['h200_lower_bound_flow_map_only_s'] * 1e3:.1f} ms |")

    md += ["", f"Plan cycle as previously counted (N={N}, H={H}, {R} value-and-grad calls), full VAE decoder vs the "
           f"tiny decoder for scoring ({TINY_CHANNELS} channels):", "", head, "|---|---|---|---|---|---|---|---|---|"]
    md += [row(v) for d in (cycles, cycles_tiny) for v in d.values()]
    k1, k4 = cycles_tiny["K1"]["total_flops"] / 1e12, cycles_tiny["K4"]["total_flops"] / 1e12
    md += ["", f"Goals (tiny decoder, this basis): K=1 ≤ 110 TFLOP: **{'met' if k1 <= 110 else 'not met'}** "
           f"({k1:.1f}); K=4 ≤ 450 TFLOP: **{'met' if k4 <= 450 else 'not met'}** ({k4:.1f})."]
    if planner_cycles:
        md += ["", f"The planner as configured (planning/planner.yaml: N = {n_default} candidates, refine_iters "
               f"{cap - 1} → at most {cap} value-and-grad calls; 'measured' = the mean calls per cycle of "
               "bench/plan_cycle.py --headline on models/demo, where the refinement stopping rules end it early):", "",
               head, "|---|---|---|---|---|---|---|---|---|"]
        md += [row(v) for v in planner_cycles.values()]
    md += ["", f"For comparison a 50-step teacher rollout of the {N} proposals: {tf(teacher50)} TFLOP "
           f"({teacher50 / H200_BF16_FLOPS * 1e3:.0f} ms at 790 TFLOP/s).", ""]
    (RESULTS / "flops_full.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
