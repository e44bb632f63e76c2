"""Paired comparison of one closed-loop variant between two ``vidplan eval sim`` runs (two bundles or two settings
on the same scene seeds), or of two variants (``--variant-b``: e.g. ``scripted`` in one run against
``scripted+vidplan`` in another): episodes are paired by (task, clutter, seed, instruction).

    python bench/compare_runs.py A_RUN_DIR B_RUN_DIR --variant vidplan --labels "full decoder,tiny decoder" \
        --out bench/results/closed_loop_tiny_decoder_paired

A side may pool several runs (more scene seeds, or one task from each of two runs): ``DIR[:TASKS]+DIR[:TASKS]...``,
e.g. ``runs/s0:touch+runs/s0_push:push+runs/s5``; an episode found in two parts is refused (exit 2, named).

Writes OUT.json and OUT.md: per task, per clutter level and pooled, the paired episodes, both / only A / only B /
neither succeeded, each side's success rate with its Wilson 95 % interval, and the exact two-sided McNemar p-value
(binomial test on the discordant pairs); also each side's mean plan time.

It also says what else differed between the sides: the commit each part ran at, and the planner configuration each
side's variant ran with as recorded at run time (``planner_configs`` of results.json, resolved from the planner YAML
and overrides of its day), key by key. A comparison whose sides ran at other commits, or with planner settings other
than the ones it means to compare, is not the comparison it is labelled as (scoring changes help every variant
scored by the planner): the differences are printed on stderr and written at the top of OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path
from typing import Any

from vidplan_core.config import changed_settings, dotted


def wilson(k: int, n: int) -> tuple[float, float]:
    """The project's Wilson 95 % interval ((0, 1) for no episodes)."""
    from vidplan_core.eval.metrics import wilson_interval

    return wilson_interval(k, n) or (0.0, 1.0)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _episodes(side: str, variant: str) -> dict[tuple, dict]:
    """The variant's episodes of one side, ``DIR[:TASKS]`` parts joined by ``+``, keyed (task, clutter, seed,
    instruction); ValueError names an episode found in two parts."""
    out: dict[tuple, dict] = {}
    for part in side.split("+"):
        run, _, tasks = part.partition(":")
        data = json.loads((Path(run) / "results.json").read_text())
        for e in data["episodes"]:
            if e["variant"] != variant or (tasks and e["task"] not in tasks.split(",")):
                continue
            key = (e["task"], int(e["clutter"]), int(e["seed"]), e["instruction"])
            if key in out:
                raise ValueError(f"{part}: episode {key} of {variant!r} is in an earlier part too")
            out[key] = e
    return out


def _commits(run: Path, variant: str, depth: int = 0) -> list[str]:
    """The commits ``variant``'s episodes in ``run`` ran at: a run gathered by bench/merge_runs.py records the commit
    of its summary, so its parts (``sources.json``, followed into parts that are merged runs themselves) are read."""
    src = run / "sources.json"
    if src.exists() and depth < 8:
        out: list[str] = []
        for part in json.loads(src.read_text()):
            if any(k.split("/")[0] == variant for k in part.get("episodes", {})):
                d = Path(part["dir"])
                out += _commits(d, variant, depth + 1) if (d / "results.json").exists() else [f"unknown ({d})"]
        if out:
            return out
    return [json.loads((run / "results.json").read_text()).get("commit") or "unknown"]


def _parts(side: str, variant: str) -> list[tuple[str, str, dict[str, Any] | None, set[str]]]:
    """Per part of one side, read once: (part, commit as recorded or "unknown", the resolved planner configuration
    ``variant`` ran with as dotted keys or None where the run recorded none, the keys the variant itself sets — its
    ``variant_overrides``: what makes it that variant, e.g. random's ``refine_iters: 0``)."""
    out = []
    for part in side.split("+"):
        run = Path(part.partition(":")[0])
        data = json.loads((run / "results.json").read_text())
        recorded = (data.get("planner_configs") or {}).get(variant)
        for commit in dict.fromkeys(_commits(run, variant)):
            out.append((part, commit, dotted(recorded) if recorded is not None else None,
                        set((data.get("variant_overrides") or {}).get(variant) or {})))
    return out


