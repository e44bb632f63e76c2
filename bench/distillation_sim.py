"""Distillation on simulation data: the demo models' EDM teacher vs its PSD flow map vs a flow-loss-only control.

Uses the training runs of ``make demo-models`` (``--work``, default .cache/demo-models): the EDM teacher
(runs/world-model/final) and the PSD flow map distilled from it (runs/flow-map/final). Trains the control if it is
missing: the same flow-map config, steps and initialisation with ``task.distill=false`` (flow loss only), into
runs/flow-map-control. Evaluates every predictor with ``eval_bag`` on the held-out simulated episodes
(``<work>/eval_bags``, seeds 0–2, never trained on), the same windows and the same initial noise per window:
prediction PSNR per horizon step (mean of the 3 views, against the recorded frames), latent MSE per step, rollout
time per window (median), and the copy-last-frame baseline. Teacher: EDM Euler with N = 25 and 50 noise levels;
flow maps: K = 1, 2, 4 on the uniform time grid.

Run:  python bench/distillation_sim.py      (≈ 15 min on one CPU core after `make demo-models`; the control's
      training is skipped when it exists)
Writes bench/results/distillation_sim.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _last_step(run: Path) -> int:
    with (run / "logs" / "metrics.csv").open() as f:
        return max(int(r[0]) for r in csv.reader(f) if r and r[0] != "step")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(".cache/demo-models"), help="make demo-models work directory")
    ap.add_argument("--windows", type=int, default=8, help="evaluated windows per held-out episode")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import torch
    from distillation import distillation_goals, goals_line, speed_line  # bench/ is on sys.path when run as a script

    from vidplan_core.eval.bag_eval import EvalBagConfig, eval_bag
    from vidplan_core.training.assemble import assemble_model_dir, default_sources

    torch.set_num_threads(1)
    runs = args.work / "runs"
    bags = sorted(p for p in (args.work / "eval_bags").glob("episode_*") if p.is_dir())
    need = [runs / "world-model" / "final", runs / "flow-map" / "final"]
    missing = [str(p) for p in need if not p.is_dir()] + ([] if bags else [str(args.work / "eval_bags")])
    if missing:
        print(f"error: missing {missing}: run `make demo-models` (and scripts/model_card.py) first", file=sys.stderr)
        return 2
    t_start = time.perf_counter()

    # the control: same config, steps and initialisation as the PSD flow map, flow loss only
    psd_steps = _last_step(runs / "flow-map")
    control = runs / "flow-map-control"
    control_train_s = None
    if not (control / "final").is_dir():
        init = {k: runs / k / "final" for k in ("semantic", "world-model")} | {"vae": runs / "vae" / "final"}
        cmd = [sys.executable, "-c", "from vidplan_app.cli import main; main()", "train", "flow-map",
               "--config", "demo-flow-map", "--data", str(args.work / "data"), "--out", str(control),
               "--max-steps", str(psd_steps), "--set", "options.distill=false",
               "--set", f"init.semantic={init['semantic']}", "--set", f"init.autoencoder={init['vae']}",
               "--set", f"init.world_model={init['world-model']}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        control_train_s = time.perf_counter() - t0

    models: dict[str, Path] = {}
    for name, fm in (("psd", runs / "flow-map" / "final"), ("control", control / "final")):
        d = args.work / "bench_models" / name
        src = default_sources(runs) | {"flow_map": fm}
        assemble_model_dir(d, src, overwrite=True)  # float32 storage: both flow maps as trained
        models[name] = d

    teacher = str(runs / "world-model" / "final")
    predictors = {f"teacher_N{n}": (models["psd"], {"teacher_steps": n, "teacher_dir": teacher}) for n in (25, 50)}
    predictors |= {f"flowmap_K{k}": (models["psd"], {"flow_steps": k}) for k in (1, 2, 4)}
    predictors |= {f"control_K{k}": (models["control"], {"flow_steps": k}) for k in (1, 2, 4)}
    res: dict[str, dict] = {}
    baseline = []
    for name, (model, settings) in predictors.items():
        psnr, lmse, ms = [], [], []
        for bag in bags:
            m = eval_bag(bag, model, args.work / "bench_eval" / name / bag.name, config=EvalBagConfig(
                max_steps=args.windows, shadow=False, examples=0, progress=False, **settings)).metrics
            psnr.append(m["prediction"]["psnr_db"]["mean"])
            lmse.append(m["prediction"]["latent_mse"]["per_step"])
            ms.append(m["latency"]["rollout"]["p50_ms"])
            if name == "teacher_N25":
                baseline.append(m["prediction"]["copy_last_frame_psnr_db"]["per_step"])
        p = np.mean(psnr, axis=0)
        res[name] = {"psnr_db_per_step": [round(float(x), 3) for x in p], "psnr_db_mean": round(float(p.mean()), 3),
                     "latent_mse_per_step": [round(float(x), 4) for x in np.mean(lmse, axis=0)],
                     "latent_mse": round(float(np.mean(lmse)), 4), "rollout_ms_p50": round(float(np.median(ms)), 1)}
        print(name, res[name], flush=True)
    b = np.mean(baseline, axis=0)
    res["baseline_copy_last_frame"] = {"psnr_db_per_step": [round(float(x), 3) for x in b],
                                       "psnr_db_mean": round(float(b.mean()), 3)}

    speed, goals = distillation_goals(res, "rollout_ms_p50")
    distill_effect = {f"K{k}": {"psnr_db": round(res[f"flowmap_K{k}"]["psnr_db_mean"]
                                                 - res[f"control_K{k}"]["psnr_db_mean"], 3),
                                "latent_mse": round(res[f"flowmap_K{k}"]["latent_mse"]
                                                    - res[f"control_K{k}"]["latent_mse"], 4)} for k in (1, 2, 4)}
    out = {
        "benchmark": "distillation_sim",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": 1, "note": "2 CPU cores shared with other jobs; times are medians over windows"},
        "command": "python bench/distillation_sim.py " + " ".join(sys.argv[1:]),
        "setup": {"teacher": teacher, "psd_flow_map": str(runs / "flow-map" / "final"),
                  "control": str(control / "final"), "flow_map_steps": psd_steps,
                  "control_train_s": None if control_train_s is None else round(control_train_s, 1),
                  "held_out_episodes": [b.name for b in bags], "windows_per_episode": args.windows,
                  "teacher_solver": "EDM Euler, Karras rho=7, no guidance", "flow_grid": "uniform in t"},
        "results": res, "speed": speed, "goals": goals, "distillation_term_effect": distill_effect,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distillation_sim.json").write_text(json.dumps(out, indent=2))
    md = ["# Distillation on simulation data (demo models: EDM teacher vs PSD flow map vs flow-loss-only control)", "",
          f"Machine: {out['machine']['platform']}, {os.cpu_count()} CPUs shared with other jobs, torch "
          f"{torch.__version__}, 1 thread. Command: `{out['command']}`; wall time {out['total_wall_s']:.0f} s.", "",
          f"Models: `make demo-models` runs in `{args.work}` (demo configuration, 200 simulated episodes); flow map "
          f"and control both {psd_steps} steps from the same teacher. Held-out: {len(bags)} simulated episodes "
          f"(seeds 0–{len(bags) - 1}), {args.windows} windows each, the same initial noise per window for every "
          "predictor. PSNR against the recorded frames (mean of the 3 views); latent MSE against the encoded "
          "recorded frames.", "",
          "| predictor | PSNR dB per horizon step (5 Hz) | mean PSNR | latent MSE | rollout ms (median) |",
          "|---|---|---|---|---|"]
    for k, v in res.items():
        md.append(f"| {k} | {' / '.join(f'{x:.2f}' for x in v['psnr_db_per_step'])} | {v['psnr_db_mean']:.2f} | "
                  f"{v.get('latent_mse', '')} | {v.get('rollout_ms_p50', '')} |")
    md += ["", speed_line(speed, "teacher / flow map rollout time"), "",
           "Distillation term (PSD flow map − flow-loss-only control): " +
           ", ".join(f"{k}: {v['psnr_db']:+.2f} dB, latent MSE {v['latent_mse']:+.4f}"
                     for k, v in distill_effect.items()), "", goals_line(goals), ""]
    (args.out / "distillation_sim.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
