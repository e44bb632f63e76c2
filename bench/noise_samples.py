"""Scoring over M noise draws: what it costs and what it buys (the planner's ``noise_samples``).

For a set of simulated scenes (the demo task kinds, the arm at its home pose, history = the current frames), the
planner (models/demo on onnxruntime, the shipped planner configuration, argmax only) chooses a candidate with
M = 1, 2, 4 noise draws, each from R different base seeds. Reported per M:

* plan time per cycle (measured side by side in this run; the ratio to M = 1 is the cost);
* decision stability: the fraction of base-seed pairs that choose the same candidate (1.0 = the decision does not
  depend on the noise seed; with one draw on an action-blind model it is close to chance);
* winner survival as the planner reports it (fraction of the M draws whose own argmax is the chosen candidate; for
  M = 1 the one-extra-draw ``survival_check``).

Writes bench/results/noise_samples.json and .md.

    python bench/noise_samples.py [--scenes 6] [--seeds 4] [--model models/demo]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
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
    ap.add_argument("--seeds", type=int, default=4, help="base seeds per scene and M")
    ap.add_argument("--m", default="1,2,4")
    a = ap.parse_args(argv)

    from _scenes import home_scenes

    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.runtime.loader import load_planner_backend

    loaded = load_planner_backend(a.model, "onnxruntime", threads=1)
    kin = PandaKinematics()
    ms = [int(m) for m in a.m.split(",")]
    rows = {m: {"plan_s": [], "agree": [], "survival": [], "labels": []} for m in ms}
    for scene in home_scenes(loaded, a.scenes):
        for m in ms:
            cfg = load_planning_config(None, {"session.gradopt.refine_iters": 0, "session.gradopt.noise_samples": m,
                                              "session.gradopt.survival_check": m == 1})
            session = PlanningSession(loaded.backend, kin, cfg.session)
            chosen = []
            for r in range(a.seeds):
                t0 = time.perf_counter()
                res, _ = session.plan(scene.history, scene.poses, scene.q, scene.instruction,
                                      seed=1000 * r + 17)
                dt = time.perf_counter() - t0
                # M = 1 with the survival check runs one extra draw: its cost is that of M = 2, report M = 1's alone
                rows[m]["plan_s"].append(dt / 2 if m == 1 else dt)
                rows[m]["survival"].append(res.winner_survival)
                chosen.append(res.chosen_label)
            rows[m]["labels"].append(chosen)
            rows[m]["agree"].append(float(np.mean([x == y for x, y in itertools.combinations(chosen, 2)])))
    base = float(np.median(rows[ms[0]]["plan_s"]))
    summary = {str(m): {"plan_s_median": float(np.median(r["plan_s"])),
                        "cost_vs_m1": float(np.median(r["plan_s"])) / base,
                        "decision_agreement": float(np.mean(r["agree"])),
                        "winner_survival": float(np.mean([s for s in r["survival"] if s is not None])),
                        "chosen": r["labels"]} for m, r in rows.items()}
    res = {"benchmark": "noise_samples", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "command": "python bench/noise_samples.py " + " ".join(argv or sys.argv[1:]), "model": a.model,
           "scenes": a.scenes, "seeds": a.seeds, "summary": summary,
           "note": "argmax only (refinement off) on onnxruntime, 1 thread, 8 candidates; the machine's other core ran "
                   "the closed-loop evaluation, so absolute times are high — the cost ratio is side by side"}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "noise_samples.json").write_text(json.dumps(res, indent=2))
    lines = ["# Scoring over M noise draws (`noise_samples`): cost and effect", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs, shared). Command: `{res['command']}`. Model "
             f"`{Path(a.model).name}` on onnxruntime, {a.scenes} scenes (clutter 1, task kinds in turn, arm at home), "
             f"{a.seeds} base seeds per scene and M; argmax only.", "",
             "| M | plan s (median) | cost vs M=1 | decision agreement across base seeds | winner survival |",
             "|---|---|---|---|---|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['plan_s_median']:.2f} | {s['cost_vs_m1']:.2f}× | {s['decision_agreement']:.2f} | "
                     f"{s['winner_survival']:.2f} |")
    n_cand = 8
    lines += ["", f"Chance agreement for {n_cand} candidates picked uniformly is {1 / n_cand:.2f}. Decision agreement "
              "is the fraction of base-seed pairs choosing the same candidate; winner survival is what the planner "
              "reports (M = 1: one extra re-drawn seed).", "", res["note"] + "."]
    (OUT / "noise_samples.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
