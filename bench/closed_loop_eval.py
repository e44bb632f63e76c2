"""Closed-loop success in simulation: VidPlan vs its ablations and baselines (``vidplan eval sim``), summarised.

Runs :func:`vidplan_core.eval.closed_loop.run_closed_loop` on the trained demo models (models/demo) and writes

* ``bench/results/closed_loop_eval/`` — the evaluation itself: results.json (every episode with its seed), table.md,
  success.png (so anyone can rerun an episode from its seed, clutter level and instruction);
* ``bench/results/closed_loop_eval.json`` / ``.md`` — machine, command, success per variant × clutter level, and the
  issue's goals: VidPlan above the random-proposal baseline at every clutter level; the effect of the uncertainty
  weighting (vidplan vs no-uq).

The run is anytime: ``--time-budget`` stops starting new episodes (episodes are ordered so every clutter level and
variant gets its first episode before any gets a second); rerunning with the same settings resumes.

    python bench/closed_loop_eval.py [--model models/demo] [--episodes 3] [--clutter 0,1,2,3] [--tasks touch,push]
        [--variants vidplan,no-uq,random,scripted] [--max-steps 225] [--time-budget 900]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _rate(cell: dict) -> str:
    return "n/a" if not cell["n"] else f"{cell['rate']:.2f} ({cell['success']}/{cell['n']})"


def goals(results: dict) -> dict:
    """The issue's goals, evaluated on the summary (None where a variant or level was not run)."""
    summ, cfg = results["summary"], results["settings"]
    out: dict = {}
    if "vidplan" in summ and "random" in summ:
        per = {}
        for c in [str(c) for c in cfg["clutter"]]:
            a, b = summ["vidplan"]["all"][c], summ["random"]["all"][c]
            per[c] = None if not (a["n"] and b["n"]) else bool(a["rate"] > b["rate"])
        out["vidplan_above_random_every_clutter"] = {"per_clutter": per,
                                                     "met": all(per.values()) if per and None not in per.values()
                                                     else None}
    if "vidplan" in summ and "no-uq" in summ:
        a, b = summ["vidplan"]["all"]["all"], summ["no-uq"]["all"]["all"]
        eps = {(r["variant"], r["clutter"], r["seed"]): r for r in results["episodes"]}
        pairs = [(eps[("vidplan", c, s)], eps[("no-uq", c, s)]) for (v, c, s) in eps
                 if v == "vidplan" and ("no-uq", c, s) in eps]
        out["uncertainty_weighting_effect"] = {
            "vidplan": a, "no_uq": b,
            "difference": None if not (a["n"] and b["n"]) else a["rate"] - b["rate"],
            "paired_episodes": len(pairs),
            "only_vidplan_succeeded": sum(x["success"] and not y["success"] for x, y in pairs),
            "only_no_uq_succeeded": sum(y["success"] and not x["success"] for x, y in pairs)}
    return out


