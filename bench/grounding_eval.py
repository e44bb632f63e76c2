"""Grounding benchmark of the grounded semantic scorer: does an instruction pick out the right object, also for
colour–shape combinations never named in training?

Data: the evaluation shards of ``vidplan data grounding`` (scene seeds 500–799; training uses seeds ≥ 1000):
``eval_unseen_*`` (the named target is a held-out combination) and ``eval_seen_*`` (training combinations, unseen
scenes), each with whole exterior views (``full``) and with them cropped to the workspace (``crop``).
Metric (:func:`vidplan_core.training.grounded.evaluate_grounding`): over the views where the target and at least one
other object are visible (≥ 4 label pixels at 96x160), the instruction ("touch / push … / put … the <colour> <shape>")
is grounded correctly when the object with the highest mean map logit over its own pixels is the target; Wilson 95 %
intervals; also per view and the share of maps whose top patch lies on the target.
With ``--autoencoder DIR`` the frames are also scored after an encode/decode round trip through that VAE (what the
planner's semantic graph sees: decoded predictions).

Run:  python bench/grounding_eval.py --scorer RUN/final [--data data/grounded] [--autoencoder models/demo/autoencoder]
Writes bench/results/grounding.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidplan_core.models.grounded import GroundedScorer
from vidplan_core.training.grounded import PhraseBank, evaluate_grounding, load_shards

RESULTS = Path(__file__).parent / "results"


def vae_roundtrip(data: dict, ae_dir: Path, pool: int) -> dict:
    """Frames through encode → decode of the bundle's autoencoder at its view size (views pooled first)."""
    from vidplan_core.models.autoencoder import VideoAutoencoder

    ae = VideoAutoencoder.load(ae_dir).eval()
    vh, vw = ae.config.view_height, ae.config.view_width
    f = torch.from_numpy(data["frames"]).permute(0, 1, 4, 2, 3).float() / 255.0  # (N, 3, 3, H, W)
    n = f.shape[0]
    f = torch.nn.functional.avg_pool2d(f.flatten(0, 1), pool).reshape(n, 3, 3, f.shape[-2] // pool, -1)
    if f.shape[-2:] != (vh, vw):
        raise SystemExit(f"autoencoder views are {vh}x{vw}, pooled frames {tuple(f.shape[-2:])}")
    out = []
    with torch.no_grad():
        for i in range(0, n, 32):
            out.append(ae.decode(ae.encode(f[i:i + 32])).clamp(0, 1))
    dec = torch.cat(out)  # (N, 3, 3, vh, vw)
    up = torch.nn.functional.interpolate(dec.flatten(0, 1), scale_factor=pool, mode="nearest")
    d = dict(data)
    d["frames"] = (up.reshape(n, 3, 3, vh * pool, vw * pool).permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(
        np.uint8)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scorer", required=True, type=Path, help="trained GroundedScorer directory")
    ap.add_argument("--data", default=Path("data/grounded"), type=Path)
    ap.add_argument("--autoencoder", type=Path, default=None, help="also score VAE round-tripped frames")
    ap.add_argument("--image-pool", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "grounding")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    sc = GroundedScorer.from_pretrained_dir(a.scorer).eval()
    rows = []
    for split in ("unseen", "seen"):
        for view_kind in ("full", "crop"):
            data = load_shards(a.data / f"eval_{split}_{view_kind}.npz")
            bank = PhraseBank(data["colours"], data["shapes"], [])
            sent = sc.text_encoder.encode(bank.texts)
            variants = [("raw", data)]
            if a.autoencoder is not None and view_kind == "full":
                variants.append(("vae", vae_roundtrip(data, a.autoencoder, a.image_pool)))
            for frames, d in variants:
                r = evaluate_grounding(sc, d, bank, sent, image_pool=a.image_pool)
                rows.append({"split": split, "views": view_kind, "frames": frames, **r})
                print(f"{split:6s} {view_kind:4s} {frames:3s}: {r['accuracy']:.3f} ({r['correct']}/{r['n']}, "
                      f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]) per view "
                      + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in r["per_view"].items()), flush=True)
    cfg = json.loads((a.scorer / "config.json").read_text())
    train_eval = a.scorer / "grounding_eval.json"
    held = json.loads(train_eval.read_text())["held_out"] if train_eval.is_file() else None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    unseen = next(r for r in rows if r["split"] == "unseen" and r["views"] == "crop" and r["frames"] == "raw")
    res = {"benchmark": "grounding", "machine": platform.platform(), "cpu_count": __import__("os").cpu_count(),
           "torch": torch.__version__, "command": "python bench/grounding_eval.py " + " ".join(sys.argv[1:]),
           "commit": commit, "scorer": str(a.scorer), "scorer_config": cfg, "held_out": held,
           "image_size": [96 // a.image_pool, 160 // a.image_pool], "rows": rows, "wall_s": time.time() - t0,
           "goal": {"grounding_unseen_acc >= 0.90": unseen["accuracy"] >= 0.9,
                    "grounding_unseen_acc": unseen["accuracy"]}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    lines = ["# Grounding of instructions by the grounded semantic scorer", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs), torch {res['torch']}, CPU. Commit `{commit}`.", "",
             f"Command: `{res['command']}`", "",
             f"Scorer `{a.scorer}`: frozen all-MiniLM-L6-v2 sentence encoder + image tower "
             f"(channels {cfg['channels']}, embed {cfg['embed_dim']}), views at {res['image_size'][0]}x"
             f"{res['image_size'][1]}. Held-out combinations (never named in training, never present in training "
             f"scenes): {', '.join(' '.join(p) for p in held or [])}.", "",
             "Accuracy = the named object has the highest mean map logit among the visible objects (views with the "
             "target and ≥ 1 other object visible; the three task templates); Wilson 95 % intervals. "
             "`full`: whole exterior views; `crop`: exterior views cut to the workspace; the wrist view is never "
             "cropped. `vae`: frames after an encode/decode round trip through the demo autoencoder "
             "(what the planner scores).", "",
             "| combinations | exterior views | frames | accuracy | left | right | wrist | top patch on target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pv = {k: f"{v['accuracy']:.2f} (n={v['n']})" for k, v in r["per_view"].items()}
        lines.append(f"| {r['split']} | {r['views']} | {r['frames']} | {r['accuracy']:.3f} ({r['correct']}/{r['n']}, "
                     f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]) | {pv.get('left', '–')} | {pv.get('right', '–')} | "
                     f"{pv.get('wrist', '–')} | {r['top_patch_accuracy']:.2f} |")
    lines += ["", f"Goal (issue: grounding of unseen colour–shape combinations ≥ 90 %, cropped views): "
              f"{unseen['accuracy']:.3f} → {'met' if unseen['accuracy'] >= 0.9 else 'not met'}.", ""]
    a.out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {a.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
