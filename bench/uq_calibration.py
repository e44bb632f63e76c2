"""The UQ head with and without its fitted temperature, side by side on the model card's held-out episodes.

The model card's UQ numbers are ``vidplan eval bag`` metrics (flow map K=1, 8 windows per episode, no shadow planner)
averaged over its held-out episodes (simulated with seed 0.., ``scripts/model_card.py``). This runs that evaluation
twice on the same episodes and the same flow-map noise: once with the bundle's UQ head as shipped (its
``temperature``, fitted by ``vidplan calibrate-uq`` on other episodes: ``uq_head/calibration.json``) and once with
the temperature set to 1 (the head as trained). Reported per episode and as the card's mean: ECE of the most likely
error bin (15 bins), the per-element entropy–error Spearman correlation, and the NLL of the true bins.

    python bench/uq_calibration.py [--model models/demo] [--work .cache/uq-calibration] [--note TEXT]

Writes bench/results/uq_calibration.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
GOALS = {"ece": 0.03, "spearman": 0.5}  # issue goals: ECE ≤ 0.03, entropy–error Spearman ≥ 0.5


def _with_temperature(model: Path, temperature: float, where: Path) -> Path:
    """A view of ``model`` whose uq_head/config.json has ``temperature`` (other parts symlinked, nothing copied but
    the UQ head)."""
    view = where / f"T{temperature:g}"
    view.mkdir()
    for p in model.iterdir():
        if p.name != "uq_head":
            (view / p.name).symlink_to(p.resolve(), target_is_directory=p.is_dir())
    shutil.copytree(model / "uq_head", view / "uq_head")
    cfg = json.loads((view / "uq_head" / "config.json").read_text())
    (view / "uq_head" / "config.json").write_text(json.dumps({**cfg, "temperature": temperature}))
    return view


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/demo"))
    ap.add_argument("--work", type=Path, default=Path(".cache/uq-calibration"), help="held-out episodes go here")
    ap.add_argument("--eval-episodes", type=int, default=3, help="as scripts/model_card.py")
    ap.add_argument("--eval-windows", type=int, default=8, help="as scripts/model_card.py")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, default=OUT / "uq_calibration")
    a = ap.parse_args(argv)

    import torch

    from vidplan_core.eval.bag_eval import EvalBagConfig, eval_bag
    from vidplan_core.eval.calibration import nll

    torch.set_num_threads(1)
    t_start = time.time()
    bags_dir = a.work / "eval_bags"
    if not (bags_dir / ".done").is_file():  # the model card's held-out episodes (same command and seeds)
        subprocess.run([sys.executable, "-c", "from vidplan_app.cli import main; main()", "data", "generate",
                        "--out", str(bags_dir), "--episodes", str(a.eval_episodes), "--seed", "0", "--width", "320",
                        "--height", "180", "--camera-rate", "5", "--clutter", "0,1,2,3", "--failure-prob", "0.33",
                        "--max-steps", "150"], check=True)
        (bags_dir / ".done").touch()
    bags = sorted(p for p in bags_dir.iterdir() if p.is_dir())
    shipped_t = float(json.loads((a.model / "uq_head" / "config.json").read_text()).get("temperature", 1.0))
    cal_file = a.model / "uq_head" / "calibration.json"
    calibration = json.loads(cal_file.read_text()) if cal_file.is_file() else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidplan-uq-cal-") as tmp:
        for label, t in (("as trained (T = 1)", 1.0), (f"calibrated (T = {shipped_t:g})", shipped_t)):
            view = _with_temperature(a.model.resolve(), t, Path(tmp))
            for bag in bags:
                res = eval_bag(bag, view, Path(tmp) / f"{t:g}" / bag.name, config=EvalBagConfig(
                    max_steps=a.eval_windows, shadow=False, examples=1, progress=False, uq_samples=True))
                uq = res.metrics["uq"]
                with np.load(res.out_dir / "uq_samples.npz") as d:
                    episode_nll = nll(d["logits"].astype(np.float64), d["bin"])
                rows.append({"head": label, "temperature": t, "episode": bag.name, "ece": uq["ece"],
                             "spearman": uq["entropy_error_correlation"]["per_element"]["spearman_r"],
                             "nll": episode_nll, "bin_accuracy": uq["bin_accuracy"],
                             "mean_normalized_entropy": uq["mean_normalized_entropy"]})
                print(f"{label}: {bag.name} ECE {uq['ece']:.4f} Spearman {rows[-1]['spearman']:.3f}", flush=True)
    means = {}
    for label in dict.fromkeys(r["head"] for r in rows):
        sel = [r for r in rows if r["head"] == label]
        means[label] = {k: float(np.mean([r[k] for r in sel])) for k in ("ece", "spearman", "nll", "bin_accuracy",
                                                                          "mean_normalized_entropy")}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip() != ""
    res = {"benchmark": "uq_calibration", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "command": "python bench/uq_calibration.py " + shlex.join(argv or sys.argv[1:]),
           "commit": commit, "dirty": dirty, "note": a.note, "model": str(a.model), "temperature": shipped_t,
           "calibration": calibration, "episodes": [b.name for b in bags], "windows": a.eval_windows,
           "rows": rows, "means": means, "wall_s": time.time() - t_start,
           "goals": {label: {"ece <= 0.03": m["ece"] <= GOALS["ece"], "spearman >= 0.5": m["spearman"] >= GOALS[
               "spearman"]} for label, m in means.items()}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    cal = (f"fitted by `vidplan calibrate-uq` on {calibration['episodes']} other simulated episodes "
           f"({calibration['elements']} latent elements; {', '.join(calibration['bags'][:1])} …), NLL "
           f"{calibration['nll']['before']:.4f} → {calibration['nll']['after']:.4f} there"
           if calibration else "no uq_head/calibration.json")
    lines = ["# UQ head calibration: temperature scaling, side by side", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs), torch {res['torch']}, 1 thread. Commit `{commit}`"
             + (" (with uncommitted changes)" if dirty else "") + f". {a.note}", "",
             f"Command: `{res['command']}` ({res['wall_s'] / 60:.1f} min)", "",
             f"Model `{a.model}`; its UQ head's temperature {shipped_t:g}, {cal}. Evaluated on the model card's "
             f"{len(bags)} held-out episodes (simulated with seeds from 0; the models trained on seeds ≥ 1000, the "
             f"temperature was fitted on seeds ≥ 2000), {a.eval_windows} windows each, flow map K=1, the same "
             "noise for both heads: `vidplan eval bag` metrics, the model card's means over episodes.", "",
             "| head | ECE (goal ≤ 0.03) | entropy–error Spearman (goal ≥ 0.5) | NLL [nats] | bin accuracy | "
             "mean normalised entropy |", "|---|---|---|---|---|---|"]
    for label, m in means.items():
        lines.append(f"| {label} | {m['ece']:.4f} | {m['spearman']:.3f} | {m['nll']:.4f} | {m['bin_accuracy']:.3f} "
                     f"| {m['mean_normalized_entropy']:.3f} |")
    lines += ["", "Per episode:", "", "| head | episode | ECE | Spearman | NLL |", "|---|---|---|---|---|"]
    lines += [f"| {r['head']} | {r['episode']} | {r['ece']:.4f} | {r['spearman']:.3f} | {r['nll']:.4f} |"
              for r in rows]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
