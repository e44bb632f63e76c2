"""Does the semantic scorer tell an object's shape on the hand camera, where the object is large?

A put that grasps a look-alike (the same colour, another shape) was located on the exterior views, where a 4 cm
object is 6-8 px wide. Over the target, 4 and 7 cm above it, the hand camera sees it 15-30 px wide. For each such
observed frame this compares the bundle's scorer on the target's silhouette (cells whose logit for the instruction is
above ``--mask-logit``, as ``ScoreConfig.wrist_mask_logit``): the instruction's phrase against the same colour with
each other shape, and against the same shape in each other colour. "Shape told" = the instruction's mean logit on the
silhouette is above every same-colour alternative's. Real MuJoCo scenes, no world model.

    python bench/hand_camera_shape.py --model models/demo --out bench/results/hand_camera_shape

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grasp_tolerance import move_tcp  # the same hover moves

HOVER_DZ_M = (0.04, 0.07)  # TCP above the object's centre: where a put's approach looks from
HOVER_XY_M = ((0.0, 0.0), (0.01, 0.0), (0.0, 0.01))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/demo", help="bundle whose semantic scorer maps the hand camera")
    ap.add_argument("--seeds", default="15-29", help="put scene seeds, FIRST-LAST (clutter 0 and 3 each)")
    ap.add_argument("--mask-logit", type=float, default=-1.0,
                    help="silhouette threshold (ScoreConfig.wrist_mask_logit)")
    ap.add_argument("--out", default="bench/results/hand_camera_shape")
    args = ap.parse_args()

    import torch

    from vidplan_core.eval.metrics import wilson_interval
    from vidplan_core.runtime.loader import load_planner_backend
    from vidplan_core.spaces import crop_view
    from vidplan_sim.env import SimEnv
    from vidplan_sim.tasks import sample_task

    torch.set_num_threads(1)
    lb = load_planner_backend(args.model, "onnxruntime", threads=1, warm=False)
    scorer, (vh, vw) = lb.backend.frame_scorer, lb.view_size
    env = SimEnv()
    shapes, colours = list(env.cfg.shape_names), list(env.cfg.colour_names)
    first, last = (int(x) for x in args.seeds.split("-"))
    rows: list[dict] = []
    jobs = [(s, c) for s in range(first, last + 1) for c in (0, 3)]
    for s, c in tqdm(jobs, desc="hand-camera shape", unit="scene"):
        ins = sample_task(np.random.default_rng([s, 11]), colours, shapes, kinds=("put",)).instruction
        col, shp = ins.split()[2:4]
        env.reset(s, clutter=c, task=ins)
        name = env.task.object_name
        for dz in HOVER_DZ_M:
            for dx, dy in HOVER_XY_M:
                move_tcp(env, env.object_pose(name)[:3] + np.array([dx, dy, dz]))
                frame = crop_view(env.render_view("wrist"), None, vh, vw).transpose(2, 0, 1)
                logits = scorer.map(frame, ins).numpy()
                sil = logits > args.mask_logit
                if not sil.any():
                    rows.append({"seed": s, "clutter": c, "object": f"{col} {shp}", "tcp_above_m": dz, "cells": 0})
                    continue

                def score(text: str, frame=frame, sil=sil) -> float:
                    return float(scorer.map(frame, text).numpy()[sil].mean())

                rows.append({"seed": s, "clutter": c, "object": f"{col} {shp}", "tcp_above_m": dz,
                             "cells": int(sil.sum()), "instruction": float(logits[sil].mean()),
                             "other_shapes": {o: score(f"put the {col} {o} in the bowl") for o in shapes if o != shp},
                             "other_colours": {o: score(f"put the {o} {shp} in the bowl") for o in colours
                                               if o != col}})

    def told(r: dict, key: str) -> bool:
        return r["instruction"] > max(r[key].values())

    seen = [r for r in rows if r["cells"]]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cmd = "python " + " ".join(sys.argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": platform.platform(), "command": cmd, "commit": commit,
                                                    "model": args.model, "rows": rows}, indent=1))
    lines = ["# hand_camera_shape — does the scorer tell an object's shape on the hand camera?", "",
             f"Machine: {platform.platform()}. `{cmd}` at {commit}. Real MuJoCo scenes (the put scenes of seeds "
             f"{args.seeds}, clutter 0 and 3), the bundle's semantic scorer on rendered hand-camera frames with the "
             f"TCP {', '.join(f'{d * 100:.0f}' for d in HOVER_DZ_M)} cm above the target and up to 1 cm aside.", "",
             f"Silhouette: the cells whose logit for the instruction is above {args.mask_logit:g}. Told = the "
             "instruction's mean logit on it is above every alternative's (chance: 1 in 3 for shape, 1 in 8 for "
             "colour, if the scorer ignored the word).", "",
             "| group | frames | shape told (vs the same colour, other shapes) | colour told (vs the same shape, "
             "other colours) |", "|---|---|---|---|"]
    groups = [("all", seen), *((f"{s}s", [r for r in seen if r["object"].endswith(s)]) for s in shapes)]
    for label, rs in groups:
        if not rs:
            continue
        ks, kc = sum(told(r, "other_shapes") for r in rs), sum(told(r, "other_colours") for r in rs)
        lo, hi = wilson_interval(ks, len(rs))
        lo2, hi2 = wilson_interval(kc, len(rs))
        lines.append(f"| {label} | {len(rs)} | {ks}/{len(rs)} = {ks / len(rs):.2f} [{lo:.2f}, {hi:.2f}] | "
                     f"{kc}/{len(rs)} = {kc / len(rs):.2f} [{lo2:.2f}, {hi2:.2f}] |")
    lines += ["", f"Frames with no cell above the threshold: {len(rows) - len(seen)} of {len(rows)}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
