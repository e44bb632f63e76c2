"""World-model recipe benchmark: does a recipe make the prediction follow its actions and beat copying the frame?

Each arm is a model directory (``autoencoder/``, ``flow_map/`` … as ``vidplan eval bag`` reads it) evaluated with
``vidplan eval bag`` (the python API, same code) on the same held-out recordings — episodes whose scene seeds no
arm trained on — with the flow map at K = 1, the product's predictor, and the controllability pass (every window
predicted again with shuffled and mirrored future actions, same initial noise). Per arm, pooled over the
recordings (window-weighted means):

- ``controllability_ratio_h{H}``: latent MSE with shuffled actions / with the true actions at the last horizon step
  (1.0 = action-blind; the issue's goal is ≥ 2.0 at H = 5), and the mean over the steps;
- ``psnr_gain_vs_copy_moving_db``: PSNR of the decoded prediction minus PSNR of copying the current frame, on the
  pixels that change (eval-bag's ``prediction.moving_pixels``; goal ≥ 2 dB), pooled over windows and views;
- whole-image PSNR and the copy baseline's.

The arms share everything but the world model (same data, autoencoder, steps, seeds), so their differences are
the recipe's. Arms trained for minutes on a CPU are far from convergence: the comparison says which recipe learns
faster, not what a converged model reaches.

Run:  python bench/wm_recipe.py --arm NAME=MODEL_DIR [--arm ...] --bags DIR_OF_BAGS [--out bench/results/wm_recipe]
      [--jobs N] [--note TEXT] (writes OUT.json and OUT.md; eval-bag's per-recording reports under --work)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _arm(bags: list[Path], model: Path, out: Path) -> dict:
    from vidplan_core.eval.bag_eval import EvalBagConfig, eval_bag

    rows = []
    for bag in bags:
        res = eval_bag(bag, model, out / bag.name, config=EvalBagConfig(shadow=False, examples=1, progress=False))
        m = res.metrics
        p, c = m["prediction"], m.get("controllability") or {}
        ratio = (c.get("ratio") or {}).get("shuffled") or {}
        mv = p["moving_pixels"]
        rows.append({"bag": bag.name, "windows": m["windows"], "psnr_db": p["psnr_db_mean"],
                     "copy_psnr_db": p["copy_last_frame_psnr_db"]["mean"], "moving_values": mv["values"],
                     "moving_gain_db": mv["gain_db_mean"],
                     "moving_gain_vs_decoded_copy_db": mv.get("gain_vs_decoded_copy_db_mean"),
                     "reconstruction_psnr_db": float(np.mean(list(p["reconstruction_psnr_db"].values()))),
                     "ratio_shuffled_per_step": ratio.get("per_step"),
                     "ratio_mirrored_mean": ((c.get("ratio") or {}).get("mirrored") or {}).get("mean")})
    w = np.array([r["windows"] for r in rows], float)
    per_step = np.array([r["ratio_shuffled_per_step"] for r in rows], float)  # (bags, H)
    gains = np.array([np.nan if r["moving_gain_db"] is None else r["moving_gain_db"] for r in rows])
    vals = np.array([r["moving_values"] for r in rows], float)
    ok = np.isfinite(gains) & (vals > 0)
    H = per_step.shape[1]
    return {
        "model": str(model), "bags": len(rows), "windows": int(w.sum()),
        f"controllability_ratio_h{H}": float(np.average(per_step[:, -1], weights=w)),
        "controllability_ratio_per_step": np.average(per_step, axis=0, weights=w).tolist(),
        "controllability_ratio_mirrored": float(np.average([r["ratio_mirrored_mean"] for r in rows], weights=w)),
        "psnr_gain_vs_copy_moving_db": float(np.average(gains[ok], weights=vals[ok])) if ok.any() else None,
        "psnr_gain_vs_decoded_copy_moving_db": float(np.average(
            [rows[i]["moving_gain_vs_decoded_copy_db"] for i in np.flatnonzero(ok)], weights=vals[ok]))
        if ok.any() else None,
        "reconstruction_psnr_db": float(np.average([r["reconstruction_psnr_db"] for r in rows], weights=w)),
        "psnr_db": float(np.average([r["psnr_db"] for r in rows], weights=w)),
        "copy_psnr_db": float(np.average([r["copy_psnr_db"] for r in rows], weights=w)),
        "per_bag": rows,
    }


def _timed_arm(bags: list[Path], model: Path, out: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = _arm(bags, model, out)
    r["eval_s"] = round(time.perf_counter() - t0, 1)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME=MODEL_DIR (repeat)")
    ap.add_argument("--bags", required=True, help="directory of held-out episode bags (vidplan data generate)")
    ap.add_argument("--out", default=str(RESULTS / "wm_recipe"))
    ap.add_argument("--note", default="", help="what the arms are (recipe, data, steps), for the summary")
    ap.add_argument("--jobs", type=int, default=1, help="arms evaluated in parallel (one process and thread each)")
    ap.add_argument("--work", default=".cache/wm_recipe_eval", help="eval-bag's per-recording outputs (reports, "
                    "plots; not committed)")
    a = ap.parse_args(argv)
    import torch

    bags = sorted(p for p in Path(a.bags).iterdir() if p.is_dir())
    if not bags:
        ap.error(f"no bags in {a.bags}")
    out = Path(a.out)
    specs = [spec.partition("=")[::2] for spec in a.arm]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {name: pool.submit(_timed_arm, bags, Path(model), Path(a.work) / name) for name, model in specs}
        arms = {}
        for name, f in futures.items():
            arms[name] = f.result()
            print(f"{name}: {json.dumps({k: v for k, v in arms[name].items() if k != 'per_bag'})}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"benchmark": "wm_recipe", "command": "python bench/wm_recipe.py " + " ".join(sys.argv[1:] if argv is None
                                                                                          else argv),
           "commit": commit, "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                                        f"torch {torch.__version__}, 1 thread",
           "bags": [b.name for b in bags], "note": a.note, "arms": arms}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    H = len(next(iter(arms.values()))["controllability_ratio_per_step"])
    lines = [f"# World-model recipe ({len(bags)} held-out recordings, flow map K=1)", "",
             f"Command: `{res['command']}` at commit {commit}; {res['machine']}.", "", a.note, "",
             f"| arm | windows | shuffled/true latent MSE at h{H} (goal ≥ 2.0) | per step | mirrored/true | "
             "PSNR gain vs copy on changing pixels [dB] (goal ≥ 2) | … vs the decoded copy [dB] | PSNR [dB] | "
             "copy PSNR [dB] | autoencoder reconstruction PSNR [dB] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in arms.items():
        g = r["psnr_gain_vs_copy_moving_db"]
        lines.append(f"| {name} | {r['windows']} | {r[f'controllability_ratio_h{H}']:.3f} | "
                     f"{' / '.join(f'{x:.2f}' for x in r['controllability_ratio_per_step'])} | "
                     f"{r['controllability_ratio_mirrored']:.3f} | {'n/a' if g is None else f'{g:+.2f}'} | "
                     f"{r['psnr_gain_vs_decoded_copy_moving_db']:+.2f} | {r['psnr_db']:.2f} | "
                     f"{r['copy_psnr_db']:.2f} | {r['reconstruction_psnr_db']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
