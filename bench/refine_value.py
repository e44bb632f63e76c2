"""What each gradient-refinement iteration buys: the measurement behind ``refine_iters`` and ``refine_tol``.

For a set of simulated scenes (the demo task kinds in turn, clutter 1, the arm at its home pose, history = the
current frames), the shipped planner (models/demo on onnxruntime, one intra-op thread) plans one cycle per (scene,
seed) with ``refine_iters`` = R (default 8), ``refine_tol`` = 0 and the shipped ``min_grad``. From the objective
trace J_0 (the argmax candidate) … J_R of every cycle it reports:

* how often refinement was skipped (uninformative gradient, ``min_grad``);
* the mean gain of the best objective after k iterations, max_{i≤k} J_i − J_0, and the marginal gain of iteration k;
* the seconds one iteration costs (value-and-grad, K=1, N=1) next to the global stage of the same cycle;
* how far the refined chunk moved from the argmax candidate [m] (the trust region caps it at trust_region_m);
* a recommendation: the smallest k that reaches 90 % of the mean gain at R, and the tolerance at that k.

The candidates' own score spread (best − second best proposal) is printed beside the gains: a refinement gain much
below it cannot change what the robot does by much.

Writes bench/results/refine_value.json and .md (``--out-name`` for another stem).

    python bench/refine_value.py [--scenes 6] [--seeds 3] [--iters 8] [--model models/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3, help="planning seeds per scene")
    ap.add_argument("--iters", type=int, default=8, help="R, refinement iterations run per cycle")
    ap.add_argument("--min-grad", type=float, default=None, help="override the planner's min_grad (0: refine even "
                    "on a gradient the shipped planner calls uninformative, to measure what that would buy)")
    ap.add_argument("--out-name", default="refine_value", help="results file stem under bench/results/")
    ap.add_argument("--note", default="", help="free text for the summary (machine load, ...)")
    a = ap.parse_args(argv)

    from _scenes import home_scenes

    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.runtime.loader import load_planner_backend

    loaded = load_planner_backend(a.model, "onnxruntime", threads=1)
    ov = {"session.gradopt.refine_iters": a.iters, "session.gradopt.refine_tol": 0.0}
    if a.min_grad is not None:
        ov["session.gradopt.min_grad"] = a.min_grad
    cfg = load_planning_config(None, ov)
    session = PlanningSession(loaded.backend, PandaKinematics(), cfg.session)
    cycles = []
    for scene in home_scenes(loaded, a.scenes):
        for r in range(a.seeds):
            t0 = time.perf_counter()
            res, props = session.plan(scene.history, scene.poses, scene.q, scene.instruction, seed=1000 * r + 17)
            wall = time.perf_counter() - t0
            s = np.sort(np.asarray(res.scores, np.float64))[::-1]
            moved = float(np.abs(res.chunk.position - props.actions[res.chosen_index][:, :3]).max()) \
                if res.chosen_index >= 0 else float("nan")
            cycles.append({"scene": scene.index, "task": scene.kind, "seed": r, "status": res.status,
                           "skipped": res.refine_skipped, "trace": [float(j) for j in res.objective_trace],
                           "refinement_s": float(res.timings.get("refinement", 0.0)),
                           "global_s": float(sum(res.timings.get(k, 0.0) for k in ("rollout", "heads", "semantic"))),
                           "cycle_s": wall, "score_spread": float(s[0] - s[1]) if len(s) > 1 else 0.0,
                           "moved_m": moved})

    R = a.iters
    full = [c for c in cycles if not c["skipped"] and len(c["trace"]) == R + 1]
    gain = np.array([[max(c["trace"][: k + 1]) - c["trace"][0] for k in range(R + 1)] for c in full]) \
        if full else np.zeros((0, R + 1))
    mean_gain = gain.mean(0) if len(gain) else np.zeros(R + 1)
    marginal = np.diff(mean_gain)
    per_iter = [c["refinement_s"] / max(len(c["trace"]), 1) for c in full]
    if len(gain) and mean_gain[-1] > 0:
        k90 = int(np.argmax(mean_gain >= 0.9 * mean_gain[-1]))
        tol = float(marginal[k90 - 1]) if k90 > 0 else float(mean_gain[-1])
    else:
        k90, tol = 0, None
    summary = {
        "cycles": len(cycles), "refined_cycles": len(full),
        "skipped_fraction": float(np.mean([c["skipped"] for c in cycles])) if cycles else None,
        "mean_best_gain_by_iteration": [float(x) for x in mean_gain],
        "mean_marginal_gain": [float(x) for x in marginal],
        "iteration_s_median": float(np.median(per_iter)) if per_iter else None,
        "global_s_median": float(np.median([c["global_s"] for c in cycles])) if cycles else None,
        "score_spread_median": float(np.median([c["score_spread"] for c in cycles])) if cycles else None,
        "moved_m_median": float(np.nanmedian([c["moved_m"] for c in full])) if full else None,
        "recommended_refine_iters": k90, "recommended_refine_tol": tol,
    }
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    res = {"benchmark": "refine_value", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "command": "python bench/refine_value.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "commit": commit, "model": a.model, "scenes": a.scenes, "seeds": a.seeds, "iters": R, "note": a.note,
           "min_grad": cfg.session.gradopt.min_grad,
           "summary": summary, "cycles": cycles}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.out_name}.json").write_text(json.dumps(res, indent=2))
    fmt = lambda x, f="{:.4f}": "–" if x is None else f.format(x)  # noqa: E731
    lines = ["# What a refinement iteration buys (`refine_iters`, `refine_tol`)", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs). Command: `{res['command']}` at commit "
             f"`{commit[:7]}`. Model `{Path(a.model).name}` on onnxruntime (1 thread), the shipped planner with "
             f"refine_iters = {R}, refine_tol = 0, min_grad = {cfg.session.gradopt.min_grad:g}; "
             f"{a.scenes} scenes × {a.seeds} seeds = {len(cycles)} cycles "
             f"(clutter 1, task kinds in turn, arm at home). {a.note}", "",
             f"- refinement skipped (uninformative gradient, min_grad): {fmt(summary['skipped_fraction'], '{:.0%}')} "
             f"of cycles; {len(full)} cycles refined for all {R} iterations",
             f"- one iteration (value-and-grad, K=1, N=1): {fmt(summary['iteration_s_median'], '{:.3f}')} s median; "
             f"the global stage of the same cycle: {fmt(summary['global_s_median'], '{:.3f}')} s",
             f"- score spread between the best and second-best proposal: {fmt(summary['score_spread_median'])} "
             "(median)",
             f"- refined chunk's largest position change from the argmax candidate: "
             f"{fmt(summary['moved_m_median'], '{:.4f}')} m (median)", "",
             "| k | mean best gain max_{i≤k} J_i − J_0 | marginal gain of iteration k |", "|---|---|---|"]
    for k in range(R + 1):
        lines.append(f"| {k} | {mean_gain[k]:.5f} | {'–' if k == 0 else f'{marginal[k - 1]:.5f}'} |")
    lines += ["", f"Recommendation: refine_iters = {k90} (90 % of the mean gain at {R}), refine_tol = "
              f"{fmt(tol, '{:.1e}')} (the marginal gain there)."]
    (OUT / f"{a.out_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
