"""The tiny decoder for scoring against the full VAE decoder it was distilled from, on the bundle.

On fresh simulated scenes (``bench/_scenes.py``: seeds 0.., never trained on), for the bundle's models:

* picture quality: PSNR of the tiny decoder against the full decoder, and of both against the camera frames, on
  the encoded history (the encoder's latents) and on the flow map's predictions for the planner's candidates (what
  the planner actually decodes);
* planning decisions: the same planning session (``planning/planner.yaml`` defaults, torch) run once scoring with
  the tiny decoder and once with the full decoder, same inputs and noise seed — how often the chosen candidate is
  the same, and the rank correlation of the candidates' scores;
* cost: counted GFLOP per decoded frame and the semantic stage's median time in those cycles.

    python bench/tiny_decoder.py --model models/demo [--scenes 24]

Writes bench/results/tiny_decoder.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/demo"))
    p.add_argument("--scenes", type=int, default=24)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _scenes import home_scenes
    from scipy.stats import spearmanr

    from vidplan_core.eval.metrics import wilson_interval
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.models.tiny_decoder import decode_gflop
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.runtime.loader import load_planner_backend, load_planner_models
    from vidplan_core.runtime.torch_backend import TorchBackend

    models = load_planner_models(args.model)
    if models.tiny_decoder is None:
        raise SystemExit(f"{args.model} has no tiny_decoder")
    full_models = copy.copy(models)
    full_models.tiny_decoder = None
    planning = load_planning_config()
    k = planning.flow_steps or 1
    tiny_be, full_be = TorchBackend(models, flow_steps=k), TorchBackend(full_models, flow_steps=k)
    sessions = {"tiny": PlanningSession(tiny_be, PandaKinematics(), planning.session),
                "full": PlanningSession(full_be, PandaKinematics(), planning.session)}
    ae, tiny = models.suite.autoencoder, models.tiny_decoder
    loaded = load_planner_backend(args.model, "torch", threads=1, models=models, warm=False)
    rows: dict[str, list] = {k: [] for k in ("hist_tiny_vs_full", "hist_full_vs_frames", "hist_tiny_vs_frames",
                                             "pred_tiny_vs_full", "same_choice", "score_spearman",
                                             "semantic_s_tiny", "semantic_s_full", "kind")}
    for sc in home_scenes(loaded, args.scenes):
        frames = torch.as_tensor(sc.history[-1:]).float() / 255.0  # (1, 3, 3, H, W): the current frame
        with torch.no_grad():
            z = ae.encode(frames)
            full_img, tiny_img = ae.decode(z), tiny.decode(z)
        rows["hist_tiny_vs_full"].append(_psnr(tiny_img, full_img))
        rows["hist_full_vs_frames"].append(_psnr(full_img, frames))
        rows["hist_tiny_vs_frames"].append(_psnr(tiny_img, frames))
        res = {}
        for name, session in sessions.items():
            res[name], props = session.plan(sc.history, sc.poses, sc.q, sc.instruction, seed=sc.index)
            rows[f"semantic_s_{name}"].append(res[name].timings.get("semantic", float("nan")))
        tiny_be.set_context(_ctx(sc))
        out = tiny_be.rollout(props.actions.astype(np.float32))
        lat = torch.as_tensor(out.latents)
        with torch.no_grad():
            rows["pred_tiny_vs_full"].append(_psnr(tiny.decode(lat), ae.decode(lat)))
        rows["same_choice"].append(res["tiny"].chosen_label == res["full"].chosen_label)
        rho = spearmanr(res["tiny"].scores, res["full"].scores).statistic
        rows["score_spearman"].append(float(rho) if np.isfinite(rho) else float("nan"))
        rows["kind"].append(sc.kind)
    n = len(rows["same_choice"])
    agree = int(sum(rows["same_choice"]))
    lo, hi = wilson_interval(agree, n) or (0.0, 1.0)
    gf_full, gf_tiny = decode_gflop(ae), decode_gflop(tiny)
    res_json = {
        "benchmark": "tiny_decoder", "machine": platform.platform(), "torch": torch.__version__,
        "command": "python bench/tiny_decoder.py " + shlex.join(argv or sys.argv[1:]), "note": args.note,
        "model": str(args.model), "scenes": n, "tiny_decoder_config": dict(tiny.config),
        "gflop_per_frame": {"full": gf_full, "tiny": gf_tiny},
        "psnr_db": {k: float(np.mean(rows[k])) for k in ("hist_tiny_vs_full", "hist_full_vs_frames",
                                                          "hist_tiny_vs_frames", "pred_tiny_vs_full")},
        "same_choice": {"agree": agree, "n": n, "rate": agree / max(n, 1), "wilson95": [lo, hi]},
        "score_spearman_mean": float(np.nanmean(rows["score_spearman"])),
        "semantic_stage_s_median": {"tiny": statistics.median(rows["semantic_s_tiny"]),
                                    "full": statistics.median(rows["semantic_s_full"])},
        "per_scene": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "tiny_decoder.json").write_text(json.dumps(res_json, indent=1, default=_jsonable))
    (OUT / "tiny_decoder.md").write_text(summary(res_json))
    print(summary(res_json))
    return 0


def _ctx(sc):
    from vidplan_core.runtime.base import PlanningContext

    return PlanningContext(sc.history, sc.poses, sc.instruction, sc.index)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x).__name__)


def summary(r: dict) -> str:
    ps, sc, g = r["psnr_db"], r["same_choice"], r["gflop_per_frame"]
    sem = r["semantic_stage_s_median"]
    cfg = r["tiny_decoder_config"]
    return "\n".join([
        "# tiny_decoder — the distilled decoder for scoring vs the full VAE decoder", "",
        f"Machine: {r['machine']}, torch {r['torch']}, 1 thread. `{r['command']}`"
        + (f" — {r['note']}" if r["note"] else ""), "",
        f"Model `{r['model']}`; tiny decoder: DecoderTiny, {cfg['channels']} channels, blocks "
        f"{list(cfg['num_blocks'])}. {r['scenes']} fresh simulated scenes (seeds 0..{r['scenes'] - 1}, clutter 1, "
        "the arm at home; never trained on); the planning session of planning/planner.yaml on torch.", "",
        "| measure | value |", "|---|---|",
        f"| counted GFLOP per decoded frame: full / tiny | {g['full']:.2f} / {g['tiny']:.2f} "
        f"({g['full'] / g['tiny']:.1f}×) |",
        f"| semantic stage per cycle (decode + scorer, median s): full / tiny | {sem['full']:.3f} / "
        f"{sem['tiny']:.3f} ({sem['full'] / max(sem['tiny'], 1e-9):.1f}×) |",
        f"| PSNR tiny vs full decoder, encoded current frames [dB] | {ps['hist_tiny_vs_full']:.2f} |",
        f"| PSNR tiny vs full decoder, the flow map's predicted frames of every candidate [dB] | "
        f"{ps['pred_tiny_vs_full']:.2f} |",
        f"| PSNR vs the camera frames: full decoder / tiny decoder [dB] | {ps['hist_full_vs_frames']:.2f} / "
        f"{ps['hist_tiny_vs_frames']:.2f} |",
        f"| same chosen candidate (tiny vs full scoring, same inputs and seed) | {sc['agree']}/{sc['n']} = "
        f"{sc['rate']:.2f} [{sc['wilson95'][0]:.2f}, {sc['wilson95'][1]:.2f}] |",
        f"| Spearman of the candidates' scores, tiny vs full (mean over scenes) | {r['score_spearman_mean']:.3f} |",
        "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
