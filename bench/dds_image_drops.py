"""Camera images lost between the simulator and its subscribers in `make demo` runs, side by side.

Reads the run directories `vidplan demo` writes (runs/demo/<stamp>/: recorder_stats.json, result.json, logs/up.log)
and writes one JSON + Markdown table: images the recorder received per camera (the sim publishes the three of a
triplet back to back, so the left count is the reference), the planner's diagnostic statuses, the plans it dropped
because its cameras went stale during the cycle, and the episode's outcome.

    python bench/dds_image_drops.py --out bench/results/dds_image_drops \\
        "old profile, alone=runs/demo/20261205_185202" "old profile, busy=runs/demo/20261205_210858" \\
        "4 MiB UDP buffers, busy=runs/demo/20261205_210504" --note "..."
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

VIEWS = ("left", "right", "wrist")


def summarize(run: Path) -> dict:
    """One demo run directory → its counts (raises FileNotFoundError naming a missing file)."""
    stats = json.loads((run / "recorder_stats.json").read_text())
    result = json.loads((run / "result.json").read_text())
    log = (run / "logs" / "up.log").read_text(errors="replace")
    images = {v: int(stats["received"].get(f"/cameras/{v}/image_raw", 0)) for v in VIEWS}
    ref = max(images["left"], 1)
    return {
        "run": str(run),
        "images_received": images,
        "lost_vs_left": {v: round(1.0 - images[v] / ref, 3) for v in VIEWS[1:]},
        "planner_status": result.get("plan_status", {}),
        "plans_dropped_stale": log.count("dropped: inputs went stale"),
        "stale_warnings": log.count("is stale: no valid image"),
        "chunks_planned": result.get("chunks_planned"),
        "sim_time_s": round(float(result.get("sim_time_s", 0.0)), 2),
        "wall_time_s": round(float(result.get("wall_time_s", 0.0)), 1),
        "success": bool(result.get("success")),
        "outcome": result.get("message", ""),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="a label and a `vidplan demo` run directory")
    ap.add_argument("--out", required=True, help="output stem (writes STEM.json and STEM.md)")
    ap.add_argument("--note", action="append", default=[], help="a line for the summary (repeatable)")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.runs:
        label, sep, path = spec.partition("=")
        if not sep:
            print(f"error: {spec!r} is not LABEL=DIR", file=sys.stderr)
            return 2
        try:
            rows.append({"label": label, **summarize(Path(path))})
        except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
            print(f"error: {path}: not a complete `vidplan demo` run directory ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"benchmark": "dds_image_drops", "machine": platform.platform(), "command": " ".join(sys.argv),
           "commit": commit, "notes": a.note, "runs": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# Camera images lost on the way to the planner (`make demo`)", "",
             f"Machine: {doc['machine']}. Command: `{doc['command']}` at `{commit}`.", ""]
    lines += [f"- {n}" for n in a.note] + ([""] if a.note else [])
    lines += ["| run | images left / right / wrist | right, wrist lost vs left | planner statuses | plans dropped "
              "(stale inputs) | chunks | sim / wall s | outcome |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        im, lost = r["images_received"], r["lost_vs_left"]
        status = ", ".join(f"{k} {v}" for k, v in sorted(r["planner_status"].items()))
        lines.append(f"| {r['label']} | {im['left']} / {im['right']} / {im['wrist']} | "
                     f"{lost['right']:.0%}, {lost['wrist']:.0%} | {status} | {r['plans_dropped_stale']} | "
                     f"{r['chunks_planned']} | {r['sim_time_s']} / {r['wall_time_s']} | "
                     f"{'success' if r['success'] else 'failure'}: {r['outcome']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
