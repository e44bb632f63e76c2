"""Distillation benchmark: EDM teacher vs flow map (PSD) vs flow-loss-only control on procedural video.

Data: an action-conditioned procedural "DROID-like" scene generated here (no simulation data exists yet):
three 8x8 views (left, right, wrist) of a coloured Gaussian blob whose image position is a fixed projection of
the 7-D EE action's xyz per view (left sees x,z; right sees y,z; wrist sees x,y), whose size grows when the
gripper closes, over a per-episode random background tint (which the model must carry over from the history).
(A first run with per-episode blob colours left the 7-minute teacher far from converged.)
Trajectories are smooth random walks at the model rate.

Models: the ``pixel`` autoencoder (exact space-to-depth by 4 → latent 48x6x2, so PSNR measures the
dynamics model, not a VAE) and a small WorldModel (tiny-class UNet). Steps: (1) train the teacher with the
EDM loss, (2) fine-tune a flow map from it with PSD (2:1 flow/distill), (3) fine-tune the control from the
same teacher with the flow loss only (same number of steps), (4) evaluate on held-out episodes: teacher
EDM-Euler N = 25, 50 and flow maps K = 1, 2, 4 (same noise), PSNR per horizon step and latent MSE vs
ground truth, wall time side by side.

Run:  python bench/distillation.py            (≈ 13 min on 2 busy CPU cores; --minutes sets the training budget)
Writes bench/results/distillation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidplan_core.models import FlowMap, VideoAutoencoder, WorldModel
from vidplan_core.sampling import edm_loss, edm_sample, flow_map_sample, psd_loss
from vidplan_core.spaces import ActionNormalizer

RESULTS = Path(__file__).parent / "results"
T_HIST, H_FUT, VIEW, PATCH = 1, 4, 8, 4  # pixel latent 48x6x2 (patch 4: 4x cheaper than 2)


def make_episodes(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n episodes → images (n, L, 3, 3, 8, 8) in [0, 1] and actions (n, L, 7)."""
    acts = np.zeros((n, length, 7), np.float32)
    pos = rng.uniform(-0.6, 0.6, (n, 3))
    vel = rng.normal(0, 0.12, (n, 3))
    grip = (rng.uniform(size=n) < 0.5).astype(np.float32)
    for k in range(length):
        vel = 0.8 * vel + rng.normal(0, 0.08, (n, 3))
        pos = np.clip(pos + vel, -0.9, 0.9)
        vel = np.where(np.abs(pos) >= 0.9, -vel, vel)
        flip = rng.uniform(size=n) < 0.1
        grip = np.where(flip, 1 - grip, grip)
        acts[:, k, :3] = pos
        acts[:, k, 3:6] = rng.normal(0, 0.05, (n, 3))  # small orientation jitter (not rendered)
        acts[:, k, 6] = grip
    colour = np.broadcast_to(np.array([1.0, 0.35, 0.15], np.float32), (n, 3))  # fixed blob colour
    bg = rng.uniform(0.0, 0.25, (n, 3)).astype(np.float32)
    ax = [(0, 2), (1, 2), (0, 1)]  # (u, v) action dims seen by left, right, wrist
    g = (np.arange(VIEW) + 0.5) / VIEW * 2 - 1
    imgs = np.zeros((n, length, 3, 3, VIEW, VIEW), np.float32)
    for v, (du, dv) in enumerate(ax):
        u = acts[:, :, du][..., None, None]
        w = acts[:, :, dv][..., None, None]
        rad = (0.25 + 0.15 * acts[:, :, 6])[..., None, None]
        blob = np.exp(-((g[None, None, None, :] - u) ** 2 + (g[None, None, :, None] - w) ** 2) / (2 * rad ** 2))
        imgs[:, :, v] = bg[:, None, :, None, None] + (colour - bg)[:, None, :, None, None] * blob[:, :, None]
    return imgs.clip(0, 1), acts


