"""Where does a first planning cycle place the target, and would the observed frames place it better?

Most puts the shipped planner loses grasp a look-alike first (README "The put grasp"). The grasp goes where the
'table' fusion (``vidplan_core.planning.scoring.locate_on_table``) puts the object: the best table cell by the
semantic maps of the exterior views — of the world model's *imagined* frames, decoded by the tiny decoder, where the
bundle's scorer grounds held-out colour–shape combinations worse than on camera frames (bench/results/
grounding_recipe.md). An object to grasp does not move before the hand reaches it, so the *observed* frames could
place it as well. For each put scene (real MuJoCo, the evaluation's own seeds, tasks and views; the arm at its start
pose, as in a put's first cycle) this compares:

* ``imagined``: the planner's own first cycle (the shipped planner and bundle, onnxruntime): its fused point
  (``target_estimate["fused"]``, before the hand camera replaces it; the hand sees nothing from the start pose);
* ``observed``: the same fusion over the bundle's scorer maps of the observed exterior frames
  (``runtime.frame_scorer``).

A point within ``--hit-m`` of the target's centre (xy) is a hit; else the nearest object within ``--hit-m`` names
the look-alike it went to (same colour, same shape, or other), or "none". ``--tasks touch,push`` asks the same of
the other task kinds (their fused point is ``target_estimate["point"]``: the object, not a push's standoff), which
locate on imagined frames unless ``score.locate_observed`` is on. Writes OUT.json and OUT.md.

    python bench/put_locate.py --model models/demo --seeds 10-29 --out bench/results/put_locate
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm


def _kind(env, point: np.ndarray, hit_m: float) -> str:
    tgt = env.layout.target
    objs = {o.name: o for o in env.layout.objects}
    d = {n: float(np.linalg.norm(env.object_pose(n)[:2] - point[:2])) for n in objs}
    if d[tgt.name] <= hit_m:
        return "hit"
    near = min(d, key=d.get)
    if d[near] > hit_m:
        return "none"
    o = objs[near]
    return ("same colour" if o.colour == tgt.colour else "same shape" if o.shape == tgt.shape else "other")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--seeds", default="10-29", help="put scene seeds FIRST-LAST (one scene per seed and clutter)")
    ap.add_argument("--clutter", default="0,1,2,3")
    ap.add_argument("--tasks", default="put", help="task kinds, comma-separated (put, touch, push)")
    ap.add_argument("--hit-m", type=float, default=0.03,
                    help="[m] a point this close (xy) to an object's centre is on it")
    ap.add_argument("--out", default="bench/results/put_locate")
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    import torch

    from vidplan_app.jobs.closed_loop import observe_env
    from vidplan_app.jobs.closed_loop_config import ClosedLoopConfig, episode_specs
    from vidplan_app.jobs.closed_loop_policies import load_backends, make_session
    from vidplan_core.eval.metrics import wilson_interval
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.scoring import TargetMemory, locate_on_table
    from vidplan_sim.env import SimEnv

    torch.set_num_threads(1)
    first, last = (int(x) for x in args.seeds.split("-"))
    clutter = [int(c) for c in args.clutter.split(",")]
    cfg = ClosedLoopConfig(model=args.model, variants=["vidplan"], tasks=args.tasks.split(","), clutter=clutter,
                           seed=first, episodes=last - first + 1, episodes_other=last - first + 1,
                           backend="onnxruntime")
    loaded = load_backends(cfg, False)
    env = SimEnv(width=cfg.width, height=cfg.height)
    kin = PandaKinematics()
    scorer = loaded.backends["default"].frame_scorer
    rows = []
    t0 = time.time()
    for spec in tqdm(episode_specs(cfg, list(env.cfg.colour_names), list(env.cfg.shape_names)), unit="scene"):
        env.reset(seed=spec.seed, clutter=spec.clutter, task=spec.instruction)
        session = make_session("vidplan", cfg, loaded, kin, None, env)
        planner = session.planner
        frames, pose = observe_env(env, loaded.views)
        n = int(session.backend.num_history)
        session.plan(np.stack([frames] * n), np.stack([pose] * n), env.joint_positions(), spec.instruction,
                     seed=spec.seed * 1000)
        est = planner.target_estimate or {}
        imagined = np.asarray(est.get("fused") or est["point"], np.float64)
        views = planner.map_views
        maps = [scorer.map(frames[v], spec.instruction) for v in views]
        sem = torch.cat(maps, dim=0)[None, None]  # (1, 1, V·gh, gw): the stacked map views, as a rollout's
        out = SimpleNamespace(semantic_map=sem, uq_map=torch.zeros(1, 1, 3 * maps[0].shape[0], maps[0].shape[1]))
        pc = planner.config
        region = ((pc.position_min[0], pc.position_max[0]), (pc.position_min[1], pc.position_max[1]))
        mem = TargetMemory()
        locate_on_table(out, pc.score, views, planner.view_geometry, region, mem)
        observed = mem.point
        tgt = env.object_pose(env.layout.target.name)[:3]
        rows.append({"seed": spec.seed, "clutter": spec.clutter, "task": spec.kind, "instruction": spec.instruction,
                     "target_m": [round(float(v), 4) for v in tgt],
                     **{k: {"point_m": [round(float(v), 4) for v in p], "error_m": round(float(
                         np.linalg.norm(p[:2] - tgt[:2])), 4), "kind": _kind(env, p, args.hit_m)}
                        for k, p in (("imagined", imagined), ("observed", observed))}})
    summary = {}
    for k in ("imagined", "observed"):
        hits = sum(r[k]["kind"] == "hit" for r in rows)
        kinds = {x: sum(r[k]["kind"] == x for r in rows) for x in ("hit", "same colour", "same shape", "other", "none")}
        summary[k] = {"hits": hits, "n": len(rows), "rate": hits / len(rows),
                      "ci95": list(wilson_interval(hits, len(rows))), "kinds": kinds,
                      "median_error_m": float(np.median([r[k]["error_m"] for r in rows]))}
    both = sum(r["imagined"]["kind"] == "hit" and r["observed"]["kind"] == "hit" for r in rows)
    only_i = sum(r["imagined"]["kind"] == "hit" and r["observed"]["kind"] != "hit" for r in rows)
    only_o = sum(r["imagined"]["kind"] != "hit" and r["observed"]["kind"] == "hit" for r in rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"benchmark": "put_locate", "machine": platform.platform(), "command": "python bench/put_locate.py "
           + " ".join(sys.argv[1:]), "commit": commit, "model": args.model, "hit_m": args.hit_m, "note": args.note,
           "wall_s": round(time.time() - t0, 1), "summary": summary,
           "paired": {"both": both, "only_imagined": only_i, "only_observed": only_o}, "scenes": rows}
    outp = Path(args.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.with_suffix(".json").write_text(json.dumps(res, indent=1))
    task_names = args.tasks.replace(",", ", ")
    md = [f"# Where a first cycle places the target ({task_names}): imagined vs observed frames", "",
          f"Machine: {res['machine']} (2 shared cores). Commit `{commit[:7]}`. Command: `{res['command']}`. "
          f"Wall time {res['wall_s']:.0f} s." + (f" {args.note}" if args.note else ""), "",
          f"{len(rows)} scenes ({task_names}; seeds {first}-{last}, clutter {args.clutter}; the arm at its start "
          f"pose). A point within {args.hit_m * 100:.0f} cm (xy) of the target's centre is a hit; else the object it "
          "is on names the look-alike.", "",
          "| maps the fusion reads | hit (Wilson 95 %) | same colour | same shape | other | on no object "
          "| median error |",
          "|---|---|---|---|---|---|---|"]
    for k, s in summary.items():
        kd = s["kinds"]
        md.append(f"| {k} | {s['hits']}/{s['n']} {s['rate']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] | "
                  f"{kd['same colour']} | {kd['same shape']} | {kd['other']} | {kd['none']} | "
                  f"{s['median_error_m'] * 100:.1f} cm |")
    md += ["", f"Paired: both hit {both}, only imagined {only_i}, only observed {only_o}.", ""]
    if len(set(r["task"] for r in rows)) > 1:
        md += ["| task | clutter | scenes | imagined hits | observed hits |", "|---|---|---|---|---|"]
        for task in dict.fromkeys(r["task"] for r in rows):
            for c in [None, *clutter]:
                sub = [r for r in rows if r["task"] == task and (c is None or r["clutter"] == c)]
                md.append(f"| {task} | {'all' if c is None else c} | {len(sub)} | "
                          + " | ".join(str(sum(r[k]["kind"] == "hit" for r in sub)) for k in ("imagined", "observed"))
                          + " |")
        md.append("")
    outp.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