def what_differs(a: str, b: str, variant: str, variant_b: str) -> dict[str, Any]:
    """Commits and planner configurations of the two sides: ``{"commits_a", "commits_b", "planner_a_to_b",
    "within_a", "within_b", "warnings"}`` (``planner_a_to_b``: ``"key: a → b, ..."``; None where a side recorded no
    configuration; the keys that the compared variants set themselves are left out of it and listed in
    ``"variant_keys"``)."""
    parts_a, parts_b = _parts(a, variant), _parts(b, variant_b)
    ca, cb = [p[1] for p in parts_a], [p[1] for p in parts_b]
    # each side's configuration is its first part's that recorded one; the others are compared with it
    pa = next((p[2] for p in parts_a if p[2] is not None), None)
    pb = next((p[2] for p in parts_b if p[2] is not None), None)
    own = set().union(*(p[3] for p in parts_a + parts_b)) if variant != variant_b else set()
    diff = None
    if pa is not None and pb is not None:
        diff = changed_settings({k: v for k, v in pa.items() if k not in own},
                                {k: v for k, v in pb.items() if k not in own})

    def within(parts: list, first: dict[str, Any] | None) -> list[str]:
        return [f"{parts[0][0]} vs {part}: {d}" for part, _c, cfg, _o in parts[1:]
                if first is not None and cfg is not None and (d := changed_settings(first, cfg))]

    within_a, within_b = within(parts_a, pa), within(parts_b, pb)
    warnings = []
    if set(ca) != set(cb) or len(set(ca)) > 1:
        short = lambda cs: ", ".join(sorted({c[:7] for c in cs}))  # noqa: E731
        warnings.append(f"the sides ran at other commits (A {short(ca)}; B {short(cb)}): code changed "
                        "between them may act on both variants (git diff --stat A B -- ros_ws/src/vidplan_core)")
    if diff:
        warnings.append(f"the sides ran with other planner configurations ({variant} in A → {variant_b} in B): "
                        f"{diff}")
    warnings += [f"parts of A ran with other planner configurations: {d}" for d in within_a]
    warnings += [f"parts of B ran with other planner configurations: {d}" for d in within_b]
    if pa is None or pb is None:
        warnings.append("a side recorded no planner configuration (a run older than planner_configs): "
                        "what the planner ran with is unknown")
    return {"commits_a": ca, "commits_b": cb, "planner_a_to_b": diff, "variant_keys": sorted(own),
            "within_a": within_a, "within_b": within_b, "warnings": warnings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="run A: DIR, or DIR[:TASKS] parts joined by '+'")
    ap.add_argument("b", help="run B: as A")
    ap.add_argument("--variant", default="vidplan", help="the variant compared (in run A)")
    ap.add_argument("--variant-b", default=None, help="the variant of run B (default: --variant)")
    ap.add_argument("--tasks", default="", help="compare only these tasks (comma-separated; default: all both have), "
                    "e.g. when B's other tasks ran with other settings")
    ap.add_argument("--labels", default="A,B")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    la, lb = args.labels.split(",")
    vb = args.variant_b or args.variant
    try:
        ea, eb = _episodes(args.a, args.variant), _episodes(args.b, vb)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    differs = what_differs(args.a, args.b, args.variant, vb)
    for w in differs["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    keys = sorted(set(ea) & set(eb))
    if args.tasks:
        keys = [k for k in keys if k[0] in args.tasks.split(",")]
    groups: dict[str, list] = {}
    for k in keys:
        groups.setdefault(k[0], []).append(k)
    for k in keys:
        groups.setdefault(f"clutter {k[1]}", []).append(k)
    groups["all"] = keys
    rows = {}
    for g, ks in groups.items():
        both = sum(ea[k]["success"] and eb[k]["success"] for k in ks)
        only_a = sum(ea[k]["success"] and not eb[k]["success"] for k in ks)
        only_b = sum(eb[k]["success"] and not ea[k]["success"] for k in ks)
        n = len(ks)
        sa, sb = both + only_a, both + only_b
        rows[g] = {"pairs": n, "both": both, "only_a": only_a, "only_b": only_b, "neither": n - both - only_a - only_b,
                   "a_rate": sa / n if n else None, "a_ci95": wilson(sa, n), "b_rate": sb / n if n else None,
                   "b_ci95": wilson(sb, n), "mcnemar_p": mcnemar_exact(only_a, only_b),
                   "a_plan_s_mean": sum(ea[k]["plan_s_mean"] or 0 for k in ks) / max(n, 1),
                   "b_plan_s_mean": sum(eb[k]["plan_s_mean"] or 0 for k in ks) / max(n, 1)}
    out = {"a": str(args.a), "b": str(args.b), "labels": [la, lb], "variant": args.variant, "variant_b": vb,
           "note": args.note, "command": "python bench/compare_runs.py " + " ".join(argv or sys.argv[1:]),
           "settings": differs, "groups": rows}
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    what = f"`{args.variant}`" if vb == args.variant else f"`{args.variant}` (A) vs `{vb}` (B)"
    md = [f"# Paired closed-loop comparison: {what} with {la} vs {lb}", "",
          f"A = `{args.a}` ({la}), B = `{args.b}` ({lb}); episodes paired by task, clutter, scene seed and "
          f"instruction. `{out['command']}`" + (f" — {args.note}" if args.note else ""), "",
          *((["**What else differs between the sides** (recorded at run time):", "",
               *(f"- {w}." for w in differs["warnings"])]) if differs["warnings"] else
            [f"Both sides ran at `{differs['commits_a'][0][:7]}` with the same planner configuration (as recorded "
             "at run time" + (f"; apart from what makes each variant: {', '.join(differs['variant_keys'])}"
                              if differs["variant_keys"] else "") + ")."]), "",
          f"| group | pairs | both | only {la} | only {lb} | neither | {la} (Wilson 95 %) | {lb} (Wilson 95 %) | "
          f"McNemar exact p | mean plan s {la} / {lb} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g, r in rows.items():
        if not r["pairs"]:
            continue
        md.append(f"| {g} | {r['pairs']} | {r['both']} | {r['only_a']} | {r['only_b']} | {r['neither']} | "
                  f"{r['a_rate']:.2f} [{r['a_ci95'][0]:.2f}, {r['a_ci95'][1]:.2f}] | "
                  f"{r['b_rate']:.2f} [{r['b_ci95'][0]:.2f}, {r['b_ci95'][1]:.2f}] | {r['mcnemar_p']:.3f} | "
                  f"{r['a_plan_s_mean']:.2f} / {r['b_plan_s_mean']:.2f} |")
    md.append("")
    args.out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
