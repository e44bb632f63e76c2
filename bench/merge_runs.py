"""Gather the episodes of several ``vidplan eval sim`` runs of the same settings into one resumable run directory.

Long evaluations on 2 cores are run in parts (a variant or a task at a time, from separate clones). This puts the
chosen (variant, task) episodes of each part into ``OUT/episodes.jsonl`` with ``OUT/settings.json``, so that
``bench/closed_loop_eval.py --out OUT --summarize-only`` writes one table (and its ``cells``) over all of them, and a
run of ``bench/closed_loop_eval.py --out OUT`` adds the cells still missing. Parts must share the settings that a
resume may not change (model, planner overrides, seed, backend, camera size, ...): anything else exits 2 naming the
setting, and so does an episode found in two parts. Parts may start at other scene seeds (``--seed``: more scenes
of the same protocol, e.g. seeds 0-4 and 5-9): the merged run starts at the lowest and counts its episodes per cell
up to the highest seed, as one run over all of them would (a gap between the parts' seeds is refused: a resume would
fill it, a summary would not say it is missing). ``--seeds LO-HI`` takes only those scene seeds from every part (the
ladder's seeds 0-4 out of a longer run). Planner overrides compare by what they resolve to with today's planner YAML:
a part run with ``--set`` values that the YAML now ships merges with a part run without them (the first part's
overrides are kept). Which part each episode came from is kept in ``OUT/sources.json``.

    python bench/merge_runs.py --out bench/results/closed_loop_eval \\
        bench/results/closed_loop_current:vidplan,no-uq:touch,push  bench/results/closed_loop_baselines:scripted,random
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from vidplan_app.jobs.closed_loop_config import EPISODES, SETTINGS, ClosedLoopConfig, ClosedLoopError
from vidplan_core.config import changed_settings, dotted


def _part(spec: str) -> tuple[Path, list[str] | None, list[str] | None]:
    """``DIR[:VARIANTS[:TASKS]]`` (comma-separated lists; empty or absent = all of the part's)."""
    path, *rest = spec.split(":")
    variants = rest[0].split(",") if rest and rest[0] else None
    tasks = rest[1].split(",") if len(rest) > 1 and rest[1] else None
    return Path(path), variants, tasks


def _seed_range(spec: str) -> range:
    """``LO-HI`` (inclusive) → range(LO, HI + 1)."""
    try:
        lo, hi = (int(x) for x in spec.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants LO-HI (e.g. 0-4), got {spec!r}") from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"--seeds {spec}: HI < LO")
    return range(lo, hi + 1)


def _planner(cfg: ClosedLoopConfig) -> dict[str, Any]:
    """The run's resolved planner configuration (YAML + its overrides), as dotted keys."""
    return dotted(cfg.planning("vidplan").model_dump(mode="json"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", metavar="DIR[:VARIANTS[:TASKS]]", help="a run directory and what to take")
    ap.add_argument("--out", required=True, help="the merged run directory (must not exist yet)")
    ap.add_argument("--seeds", type=_seed_range, default=None, metavar="LO-HI",
                    help="take only these scene seeds (inclusive) from every part")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.exists():
        print(f"{out} exists: merge into a new directory", file=sys.stderr)
        return 2
    merged: ClosedLoopConfig | None = None
    records: list[dict] = []
    sources: list[dict] = []
    seen: dict[tuple, str] = {}  # episode → the part it came from
    blocks: list[tuple[int, int, int]] = []  # (seed, episodes, episodes_other) of each part
    for spec in a.parts:
        path, variants, tasks = _part(spec)
        if not (path / SETTINGS).is_file():
            print(f"{path}: no {SETTINGS} (not a vidplan eval sim run directory)", file=sys.stderr)
            return 2
        cfg = ClosedLoopConfig.model_validate_json((path / SETTINGS).read_text())
        for what, want, have in (("variant", variants, cfg.variants), ("task", tasks, cfg.tasks)):
            if want and (bad := sorted(set(want) - set(have))):
                print(f"{path}: {what}(s) {bad} are not in this run (it has {have})", file=sys.stderr)
                return 2
        if merged is None:
            merged = cfg.model_copy(update={"variants": [], "tasks": [], "clutter": []})
        else:
            loose = {"seed": None, "overrides": None, "planner_config": None}  # the planner compares resolved
            if diff := changed_settings({**merged.fixed(), **loose}, {**cfg.fixed(), **loose}):
                print(f"{path}: other settings than the first part ({diff})", file=sys.stderr)
                return 2
            try:
                diff = changed_settings(_planner(merged), _planner(cfg))
            except ClosedLoopError as exc:
                print(f"{path}: its planner overrides do not resolve with today's planner YAML: {exc}", file=sys.stderr)
                return 2
            if diff:
                print(f"{path}: another planner configuration than the first part's, resolved with today's planner "
                      f"YAML (overrides {cfg.overrides} vs {merged.overrides}: {diff})", file=sys.stderr)
                return 2
        taken = Counter()
        for line in (path / EPISODES).read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if ((variants is None or rec["variant"] in variants) and (tasks is None or rec["task"] in tasks)
                    and (a.seeds is None or rec["seed"] in a.seeds)):
                key = (rec["variant"], rec["task"], rec["clutter"], rec["seed"], rec["instruction"])
                if key in seen and seen[key] != str(path):
                    print(f"{path}: episode {key} is also in {seen[key]}: take it from one part only",
                          file=sys.stderr)
                    return 2
                seen[key] = str(path)
                records.append(rec)
                taken[(rec["variant"], rec["task"])] += 1
        if not taken:
            print(f"{spec}: no episodes taken", file=sys.stderr)
            return 2
        merged.variants += [v for v in (variants or cfg.variants) if v not in merged.variants]
        merged.tasks += [t for t in (tasks or cfg.tasks) if t not in merged.tasks]
        merged.clutter += [c for c in cfg.clutter if c not in merged.clutter]
        start, ends = cfg.seed, (cfg.seed + cfg.episodes, cfg.seed + cfg.episodes_other)
        if a.seeds is not None:  # the part's seed block, cut to the range taken
            start, ends = max(start, a.seeds.start), tuple(min(e, a.seeds.stop) for e in ends)
        blocks.append((start, max(ends[0] - start, 0), max(ends[1] - start, 0)))
        sources.append({"dir": str(path), "variants": variants or cfg.variants, "tasks": tasks or cfg.tasks,
                        "seed": cfg.seed, "overrides": cfg.overrides,
                        "episodes": {f"{v}/{t}": n for (v, t), n in sorted(taken.items())}})
    assert merged is not None
    # episode i of a cell is scene seed `seed + i` (closed_loop_config.episode_specs): one seed range over the parts
    merged.seed = min(b[0] for b in blocks)
    merged.episodes = max(b[0] + b[1] for b in blocks) - merged.seed
    merged.episodes_other = max(b[0] + b[2] for b in blocks) - merged.seed
    covered = set().union(*(range(b[0], b[0] + max(b[1], b[2])) for b in blocks))
    if gap := sorted(set(range(merged.seed, merged.seed + max(merged.episodes, merged.episodes_other))) - covered):
        print(f"the parts leave scene seeds {gap} out: merge parts whose seed ranges meet", file=sys.stderr)
        return 2
    for rec in records:
        rec["index"] = rec["seed"] - merged.seed
    merged.clutter.sort()
    out.mkdir(parents=True)
    (out / SETTINGS).write_text(merged.model_dump_json(indent=2))
    (out / EPISODES).write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "sources.json").write_text(json.dumps(sources, indent=2))
    print(f"{len(records)} episodes from {len(sources)} runs into {out}")
    for s in sources:
        print(f"  {s['dir']}: {s['episodes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
