"""The closed-loop evaluation's summary: success rates per variant and cell with Wilson 95 % intervals, the
Markdown table and the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_app.jobs.closed_loop_config import CORE_VARIANTS, ClosedLoopConfig
from vidplan_core.eval.metrics import wilson_interval  # re-exported: the ladder's tables use it
from vidplan_core.spaces import (
    CONTROL_RATE_HZ,
)

__all__ = [
    "cells",
    "format_cell",
    "success_cell",
    "summarize",
    "write_plot",
    "write_table",
]


def summarize(records: list[dict[str, Any]], cfg: ClosedLoopConfig) -> dict[str, Any]:
    """Success counts, rates and Wilson 95 % intervals per variant × task kind (and "all") × clutter (and "all")."""
    out: dict[str, Any] = {}
    for v in cfg.variants:
        rv = [r for r in records if r["variant"] == v]
        out[v] = {}
        for task in [*cfg.tasks, "all"]:
            rt = [r for r in rv if task == "all" or r["task"] == task]
            out[v][task] = {}
            for c in [*cfg.clutter, "all"]:
                out[v][task][str(c)] = success_cell([r for r in rt if c == "all" or r["clutter"] == c])
    return out


def success_cell(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Episodes ``n``, successes, rate (None without episodes) and Wilson 95 % interval of a list of episode
    records — one cell of the summary, or any subset (e.g. the episodes two variants both ran)."""
    n, k = len(records), sum(bool(r["success"]) for r in records)
    ci = wilson_interval(k, n)
    return {"n": n, "success": k, "rate": (k / n) if n else None,
            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None}


def cells(records: list[dict[str, Any]], cfg: ClosedLoopConfig) -> list[dict[str, Any]]:
    """One object per (variant, task, clutter): episodes, successes and the Wilson 95 % interval."""
    out = []
    for v in cfg.variants:
        for task in cfg.tasks:
            for c in cfg.clutter:
                rc = [r for r in records if r["variant"] == v and r["task"] == task and r["clutter"] == c]
                n, k = len(rc), sum(r["success"] for r in rc)
                ci = wilson_interval(k, n)
                out.append({"variant": v, "task": task, "clutter": c, "episodes": n, "successes": k,
                            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None})
    return out


def format_cell(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "–"
    lo, hi = s["ci95"]
    return f"{s['success']}/{s['n']} [{lo:.2f}, {hi:.2f}]"


def write_table(results: dict[str, Any], path: str | Path) -> Path:
    """Markdown: success rate (successes/episodes) per variant × clutter, one table per task kind and overall."""
    cfg = results["settings"]
    summ = results["summary"]
    cols = [str(c) for c in cfg["clutter"]] + ["all"]
    pcs = results.get("planner_configs", {})
    base = pcs.get("vidplan") or next(iter(pcs.values()), None)
    timing = ""
    if base:
        steps = base["episode_steps"]
        timing = (f" Planner: `{cfg['planner_config'] or 'planning/planner.yaml'}` (basis speed "
                  f"{base['session']['proposals']['basis_speed_mps']} m/s, {base['open_loop_steps']} steps executed "
                  f"per plan, K={base['flow_steps']}), episodes of {steps} control steps "
                  f"({steps / CONTROL_RATE_HZ:g} s).")
    lines = ["# Closed-loop success in simulation (`vidplan eval sim`)", "",
             f"Model `{cfg['model']}` ({cfg['backend']}); {cfg['episodes']} episodes per (task, clutter) cell for "
             f"{', '.join(v for v in CORE_VARIANTS if v in cfg['variants'])}, {cfg['episodes_other']} for the "
             f"others; scene seeds from {cfg['seed']} (the demo models trained on seeds ≥ 1000).{timing} "
             f"Commit `{results.get('commit')}`.", "",
             "Cells: successes/episodes [Wilson 95 % interval]. Oracle and privileged variants are diagnostics (the "
             "simulator as world model / reward from the simulator state), not the product.", "",
             "Variants as overrides of the planner configuration: " + "; ".join(
                 f"`{v}`: {json.dumps(o) if o else 'as shipped'}" for v, o in results.get("variant_overrides",
                                                                                            {}).items())]
    for task in [*cfg["tasks"], "all"]:
        lines += ["", f"## Task: {task}", "", "| variant | " + " | ".join(f"clutter {c}" if c != "all" else "all"
                                                                         for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for v in cfg["variants"]:
            lines.append(f"| {v} | " + " | ".join(format_cell(summ[v][task][c]) for c in cols) + " |")
    if not results.get("complete", True):
        lines += ["", f"**Partial run**: {results['not_run']} (episode, variant) pairs of the requested counts are not "
                  "in this directory (a time budget, an interruption, or fewer episodes run for some variants); the "
                  "counts above cover the finished ones only."]
    lines += ["", "## Episodes (seed, clutter, task; the same scenes for every variant)", ""]
    for s in results["episode_specs"]:
        lines.append(f"- seed {s['seed']}, clutter {s['clutter']}: \"{s['instruction']}\"")
    if results.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in results["warnings"]]
    p = Path(path)
    p.write_text("\n".join(lines) + "\n")
    return p


def write_plot(results: dict[str, Any], path: str | Path) -> Path:
    """Bar plot: success rate per variant (bars) and clutter level (groups), all task kinds together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["settings"]
    summ = results["summary"]
    groups = [str(c) for c in cfg["clutter"]] + ["all"]
    variants = cfg["variants"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(3.2 + 1.4 * len(groups), 3.6))
    x = np.arange(len(groups))
    for i, v in enumerate(variants):
        cs = [summ[v]["all"][g] for g in groups]
        rates = [c["rate"] if c["rate"] is not None else 0.0 for c in cs]
        err = np.array([[r - c["ci95"][0], c["ci95"][1] - r] if c["ci95"] else [0.0, 0.0]
                        for r, c in zip(rates, cs, strict=True)]).T
        bars = ax.bar(x + (i - (len(variants) - 1) / 2) * width, rates, width, label=v, yerr=err, capsize=1.5,
                      error_kw={"elinewidth": 0.6})
        for b, c in zip(bars, cs, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{c['success']}/{c['n']}",
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [f"clutter {g}" if g != "all" else "all" for g in groups])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate")
    ax.set_title(f"closed-loop success with Wilson 95 % intervals (tasks: {', '.join(cfg['tasks'])})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 1.0
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