def windows(imgs: np.ndarray, acts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """All (T+H)-frame windows → images (N, T+H, 3, 3, 8, 8), actions (N, T+H, 7)."""
    F = T_HIST + H_FUT
    xs, as_ = [], []
    for s in range(imgs.shape[1] - F + 1):
        xs.append(imgs[:, s:s + F])
        as_.append(acts[:, s:s + F])
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(as_))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) over all but the first two dims (N, H, ...) → (H,) averaged over N of per-sample PSNR."""
    mse = ((a - b) ** 2).flatten(2).mean(-1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean(0)


def timed_min(fn, reps: int = 2):
    """(output, minimum wall time over reps) — the minimum is the least disturbed by other processes."""
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def distillation_goals(res: dict, time_key: str) -> tuple[dict, dict]:
    """Speed ratios (teacher N=25/50 vs flow map K=1/2/4, by ``time_key``) and the issue's goal verdicts, from
    results keyed ``teacher_N{25,50}``, ``flowmap_K{1,2,4}``, ``baseline_copy_last_frame`` (shared with
    distillation_sim.py)."""
    t50 = res["teacher_N50"]
    speed = {f"N{n}_vs_K{k}": {"ratio": round(res[f"teacher_N{n}"][time_key] / res[f"flowmap_K{k}"][time_key], 2),
                               "goal_0.9N_over_K": round(0.9 * n / k, 2)} for n in (25, 50) for k in (1, 2, 4)}
    # the PSNR goals only mean something if the teacher learned the dynamics (beats copying the last frame)
    goals = {
        "teacher_beats_copy_last_frame_baseline (PSNR goals meaningful)":
            t50["psnr_db_mean"] > res["baseline_copy_last_frame"]["psnr_db_mean"],
        "K4_within_0.5dB_of_N50": res["flowmap_K4"]["psnr_db_mean"] >= t50["psnr_db_mean"] - 0.5,
        "K1_within_2dB_of_N50": res["flowmap_K1"]["psnr_db_mean"] >= t50["psnr_db_mean"] - 2.0,
        "speed_ratio_ge_0.9N_over_K": all(v["ratio"] >= v["goal_0.9N_over_K"] for v in speed.values()),
    }
    return speed, goals


def speed_line(speed: dict, what: str) -> str:
    return (f"Speed ratios ({what}, goal ≥ 0.9·N/K): "
            + ", ".join(f"{k}: {v['ratio']} (goal {v['goal_0.9N_over_K']})" for k, v in speed.items()))


def goals_line(goals: dict) -> str:
    return "Goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=12.5, help="training budget in minutes (teacher 55 %%)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on 2 shared cores, 2 threads ran 4-10x slower from contention)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    tr_i, tr_a = make_episodes(400, 16, rng)
    te_i, te_a = make_episodes(48, T_HIST + H_FUT, rng)
    Xi, Xa = windows(tr_i, tr_a)
    Ti, Ta = windows(te_i, te_a)
    ae = VideoAutoencoder(kind="pixel", view_height=VIEW, view_width=VIEW, patch=PATCH)
    with torch.no_grad():
        Z, Zt = ae.encode(Xi), ae.encode(Ti)
    C, h, w = ae.latent_shape
    norm = ActionNormalizer.fit(tr_a.reshape(-1, 7))
    teacher = WorldModel(latent_channels=C, latent_height=h, latent_width=w, num_history=T_HIST, num_future=H_FUT,
                         block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=64,
                         num_attention_heads=(2, 4), addition_time_embed_dim=16, action_hidden_dims=(64,),
                         sigma_data=0.5, p_mean=-0.8, p_std=1.2)
    teacher.set_action_stats(norm)
    n_par = sum(p.numel() for p in teacher.parameters())
    print(f"train windows {len(Z)}, test {len(Zt)}, latent {C}x{h}x{w}, teacher params {n_par / 1e6:.2f} M",
          flush=True)
    gen = torch.Generator().manual_seed(args.seed)

    def batch(n: int):
        idx = torch.randint(0, len(Z), (n,), generator=gen)
        return Z[idx, T_HIST:], Z[idx, :T_HIST], Xa[idx]

    budget = args.minutes * 60
    # (1) teacher
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=0.0)
    sched_steps = None
    t0 = time.perf_counter()
    step, losses = 0, []
    teacher.train()
    t_teacher = 0.55 * budget
    while time.perf_counter() - t0 < t_teacher:
        for grp in opt.param_groups:  # linear decay to 10 % over the time budget (short runs end sharper)
            grp["lr"] = 1e-3 * max(0.1, 1.0 - (time.perf_counter() - t0) / t_teacher)
        x1, hist, a = batch(args.batch)
        opt.zero_grad(set_to_none=True)
        loss = edm_loss(teacher, x1, hist, a, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(teacher.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            print(f"teacher step {step} loss {np.mean(losses[-50:]):.4f}", flush=True)
    teacher_steps, teacher_time = step, time.perf_counter() - t0
    teacher.eval()

    # (2) flow map (PSD) and (3) control (flow loss only), same number of steps
    def finetune(distill: bool, steps: int | None, seconds: float):
        fm = FlowMap.from_teacher(teacher, t_min=1.0 / (1.0 + teacher.config.sigma_max))
        o = torch.optim.AdamW(fm.parameters(), lr=3e-4, weight_decay=0.0)
        t1, k, hist_l = time.perf_counter(), 0, []
        while (steps is None and time.perf_counter() - t1 < seconds) or (steps is not None and k < steps):
            x1, hist, a = batch(args.batch)
            fm.train()
            o.zero_grad(set_to_none=True)
            out = psd_loss(fm, x1, hist, a, generator=gen, distill=distill)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(fm.parameters(), 1.0)
            o.step()
            hist_l.append({n: float(v.detach()) for n, v in out.items()})
            k += 1
            if k % 25 == 0:
                last = hist_l[-25:]
                print(f"{'psd' if distill else 'flow-only'} step {k} flow {np.mean([d['flow'] for d in last]):.4f}"
                      f" distill {np.mean([d['distill'] for d in last]):.4f}", flush=True)
        fm.eval()
        return fm, k, time.perf_counter() - t1, hist_l

    fm, fm_steps, fm_time, fm_hist = finetune(True, None, 0.25 * budget)
    ctrl, _, ctrl_time, ctrl_hist = finetune(False, fm_steps, 0.0)
    del sched_steps

    # (4) evaluation, side by side on the same held-out batch and noise
    hist_t, fut_t, act_t = Zt[:, :T_HIST], Zt[:, T_HIST:], Ta
    gt_img = Ti[:, T_HIST:]
    noise = torch.randn(fut_t.shape, generator=torch.Generator().manual_seed(123))
    res: dict[str, dict] = {}
    fm0 = FlowMap.from_teacher(teacher).eval()  # DIFF2FLOW of the teacher before fine-tuning
    with torch.no_grad():
        for name, fn in [
            ("teacher_N25", lambda: edm_sample(teacher, hist_t, act_t, num_steps=25, noise=noise)),
            ("teacher_N50", lambda: edm_sample(teacher, hist_t, act_t, num_steps=50, noise=noise)),
            *[(f"flowmap_K{k}", (lambda k=k: flow_map_sample(fm, hist_t, act_t, num_steps=k, noise=noise)))
              for k in (1, 2, 4)],
            *[(f"control_K{k}", (lambda k=k: flow_map_sample(ctrl, hist_t, act_t, num_steps=k, noise=noise)))
              for k in (1, 2, 4)],
            ("teacher_init_flowmap_K4", lambda: flow_map_sample(fm0, hist_t, act_t, 4, noise=noise)),
        ]:
            pred, secs = timed_min(fn, 3)
            img = ae.decode(pred)
            p = psnr(img, gt_img)
            res[name] = {"psnr_db_per_step": [round(float(v), 3) for v in p], "psnr_db_mean": round(float(p.mean()), 3),
                         "latent_mse": float(((pred - fut_t) ** 2).mean()), "wall_s": round(secs, 4)}
            print(name, res[name], flush=True)
    # copy-last-frame baseline (how much the model must predict)
    last = ae.decode(hist_t[:, -1:].expand_as(fut_t))
    res["baseline_copy_last_frame"] = {"psnr_db_per_step": [round(float(v), 3) for v in psnr(last, gt_img)],
                                       "psnr_db_mean": round(float(psnr(last, gt_img).mean()), 3),
                                       "latent_mse": float(((hist_t[:, -1:] - fut_t) ** 2).mean())}
    speed, goals = distillation_goals(res, "wall_s")
    out = {
        "benchmark": "distillation",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "note": "2 CPU cores shared with other engineers; times are min of 3 runs"},
        "command": "python bench/distillation.py " + " ".join(sys.argv[1:]),
        "setup": {"views": 3, "view_hw": [VIEW, VIEW], "latent": [C, h, w], "history": T_HIST, "future": H_FUT,
                  "teacher_params_M": round(n_par / 1e6, 3), "batch": args.batch, "train_windows": len(Z),
                  "test_windows": len(Zt), "teacher_steps": teacher_steps,
                  "teacher_train_s": round(teacher_time, 1),
                  "teacher_final_loss": round(float(np.mean(losses[-50:])), 4),
                  "flowmap_steps": fm_steps, "flowmap_train_s": round(fm_time, 1),
                  "control_train_s": round(ctrl_time, 1),
                  "flowmap_final": {k: round(float(np.mean([d[k] for d in fm_hist[-25:]])), 4)
                                    for k in ("flow", "distill")},
                  "control_final": {"flow": round(float(np.mean([d["flow"] for d in ctrl_hist[-25:]])), 4)},
                  "teacher_solver": "EDM Euler, Karras rho=7, sigma 80 -> 0.002 -> 0, no guidance",
                  "flow_grid": "uniform in t from t_min=1/81 to 1"},
        "results": res, "speed": speed, "goals": goals,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distillation.json").write_text(json.dumps(out, indent=2))
    md = ["# Distillation benchmark (teacher EDM vs flow map, procedural 3-view blob video)", "",
          f"Machine: {out['machine']['platform']}, torch {torch.__version__}, {torch.get_num_threads()} threads "
          "(2 shared CPU cores).", f"Command: `{out['command']}`; total wall time {out['total_wall_s']} s.", "",
          f"Teacher {n_par / 1e6:.2f} M params, {teacher_steps} EDM steps ({teacher_time:.0f} s); "
          f"flow map {fm_steps} PSD steps ({fm_time:.0f} s); control (flow loss only) {fm_steps} steps "
          f"({ctrl_time:.0f} s).", "",
          "| model | PSNR dB per horizon step | mean PSNR | latent MSE | wall s (48 samples) |",
          "|---|---|---|---|---|"]
    for k, v in res.items():
        md.append(f"| {k} | {', '.join(f'{x:.2f}' for x in v['psnr_db_per_step'])} | {v['psnr_db_mean']:.2f} | "
                  f"{v['latent_mse']:.4f} | {v.get('wall_s', '')} |")
    md += ["", speed_line(speed, "teacher wall / flow-map wall"), "", goals_line(goals), ""]
    (args.out / "distillation.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
