"""Write MODEL_CARD.md for a model directory built by scripts/make_demo_models.sh, with measured metrics.

Measured here (nothing is copied from elsewhere):
* from the training runs (``<work>/runs/<kind>/logs/metrics.csv``): the last validation value of every metric each
  run logged (VAE reconstruction PSNR, semantic retrieval accuracy on held-out captions, teacher latent MSE, flow-map
  and heads validation losses), steps and wall time;
* on held-out episodes simulated here with seeds the training data never used (0, 1, ...): ``eval_bag`` of the
  assembled model for the flow map with K = 1, 2, 4 and for the EDM teacher it was distilled from (``<work>/runs/
  world-model/final``, Euler N = 25, 50; same initial noise) — prediction PSNR per horizon step, UQ ECE and
  entropy–error rank correlation, reward-head bin accuracy and ECE (the heads scoring each predictor's frames), and
  controllability: the latent MSE with shuffled / mirrored actions vs the true ones (same noise) per horizon step,
  and the action effect vs the noise effect on the predicted latents (``metrics.json`` ``controllability``).

Besides the card it writes ``<model>/metrics.json`` (schema ``vidplan-model-metrics/1``): the headline numbers of the
demo-models issue (controllability ratio at horizon 5, PSNR gain over copying the current frame on the pixels that
change, grounding of unseen colour–shape combinations, UQ calibration, flow map vs teacher quality and speed,
training minutes, the commit that built it), each with its goal and whether it is met.

Usage: python scripts/model_card.py --model models/demo --work .cache/demo-models [--eval-episodes 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def last_val_metrics(run: Path) -> tuple[dict[str, float], int, float]:
    """Last validation value per metric, the last step and the wall time [s] of one training run."""
    path = run / "logs" / "metrics.csv"
    vals: dict[str, float] = {}
    step, wall = 0, 0.0
    if not path.is_file():
        return vals, step, wall
    with path.open() as f:
        for row in csv.reader(f):
            if not row or row[0] == "step":
                continue
            s, split, metric, value, t = row[:5]
            step, wall = max(step, int(s)), max(wall, float(t))
            if split == "val":
                vals[metric] = float(value)
    return vals, step, wall


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def controllability_section(per_label: dict[str, list[dict | None]]) -> list[str]:
    """Markdown lines of the card's Controllability section from eval-bag ``metrics.json["controllability"]`` of each
    predictor's held-out episodes (label → one section per episode, None where it was not computed).

    Pooled over the episodes (each has the same number of windows): the mean latent MSE per horizon step of each
    action variant, their ratio to the true actions' (the mean column: ratio of the means over the steps), and the
    mean L2 norms of pred(true) − pred(mirrored) and pred(true) − pred(true, other noise) over whole windows.
    """
    L = ["## Controllability (does the world model use its actions?)",
         "Held-out windows as above, each predicted with the same initial noise from the recorded actions (true), "
         "with another window's chunk re-expressed from the current pose (shuffled) and with the position "
         "displacements mirrored about the current pose (mirrored). Ratio = latent MSE with the variant / with the "
         "true actions: 1.0 = the model ignores its actions, > 1 = wrong actions make its prediction worse. "
         "Action vs noise effect: ‖pred(true) − pred(mirrored)‖ vs ‖pred(true) − pred(true, other noise)‖ (L2 over "
         "a window's latents, mean over windows).", "",
         "| predictor | shuffled / true per horizon step | mean | mirrored / true per horizon step | mean | "
         "action effect (mirrored) | noise effect | action / noise |", "|---|---|---|---|---|---|---|---|"]
    for label, secs in per_label.items():
        ok = [c for c in secs if c and c.get("error")]
        if not ok:
            L.append(f"| {label} | n/a (not computed: re-run scripts/model_card.py --fresh) | | | | | | |")
            continue
        true = np.mean([c["error"]["true"]["latent_mse"]["per_step"] for c in ok], axis=0)
        cells = []
        for v in ("shuffled", "mirrored"):
            rows = [c["error"][v]["latent_mse"]["per_step"] for c in ok if c["error"].get(v)]
            if not rows:
                cells += ["n/a (one window per episode)", "n/a"]
                continue
            var = np.mean(rows, axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                per = var / true
                tot = float(var.mean() / true.mean())
            cells += [" / ".join(_fmt(float(x), 2) for x in per), _fmt(tot, 3)]
        diff = [c["latent_difference"] for c in ok]
        act = float(np.mean([d["action_mirrored"]["window"] for d in diff]))
        noise = float(np.mean([d["noise"]["window"] for d in diff]))
        L.append(f"| {label} | {' | '.join(cells)} | {_fmt(act, 2)} | {_fmt(noise, 2)} | "
                 f"{_fmt(act / noise if noise > 0 else float('nan'), 3)} |")
    return L


def _ratio_at(secs: list[dict | None], variant: str, step: int) -> float:
    """latent MSE with ``variant`` actions / with the true ones at horizon ``step`` (0-based; pooled over episodes)."""
    ok = [c for c in secs if c and c.get("error") and c["error"].get(variant)]
    if not ok:
        return float("nan")
    true = np.mean([c["error"]["true"]["latent_mse"]["per_step"][step] for c in ok])
    var = np.mean([c["error"][variant]["latent_mse"]["per_step"][step] for c in ok])
    return float(var / true) if true > 0 else float("nan")


#: goals of the demo-models issue that one model directory can be measured against (the closed-loop goals live in
#: bench/results/closed_loop_eval.json): metric → (comparison, target, what it means)
GOALS: dict[str, tuple[str, float, str]] = {
    "controllability_ratio_h5": (">=", 2.0, "latent MSE with shuffled / true actions at horizon 5 (flow map K=1)"),
    "psnr_gain_vs_copy_moving_db": (">=", 2.0, "prediction − copy-current-frame PSNR on pixels that change [dB]"),
    "grounding_unseen_acc": (">=", 0.90, "grounded scorer, targets of held-out colour-shape combinations"),
    "uq_ece": ("<=", 0.03, "UQ head expected calibration error (flow map K=1 frames)"),
    "uq_entropy_error_spearman": (">=", 0.5, "UQ entropy vs error rank correlation, per element"),
    "flow_map_k1_minus_teacher_db": (">=", -0.5, "flow map K=1 PSNR − teacher N=50 PSNR [dB]"),
    "flow_map_k1_speedup": (">=", 40.0, "teacher N=50 rollout p50 / flow map K=1 rollout p50"),
}


def headline_metrics(per_k: dict[str, dict[str, list]], ctl: dict[str, list[dict | None]], model: Path,
                     train_minutes: float, commit: str, episodes: int, windows: int) -> dict:
    """The ``metrics.json`` of a model directory (see the module docstring); NaN (not computed) becomes None."""
    def mean(label: str, key: str) -> float:
        vals = [v for v in per_k.get(label, {}).get(key, []) if v is not None]
        return float(np.nanmean(np.asarray(vals, dtype=float))) if vals else float("nan")

    k1, teacher = "flow map K=1", "teacher N=50"
    ge = model / "semantic" / "grounding_eval.json"
    grounding = (json.loads(ge.read_text()).get("unseen_target") or {}).get("accuracy") if ge.is_file() else None
    k1_psnr = float(np.mean(np.nanmean(np.asarray(per_k[k1]["psnr"], dtype=float), axis=0)))
    t_psnr = (float(np.mean(np.nanmean(np.asarray(per_k[teacher]["psnr"], dtype=float), axis=0)))
              if teacher in per_k else float("nan"))
    vals = {
        "controllability_ratio_h5": _ratio_at(ctl.get(k1, []), "shuffled", -1),
        "controllability_ratio_mirrored_h5": _ratio_at(ctl.get(k1, []), "mirrored", -1),
        "psnr_gain_vs_copy_moving_db": mean(k1, "moving_gain"),
        "grounding_unseen_acc": float("nan") if grounding is None else float(grounding),
        "uq_ece": mean(k1, "uq_ece"),
        "uq_entropy_error_spearman": mean(k1, "uq_spearman"),
        "reward_bin_accuracy": mean(k1, "rw_acc"),
        "reward_ece": mean(k1, "rw_ece"),
        "flow_map_k1_psnr_db": k1_psnr,
        "teacher_n50_psnr_db": t_psnr,
        "flow_map_k1_minus_teacher_db": k1_psnr - t_psnr,
        "flow_map_k1_speedup": mean(teacher, "rollout_ms") / mean(k1, "rollout_ms"),
    }
    clean = {k: (round(v, 4) if np.isfinite(v) else None) for k, v in vals.items()}
    goals = {}
    for k, (op, target, what) in GOALS.items():
        v = clean[k]
        goals[k] = {"value": v, "goal": f"{op} {target}", "what": what,
                    "met": None if v is None else bool(v >= target if op == ">=" else v <= target)}
    return {"schema": "vidplan-model-metrics/1", **clean, "train_minutes": round(train_minutes, 1),
            "commit": commit, "eval_episodes": episodes, "eval_windows_per_episode": windows,
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds"), "goals": goals}


def _how_far(metrics: dict, grounded: bool) -> str:
    """The card's one-sentence summary of the unmet goals (from :func:`headline_metrics`)."""
    missed = [f"{g['what']} {_fmt(g['value'])} (goal {g['goal']})" for g in metrics["goals"].values()
              if g["met"] is False]
    text = ("every measurable goal is met; " if not missed else
            "not met — " + "; ".join(missed) + ". ")
    if not grounded:
        text += ("The semantic model is the SigLIP-architecture stand-in, which memorised the training captions "
                 "(it retrieves none of the held-out ones).")
    return text + (" Reward-head bin accuracy on predicted frames "
                   f"{_fmt(metrics.get('reward_bin_accuracy'))}, ECE {_fmt(metrics.get('reward_ece'))}.")


