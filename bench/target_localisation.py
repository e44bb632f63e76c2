"""Where the planner puts the target: each exterior view on its own vs one table point both views agree on.

The centring term scores the image distance between each candidate's projected TCP and the target, averaged over
the bundle's map views (models/demo: left and right). By default each view takes as target the centroid of its own
most confident imagined frame, and the two views may settle on different objects; the term then pulls the gripper
to empty table between them. ``score.target_fusion: table`` (:func:`vidplan_core.planning.scoring.locate_on_table`)
takes one point on the table plane that both views score highest and projects it back into each view.

For each scene (scene seeds from 100: neither the closed-loop ladder's 0.. nor training's 1000..), this builds the
shipped planner on the bundle, plans the first cycle from the home pose, re-runs that cycle's rollout of all
proposals (same context and noise) and locates the instruction's object both ways, against MuJoCo's ground truth:

- per view: on target when the object whose projection is nearest to the view's target is the named one and
  within ``--radius`` (normalised image units);
- fused: on target when the named object is the one nearest to the table point, within ``--radius-m``.

    python bench/target_localisation.py [--model models/demo] [--seeds 10] [--seed 100] [--tasks touch,push]

Writes bench/results/target_localisation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"


def wilson(k: int, n: int) -> tuple[float, float]:
    """The project's Wilson 95 % interval, rounded for the tables ((0, 1) for n = 0)."""
    from vidplan_core.eval.metrics import wilson_interval

    lo, hi = wilson_interval(k, n) or (0.0, 1.0)
    return (round(lo, 3), round(hi, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10, help="scene seeds per (task, clutter)")
    ap.add_argument("--clutter", default="0,1,2,3")
    ap.add_argument("--tasks", default="touch,push")
    ap.add_argument("--radius", type=float, default=0.05, help="per-view hit radius [normalised image units]")
    ap.add_argument("--radius-m", type=float, default=0.04, help="fused hit radius [m]")
    ap.add_argument("--observed", action="store_true", help="also locate the target on the current camera frames "
                    "(the scorer on what the cameras see now, not on the imagined futures; torch scorer)")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", default=str(OUT / "target_localisation"))
    args = ap.parse_args()

    import torch
    from tqdm import tqdm

    from vidplan_app.jobs.closed_loop import observe_env
    from vidplan_app.jobs.closed_loop_config import ClosedLoopConfig, episode_specs
    from vidplan_app.jobs.closed_loop_policies import load_backends, make_session
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.models.action_maps import ActionMapRenderer
    from vidplan_core.objective import soft_centroid
    from vidplan_core.planning.scoring import (
        TargetMemory,
        _confidence,
        _most_confident,
        _view_maps,
        gripper_reference,
        locate_on_table,
    )
    from vidplan_core.runtime.base import PlanningContext
    from vidplan_sim.env import SimEnv

    torch.set_num_threads(1)
    model = Path(args.model)
    export = model / "onnx" if (model / "onnx" / "manifest.json").is_file() else model
    cfg = ClosedLoopConfig(model=str(export), backend="onnxruntime", variants=["vidplan"],
                           tasks=args.tasks.split(","), clutter=[int(c) for c in args.clutter.split(",")],
                           seed=args.seed, episodes=args.seeds)
    loaded = load_backends(cfg, False)
    backend = loaded.backends["default"]
    pcfg = cfg.planning("vidplan")
    score = pcfg.session.gradopt.score
    pools = ("max", "mean")
    fused_cfg = {p: score.model_copy(update={"target_fusion": "table", "target_gate": 0.0, "table_pool": p})
                 for p in pools}
    views = tuple(backend.map_views)
    geo = ActionMapRenderer(backend.view_geometry)
    region = ((pcfg.limits.workspace_min[0], pcfg.limits.workspace_max[0]),
              (pcfg.limits.workspace_min[1], pcfg.limits.workspace_max[1]))
    scorer_graph = None
    if args.observed:  # the same bundle's scorer in torch (the export scores latents only)
        from vidplan_core.runtime.loader import load_planner_backend

        tb = load_planner_backend(model, "torch", threads=1, warm=False).backend
        scorer_graph = (tb.graphs["semantic"], tb.text_embedding)
    env = SimEnv(width=cfg.width, height=cfg.height)
    kin = PandaKinematics()
    specs = episode_specs(cfg, env.cfg.colour_names, env.cfg.shape_names)

    def project(p: np.ndarray) -> torch.Tensor:  # (3,) → (V, 2)
        a = np.zeros((1, 1, 7))
        a[0, 0, :3], a[0, 0, 3] = p, np.pi
        return gripper_reference(a, geo, views)[0, 0]

    rows = []
    t0 = time.perf_counter()
    for spec in tqdm(specs, desc="scenes"):
        env.reset(seed=spec.seed, clutter=spec.clutter, task=spec.instruction)
        session = make_session("vidplan", cfg, loaded, kin, None, env)
        frames, pose = observe_env(env, loaded.views)
        n_hist = int(backend.num_history)
        hist, poses = np.stack([frames] * n_hist), np.stack([pose] * n_hist)
        seed = spec.seed * 1000  # the closed loop's first cycle
        _, props = session.plan(hist, poses, env.joint_positions(), spec.instruction, seed=seed)
        backend.set_context(PlanningContext(hist, poses, spec.instruction, seed))
        out = backend.rollout(props.actions.astype(np.float32))
        objs = {o.name: env.object_pose(o.name)[:3] for o in env.layout.objects}
        target = env.layout.target.name
        img = {k: project(p) for k, p in objs.items()}  # (V, 2) per object
        _, sems = _view_maps(out, score, views)
        cents = torch.stack([soft_centroid(m, score.centroid_temperature) for m in sems], dim=2)
        per_view = _most_confident(cents, _confidence(sems))  # (V, 2): the default path's targets
        hits, names = [], []
        for v in range(len(views)):
            d = {k: float((per_view[v] - img[k][v]).norm()) for k in objs}
            near = min(d, key=d.get)
            names.append(near)
            hits.append(near == target and d[near] <= args.radius)
        row = {"seed": spec.seed, "clutter": spec.clutter, "task": spec.kind, "instruction": spec.instruction,
               "objects": len(objs), "per_view_hit": hits, "per_view_object": names,
               "per_view_err": [round(float((per_view[v] - img[target][v]).norm()), 4) for v in range(len(views))]}
        for p in pools:
            mem = TargetMemory()
            locate_on_table(out, fused_cfg[p], views, geo, region, mem)
            dm = {k: float(np.linalg.norm(q[:2] - mem.point[:2])) for k, q in objs.items()}
            fnear = min(dm, key=dm.get)
            row[f"fused_{p}_hit"] = fnear == target and dm[fnear] <= args.radius_m
            row[f"fused_{p}_object"] = fnear
            row[f"fused_{p}_err_m"] = round(dm[target], 4)
        if scorer_graph is not None:
            graph, embed = scorer_graph
            cam = torch.as_tensor(frames, dtype=torch.float32)[None, None] / 255.0  # (1, 1, 3, 3, H, W)
            with torch.no_grad():
                _, cam_map = graph.score_frames(cam, embed(spec.instruction))
                lat = backend.encode_frames(frames[None])  # (1, C, h, w): the history encoder's latent
                _, rt_map = graph(torch.as_tensor(lat)[None], embed(spec.instruction))  # decoded, then scored
            for key, sem_map in (("observed", cam_map), ("roundtrip", rt_map)):
                seen = type(out)(h_bar=out.h_bar[:1, :1], uq_map=np.zeros_like(out.uq_map[:1, :1]),
                                 value=out.value[:1, :1], value_entropy=out.value_entropy[:1, :1],
                                 semantic_score=out.semantic_score[:1, :1], semantic_map=sem_map.numpy())
                mem = TargetMemory()
                locate_on_table(seen, fused_cfg["max"], views, geo, region, mem)
                dm = {k: float(np.linalg.norm(q[:2] - mem.point[:2])) for k, q in objs.items()}
                fnear = min(dm, key=dm.get)
                row[f"{key}_hit"] = fnear == target and dm[fnear] <= args.radius_m
                row[f"{key}_object"] = fnear
                row[f"{key}_err_m"] = round(dm[target], 4)
        rows.append(row)
    wall = time.perf_counter() - t0

    def summary(sel: list[dict]) -> dict:
        n = len(sel)
        both = sum(all(r["per_view_hit"]) for r in sel)
        split = sum(len(set(r["per_view_object"])) > 1 for r in sel)
        per = [sum(r["per_view_hit"][v] for r in sel) for v in range(len(views))]
        s = {"n": n, "per_view_hits": per, "both_views_hit": both, "both_views_ci": wilson(both, n),
             "views_on_different_objects": split}
        for p in pools:
            k = sum(r[f"fused_{p}_hit"] for r in sel)
            s[f"fused_{p}_hit"], s[f"fused_{p}_ci"] = k, wilson(k, n)
            s[f"fused_{p}_median_err_m"] = (round(float(np.median([r[f"fused_{p}_err_m"] for r in sel])), 4)
                                            if sel else None)
        for key in ("observed", "roundtrip") if args.observed else ():
            k = sum(r[f"{key}_hit"] for r in sel)
            s[f"{key}_hit"], s[f"{key}_ci"] = k, wilson(k, n)
            s[f"{key}_median_err_m"] = (round(float(np.median([r[f"{key}_err_m"] for r in sel])), 4)
                                        if sel else None)
        return s

    by_clutter = {str(c): summary([r for r in rows if r["clutter"] == c]) for c in cfg.clutter}
    by_task = {t: summary([r for r in rows if r["task"] == t]) for t in cfg.tasks}
    total = summary(rows)
    cmd = "python bench/target_localisation.py " + shlex.join(sys.argv[1:])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"command": cmd, "commit": commit, "machine": f"{platform.platform()} ({os.cpu_count()} CPUs)",
           "model": str(export), "map_views": list(views), "wall_s": round(wall, 1), "radius": args.radius,
           "radius_m": args.radius_m, "by_clutter": by_clutter, "by_task": by_task, "all": total, "scenes": rows,
           "notes": args.note}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))

    def line(name: str, s: dict) -> str:
        n = s["n"]
        pv = " / ".join(f"{k}/{n}" for k in s["per_view_hits"])
        fused = " | ".join(f"{s[f'fused_{p}_hit']}/{n} {list(s[f'fused_{p}_ci'])}, {s[f'fused_{p}_median_err_m']} m"
                           for p in pools)
        seen = "".join(f" {s[f'{k}_hit']}/{n} {list(s[f'{k}_ci'])}, {s[f'{k}_median_err_m']} m |"
                       for k in (("observed", "roundtrip") if args.observed else ()))
        return (f"| {name} | {n} | {pv} | {s['both_views_hit']}/{n} {list(s['both_views_ci'])} | "
                f"{s['views_on_different_objects']}/{n} | {fused} |{seen}")

    md = ["# Target localisation: per view vs fused on the table", "",
          f"Machine: {res['machine']}, onnxruntime CPU, 1 thread. Commit `{commit}`. Wall {wall:.0f} s.", "",
          f"Command: `{cmd}`", "",
          f"Model `{export}`, map views {list(views)} (0 left, 1 right). The shipped planner's first cycle from the "
          f"home pose on scene seeds {args.seed}..{args.seed + args.seeds - 1} (neither the ladder's 0.. nor "
          "training's 1000..), its rollout of every proposal re-run with the same context and noise. Per view: the "
          "default target (the centroid of that view's most confident imagined frame), a hit when the nearest "
          f"object's projection is the named one and within {args.radius} image units. Fused: "
          f"`score.target_fusion: table` with `table_pool` max (a cell scored in the best imagined frame) "
          "or mean (in the maps averaged over candidates and frames), a hit when the named object is the nearest "
          "to the table point and within "
          f"{args.radius_m} m. Wilson 95 % intervals.", "",
          "| scenes | n | per view hits (left / right) | both views on target | views on different objects | "
          "fused, max pool: on target, median error | fused, mean pool: on target, median error |"
          + (" fused on the camera frames: on target, median error | fused on the encoded and decoded camera "
             "frames: on target, median error |" if args.observed else ""),
          "|---|---|---|---|---|---|---|" + ("---|---|" if args.observed else "")]
    if args.observed:
        md[-3] += (" Camera frames: the same fusion (max pool) on the scorer's maps of the current camera frames "
                   "(the views as the model sees them), not of the imagined futures; encoded and decoded: the "
                   "current frames through the history encoder and the scoring decoder, as the planner's semantic "
                   "graph would score them.")
    md += [line(f"clutter {c}", s) for c, s in by_clutter.items()]
    md += [line(t, s) for t, s in by_task.items()]
    md += [line("all", total), ""]
    if args.observed:  # paired per scene against the imagined futures' fusion (max pool)
        for key, what in (("observed", "camera frames"), ("roundtrip", "encoded and decoded camera frames")):
            won = sum(r[f"{key}_hit"] and not r["fused_max_hit"] for r in rows)
            lost = sum(r["fused_max_hit"] and not r[f"{key}_hit"] for r in rows)
            md.append(f"- paired with the imagined futures (max pool), {what}: on target in {won} scenes where the "
                      f"futures were not, off it in {lost} where they were")
    md += [f"- {n}" for n in args.note]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
