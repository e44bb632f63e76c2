"""Closed-loop success in simulation: VidPlan vs its ablations and baselines (``vidplan eval sim``), summarised.

Runs :func:`vidplan_app.jobs.closed_loop.run_closed_loop` on the trained demo models (models/demo) and writes

* ``bench/results/closed_loop_eval/`` — the evaluation itself: results.json (every episode with its seed), table.md,
  success.png (so anyone can rerun an episode from its seed, clutter level and instruction);
* ``bench/results/closed_loop_eval.json`` / ``.md`` — machine, command, commit, ``cells`` (variant, task, clutter,
  episodes, successes, Wilson 95 % interval) and the goals: oracle+privileged ≥ 90 % on touch and on push; the
  ladder (which rung — proposals/executor, reward, world model — loses the most success per task kind); VidPlan
  above random proposals at every clutter level; the effect of the uncertainty weighting (vidplan vs no-uq); what
  the world model's action-dependence buys (argmax, else vidplan, vs static-world, where both were run).

The run is anytime: ``--time-budget`` stops starting new episodes (episodes are ordered so every clutter level and
variant gets its first episode before any gets a second); rerunning with the same settings resumes.

    python bench/closed_loop_eval.py [--model models/demo] [--episodes 5] [--episodes-other 3] [--clutter 0,1,2,3]
        [--tasks touch,push,put] [--variants oracle+privileged,vidplan,...] [--set KEY=VALUE] [--time-budget 900]
        [--summarize-only]
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
    if not cell["n"]:
        return "n/a"
    lo, hi = cell["ci95"]
    return f"{cell['rate']:.2f} ({cell['success']}/{cell['n']}, [{lo:.2f}, {hi:.2f}])"


def _pooled(summ: dict, variant: str, task: str) -> dict | None:
    return summ.get(variant, {}).get(task, {}).get("all")


def ladder(results: dict) -> dict:
    """Per task kind: success of each rung and the success lost at each swap (pooled over clutter levels).

    proposals/executor: 1 − oracle+privileged; reward: oracle+privileged − oracle+learned; world model:
    oracle+privileged − learned+privileged. The rung losing the most is named (None where a rung was not run).
    """
    summ, cfg = results["summary"], results["settings"]
    out = {}
    for task in cfg["tasks"]:
        rates = {v: (_pooled(summ, v, task) or {}).get("rate") for v in
                 ("oracle+privileged", "oracle+learned", "learned+privileged", "vidplan")}
        op = rates["oracle+privileged"]
        loss = {"proposals/executor": None if op is None else 1.0 - op,
                "reward": None if op is None or rates["oracle+learned"] is None else op - rates["oracle+learned"],
                "world model": None if op is None or rates["learned+privileged"] is None
                else op - rates["learned+privileged"]}
        known = {k: v for k, v in loss.items() if v is not None}
        top = max(known.values()) if len(known) == 3 else None
        out[task] = {"rates": rates, "loss": loss,  # ties are named together
                     "largest_loss": None if top is None else " = ".join(k for k, v in known.items()
                                                                          if abs(v - top) < 1e-9)}
    return out


def goals(results: dict) -> dict:
    """The issue's goals, evaluated on the summary (None where a variant or level was not run); comparisons of two
    variants count the episodes both ran (same scene seed, clutter level and task)."""
    from vidplan_app.jobs.closed_loop_report import success_cell

    summ, cfg = results["summary"], results["settings"]
    out: dict = {}
    if "oracle+privileged" in summ:
        per = {}
        for task in ("touch", "push"):
            c = _pooled(summ, "oracle+privileged", task)
            per[task] = None if not c or not c["n"] else {"rate": c["rate"], "n": c["n"], "ci95": c["ci95"],
                                                          "met": c["rate"] >= 0.9}
        vals = [x["met"] for x in per.values() if x]
        out["oracle_privileged_90_touch_push"] = {"per_task": per,
                                                  "met": all(vals) if len(vals) == 2 else None}
    out["ladder"] = ladder(results)
    eps = {(r["variant"], r["clutter"], r["seed"], r["task"]): r for r in results["episodes"]}

    def paired(a: str, b: str) -> list[tuple[dict, dict]]:  # episodes both variants ran (same scene, task)
        return [(eps[k], eps[(b, *k[1:])]) for k in eps if k[0] == a and (b, *k[1:]) in eps]

    if "vidplan" in summ and "random" in summ:
        per = {}  # over the tasks both ran (a variant run on fewer tasks is not compared on the others')
        for c in [str(c) for c in cfg["clutter"]]:
            pc = [(x, y) for x, y in paired("vidplan", "random") if str(x["clutter"]) == c]
            per[c] = None if not pc else bool(success_cell([x for x, _ in pc])["rate"]
                                              > success_cell([y for _, y in pc])["rate"])
        out["vidplan_above_random_every_clutter"] = {"per_clutter": per,
                                                     "met": all(per.values()) if per and None not in per.values()
                                                     else None}
    ref = next((v for v in ("argmax", "vidplan") if v in summ), None)
    if ref and "static-world" in summ:  # argmax first: the same planner, refinement off in both
        from compare_runs import mcnemar_exact  # bench/ is on the path of a bench script

        pairs = paired(ref, "static-world")
        b, c = (sum(x["success"] and not y["success"] for x, y in pairs),
                sum(y["success"] and not x["success"] for x, y in pairs))
        out["world_model_effect"] = {  # rates over the paired episodes only
            "with_world_model": ref, "rate_with": success_cell([x for x, _ in pairs]),
            "rate_static_world": success_cell([y for _, y in pairs]),
            "paired_episodes": len(pairs), "only_with_succeeded": b, "only_static_world_succeeded": c,
            "mcnemar_p": mcnemar_exact(b, c)}
    if "vidplan" in summ and "no-uq" in summ:
        pairs = paired("vidplan", "no-uq")  # rates over the paired episodes only, as world_model_effect
        a, b = success_cell([x for x, _ in pairs]), success_cell([y for _, y in pairs])
        out["uncertainty_weighting_effect"] = {
            "vidplan": a, "no_uq": b,
            "difference": None if not pairs else a["rate"] - b["rate"],
            "paired_episodes": len(pairs),
            "only_vidplan_succeeded": sum(x["success"] and not y["success"] for x, y in pairs),
            "only_no_uq_succeeded": sum(y["success"] and not x["success"] for x, y in pairs)}
    return out


def markdown(res: dict) -> str:
    r = res["results"]
    cfg = r["settings"]
    cols = [str(c) for c in cfg["clutter"]] + ["all"]
    lines = ["# Closed-loop success in simulation: the oracle ladder, VidPlan and baselines", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs, shared with other jobs), torch {res['torch']}, "
             f"1 intra-op thread, CPU only. Wall time {res['wall_s']:.0f} s. Commit `{r.get('commit')}`.", "",
             f"Command: `{res['command']}`", "",
             f"Model `{cfg['model']}` ({cfg['backend']}); planner `{cfg['planner_config'] or 'planning/planner.yaml'}`"
             f" with overrides {cfg['overrides'] or 'none'}; {cfg['episodes']} episodes per (task, clutter) cell for "
             f"the core variants, {cfg['episodes_other']} for the others; tasks {', '.join(cfg['tasks'])}; scene "
             f"seeds from {cfg['seed']} (the demo models trained on seeds ≥ 1000).", "",
             "Oracle and privileged variants are diagnostics (the simulator as world model / the reward read from the "
             "simulator state); they locate where success is lost and are never the product's result.", ""]
    if not r["complete"]:
        lines += [f"**Partial run**: {r['not_run']} (episode, variant) pairs of the requested counts are not in the "
                  "run directory (a time budget, an interruption, or fewer episodes run for some variants: see the "
                  "notes); rerunning the command without --summarize-only runs them.", ""]
    for task in [*cfg["tasks"], "all"]:
        lines += [f"## Task: {task}", "", "Success rate (successes/episodes, Wilson 95 % interval):", "",
                  "| variant | " + " | ".join(f"clutter {c}" if c != "all" else "all" for c in cols)
                  + " | mean plan s |", "|---|" + "---|" * (len(cols) + 1)]
        for v in cfg["variants"]:
            eps = [e for e in r["episodes"] if e["variant"] == v and e["plan_s_mean"] is not None
                   and (task == "all" or e["task"] == task)]
            plan = f"{sum(e['plan_s_mean'] for e in eps) / len(eps):.2f}" if eps else "–"
            lines.append(f"| {v} | " + " | ".join(_rate(r["summary"][v][task][c]) for c in cols) + f" | {plan} |")
        lines.append("")
    g = res["goals"]
    lines += ["## Goals", ""]
    x = g.get("oracle_privileged_90_touch_push")
    if x:
        verdict = {True: "met", False: "not met", None: "not measured"}[x["met"]]
        per = "; ".join(f"{t}: {d['rate']:.2f} of {d['n']} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]" if d else
                        f"{t}: not run" for t, d in x["per_task"].items())
        lines.append(f"- oracle+privileged ≥ 90 % on touch and on push (pooled over clutter): **{verdict}** ({per}).")
    lines += ["- Ladder (success lost at each swap, pooled over clutter; proposals/executor = 1 − oracle+privileged, "
              "reward = oracle+privileged − oracle+learned, world model = oracle+privileged − learned+privileged):"]
    for task, d in g["ladder"].items():
        loss = ", ".join(f"{k} {v:+.2f}" if v is not None else f"{k} n/a" for k, v in d["loss"].items())
        lines.append(f"  - {task}: {loss} → largest loss: **{d['largest_loss'] or 'not all rungs measured'}**")
    if "vidplan_above_random_every_clutter" in g:
        x = g["vidplan_above_random_every_clutter"]
        verdict = {True: "met", False: "not met", None: "not measured"}[x["met"]]
        lines.append(f"- VidPlan above random proposals at every clutter level (the tasks both ran): **{verdict}** "
                     f"(per level: {x['per_clutter']}).")
    if "uncertainty_weighting_effect" in g:
        x = g["uncertainty_weighting_effect"]
        lines.append(f"- Uncertainty weighting: vidplan {_rate(x['vidplan'])} vs no-uq {_rate(x['no_uq'])} over "
                     f"{x['paired_episodes']} paired episodes (only vidplan succeeded: {x['only_vidplan_succeeded']}, "
                     f"only no-uq: {x['only_no_uq_succeeded']}).")
    if "world_model_effect" in g:
        x = g["world_model_effect"]
        lines.append(f"- The world model's action-dependence: {x['with_world_model']} "
                     f"{_rate(x['rate_with'])} vs static-world (every candidate given the hold's prediction) "
                     f"{_rate(x['rate_static_world'])} over {x['paired_episodes']} paired episodes (only "
                     f"{x['with_world_model']} succeeded: {x['only_with_succeeded']}, only static-world: "
                     f"{x['only_static_world_succeeded']}, McNemar p = {x['mcnemar_p']:.3g}).")
    d = res.get("run_dir", "bench/results/closed_loop_eval")
    lines += ["", f"Per cell with seeds: `{d}/table.md`; plot: `{d}/success.png`; every episode: `{d}/results.json`.",
              ""]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--episodes", type=int, default=5, help="per (task, clutter) cell, core variants")
    ap.add_argument("--episodes-other", type=int, default=3, help="per cell, the other variants")
    ap.add_argument("--clutter", default="0,1,2,3")
    ap.add_argument("--tasks", default="touch,push,put")
    ap.add_argument("--variants", default="oracle+privileged,oracle+learned,learned+privileged,vidplan,no-uq,argmax,"
                    "static-world,random,scripted,scripted+vidplan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="planner override KEY=VALUE")
    ap.add_argument("--trace", action="store_true", help="per-cycle traces in OUT/traces/ (vidplan eval sim --trace)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--time-budget", type=float, default=None, help="stop starting episodes after this many s")
    ap.add_argument("--workers", type=int, default=2, help="episodes in parallel (one process each)")
    ap.add_argument("--out", default=str(OUT / "closed_loop_eval"))
    ap.add_argument("--summarize-only", action="store_true", help="run nothing new; rewrite the summary from OUT")
    ap.add_argument("--note", action="append", default=[], help="a line for the summary's notes")
    a = ap.parse_args(argv)

    import torch

    from vidplan_app.jobs.closed_loop import ClosedLoopConfig, run_closed_loop
    from vidplan_core.planning.config import parse_override

    torch.set_num_threads(1)
    if not Path(a.model).is_dir():
        print(f"no models at {a.model}: train them first (make demo-models)", file=sys.stderr)
        return 2
    model = str(Path(a.model).resolve().relative_to(ROOT)) if Path(a.model).resolve().is_relative_to(ROOT) \
        else a.model
    cfg = ClosedLoopConfig(model=model, episodes=a.episodes, episodes_other=a.episodes_other,
                           clutter=[int(c) for c in a.clutter.split(",")], tasks=a.tasks.split(","),
                           variants=a.variants.split(","), seed=a.seed, backend=a.backend, threads=1,
                           overrides=dict(parse_override(o) for o in a.overrides), trace=a.trace)
    from tqdm import tqdm

    t0 = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(ROOT)  # the model path is stored relative to the repository
    try:
        results = run_closed_loop(cfg, a.out, progress=lambda j, n: tqdm(j, total=n, desc="eval sim", unit="episode"),
                                  time_budget_s=0.0 if a.summarize_only else a.time_budget,
                                  workers=1 if a.summarize_only else a.workers)
    finally:
        os.chdir(cwd)
    wall = sum(e["wall_time_s"] for e in results["episodes"])
    res = {"benchmark": "closed_loop_eval", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "command": "python bench/closed_loop_eval.py " + " ".join(argv or sys.argv[1:]),
           "wall_s": max(wall, time.perf_counter() - t0), "goals": goals(results), "notes": a.note,
           "commit": results.get("commit"), "cells": results["cells"],
           "results": {k: results[k] for k in ("settings", "commit", "complete", "not_run", "summary", "episodes",
                                               "warnings", "variant_overrides")}}
    # the summary sits next to the run directory and is named after it (the default: results/closed_loop_eval.md)
    run_dir = Path(a.out).resolve()
    try:
        res["run_dir"] = str(run_dir.relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        res["run_dir"] = str(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir.with_name(run_dir.name + ".json").write_text(json.dumps(res, indent=2))
    run_dir.with_name(run_dir.name + ".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
