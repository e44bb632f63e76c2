"""Does the imagined object move as the real one does? Object motion per candidate action, open loop, on push scenes
the demo models never trained on (a diagnostic of the world model: it needs the simulator's state).

The scripted expert pushes the target (``--seed`` .. scenes, ``--clutter`` levels, push tasks drawn as the
closed-loop evaluation draws them). At every ``--every``-th model-rate instant while the expert's hand is within
``--contact-m`` of the target (horizontally, and below ``--contact-height-m`` above it), the scene is branched into
candidates that share the history: the expert's own next chunk, and straight hand motions in ``--headings``
horizontal directions at the planner's basis speed (orientation and gripper held; integrated through the Jacobian as
the planner's basis proposals are, and bounded by its workspace). Each candidate is H model steps. For every
candidate three numbers, all the target's motion along the task's push direction from the first to the last future
frame [m]:

- ``true``: from the simulator state (privileged), the candidate rolled out through the executor path
  (:class:`vidplan_sim.oracle.OracleBackend`);
- ``read_true``: the planner's push-displacement reading (:func:`vidplan_core.planning.scoring.rollout_displacement`,
  the ``score.push_displacement_weight`` term) on the *rendered* true future, encoded and scored by the bundle:
  what a perfect world model would hand the planner;
- ``read_imagined``: the same reading on the world model's rollout (the product's imagined future).

The reader is given the target's true position and the asked-for direction, so what is measured is the world model
and the reading, not the planner's localisation. Per probe (one branched instant) where the true motions differ by
at least ``--min-spread-m``: Spearman's rank correlation of each reading with ``true`` over the candidates, whether
the candidate the reading ranks first moves the target within ``--tol-m`` of the best one ("top-1"), and the mean
absolute error [m]. A world model that ignores its actions gives every candidate the same imagined motion: a rank
correlation of 0 and top-1 at the rate of picking a candidate at random (also reported).

Run:  python bench/object_motion.py --model models/demo --backend onnxruntime --seed 55 --scenes 6
      [--clutter 0,1,2,3] [--set flow_steps=4] [--alt push_track_step_m=0] [--out bench/results/object_motion]
Writes OUT.json (every probe's candidates), OUT.md and OUT.png (true vs read motion per candidate). Resumable: finished
scenes are kept in OUT.partial.jsonl until the run is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from vidplan_app.jobs.closed_loop import SimExecutor, observe_env
from vidplan_app.jobs.closed_loop_config import ClosedLoopConfig, EpisodeSpec, episode_specs
from vidplan_app.jobs.closed_loop_policies import ScriptedNominalPolicy, load_backends
from vidplan_app.jobs.generate import GenerateConfig, episode_draw
from vidplan_core.execution import IKOptions
from vidplan_core.kinematics import PandaKinematics
from vidplan_core.planning.config import parse_override
from vidplan_core.planning.proposals import clip_to_workspace, integrate_twist
from vidplan_core.planning.scoring import rollout_displacement
from vidplan_core.runtime.base import PlanningContext
from vidplan_core.spaces import CONTROL_RATE_HZ, EEChunk, continuous_euler, model_stride, wrap_angle
from vidplan_sim.env import SimEnv
from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert
from vidplan_sim.oracle import OracleBackend
from vidplan_sim.scene import load_scene_config

RESULTS = Path(__file__).parent / "results"
READINGS = ("read_imagined", "read_true", "read_imagined_alt", "read_true_alt")


def heading_chunks(kin, q: np.ndarray, pose: np.ndarray, horizon: int, speed: float, headings: int, pc) -> np.ndarray:
    """(headings, H, 7) straight horizontal hand motions at ``speed`` [m/s] from joints ``q`` (orientation and the
    gripper command of ``pose`` held), integrated as the planner's basis proposals are."""
    stride, dt = model_stride(), 1.0 / CONTROL_RATE_HZ
    out = []
    for k in range(headings):
        a = 2.0 * np.pi * k / headings
        ee = integrate_twist(kin, kin.clip(q), speed * np.array([np.cos(a), np.sin(a), 0.0]), horizon, stride, dt,
                             velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                             workspace_min=pc.workspace_min, workspace_max=pc.workspace_max,
                             euler_center=np.asarray(pose[3:6]), joint_margin=pc.joint_margin_rad)
        out.append(np.concatenate([ee, np.full((horizon, 1), pose[6])], axis=1))
    return np.stack(out)


