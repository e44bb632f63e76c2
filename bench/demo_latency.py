"""`make demo` as a new user runs it, timed: wall time of the whole command (set-up already done) and the planner's
latency per cycle (p50, p95) reported by the episode.

    python bench/demo_latency.py [--note TEXT]

Runs ``make demo DEMO_ARGS='--json …'`` once and writes bench/results/demo_latency.json and .md (plan_p50_s,
plan_p95_s, wall_s, commit, the episode's outcome). Goals (issue 15): p95 ≤ 2 × p50 (the sim and the recorder do not
starve the planner) and the whole command ≤ 4 minutes on 2 cores after set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    with tempfile.TemporaryDirectory() as tmp:
        res_file = Path(tmp) / "result.json"
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(["make", "demo", f"DEMO_ARGS=--json {res_file}"], cwd=ROOT, text=True,
                              capture_output=True)
        wall = time.perf_counter() - t
        if not res_file.is_file():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            raise SystemExit(f"make demo wrote no result (exit {proc.returncode})")
        r = json.loads(res_file.read_text())
    p50, p95 = r["plan_latency_ms_p50"] / 1e3, r["plan_latency_ms_p95"] / 1e3
    out = {"benchmark": "demo_latency", "machine": platform.platform(), "cpus": os.cpu_count(),
           "command": "python bench/demo_latency.py" + (f" --note {args.note!r}" if args.note else ""),
           "runs": "make demo", "note": args.note, "load_avg_1min_start": round(load0, 2),
           "plan_p50_s": p50, "plan_p95_s": p95, "p95_over_p50": p95 / p50, "wall_s": wall,
           "commit": commit + ("-dirty" if dirty else ""), "exit_code": proc.returncode,
           "success": r.get("success"), "steps_executed": r.get("steps_executed"),
           "chunks_planned": r.get("chunks_planned"), "backend": r.get("backend"), "message": r.get("message"),
           "goals": {"p95 <= 2 x p50": p95 <= 2 * p50, "wall <= 240 s": wall <= 240}}
    OUT.mkdir(exist_ok=True)
    (OUT / "demo_latency.json").write_text(json.dumps(out, indent=1))
    md = ["# demo_latency — `make demo` timed", "",
          f"Machine: {out['machine']}, {out['cpus']} CPUs (shared). `{out['command']}` at commit `{out['commit']}`"
          + (f" — {args.note}" if args.note else "") + f" (1-min load average {out['load_avg_1min_start']} at the "
          "start).", "",
          "| measure | value | goal |", "|---|---|---|",
          f"| plan latency p50 / p95 | {p50:.2f} s / {p95:.2f} s (p95 = {p95 / p50:.2f} × p50) | p95 ≤ 2 × p50: "
          f"{'met' if out['goals']['p95 <= 2 x p50'] else 'NOT met'} |",
          f"| whole `make demo` (after set-up) | {wall:.0f} s | ≤ 240 s: "
          f"{'met' if out['goals']['wall <= 240 s'] else 'NOT met'} |",
          f"| episode | {'success' if out['success'] else 'failure'}: {out['message']}; {out['steps_executed']} "
          f"control steps, {out['chunks_planned']} chunks planned ({out['backend']}) | – |", ""]
    (OUT / "demo_latency.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