def markdown(res: dict) -> str:
    r = res["results"]
    cfg = r["settings"]
    cols = [str(c) for c in cfg["clutter"]] + ["all"]
    lines = ["# Closed-loop success in simulation (VidPlan vs baselines)", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs, shared with other jobs), torch {res['torch']}, "
             f"{cfg['threads']} intra-op thread(s), CPU only. Wall time {res['wall_s']:.0f} s.", "",
             f"Command: `{res['command']}`", "",
             f"Model `{cfg['model']}` ({cfg['backend']}, K={cfg['flow_steps']}); {cfg['episodes']} episode(s) "
             f"per clutter level requested, tasks {', '.join(cfg['tasks'])}; budget {cfg['max_steps']} control steps "
             f"({cfg['max_steps'] / 15:g} s); {cfg['open_loop_steps']} chunk steps executed per plan; "
             f"{cfg['refine_iters']} refinement iterations; κ = {cfg['kappa']}; basis/random proposal speed "
             f"{cfg['basis_speed_mps']} m/s.", ""]
    if not r["complete"]:
        lines += [f"**Partial run** (time budget): {r['not_run']} (episode, variant) pairs were not run.", ""]
    lines += ["Success rate (successes/episodes), all task kinds together:", "",
              "| variant | " + " | ".join(f"clutter {c}" if c != "all" else "all" for c in cols) + " | mean plan s |",
              "|---|" + "---|" * (len(cols) + 1)]
    for v in cfg["variants"]:
        eps = [e for e in r["episodes"] if e["variant"] == v and e["plan_s_mean"] is not None]
        plan = f"{sum(e['plan_s_mean'] for e in eps) / len(eps):.2f}" if eps else "–"
        lines.append(f"| {v} | " + " | ".join(_rate(r["summary"][v]["all"][c]) for c in cols) + f" | {plan} |")
    g = res["goals"]
    lines += ["", "## Goals", ""]
    if "vidplan_above_random_every_clutter" in g:
        x = g["vidplan_above_random_every_clutter"]
        verdict = {True: "met", False: "not met", None: "not measured"}[x["met"]]
        lines.append(f"- VidPlan above random proposals at every clutter level: **{verdict}** "
                     f"(per level: {x['per_clutter']}).")
    if "uncertainty_weighting_effect" in g:
        x = g["uncertainty_weighting_effect"]
        lines.append(f"- Uncertainty weighting: vidplan {_rate(x['vidplan'])} vs no-uq {_rate(x['no_uq'])} over "
                     f"{x['paired_episodes']} paired episodes (only vidplan succeeded: {x['only_vidplan_succeeded']}, "
                     f"only no-uq: {x['only_no_uq_succeeded']}).")
    lines += ["", "Per task kind and the episodes' seeds: `bench/results/closed_loop_eval/table.md`; plot: "
              "`bench/results/closed_loop_eval/success.png`; every episode: `closed_loop_eval/results.json`.", ""]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--clutter", default="0,1,2,3")
    ap.add_argument("--tasks", default="touch,push")
    ap.add_argument("--variants", default="vidplan,random,no-uq,scripted,argmax,scripted+vidplan")
    ap.add_argument("--max-steps", type=int, default=225)
    ap.add_argument("--refine-iters", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--basis-speed", type=float, default=0.15, help="EE speed of basis / random proposals [m/s]")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--time-budget", type=float, default=None, help="stop starting episodes after this many s")
    ap.add_argument("--out", default=str(OUT / "closed_loop_eval"))
    ap.add_argument("--note", action="append", default=[], help="a line for the summary's notes")
    a = ap.parse_args(argv)

    import torch

    from vidplan_core.eval.closed_loop import ClosedLoopConfig, run_closed_loop

    torch.set_num_threads(1)
    if not Path(a.model).is_dir():
        print(f"no models at {a.model}: train them first (make demo-models)", file=sys.stderr)
        return 2
    model = str(Path(a.model).resolve().relative_to(ROOT)) if Path(a.model).resolve().is_relative_to(ROOT) \
        else a.model
    cfg = ClosedLoopConfig(model=model, episodes=a.episodes, clutter=[int(c) for c in a.clutter.split(",")],
                           tasks=a.tasks.split(","), variants=a.variants.split(","), max_steps=a.max_steps,
                           refine_iters=a.refine_iters, seed=a.seed, basis_speed_mps=a.basis_speed, backend=a.backend,
                           threads=1)
    from tqdm import tqdm

    t0 = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(ROOT)  # the model path is stored relative to the repository
    try:
        results = run_closed_loop(cfg, a.out, progress=lambda j, n: tqdm(j, total=n, desc="eval sim", unit="episode"),
                                  time_budget_s=a.time_budget)
    finally:
        os.chdir(cwd)
    res = {"benchmark": "closed_loop_eval", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "command": "python bench/closed_loop_eval.py " + " ".join(argv or sys.argv[1:]),
           "wall_s": time.perf_counter() - t0, "goals": goals(results), "notes": a.note,
           "results": {k: results[k] for k in ("settings", "complete", "not_run", "summary", "episodes", "warnings")}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "closed_loop_eval.json").write_text(json.dumps(res, indent=2))
    (OUT / "closed_loop_eval.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