def probe_metrics(true: np.ndarray, reading: np.ndarray, tol: float) -> dict:
    """Rank correlation, top-1 (the reading's first choice moves the target within ``tol`` [m] of the best) and
    mean absolute error [m] of one probe's candidates (N,)."""
    rho = _rho(true, reading)  # a constant reading ranks nothing: 0
    return {"spearman": rho, "top1": bool(true[int(np.argmax(reading))] >= true.max() - tol),
            "mae_m": float(np.mean(np.abs(true - reading)))}


def run_scene(spec, env, kin, loaded, cfg, a) -> list[dict]:
    """The expert's push episode of ``spec``, branched at its contact instants; one dict per probe."""
    env.reset(seed=spec.seed, clutter=spec.clutter, task=spec.instruction)
    pcfg = cfg.planning("vidplan")
    pc, score_cfg = pcfg.session.proposals, pcfg.session.gradopt.score
    alt_cfg = score_cfg.model_copy(update=a.alt) if a.alt else None
    learned = loaded.backends["default"]
    views, horizon, n_hist = loaded.views, int(learned.horizon), int(learned.num_history)
    oracle = OracleBackend(env, kin, limits=pcfg.limits, ik=IKOptions(), learned=learned, views=views)
    u = np.array([0.0, env.task.push_sign, 0.0])  # the asked-for motion: left is +y
    expert = ScriptedExpert(env.task, ExpertOptions(settle_steps=0), seed=spec.seed)
    clock = {"k": 0}
    nominal = ScriptedNominalPolicy(expert.plan(SceneObservation.from_env(env)), horizon, lambda: clock["k"])
    stride, target = model_stride(), env.layout.target.name

    executor = SimExecutor(env, kin, pcfg.limits)
    history = deque([observe_env(env, views)] * n_hist, maxlen=n_hist)
    probes, m, contacts = [], 0, 0
    while not nominal.done() and not env.task_success()[0]:
        tcp, obj = env.ee_pose()[:3, 3], env.object_pose(target)[:3]
        near = np.linalg.norm(tcp[:2] - obj[:2]) <= a.contact_m and tcp[2] - obj[2] <= a.contact_height_m
        pose = env.ee_action()
        expert_chunk = nominal.infer()
        expert_chunk[:, 3:6] = wrap_angle(expert_chunk[:, 3:6], pose[3:6])
        # the expert pushes at the workspace box's floor; rounding may put it a hair below
        expert_chunk = clip_to_workspace(expert_chunk, pc.workspace_min, pc.workspace_max)
        if near:
            contacts += 1
        if near and (contacts - 1) % a.every == 0 and len(probes) < a.max_probes:
            poses = continuous_euler(np.stack([p for _, p in history]))
            cands = np.concatenate([expert_chunk[None], heading_chunks(kin, env.joint_positions(), pose, horizon,
                                                                       pc.basis_speed_mps, a.headings, pc)])
            ctx = PlanningContext(np.stack([f for f, _ in history]), poses, spec.instruction,
                                  seed=spec.seed * 1000 + m)
            oracle.set_context(ctx)  # also the learned backend's context, which its rollout below uses
            out_true = oracle.rollout(cands)
            true_pos = oracle.last_target  # (N, H, 3)
            out_imag = learned.rollout(cands.astype(np.float32))
            read = {}
            for suffix, sc in (("", score_cfg), ("_alt", alt_cfg)):
                if sc is None:
                    continue
                args = (sc, learned.map_views, learned.view_geometry, obj, u)
                read["read_true" + suffix] = rollout_displacement(out_true, *args)[:, -1]
                read["read_imagined" + suffix] = rollout_displacement(out_imag, *args)[:, -1]
            true = (true_pos[:, -1, :2] - true_pos[:, 0, :2]) @ u[:2]
            probes.append({"seed": spec.seed, "clutter": spec.clutter, "instruction": spec.instruction, "step": m,
                           "tcp_target_m": round(float(np.linalg.norm(tcp[:2] - obj[:2])), 4),
                           "labels": ["expert", *[f"heading{int(360 * k / a.headings)}" for k in range(a.headings)]],
                           "true": [round(float(v), 5) for v in true],
                           **{k: [round(float(x), 5) for x in v] for k, v in read.items()},
                           "rejected": list(oracle.last_problems)})
        # the expert's next model step, through the executor path (as the closed-loop 'scripted' variant runs it)
        grip, _ = executor.start(EEChunk.from_actions(expert_chunk), 1)
        if len(grip):
            env.set_gripper(float(grip[0]))
        for _ in range(stride):
            env.step(1.0 / CONTROL_RATE_HZ)
            clock["k"] += 1
        history.append(observe_env(env, views))
        m += 1
    return probes