def goals_section(metrics: dict) -> list[str]:
    """Markdown lines: each measurable goal with its value and whether it is met (from :func:`headline_metrics`)."""
    L = ["## Goals (demo-models issue; `metrics.json`)", "", "| metric | value | goal | met |", "|---|---|---|---|"]
    for k, g in metrics["goals"].items():
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        L.append(f"| {g['what']} (`{k}`) | {_fmt(g['value'])} | {g['goal']} | {met} |")
    return L


def bundle_facts(model: Path, data: Path) -> dict:
    """Sentences for the card read from the bundle's index and the training dataset's meta.json (what was built, not
    what a recipe intended)."""
    idx = json.loads((model / "bundle.json").read_text()) if (model / "bundle.json").is_file() else {}
    cfg = model / "semantic" / "config.json"
    grounded = cfg.is_file() and json.loads(cfg.read_text()).get("_class_name") == "GroundedScorer"
    scorer = ("a grounded semantic scorer: the frozen all-MiniLM-L6-v2 sentence encoder and a convolutional image "
              "tower trained per pixel on MuJoCo-labelled frames (`vidplan data grounding`, `vidplan train grounded`; "
              "six colour-shape combinations held out of its training)" if grounded else
              "a small SigLIP-architecture semantic model trained with the SigLIP loss on sim frames and task "
              "captions (our stand-in for pretrained SigLIP)")
    names = ("left", "right", "wrist")
    maps = idx.get("map_views") or [idx.get("centring_view", 2)]
    views = (f"The semantic score is computed on the {names[int(idx.get('semantic_view') or 0)]} view, the centring "
             f"term on the maps of the {', '.join(names[v] for v in maps)} view(s) (bundle.json).")
    meta = json.loads((data / "meta.json").read_text()) if (data / "meta.json").is_file() else {}
    info = meta.get("info") or {}
    prep = info.get("view_preparation") or {}
    src = info.get("source_image_size") or meta.get("source_image_size")
    crop = prep.get("crops")
    size = f"{prep['height']}x{prep['width']}" if prep else meta.get("image_size")
    data_txt = (f"cameras of {src} (HxW) px, converted to {size} per view at {meta.get('fps', 5)} Hz"
                + (" after cutting each exterior view to the workspace box (`--crop workspace`)" if crop else
                   " (whole views)") + " with p01/p99 action statistics")
    return {"scorer": scorer, "views": views, "data": data_txt, "grounded": grounded}


