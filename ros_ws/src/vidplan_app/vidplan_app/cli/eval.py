"""``vidplan eval bag BAG --model DIR`` (alias ``vidplan eval-bag``): evaluate a model bundle on a recording.

No ROS needed. Exit codes: 0 complete; 2 bad input (missing/unreadable bag, missing topic, mismatched image
sizes, too short, model that does not load; the message names bag, topic and problem); 3 partial: the bag was
truncated or corrupt and the part before the damage was evaluated (metrics.json and report.html are written and
say so).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vidplan_app.cli import app
from vidplan_core.config import ConfigError
from vidplan_core.eval.bag_config import EvalBagError
from vidplan_core.eval.calibration import calibrate_uq

eval_app = typer.Typer(help="Evaluation: a model on a recorded bag (bag); closed-loop in simulation (sim).",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _success(text: str | None) -> bool | None:
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("true", "1", "yes", "success"):
        return True
    if t in ("false", "0", "no", "failure"):
        return False
    raise typer.BadParameter(f"{text!r}: expected true or false")


def _run_eval_bag(bag: Path, model: Path, out: Path | None, topic_map: Path | None, flow_steps: int, max_steps: int,
                  device: str, seed: int, gamma: float | None, success: str | None, shadow: bool, shadow_every: int,
                  shadow_max: int, examples: int, salvage: bool, progress: bool,
                  planner_config: Path | None = None, teacher_steps: int = 0, teacher: Path | None = None,
                  controllability: bool = True, episode: int = 0, mapping: str = "droid") -> None:
    from vidplan_core.data.topic_map import load_topic_map
    from vidplan_core.eval.bag_eval import EXIT_BAD_INPUT, EvalBagConfig, EvalBagError, eval_bag

    out = out or Path(f"eval-{bag.resolve().name}")
    try:
        tm = load_topic_map(topic_map)
        cfg = EvalBagConfig(flow_steps=flow_steps, max_steps=max_steps, device=device, seed=seed, gamma=gamma,
                            success=_success(success), shadow=shadow, shadow_every=shadow_every,
                            shadow_max=shadow_max, examples=examples, salvage=salvage, progress=progress,
                            planner=planner_config, teacher_steps=teacher_steps,
                            teacher_dir=str(teacher) if teacher else None, controllability=controllability,
                            episode=episode, mapping=mapping)
        res = eval_bag(bag, model, out, tm, cfg)
    except (EvalBagError, ConfigError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    m = res.metrics
    for w in m["warnings"]:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    p = m["prediction"]
    lines = [f"{m['status']}: {m['windows']} windows of {bag} ({m['input']['frames']} frames at "
             f"{m['input']['fps']:g} Hz), K={m['settings']['flow_steps']}",
             f"  prediction: PSNR {p['psnr_db_mean']:.2f} dB, SSIM {p['ssim_mean']:.3f}, "
             f"latent MSE {p['latent_mse']['mean']:.4g}"]
    mv = p.get("moving_pixels") or {}
    if mv.get("gain_db_mean") is not None:
        lines.append(f"  on the pixels that change: {mv['gain_db_mean']:+.2f} dB vs copying the current frame "
                     f"(per step: {', '.join(f'{g:+.2f}' for g in mv['gain_db'] if g is not None)})")
    if m["uq"]:
        c = m["uq"]["entropy_error_correlation"]["per_element"]
        lines.append(f"  UQ: ECE {m['uq']['ece']:.4f}" + (f", entropy–error Pearson {c['pearson_r']:.3f} "
                                                          f"(p={c['pearson_p']:.2g})" if c else ""))
    if m["reward"]:
        r = m["reward"]["on_predicted"]
        lines.append(f"  reward head: bin accuracy {r['bin_accuracy']:.3f}, ECE {r['ece']:.4f}, "
                     f"value MAE {r['value_mae']:.4f}")
    if m["shadow"]:
        s = m["shadow"]
        lines.append(f"  shadow planner: {s['plans']} plans, position error {s['position_m_mean']:.4f} m, "
                     f"rotation {s['rotation_rad_mean']:.4f} rad, gripper {s['gripper_mean']:.3f}")
    c = m.get("controllability")
    if c and c.get("ratio"):
        r, d = c["ratio"], c["latent_difference"]
        parts = [f"{v}/true {r[v]['mean']:.3f}" for v in ("shuffled", "mirrored")
                 if r.get(v) and r[v].get("mean") is not None]
        avn = d["action_vs_noise"].get("mirrored")
        lines.append(f"  controllability (latent MSE ratio, 1.0 = action-blind): {', '.join(parts) or 'null'}; "
                     f"action effect {d['action_mirrored']['window']:.3g} vs noise effect {d['noise']['window']:.3g}"
                     + (f" (ratio {avn:.3f})" if avn is not None else ""))
        if not r.get("shuffled"):
            why = m["null_reasons"].get("controllability.ratio.shuffled", "")
            lines.append(f"  controllability, shuffled: null ({why})")
    for k in ("uq", "reward", "shadow", "controllability"):
        if m.get(k) is None:
            lines.append(f"  {k}: null ({m['null_reasons'].get(k, '')})")
    lines.append(f"wrote {res.metrics_path}, {res.report_path} and {len(res.plots)} plots in {res.out_dir / 'plots'}")
    typer.echo("\n".join(lines))
    if res.exit_code:
        raise typer.Exit(res.exit_code)


_HELP_PLANNER = ("planner YAML for the shadow planner (default: the shipped vidplan_core/planning/planner.yaml; "
                 "schema vidplan_core.planning.config.PlanningConfig: session, limits, open_loop_steps, ...)")
_HELP_CTL = ("also predict every window with shuffled and mirrored actions (same noise) and another noise draw: "
             "error ratios vs the true actions, 1.0 = action-blind (3 more rollouts per window)")
_HELP_TOPIC_MAP = "topic map YAML (camera topics, ee_pose, action source, joint_states, gripper, success label)"


@eval_app.command("bag")
def eval_bag_cmd(
    bag: Path = typer.Argument(..., help="rosbag2 directory (mcap or sqlite3) of one episode, or a LeRobot dataset "
                               "(DROID; with --episode)"),
    model: Path = typer.Option(..., "--model", "-m", help="model bundle directory (autoencoder/, flow_map/, "
                               "uq_head/, reward_head/, optional semantic/)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output directory (default ./eval-<bag name>)"),
    topic_map: Path | None = typer.Option(None, "--topic-map", help=_HELP_TOPIC_MAP),
    flow_steps: int = typer.Option(1, "--flow-steps", "-k", help="K, flow-map sampler steps"),
    max_steps: int = typer.Option(0, "--max-steps", help="evaluate at most N steps, spread over the episode (0: all)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    seed: int = typer.Option(0, "--seed", help="seed of the flow map's noise"),
    gamma: float | None = typer.Option(None, "--gamma", help="discount per model-rate frame of the Monte-Carlo value "
                                       "(default: the bundle's value_gamma, else 0.97)"),
    success: str | None = typer.Option(None, "--success", help="episode outcome true|false, if the bag has no label "
                                       "or to override it"),
    shadow: bool = typer.Option(True, "--shadow/--no-shadow", help="run the planner in shadow mode"),
    shadow_every: int = typer.Option(1, "--shadow-every", help="plan at every n-th evaluated step"),
    shadow_max: int = typer.Option(0, "--shadow-max", help="plan at most n times (0: no limit)"),
    examples: int = typer.Option(2, "--examples", help="prediction strips to draw"),
    salvage: bool = typer.Option(True, "--salvage/--no-salvage", help="evaluate the readable part of a truncated or "
                                 "corrupt bag (exit 3) instead of failing (exit 2)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
    planner_config: Path | None = typer.Option(None, "--planner-config", help=_HELP_PLANNER),
    teacher_steps: int = typer.Option(0, "--teacher-steps", help="predict with the EDM teacher (N Euler steps) "
                                      "instead of the flow map; 0: the flow map"),
    teacher: Path | None = typer.Option(None, "--teacher", help="teacher directory (default MODEL/world_model)"),
    controllability: bool = typer.Option(True, "--controllability/--no-controllability", help=_HELP_CTL),
    episode: int = typer.Option(0, "--episode", help="LeRobot input: the episode index to evaluate"),
    mapping: str = typer.Option("droid", "--mapping", help="LeRobot input: a shipped mapping name or a YAML"),
) -> None:
    """Evaluate a model bundle on a recorded episode: prediction PSNR/SSIM/latent MSE per horizon step and view,
    UQ calibration (ECE, reliability, entropy–error correlation), reward head vs the Monte-Carlo value, the planner
    in shadow mode, controllability (error with shuffled / mirrored actions vs the true ones), latency per stage.
    Writes metrics.json, plots/*.png and report.html.

    Exit codes: 0 complete, 2 bad input, 3 partial (salvaged part of a damaged bag evaluated).
    """
    _run_eval_bag(bag, model, out, topic_map, flow_steps, max_steps, device, seed, gamma, success, shadow,
                  shadow_every, shadow_max, examples, salvage, progress, planner_config, teacher_steps,
                  teacher, controllability, episode, mapping)


# `vidplan eval-bag`: the same command under its first name — one signature, so the two cannot drift apart
app.command("eval-bag", help="Same as `vidplan eval bag`: evaluate a model bundle on a recorded episode (exit 0 ok, "
            "2 bad input, 3 partial).")(eval_bag_cmd)


def _csv(text: str, what: str, cast=str) -> list:
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{what}: {text!r} is not a comma-separated list ({exc})") from exc


@eval_app.command("sim")
def eval_sim_cmd(
    episodes: int = typer.Option(5, "--episodes", "-n", help="episodes per (task, clutter) cell for the core variants "
                                 "(oracle+privileged, vidplan, random, scripted); seeds SEED..SEED+N-1"),
    episodes_other: int = typer.Option(3, "--episodes-other", help="episodes per cell for the other variants"),
    clutter: str = typer.Option("0,1,2,3", "--clutter", help="clutter levels, comma-separated (0..3)"),
    model: str = typer.Option("models/demo", "--model", "-m", help="model bundle (torch) or export directory "
                              "(onnxruntime)"),
    out: Path = typer.Option(Path("eval-sim"), "--out", "-o", help="output directory (resumable)"),
    tasks: str = typer.Option("touch,push,put", "--tasks", help="task kinds, comma-separated"),
    seed: int = typer.Option(0, "--seed", help="first scene seed (the demo models trained on seeds >= 1000)"),
    variants: str = typer.Option(",".join(("oracle+privileged", "oracle+learned", "learned+privileged", "vidplan",
                                           "no-uq", "argmax", "random", "scripted", "scripted+vidplan")),
                                 "--variants", help="comma-separated subset of oracle+privileged, oracle+learned, "
                                 "oracle+learned-pixels, learned+privileged, vidplan, no-uq, argmax, static-world "
                                 "(argmax with a world model that ignores its actions: every candidate gets the "
                                 "hold's prediction), random, blind "
                                 "(random's directions picked at random: no model), scripted, scripted+vidplan, bc, "
                                 "bc+vidplan"),
    planner_config: Path | None = typer.Option(None, "--planner-config", help="planner YAML (default: the shipped "
                                               "vidplan_core/planning/planner.yaml)"),
    overrides: list[str] = typer.Option([], "--set", help="override a planner setting, KEY=VALUE with a dotted key "
                                        "(e.g. --set session.proposals.basis_speed_mps=0.1); repeatable"),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime"),
    threads: int = typer.Option(1, "--threads", help="intra-op threads (1 is fastest on a shared 2-core machine)"),
    device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda[:i]) or onnxruntime provider (cpu, "
                               "cuda, tensorrt)"),
    workers: int = typer.Option(1, "--workers", "-j", help="episodes in parallel, one process each (2 uses both "
                                "cores of a 2-core machine; results do not depend on it)"),
    time_budget: float = typer.Option(0.0, "--time-budget", help="start no new episode after this many seconds "
                                      "(0: none); the run is marked partial and resumes with the same command"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
    trace: bool = typer.Option(False, "--trace", help="also write each episode's per-cycle trace (TCP, target, "
                               "chosen proposal, scores) to OUT/traces/<variant>_<task>_c<clutter>_s<seed>.jsonl"),
) -> None:
    """Closed-loop success in simulation (in-process, no ROS): the oracle ladder (simulator as world model,
    privileged reward), VidPlan as shipped, its ablations and baselines, per task kind and clutter level, with Wilson
    95 % intervals. Variants are named overrides of the planner configuration (printed in results.json).

    Writes OUT/results.json (per episode: seed, task, clutter, variant, success, steps, wall time; cells with
    intervals), OUT/table.md and OUT/success.png; resumes from OUT/episodes.jsonl. Exit code 2 on bad input (the
    message names the option, key or file) before any episode runs.
    """
    from pydantic import ValidationError

    from vidplan_app.jobs.closed_loop import ClosedLoopConfig, ClosedLoopError, run_closed_loop
    from vidplan_core.planning.config import PlanningConfigError, parse_override

    try:
        ov = dict(parse_override(o) for o in overrides)
        cfg = ClosedLoopConfig(model=model, episodes=episodes, episodes_other=episodes_other,
                               clutter=_csv(clutter, "--clutter", int), tasks=_csv(tasks, "--tasks"), seed=seed,
                               variants=_csv(variants, "--variants"), backend=backend, threads=threads, device=device,
                               planner_config=str(planner_config) if planner_config else None, overrides=ov,
                               trace=trace)
        for v in cfg.variants:
            cfg.planning(v)
    except ValidationError as exc:
        errs = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                         for e in exc.errors())
        typer.secho(f"error: {errs}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except (PlanningConfigError, ClosedLoopError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    bar = None
    if progress:
        from tqdm import tqdm

        def bar(jobs, total):
            return tqdm(jobs, total=total, desc="eval sim", unit="episode")
    try:
        res = run_closed_loop(cfg, out, progress=bar, time_budget_s=time_budget or None, workers=workers)
    except ClosedLoopError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    for w in res["warnings"]:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    for v in cfg.variants:
        s = res["summary"][v]["all"]["all"]
        per = ", ".join(f"L{c}: {res['summary'][v]['all'][str(c)]['success']}/{res['summary'][v]['all'][str(c)]['n']}"
                        for c in cfg.clutter)
        ci = f" [95 % CI {s['ci95'][0]:.2f}–{s['ci95'][1]:.2f}]" if s["ci95"] else ""
        typer.echo(f"{v:>18}: {s['success']}/{s['n']} succeeded{ci} ({per})")
    typer.echo(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'success.png'}")


@app.command("calibrate-uq")
def calibrate_uq_cmd(
    model: Path = typer.Argument(..., help="model bundle directory whose uq_head/ to calibrate"),
    bags: Path = typer.Option(..., "--bags", help="directory of recorded episodes (rosbag2 directories) held out "
                              "from the models' training and from their evaluation, e.g. `vidplan data generate "
                              "--seed 2000` (training uses seeds ≥ 1000 up to its episode count, evaluation < 1000)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="where each episode's evaluation and "
                                    "calibration.json go (default <bags>/calibrate-uq)"),
    windows: int = typer.Option(8, min=1, help="windows per episode"),
    flow_steps: int = typer.Option(1, "--flow-steps", "-k", help="K of the flow map (the planner's)"),
    write: bool = typer.Option(False, "--write", help="store the temperature in MODEL/uq_head/config.json; re-run "
                               "`vidplan export` afterwards (the onnxruntime backend refuses a stale export)"),
) -> None:
    """Fit the UQ head's temperature (temperature scaling: one scalar dividing its logits) on held-out episodes so
    its error-bin probabilities are calibrated; prints ECE and NLL before and after. The entropy the planner weights
    frames by changes with it: measure the planner in closed loop before shipping a new temperature."""
    found = sorted(p for p in bags.iterdir() if p.is_dir()) if bags.is_dir() else []
    episodes = [p for p in found if p.name != "calibrate-uq"]
    if not episodes:
        typer.secho(f"error: {bags} holds no recorded episodes (rosbag2 directories)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        rep = calibrate_uq(model, episodes, out or bags / "calibrate-uq", windows=windows, flow_steps=flow_steps,
                           write=write)
    except (EvalBagError, ValueError, ConfigError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"temperature {rep['temperature']:.4f} (was {rep['previous_temperature']:g}) from {rep['elements']} "
               f"latent elements of {rep['episodes']} episodes; ECE {rep['ece']['before']:.4f} → "
               f"{rep['ece']['after']:.4f}, NLL {rep['nll']['before']:.4f} → {rep['nll']['after']:.4f}"
               + ("; written to uq_head/config.json (re-run `vidplan export`)" if write else ""))