def summarize(probes: list[dict], a) -> dict:
    """Per reading: mean Spearman, top-1 rate and MAE over the probes whose true motions spread ≥ min_spread_m,
    with a bootstrap 95 % interval of the mean Spearman; the random top-1 rate; the pooled true motion."""
    use = [p for p in probes if np.ptp(p["true"]) >= a.min_spread_m]
    rng = np.random.default_rng(0)
    out = {"probes": len(probes), "probes_used": len(use), "scenes": len({(p["seed"], p["clutter"]) for p in probes})}
    for r in [r for r in READINGS if use and r in use[0]]:
        ms = [probe_metrics(np.array(p["true"]), np.array(p[r]), a.tol_m) for p in use]
        rho = np.array([x["spearman"] for x in ms])
        boot = [float(np.mean(rng.choice(rho, len(rho)))) for _ in range(2000)] if len(rho) else [np.nan]
        out[r] = {"spearman_mean": round(float(np.mean(rho)), 3) if len(rho) else None,
                  "spearman_ci95": [round(float(np.percentile(boot, 2.5)), 3),
                                    round(float(np.percentile(boot, 97.5)), 3)],
                  "top1_rate": round(float(np.mean([x["top1"] for x in ms])), 3) if ms else None,
                  "mae_m": round(float(np.mean([x["mae_m"] for x in ms])), 4) if ms else None,
                  "reading_spread_m": round(float(np.mean([np.ptp(p[r]) for p in use])), 4) if use else None}
    out["top1_random"] = round(float(np.mean([np.mean(np.array(p["true"]) >= max(p["true"]) - a.tol_m)
                                              for p in use])), 3) if use else None
    out["true_spread_m"] = round(float(np.mean([np.ptp(p["true"]) for p in use])), 4) if use else None
    out["expert_true_m"] = round(float(np.mean([p["true"][0] for p in use])), 4) if use else None
    return out


def _rho(true, reading) -> float:
    return float(spearmanr(true, reading).statistic) if np.ptp(reading) > 0 else 0.0


def paired_difference(probes: list[dict], baseline: list[dict], a) -> dict:
    """The imagined reading's Spearman here minus in ``baseline`` (another run's probes: the same scenes and branch
    points, e.g. another flow-step count), over the branch points both have and use, with a bootstrap 95 % interval."""
    base = {(p["seed"], p["clutter"], p["step"]): p for p in baseline}
    d = [_rho(p["true"], p["read_imagined"]) - _rho(b["true"], b["read_imagined"]) for p in probes
         if (b := base.get((p["seed"], p["clutter"], p["step"]))) is not None and np.ptp(p["true"]) >= a.min_spread_m
         and np.allclose(p["true"], b["true"], atol=1e-4)]
    if not d:
        return {"pairs": 0}
    rng = np.random.default_rng(0)
    boot = [float(np.mean(rng.choice(d, len(d)))) for _ in range(4000)]
    return {"pairs": len(d), "spearman_difference": round(float(np.mean(d)), 3),
            "ci95": [round(float(np.percentile(boot, 2.5)), 3), round(float(np.percentile(boot, 97.5)), 3)]}