def _reusable(done: Path, model_mtime: float, label: str, windows: int) -> dict | None:
    """An earlier evaluation's metrics if it ran after the model files were last written, with the same predictor
    and number of windows; else None."""
    if not done.is_file() or done.stat().st_mtime <= model_mtime:
        return None
    m = json.loads(done.read_text())
    if m["settings"]["max_steps"] != windows or m["settings"].get("predictor") != label:
        return None
    if not m.get("controllability"):  # written before eval-bag measured controllability
        return None
    print(f"  {done.parent.name}: reusing {done}", flush=True)
    return m


def _git_commit() -> str:
    """HEAD of this checkout, with '-dirty' when tracked files changed ('unknown' outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=0, help="training episodes simulated (for the card)")
    ap.add_argument("--recipe", default="", help="the step settings used (for the card)")
    ap.add_argument("--wall-s", type=float, default=0.0,
                    help="wall time of this make demo-models invocation [s] (finished stages are skipped)")
    ap.add_argument("--eval-episodes", type=int, default=3)
    ap.add_argument("--demo-result", type=Path, default=None, help="result.json of a `make demo` run to quote")
    ap.add_argument("--eval-windows", type=int, default=8, help="evaluated windows per held-out episode")
    ap.add_argument("--commit", default="",
                    help="git commit the models were built from (default: this checkout's HEAD, '-dirty' if changed)")
    ap.add_argument("--fresh", action="store_true",
                    help="re-run every evaluation (default: reuse one written after the model files changed)")
    a = ap.parse_args()

    import torch

    from vidplan_core.eval.bag_eval import EvalBagConfig, eval_bag

    torch.set_num_threads(1)
    eval_bags = a.work / "eval_bags"
    if not (eval_bags / ".done").is_file():
        subprocess.run([sys.executable, "-c", "from vidplan_app.cli import main; main()", "data", "generate",
                        "--out", str(eval_bags), "--episodes", str(a.eval_episodes), "--seed", "0", "--width", "320",
                        "--height", "180", "--camera-rate", "5", "--clutter", "0,1,2,3", "--failure-prob", "0.33",
                        "--max-steps", "150"],
                       check=True)
        (eval_bags / ".done").touch()
    bags = sorted(p for p in eval_bags.iterdir() if p.is_dir())

    predictors: dict[str, dict] = {f"flow map K={k}": {"flow_steps": k} for k in (1, 2, 4)}
    teacher = a.work / "runs" / "world-model" / "final"
    if teacher.is_dir():
        predictors |= {f"teacher N={n}": {"teacher_steps": n, "teacher_dir": str(teacher)} for n in (25, 50)}
    # the evaluations run the torch models: a re-export of onnx/ alone (which also updates the index bundle.json)
    # does not make them stale
    model_mtime = max(p.stat().st_mtime for p in a.model.rglob("*")
                      if p.is_file() and p.name not in ("MODEL_CARD.md", "bundle.json")
                      and "onnx" not in p.relative_to(a.model).parts)
    per_k: dict[str, dict[str, list]] = {}
    ctl: dict[str, list[dict | None]] = {}
    for label, settings in predictors.items():
        acc: dict[str, list] = defaultdict(list)
        sub = label.replace("flow map K=", "k").replace("teacher N=", "teacher_n")
        print(f"evaluating {label} on {len(bags)} held-out episodes", flush=True)
        for bag in bags:
            out = a.work / "eval" / sub / bag.name
            m = None if a.fresh else _reusable(out / "metrics.json", model_mtime, label, a.eval_windows)
            if m is None:
                m = eval_bag(bag, a.model, out, config=EvalBagConfig(
                    max_steps=a.eval_windows, shadow=False, examples=1, progress=False, **settings)).metrics
            acc["psnr"].append(m["prediction"]["psnr_db"]["mean"])
            acc["moving_gain"].append((m["prediction"].get("moving_pixels") or {}).get("gain_db_mean"))
            uq = m.get("uq") or {}
            acc["uq_ece"].append(uq.get("ece", float("nan")))
            corr = ((uq.get("entropy_error_correlation") or {}).get("per_element") or {})
            acc["uq_spearman"].append(corr.get("spearman_r", float("nan")))
            rw = (m.get("reward") or {}).get("on_predicted") or {}
            acc["rw_acc"].append(rw.get("bin_accuracy", float("nan")))
            acc["rw_ece"].append(rw.get("ece", float("nan")))
            acc["rollout_ms"].append(((m.get("latency") or {}).get("rollout") or {}).get("p50_ms", float("nan")))
            ctl.setdefault(label, []).append(m.get("controllability"))
        per_k[label] = acc

    runs = {kind: last_val_metrics(a.work / "runs" / kind)
            for kind in ("grounded", "semantic", "vae", "tiny-decoder", "world-model", "flow-map", "decoded-grounded",
                         "heads", "bc")
            if kind not in ("grounded", "semantic", "bc", "tiny-decoder", "decoded-grounded")
            or (a.work / "runs" / kind).is_dir()}
    facts = bundle_facts(a.model, a.work / "data")
    files = sorted(p for p in a.model.rglob("*") if p.is_file() and p.name != "MODEL_CARD.md")
    total_mb = sum(p.stat().st_size for p in files) / 2**20
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())

    L = [f"# Model card: {a.model.name}", "",
         f"Built {datetime.now(UTC).isoformat(timespec='minutes')} by `scripts/make_demo_models.sh` "
         f"(`make demo-models`) with EPISODES={a.episodes} {a.recipe.strip()}; training "
         f"{sum(r[2] for r in runs.values()) / 60:.0f} min (the runs below), the last invocation (which skips "
         f"finished stages) {a.wall_s / 60:.0f} min, on {os.cpu_count()} CPU cores ({cpu}), torch "
         f"{torch.__version__}, 1 thread, shared machine. Total size {total_mb:.1f} MB ({len(files)} files).", "",
         "## What it is",
         "The `demo` configuration (vidplan_core/models/configs/demo.yaml) of the very same code as the full "
         "models: a KL VAE (3 views of 48x80 stacked to 144x80 → latent 4x36x20), an action-conditioned video UNet "
         "(EDM teacher, 2 history + 5 future frames at 5 Hz) distilled into a flow map (PSD), a UQ head, a reward "
         f"head, and {facts['scorer']}. {facts['views']} Weights are safetensors, the world-model parts stored in "
         "float16 and computed in float32 (rounded once, when assembled); `onnx/` holds the exported graphs, which "
         "share one deduplicated weights file (float16 where exact, so they compute with the same float32 values as "
         "torch), with `manifest.json` (SHA-256 per file). The EDM teacher is not shipped (planning needs only the "
         "flow map, which holds the distilled network); `make demo-models` keeps it in its run directory."
         + (" `policy/` is the behaviour-cloned nominal policy (`vidplan train bc`, the successful demonstrations; "
            "the bc row below: `position_error_m` of its chunks vs `hold_position_error_m` of answering \"stay\" "
            "on held-out windows; closed loop: the `bc` / `bc+vidplan` variants of bench/results/"
            "closed_loop_eval_0158e96.md)." if (a.model / "policy").is_dir() else "")
         + (" `tiny_decoder/` is the semantic reward's distilled decoder (`vidplan train tiny-decoder`: diffusers "
            "DecoderTiny trained to reproduce the VAE decoder on encoded, noise-perturbed latents; the tiny-decoder "
            "row below: its PSNR against the full decoder and both against the frames on the validation episodes); "
            "the planner scores with it and decodes debug pictures with the full decoder "
            "(bench/results/tiny_decoder.md)." if (a.model / "tiny_decoder").is_dir() else ""), "",
         "## Data",
         f"{a.episodes} simulated episodes (MuJoCo DROID scene, scripted IK expert with action noise, about a third "
         f"deliberate failures, clutter 0–3, tasks put/touch/push; seeds from 1000), {facts['data']}; 15 % of "
         "episodes held out for validation during training.", "",
         "## Training (last validation values logged by each run)", "",
         "| run | steps | wall [min] | validation metrics (last) |", "|---|---|---|---|"]
    for kind, (vals, step, wall) in runs.items():
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(vals.items())) or "none logged"
        L.append(f"| {kind} | {step} | {wall / 60:.1f} | {shown} |")
    L += ["", f"## Held-out evaluation ({len(bags)} episodes with seeds 0–{len(bags) - 1}, never trained on; "
          f"{a.eval_windows} windows each; `vidplan eval bag` metrics; the teacher is the EDM world model the flow "
          "map was distilled from, sampled with the same initial noise)", "",
          "| predictor | prediction PSNR [dB] per horizon step (5 Hz frames 1..H) | mean | gain over copying the "
          "current frame, pixels that change [dB] | UQ ECE | UQ entropy–error Spearman (per element) | reward-head "
          "bin accuracy | reward-head ECE | rollout p50 [ms] |",
          "|---|---|---|---|---|---|---|---|---|"]
    for label, acc in per_k.items():
        per_step = np.nanmean(np.array(acc["psnr"], dtype=float), axis=0)
        L.append(f"| {label} | {' / '.join(f'{x:.1f}' for x in per_step)} | {_fmt(float(per_step.mean()), 2)} | "
                 f"{_fmt(np.nanmean(np.asarray(acc['moving_gain'], dtype=float)), 2)} | "
                 f"{_fmt(np.nanmean(acc['uq_ece']))} | "
                 f"{_fmt(np.nanmean(acc['uq_spearman']))} | {_fmt(np.nanmean(acc['rw_acc']))} | "
                 f"{_fmt(np.nanmean(acc['rw_ece']))} | {_fmt(np.nanmean(acc['rollout_ms']), 0)} |")
    L += ["", *controllability_section(ctl)]
    commit = a.commit or _git_commit()
    metrics = headline_metrics(per_k, ctl, a.model, sum(r[2] for r in runs.values()) / 60, commit, len(bags),
                               a.eval_windows)
    (a.model / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    L += ["", *goals_section(metrics)]
    if a.demo_result and a.demo_result.is_file():
        r = json.loads(a.demo_result.read_text())
        L += ["", f"## Closed loop (`make demo`: sim + planner + executor as ROS 2 processes, {r['backend']} "
              "backend)", "",
              f"'{r['instruction']}' (scene seed {r['scene_seed']}): {'success' if r['success'] else 'failure'} — "
              f"{r['message']}; {r['steps_executed']} control steps, {r['chunks_planned']} chunks planned, plan "
              f"latency p50 {r['plan_latency_ms_p50'] / 1e3:.1f} s, p95 {r['plan_latency_ms_p95'] / 1e3:.1f} s "
              "(2 shared CPU cores, 1 thread; the lock-step sim runs at 0.05x real time so the world waits)."]
    L += ["", "Per-horizon-step PSNR, reliability diagrams and prediction strips: "
          f"`{a.work}/eval/{{k<K>,teacher_n<N>}}/<episode>/` (metrics.json, PNG plots, report.html), re-created by "
          "this script.", "",
          "## Limitations (honest)",
          "These models are trained for minutes on a shared 2-core CPU, far from convergence: predictions are "
          "blurry, the UQ and reward heads are weakly calibrated, and closed-loop success in simulation is low (see "
          "bench/results/closed_loop_eval.md where it exists). They exist to run the whole pipeline end to end — "
          "sim cameras → flow-map world model + heads + semantic reward → planner → executor — not to solve the "
          "tasks. `STEPS_SCALE=1 make demo-models` runs the configs' full step counts (hours on CPU, minutes on a "
          "GPU). How far they are, measured above: " + _how_far(metrics, facts["grounded"]), "",
          "## Files", ""]
    L += [f"- `{p.relative_to(a.model)}` ({p.stat().st_size / 2**20:.2f} MB)" for p in files]
    (a.model / "MODEL_CARD.md").write_text("\n".join(L) + "\n")
    print(f"wrote {a.model / 'MODEL_CARD.md'} ({total_mb:.1f} MB of model files)")


if __name__ == "__main__":
    main()
