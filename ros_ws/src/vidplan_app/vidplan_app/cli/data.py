"""``vidplan data generate|convert|import lerobot|rlds|info|cache-latents|grounding``: demonstrations → training shards.

Exit codes: 0 ok, 2 bad input (settings, missing topics, inconsistent shards; the message names what and where).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vidplan_app.cli import app
from vidplan_core.config import ConfigError, validate_model
from vidplan_core.data.latents import autoencoder_tag, cache_latents

data_app = typer.Typer(help="Datasets: generate simulated episodes as rosbags, convert bags to training shards.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2) from exc


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected HxW in pixels, e.g. 48x80") from None
    if h <= 0 or w <= 0:
        raise typer.BadParameter(f"{text!r}: sizes must be > 0")
    return h, w


@data_app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="output directory (resumes if it holds an earlier run)"),
    episodes: int = typer.Option(30, help="number of episodes"),
    seed: int = typer.Option(0, help="episode i uses seed + i (scene, task, clutter, noise, failure)"),
    width: int = typer.Option(320, help="camera width [px]"),
    height: int = typer.Option(180, help="camera height [px]"),
    camera_rate: float = typer.Option(15.0, help="camera rate [Hz]; divides the 15 Hz control rate"),
    clutter: str = typer.Option("0,1,2,3", help="clutter levels to draw from (comma separated, 0..3)"),
    tasks: str = typer.Option("put,touch,push", help="task kinds, in turn (comma separated)"),
    failure_prob: float = typer.Option(0.4, help="probability of a deliberate expert failure (≈ 1/3 of episodes fail)"),
    noise: str = typer.Option("0.002,0.002,0.002,0.01,0.01,0.01,0", help="action noise std: 7 values (m, rad, -)"),
    max_steps: int = typer.Option(0, help="cut episodes after this many 15 Hz steps (0 = never)"),
    scene: str | None = typer.Option(None, help="scene YAML (default: vidplan_sim's default scene)"),
) -> None:
    """Run the simulation with the scripted expert and write one rosbag2 (mcap) per episode + a JSON sidecar.

    Topics: /cameras/{left,right,wrist}/image_raw (rgb8) + camera_info, /joint_states, /ee_pose,
    /vidplan/expert_action (PlanChunk, one step: the commanded EE target), /vidplan/instruction, /vidplan/episode
    (JSON: task, instruction, success, seed, clutter, failure). Resumable: finished episodes are skipped.
    """
    from vidplan_app.jobs.generate import GenerateConfig, GenerateError, generate_dataset

    try:
        cfg = validate_model(GenerateConfig, {
            "episodes": episodes, "seed": seed, "width": width, "height": height, "camera_rate_hz": camera_rate,
            "clutter": [int(c) for c in clutter.split(",") if c.strip()],
            "tasks": [t.strip() for t in tasks.split(",") if t.strip()], "failure_prob": failure_prob,
            "noise_std": [float(x) for x in noise.split(",")], "max_steps": max_steps, "scene": scene},
            "vidplan data generate options")
    except (ConfigError, ValueError) as exc:
        _fail(exc)
        return
    from tqdm.auto import tqdm

    try:
        infos = generate_dataset(out, cfg, progress=lambda it, n: tqdm(it, total=n, desc="episodes", unit="ep"))
    except (GenerateError, ConfigError) as exc:
        _fail(exc)
        return
    ok = sum(i["success"] for i in infos)
    kinds = sorted({i["task"] for i in infos})
    typer.echo(f"{len(infos)} episodes in {out}: {ok} successful ({ok / max(len(infos), 1):.0%}), "
               f"tasks {', '.join(kinds)}")


@data_app.command("convert")
def convert(
    bags: list[Path] = typer.Argument(..., help="bag directories, split recordings, or `data generate` outputs"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset directory to write"),
    topic_map: Path | None = typer.Option(None, "--topic-map", help="YAML naming the topics (default: vidplan's)"),
    size: str | None = typer.Option(None, "--size", help="per-view HxW [px] (default: the cameras' size)"),
    fps: float = typer.Option(5.0, help="dataset frame rate [Hz] (the world model's rate)"),
    val_fraction: float = typer.Option(0.1, help="fraction of episodes for validation (split by episode)"),
    split_seed: int = typer.Option(0, help="seed of the train/val split"),
    gamma: float = typer.Option(0.97, help="discount per frame of the value target γ^(F−τ)·success"),
    overwrite: bool = typer.Option(False, help="replace a non-empty output directory"),
    crop: str = typer.Option("none", "--crop", help="'workspace': cut the exterior views to the workspace box "
                             "(as a world model with action_maps.crop: workspace does at run time; needs --size); "
                             "'none': whole views"),
    calibration: Path | None = typer.Option(None, "--calibration", help="camera calibration YAML of --crop "
                                            "workspace (default: the shipped calibration/droid_cameras.yaml)"),
) -> None:
    """Convert rosbag2 recordings to training shards (see vidplan_core/data/DATASET.md)."""
    from tqdm.auto import tqdm

    from vidplan_core.data.convert import ConvertError, convert_bags
    from vidplan_core.data.topic_map import load_topic_map

    try:
        views = None
        if crop not in ("none", "workspace"):
            raise ValueError(f"--crop must be 'none' or 'workspace', got {crop!r}")
        if crop == "workspace":
            from vidplan_core.calibration import load_calibration, workspace_views

            if size is None:
                raise ValueError("--crop workspace needs --size HxW (the crop's aspect ratio is the view's)")
            h, w = _size(size)
            views = workspace_views(h, w, load_calibration(calibration))
        elif calibration is not None:
            raise ValueError("--calibration is only used with --crop workspace")
        tm = load_topic_map(topic_map)
        meta = convert_bags(bags, out, tm, fps=fps, size=_size(size), val_fraction=val_fraction,
                            split_seed=split_seed, value_gamma=gamma, overwrite=overwrite,
                            progress=lambda b: tqdm(b, desc="convert", unit="bag"), views=views)
    except (ConvertError, ConfigError, ValueError) as exc:
        _fail(exc)
        return
    n_train, n_val = len(meta.split("train")), len(meta.split("val"))
    frames = sum(e.length for e in meta.episodes)
    typer.echo(f"{out}: {len(meta.episodes)} episodes ({n_train} train, {n_val} val), {frames} frames at "
               f"{meta.fps:g} Hz, views {meta.view_hw[0]}x{meta.view_hw[1]}")


def _run_import(import_fn, root: Path, out: Path, *args, **kw) -> None:
    """Run an importer (``import_lerobot``, ``import_rlds``) with a progress bar; a bad dataset or setting (a
    ``DatasetError``/``ValueError`` naming it) exits 2; then print the one-line summary."""
    from tqdm.auto import tqdm

    try:
        meta = import_fn(root, out, *args, progress=lambda e: tqdm(e, desc="import", unit="episode"), **kw)
    except ValueError as exc:  # LeRobotError, RLDSError and TFRecordError are DatasetErrors, i.e. ValueErrors
        _fail(exc)
        return
    _echo_import(out, meta)


def _echo_import(out: Path, meta) -> None:
    """The one-line summary of an import (episodes, split, frames, rate, view size)."""
    n_train, n_val = len(meta.split("train")), len(meta.split("val"))
    typer.echo(f"{out}: {len(meta.episodes)} episodes ({n_train} train, {n_val} val), "
               f"{sum(e.length for e in meta.episodes)} frames at {meta.fps:g} Hz, views "
               f"{meta.view_hw[0]}x{meta.view_hw[1]}")


import_app = typer.Typer(help="Import datasets of other formats into vidplan shards.", no_args_is_help=True)
data_app.add_typer(import_app, name="import")


@import_app.command("lerobot")
def import_lerobot_cmd(
    root: Path = typer.Argument(..., help="LeRobot dataset directory (meta/info.json; v2.x or v3.0 layout)"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset directory to write (resumes an earlier import)"),
    size: str = typer.Option(..., "--size", help="per-view HxW [px] (the world model's view size, e.g. 48x80)"),
    mapping: str = typer.Option("droid", "--mapping", help="a shipped mapping name (droid) or a mapping YAML"),
    episodes: str | None = typer.Option(None, "--episodes", help="episode indices: START:STOP, "
                                        "START:STOP:STEP, N,M,... (default: all)"),
    fps: float = typer.Option(5.0, help="dataset frame rate [Hz] (the world model's rate)"),
    val_fraction: float = typer.Option(0.1, help="fraction of episodes for validation (split by episode)"),
    split_seed: int = typer.Option(0, help="seed of the train/val split"),
    gamma: float = typer.Option(0.97, help="discount per frame of the value target γ^(F−τ)·success"),
) -> None:
    """Convert (a subset of) a LeRobot dataset, e.g. DROID, into vidplan shards (see vidplan_core/data/DATASET.md).

    Training can also read a LeRobot dataset in place (data.lerobot in the training config); import when a local
    copy of a subset is wanted."""
    from vidplan_core.data.lerobot import parse_episode_selection
    from vidplan_core.data.lerobot_import import import_lerobot

    _run_import(import_lerobot, root, out, _size(size), mapping, parse_episode_selection(episodes), fps=fps,
                val_fraction=val_fraction, split_seed=split_seed, value_gamma=gamma)


@import_app.command("rlds")
def import_rlds_cmd(
    root: Path = typer.Argument(..., help="TFDS dataset directory (dataset_info.json, features.json, "
                                "NAME-SPLIT.tfrecord-XXXXX-of-YYYYY shards), or its parent holding one version"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset directory to write (resumes an earlier import)"),
    size: str = typer.Option(..., "--size", help="per-view HxW [px] (the world model's view size, e.g. 48x80)"),
    mapping: str = typer.Option("droid", "--mapping", help="a shipped RLDS mapping name (droid) or a mapping YAML"),
    episodes: str | None = typer.Option(None, "--episodes", help="episode indices (positions in the split): "
                                        "START:STOP, START:STOP:STEP, N,M,... (default: all)"),
    split: str | None = typer.Option(None, "--split", help="TFDS split (default: the mapping's, train)"),
    fps: float = typer.Option(5.0, help="dataset frame rate [Hz] (the world model's rate)"),
    val_fraction: float = typer.Option(0.1, help="fraction of episodes for validation (split by episode)"),
    split_seed: int = typer.Option(0, help="seed of the train/val split"),
    gamma: float = typer.Option(0.97, help="discount per frame of the value target γ^(F−τ)·success"),
) -> None:
    """Convert (a subset of) an RLDS dataset, e.g. DROID's RLDS release, into vidplan shards (see
    vidplan_core/data/rlds.py). Records are read one by one and their CRCs checked; no TensorFlow is needed.

    Training can also read an RLDS dataset in place (data.lerobot options in the training config, mapping droid);
    import when a local copy of a subset is wanted."""
    from vidplan_core.data.lerobot import parse_episode_selection
    from vidplan_core.data.rlds_import import import_rlds

    _run_import(import_rlds, root, out, _size(size), mapping, parse_episode_selection(episodes), split=split,
                fps=fps, val_fraction=val_fraction, split_seed=split_seed, value_gamma=gamma)


@data_app.command("info")
def info(dataset: Path = typer.Argument(..., help="dataset directory")) -> None:
    """Validate a dataset (every shard's shapes) and print a summary."""
    from vidplan_core.data.schema import DatasetError, validate_dataset

    try:
        meta = validate_dataset(dataset)
    except DatasetError as exc:
        _fail(exc)
        return
    ok = sum(e.success for e in meta.episodes)
    typer.echo(f"{dataset}: schema {meta.schema_version}, {len(meta.episodes)} episodes "
               f"({len(meta.split('train'))} train, {len(meta.split('val'))} val), {ok} successful")
    typer.echo(f"  {meta.fps:g} Hz, views {meta.view_hw[0]}x{meta.view_hw[1]} ({', '.join(meta.view_order)}), "
               f"{sum(e.length for e in meta.episodes)} frames, joints {len(meta.joint_names)}")
    tasks: dict[str, int] = {}
    for e in meta.episodes:
        tasks[e.task or "?"] = tasks.get(e.task or "?", 0) + 1
    typer.echo("  tasks: " + ", ".join(f"{k} {v}" for k, v in sorted(tasks.items())))


@data_app.command("cache-latents")
def cache_latents_cmd(
    dataset: Path = typer.Argument(..., help="dataset directory"),
    autoencoder: Path = typer.Option(..., "--autoencoder", help="trained autoencoder directory"),
    batch_size: int = typer.Option(16, help="frames per encoder call"),
) -> None:
    """Encode every frame once with a trained autoencoder (training does this itself when data.cache_latents)."""
    from tqdm.auto import tqdm

    from vidplan_core.data.schema import DatasetError
    from vidplan_core.models import ModelLoadError, VideoAutoencoder

    try:
        ae = VideoAutoencoder.load(autoencoder)
        d = cache_latents(dataset, ae, autoencoder_tag(autoencoder), batch_size,
                          progress=lambda it: tqdm(it, desc="encode", unit="episode"))
    except (DatasetError, ModelLoadError, ValueError) as exc:
        _fail(exc)
        return
    typer.echo(f"latents in {d}")


@data_app.command("grounding")
def grounding(
    out: Path = typer.Option(Path("data/grounded"), "--out", "-o", help="shard directory (resumes)"),
    train_scenes: int = typer.Option(600, help="training scenes (each rendered with and without the crop)"),
    eval_scenes: int = typer.Option(150, help="evaluation scenes per split (unseen / seen combinations), ≤ 150"),
    poses_per_scene: int = typer.Option(2, help="arm poses rendered per scene"),
    contact_prob: float = typer.Option(0.0, min=0.0, max=1.0, help="share of training poses with the hand against "
                                       "an object's side or on its top (as in a push or touch), so the scorer "
                                       "learns objects the hand partly hides"),
) -> None:
    """Render labelled frames (RGB + MuJoCo segmentation) for the grounded semantic scorer
    (``vidplan train grounded``); the held-out combinations are the training config's default."""
    from vidplan_core.training.config import HELD_OUT_COMBINATIONS
    from vidplan_sim.grounding_data import generate_grounding_dataset

    try:
        written = generate_grounding_dataset(out, HELD_OUT_COMBINATIONS, train_scenes, eval_scenes,
                                             poses_per_scene=poses_per_scene, contact_prob=contact_prob)
    except ValueError as exc:
        _fail(exc)
    typer.echo(f"{out}: {len(written)} shard(s) written, {sum(w['samples'] for w in written)} samples"
               + ("" if written else " (all shards were already complete)"))
