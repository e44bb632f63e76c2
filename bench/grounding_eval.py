"""Grounding benchmark of the grounded semantic scorer: does an instruction pick out the right object, also for
colour–shape combinations never named in training, and also on the decoded frames the planner actually scores?

Data: the evaluation shards of ``vidplan data grounding`` (scene seeds 500–799; training uses seeds ≥ 1000):
``eval_unseen_*`` (the named target is a held-out combination) and ``eval_seen_*`` (training combinations, unseen
scenes), each with whole exterior views (``full``) and with them cropped to the workspace (``crop``, what the demo
bundle's planner sees); ``eval_contact_{unseen,seen}_crop`` are the same scenes with the hand against the target's
side or on its top (rows ``contact_unseen`` / ``contact_seen``: the target partly hidden, as while pushing or touching
it).
Metric (:func:`vidplan_core.training.grounded.evaluate_grounding`): over the views where the target and at least one
other object are visible (≥ 4 label pixels at 96x160), the instruction ("touch / push … / put … the <colour> <shape>")
is grounded correctly when the object with the highest mean map logit over its own pixels is the target; Wilson 95 %
intervals; also per view and the share of maps whose top patch lies on the target, and what the scorer grounds by
(:func:`vidplan_core.training.grounded.evaluate_attributes`: a shape alone, a colour alone, the instruction against
look-alikes of the same colour or of the same shape).
With ``--autoencoder DIR`` the frames are also scored after an encode/decode round trip through that VAE (what the
planner's semantic graph sees: decoded predictions), decoded by ``--decoder DIR`` (the tiny decoder the planner scores
with) or by the VAE's own decoder.

Several ``--scorer`` (each optionally ``LABEL=DIR``) are measured side by side on the same frames.

Run:  python bench/grounding_eval.py --scorer RUN/final [--scorer B=RUN2/final] [--data data/grounded]
      [--autoencoder models/demo/autoencoder --decoder models/demo/tiny_decoder] [--out bench/results/grounding]
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from vidplan_core.models.autoencoder import VideoAutoencoder
from vidplan_core.models.grounded import GroundedScorer
from vidplan_core.models.tiny_decoder import TinyDecoder
from vidplan_core.training.grounded import (
    PhraseBank,
    evaluate_grounding,
    load_shards,
    roundtrip_frames,
)

RESULTS = Path(__file__).parent / "results"


def _scorer_arg(text: str) -> tuple[str, Path]:
    label, _, path = text.rpartition("=")
    return (label or Path(path).parent.name or path), Path(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scorer", required=True, action="append", type=_scorer_arg,
                    help="trained GroundedScorer directory, or LABEL=DIR; repeat to compare side by side")
    ap.add_argument("--data", default=Path("data/grounded"), type=Path)
    ap.add_argument("--autoencoder", type=Path, default=None, help="also score VAE round-tripped frames")
    ap.add_argument("--decoder", type=Path, default=None, help="tiny decoder of the round trip (default: the VAE's)")
    ap.add_argument("--views", default="full,crop", help="exterior view kinds to score (full, crop)")
    ap.add_argument("--image-pool", type=int, default=2, help="average-pool the 96x160 frames by this (2: 48x80)")
    ap.add_argument("--pool", action="append", default=[], metavar="LABEL=N",
                    help="--image-pool for one scorer (e.g. one trained at 96x160: N=1); repeatable")
    ap.add_argument("--note", default="", help="free text for the summary (e.g. what else ran)")
    ap.add_argument("--out", type=Path, default=RESULTS / "grounding")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    scorers = {label: GroundedScorer.from_pretrained_dir(path).eval() for label, path in a.scorer}
    if len(scorers) != len(a.scorer):
        raise SystemExit("--scorer labels must differ (give LABEL=DIR)")
    pools = {label: a.image_pool for label in scorers}
    for item in a.pool:
        label, _, n = item.rpartition("=")
        if label not in scorers or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--pool {item!r}: expected LABEL=N with LABEL one of {sorted(scorers)} and N >= 1")
        pools[label] = int(n)
    ae = VideoAutoencoder.load(a.autoencoder).eval() if a.autoencoder is not None else None
    dec = TinyDecoder.load(a.decoder).eval() if a.decoder is not None else None
    rows = []
    for split in ("unseen", "seen", "contact_unseen", "contact_seen"):
        for view_kind in a.views.split(","):
            shard = a.data / f"eval_{split}_{view_kind}.npz"
            if split.startswith("contact") and not shard.is_file():
                if view_kind == "crop":  # data sets made before contact poses existed have none
                    print(f"{shard} does not exist: no contact rows (rerun vidplan data grounding to add them)")
                continue
            data = load_shards(shard)
            bank = PhraseBank(data["colours"], data["shapes"], [])
            variants = [("raw", data)]
            if ae is not None:
                variants.append(("vae", {**data, "frames": roundtrip_frames(data["frames"], ae, dec, a.image_pool,
                                                                             full_size=True)}))
            for label, sc in scorers.items():
                sent = sc.text_encoder.encode(bank.texts)
                for frames, d in variants:
                    r = evaluate_grounding(sc, d, bank, sent, image_pool=pools[label], attributes=True)
                    rows.append({"scorer": label, "split": split, "views": view_kind, "frames": frames,
                                 "image_pool": pools[label], **r})
                    print(f"{label:12s} {split:6s} {view_kind:4s} {frames:3s}: {r['accuracy']:.3f} "
                          f"({r['correct']}/{r['n']}, [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]) per view "
                          + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in r["per_view"].items()), flush=True)
    meta = {}
    for label, path in a.scorer:
        train_eval = path / "grounding_eval.json"
        rep = json.loads(train_eval.read_text()) if train_eval.is_file() else {}
        meta[label] = {"path": str(path), "config": json.loads((path / "config.json").read_text()),
                       "held_out": rep.get("held_out"), "roundtrip": rep.get("roundtrip"), "report": bool(rep)}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip() != ""

    def pick(label: str, frames: str) -> dict | None:
        view = "crop" if "crop" in a.views.split(",") else a.views.split(",")[0]
        return next((r for r in rows if r["scorer"] == label and r["split"] == "unseen" and r["views"] == view
                     and r["frames"] == frames), None)

    goals = {label: {"grounding_unseen_acc": pick(label, "raw")["accuracy"],
                     "grounding_unseen_acc >= 0.90": pick(label, "raw")["accuracy"] >= 0.9,
                     "grounding_unseen_decoded_acc": (pick(label, "vae") or {}).get("accuracy")}
             for label in scorers}
    res = {"benchmark": "grounding", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "command": "python bench/grounding_eval.py " + " ".join(sys.argv[1:]),
           "commit": commit, "dirty": dirty, "note": a.note, "scorers": meta,
           "autoencoder": a.autoencoder and str(a.autoencoder), "decoder": a.decoder and str(a.decoder),
           "image_size": [96 // a.image_pool, 160 // a.image_pool], "rows": rows, "wall_s": time.time() - t0,
           "goal": goals}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    held = next((m["held_out"] for m in meta.values() if m["held_out"]), None)
    lines = ["# Grounding of instructions by the grounded semantic scorer", "",
             f"Machine: {res['machine']} ({res['cpu_count']} CPUs), torch {res['torch']}, CPU. Commit `{commit}`"
             + (" (with uncommitted changes)" if dirty else "") + ". " + a.note, "",
             f"Command: `{res['command']}` ({res['wall_s'] / 60:.1f} min)", "",
             "Scorers (frozen all-MiniLM-L6-v2 sentence encoder + image tower; views at "
             f"{res['image_size'][0]}x{res['image_size'][1]} unless named):", ""]
    for label, m in meta.items():
        c = m["config"]
        rt = m["roundtrip"]
        if rt:
            trained = (f"; trained with {rt['prob']:.0%} of items decoded through {rt['autoencoder']} / "
                       f"{rt['decoder'] or 'its decoder'}")
        elif m["report"]:
            trained = "; trained on camera frames only"
        else:
            trained = "; no training report (grounding_eval.json) in the directory"
        lines.append(f"- `{label}`: `{m['path']}` — channels {c['channels']}, embed {c['embed_dim']}, text projection "
                     + ("linear" if c.get("text_hidden", 256) == 0 else f"MLP ({c.get('text_hidden', 256)} hidden)")
                     + trained
                     + (f"; attribute-factorised tower ({c['colour_channels']} colour channels)"
                        if c.get("colour_channels") else "")
                     + (f"; views at {96 // pools[label]}x{160 // pools[label]}" if pools[label] != a.image_pool
                        else ""))
    lines += ["", f"Held-out combinations (never named in training, never present in training scenes): "
              f"{', '.join(' '.join(p) for p in held or [])}.", "",
              "Accuracy = the named object has the highest mean map logit among the visible objects (views with the "
              "target and ≥ 1 other object visible; the three task templates); Wilson 95 % intervals. "
              "`full`: whole exterior views; `crop`: exterior views cut to the workspace (the demo bundle's); the "
              "wrist view is never cropped. `vae`: the same frames after an encode/decode round trip through "
              f"{a.autoencoder}, decoded by {a.decoder or 'its own decoder'} (what the planner's semantic reward "
              "scores: decoded predictions). `contact_*`: the same scenes with the hand against the target's side at "
              "push height or on its top (the target partly hidden, as while pushing or touching it).", "",
              "`top patch on target`: the map's highest patch lies on the named object; `tracked`: that, and the "
              "map is confident there (σ(max logit) ≥ 0.5), which the planner's push-progress term needs to follow "
              "the object (score.track_confidence).", "",
              "Attributes (`evaluate_attributes`, the same views, the target against its rivals by mean map logit): "
              "`shape alone`: \"the <shape>\" against the objects of other shapes; `colour alone`: \"the <colour> "
              "object\" against other colours; `vs same colour`: the instruction against look-alikes of the target's "
              "colour in another shape (only shape decides); `vs same shape`: against objects of its shape in other "
              "colours.", "",
              "| scorer | combinations | exterior views | frames | accuracy | left | right | wrist | top patch on "
              "target | tracked | shape alone | colour alone | vs same colour | vs same shape |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pv = {k: f"{v['accuracy']:.2f} (n={v['n']})" for k, v in r["per_view"].items()}
        lines.append(f"| {r['scorer']} | {r['split']} | {r['views']} | {r['frames']} | {r['accuracy']:.3f} "
                     f"({r['correct']}/{r['n']}, [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]) | {pv.get('left', '–')} | "
                     f"{pv.get('right', '–')} | {pv.get('wrist', '–')} | {r['top_patch_accuracy']:.2f} | "
                     f"{r['tracked']:.2f} | "
                     + " | ".join(f"{x['accuracy']:.2f} ({x['correct']}/{x['n']})" for x in r["attributes"].values())
                     + " |")
    lines += ["", "Goal (grounding of unseen colour–shape combinations ≥ 90 %, camera frames, cropped views): "
              + "; ".join(f"{k} {g['grounding_unseen_acc']:.3f} → "
                          + ("met" if g["grounding_unseen_acc >= 0.90"] else "not met") for k, g in goals.items()), ""]
    a.out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {a.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