def plot(res: dict, path: Path) -> None:
    """True motion vs each reading, one point per candidate of every probe used, one panel per reading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use = [p for p in res["probes"] if np.ptp(p["true"]) >= res["settings"]["min_spread_m"]]
    shown = [r for r in READINGS if use and r in use[0]]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.6), squeeze=False)
    true = np.concatenate([p["true"] for p in use]) * 100
    for ax, r in zip(axes[0], shown, strict=True):
        ax.scatter(true, np.concatenate([p[r] for p in use]) * 100, s=8, alpha=0.5)
        lim = [min(true.min(), -5.0), max(true.max(), 15.0)]
        ax.plot(lim, lim, "k--", lw=0.8)
        x = res["summary"][r]
        ax.set_title(f"{r}\nSpearman {x['spearman_mean']}, top-1 {x['top1_rate']}", fontsize=9)
        ax.set_xlabel("true motion the asked way [cm]")
        ax.set_ylabel("read motion [cm]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict, png: str | None = None) -> str:
    s = res["summary"]
    L = ["# Object motion per candidate action: imagined vs true (push scenes, open loop)", "",
         "Diagnostic (privileged: the simulator's state). " + __doc__.split("\n\n")[1].replace("\n", " "), "",
         f"Machine: {res['machine']} ({res['cpu_count']} CPUs), CPU. Commit `{res['commit']}`"
         + (" (with uncommitted changes)" if res["dirty"] else "") + f". Model `{res['model']}` ({res['backend']}).",
         "", f"Command: `{res['command']}` ({res['wall_s'] / 60:.1f} min). Planner overrides: "
         f"{', '.join(res['settings']['overrides']) or 'none'} (flow steps K = {res['flow_steps']}).", "",
         f"{s['scenes']} scenes, {s['probes']} probes, {s['probes_used']} with true motions spreading ≥ "
         f"{res['settings']['min_spread_m'] * 100:.0f} cm over the {res['settings']['headings'] + 1} candidates "
         f"(mean spread {s['true_spread_m']} m; the expert's own chunk moves the target {s['expert_true_m']} m "
         "the asked way).", "",
         "| reading | Spearman with true (mean [95 % bootstrap]) | top-1 (best within "
         f"{res['settings']['tol_m'] * 100:.0f} cm) | MAE [m] | mean spread of the reading [m] |",
         "|---|---|---|---|---|"]
    alt = ", ".join(f"{k}={v}" for k, v in res["settings"]["alt"].items())
    names = {"read_imagined": "imagined frames (the world model)", "read_true": "true frames (a perfect world model)",
             "read_imagined_alt": f"imagined frames, reading with {alt}",
             "read_true_alt": f"true frames, reading with {alt}"}
    for r in [r for r in READINGS if r in s]:
        x = s[r]
        L.append(f"| {names[r]} | {x['spearman_mean']} {x['spearman_ci95']} | {x['top1_rate']} | {x['mae_m']} | "
                 f"{x['reading_spread_m']} |")
    L += [f"| a reading that ignores the action | 0 | {s['top1_random']} (random choice) | | 0 |", ""]
    if "paired_vs_baseline" in s:
        b = s["paired_vs_baseline"]
        L += [f"Paired with `{b['baseline']}` (the same branch points): imagined Spearman here minus there "
              f"{b.get('spearman_difference')} {b.get('ci95')} over {b['pairs']} branch points (95 % bootstrap).", ""]
    if res.get("note"):
        L += [res["note"], ""]
    if png:
        L += [f"![true vs read motion per candidate]({png})", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    ap.add_argument("--seed", type=int, default=55, help="first scene seed (the demo models trained on seeds ≥ 1000)")
    ap.add_argument("--scenes", type=int, default=6, help="scene seeds per clutter level")
    ap.add_argument("--clutter", default="0,1,2,3", help="clutter levels, comma-separated")
    ap.add_argument("--training-scenes", type=int, default=0, metavar="N",
                    help="instead of fresh scenes: the push scenes among the first N episodes `vidplan data generate "
                         "--seed 1000` drew (make demo-models' training data: N = 90), probed with the noiseless "
                         "expert — does the model follow the actions where it was trained?")
    ap.add_argument("--headings", type=int, default=8, help="straight hand motions, evenly spaced headings")
    ap.add_argument("--every", type=int, default=2, help="probe every k-th model step in contact range")
    ap.add_argument("--max-probes", type=int, default=6, help="probes per scene at most")
    ap.add_argument("--contact-m", type=float, default=0.08, help="horizontal hand–target distance of a probe [m]")
    ap.add_argument("--contact-height-m", type=float, default=0.06, help="hand at most this high above the target")
    ap.add_argument("--min-spread-m", type=float, default=0.01, help="probes whose true motions spread less are "
                                                                      "left out of the correlations [m]")
    ap.add_argument("--tol-m", type=float, default=0.01, help="top-1 tolerance [m]")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="planner override (as closed_loop_eval.py's), e.g. flow_steps=4")
    ap.add_argument("--alt", action="append", default=[], metavar="KEY=VALUE",
                    help="also read the motions with this score setting changed (a ScoreConfig field; repeatable), "
                         "e.g. push_track_step_m=0")
    ap.add_argument("--baseline", default=None, metavar="JSON",
                    help="another run's OUT.json on the same scenes: report the imagined reading's paired Spearman "
                         "difference (this run − that one)")
    ap.add_argument("--out", default=str(RESULTS / "object_motion"))
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    a.alt = {k: json.loads(v) for k, _, v in (x.partition("=") for x in a.alt)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = ClosedLoopConfig(model=a.model, backend=a.backend, seed=a.seed, episodes=a.scenes, tasks=["push"],
                           clutter=[int(c) for c in a.clutter.split(",")], variants=["vidplan"],
                           overrides=dict(parse_override(o) for o in a.overrides))
    scene = load_scene_config()
    specs = episode_specs(cfg, scene.colour_names, scene.shape_names)
    if a.training_scenes:
        gen = GenerateConfig(seed=1000)
        draws = [episode_draw(gen, i, scene.colour_names, scene.shape_names) for i in range(a.training_scenes)]
        specs = [EpisodeSpec(seed=d["seed"], clutter=d["clutter"], kind="push", instruction=d["task"].instruction)
                 for d in draws if d["task"].kind == "push"]
    partial = out.with_suffix(".partial.jsonl")
    done = [json.loads(x) for x in partial.read_text().splitlines()] if partial.exists() else []
    finished = {(d["seed"], d["clutter"]) for d in done}
    t0 = time.perf_counter()
    # the code that runs is what is checked out now (edits during a run of minutes do not make it dirty)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    env, kin = SimEnv(width=cfg.width, height=cfg.height), PandaKinematics()
    loaded = load_backends(cfg, need_no_uq=False)
    t_load = time.perf_counter() - t0
    for spec in tqdm(specs, desc="push scenes", unit="scene"):
        if (spec.seed, spec.clutter) in finished:
            continue
        t_scene = time.perf_counter()
        probes = run_scene(spec, env, kin, loaded, cfg, a)
        done.append({"seed": spec.seed, "clutter": spec.clutter, "probes": probes,
                     "wall_s": round(time.perf_counter() - t_scene, 1)})
        with partial.open("a") as f:
            f.write(json.dumps(done[-1]) + "\n")
    probes = [p for d in done for p in d["probes"]]
    res = {"benchmark": "object_motion", "machine": platform.platform(), "cpu_count": os.cpu_count(),
           "command": "python bench/object_motion.py " + " ".join(sys.argv[1:]), "commit": commit, "dirty": dirty,
           "model": a.model, "backend": a.backend, "flow_steps": cfg.planning("vidplan").flow_steps, "note": a.note,
           "wall_s": round(t_load + sum(d.get("wall_s", 0.0) for d in done), 1),
           "settings": {k: v for k, v in vars(a).items() if k not in ("out", "note")},
           "summary": summarize(probes, a), "probes": probes}
    if a.baseline:
        res["summary"]["paired_vs_baseline"] = {"baseline": a.baseline, **paired_difference(
            probes, json.loads(Path(a.baseline).read_text())["probes"], a)}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res, out.with_suffix(".png").name))
    plot(res, out.with_suffix(".png"))
    partial.unlink()  # everything it held is in OUT.json
    print(markdown(res))


if __name__ == "__main__":
    main()
