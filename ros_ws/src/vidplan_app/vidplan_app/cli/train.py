"""``vidplan train vae|world-model|flow-map|heads|semantic|grounded|bc|tiny-decoder --config CONFIG [--resume]``.

Runs on HF accelerate: ``vidplan train ...`` on one device, ``accelerate launch $(which vidplan) train ...`` on
several GPUs / nodes (``accelerate config`` sets processes, machines and mixed precision).

Exit codes: 0 done, 1 cannot start (e.g. nothing to resume), 2 invalid config / dataset / resume mismatch,
3 diverged (NaN/Inf loss; the last good checkpoint is kept and named).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from vidplan_app.cli import app
from vidplan_core.config import ConfigError
from vidplan_core.training.assemble import assemble_model_dir, bundle_sources, default_sources


@app.command()
def train(
    kind: str = typer.Argument(..., help="vae | world-model | flow-map | heads | semantic | grounded | bc | "
                               "tiny-decoder"),
    config: str = typer.Option(..., "--config", "-c", help="training YAML, or a bundled config name "
                               "(tiny-vae, demo-world-model, ...; vidplan_core/training/configs)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint of train.output_dir"),
    data: Path | None = typer.Option(None, "--data", help="dataset directory (overrides data.root)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (overrides train.output_dir)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="overrides train.max_steps"),
    set_: list[str] = typer.Option(None, "--set", help="KEY=VALUE override (dotted key, YAML value); repeatable"),
) -> None:
    """Train one model kind with a YAML config (see vidplan_core/training/config.py for every key)."""
    from vidplan_core.data.schema import DatasetError
    from vidplan_core.training.config import KINDS, load_train_config

    if kind not in KINDS:
        typer.secho(f"error: unknown kind {kind!r}; expected one of {', '.join(KINDS)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    overrides = list(set_ or [])
    if data is not None:
        overrides.append(f"data.root={data}")
    if out is not None:
        overrides.append(f"train.output_dir={out}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    from vidplan_core.models import ModelLoadError
    from vidplan_core.training.recipes import make_recipe
    from vidplan_core.training.trainer import Trainer, TrainError, TrainingDivergedError

    try:
        cfg = load_train_config(config, overrides)
        if cfg.kind != kind:
            raise ConfigError(config, [("kind", f"the config trains {cfg.kind!r}, but the command asked for {kind!r}")])
        trainer = Trainer(cfg, make_recipe(cfg), resume=resume)
        result = trainer.run()
    except (ConfigError, DatasetError, ModelLoadError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except TrainingDivergedError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(3) from exc
    except TrainError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if int(os.environ.get("RANK", "0")) != 0:
        return  # a multi-process launch (accelerate launch / torchrun): the main process reports
    val = ", ".join(f"{k} {v:.4g}" for k, v in result["val"].items())
    typer.echo(f"trained {kind} for {result['step']} steps; model in {result['final_dir']}"
               + (f"; validation: {val}" if val else ""))


@app.command("assemble-models")
def assemble_models(
    out: Path = typer.Option(..., "--out", "-o", help="model directory to write (e.g. models/demo)"),
    runs: Path = typer.Option(Path("runs"), help="runs directory trained with the bundled configs "
                              "(parts at <runs>/<kind>/final)"),
    from_bundle: Path | None = typer.Option(None, "--from-bundle", help="take every part, the model configuration "
                                            "and the semantic views from this model directory instead of --runs; "
                                            "the part options below replace single parts (e.g. --semantic with a "
                                            "retrained scorer and --text-conditioner with the bundle's old one)"),
    autoencoder: Path | None = typer.Option(None, help="overrides <runs>/vae/final"),
    world_model: Path | None = typer.Option(None, help="overrides <runs>/world-model/final"),
    flow_map: Path | None = typer.Option(None, help="overrides <runs>/flow-map/final"),
    heads: Path | None = typer.Option(None, help="overrides <runs>/heads/final (uq_head/, reward_head/)"),
    semantic: Path | None = typer.Option(None, help="overrides <runs>/semantic/final"),
    tiny_decoder: Path | None = typer.Option(None, help="overrides <runs>/tiny-decoder/final (optional part: the "
                                             "semantic reward's distilled decoder)"),
    text_conditioner: Path | None = typer.Option(None, help="optional part: the semantic model the world model and "
                                                 "policy were trained with, when --semantic is a scorer retrained "
                                                 "after them (it keeps conditioning them; the new one scores)"),
    overwrite: bool = typer.Option(False, help="replace an existing model directory"),
    storage_dtype: str = typer.Option("float32", help="float32 | float16: store the world-model parts' "
                                      "parameters in half precision (half the size; computed in float32)"),
    config: str | None = typer.Option(None, "--config", help="model configuration recorded in OUT/bundle.json "
                                      "(default: the flow-map run's `model`)"),
    teacher: bool | None = typer.Option(None, "--teacher/--no-teacher", help="include the EDM teacher "
                                        "(world_model/); planning needs only the flow map [default: teacher; with "
                                        "--from-bundle: as that bundle]"),
    semantic_view: int | None = typer.Option(None, min=0, max=2, help="view the semantic score is computed on "
                                             "(0 left, 1 right, 2 wrist; default 0)"),
    centring_view: int | None = typer.Option(None, min=0, max=2, help="view whose semantic map centres the "
                                             "target (default 2, the wrist)"),
    map_views: str | None = typer.Option(None, help="comma-separated views whose semantic maps the planner scores "
                                         "(e.g. 0,1 for the gripper-referenced centring term; default: centring view)"),
) -> None:
    """Copy trained models into the planner's model directory layout, write its index (bundle.json) and check
    that the planner loads them."""
    settings: dict = {}
    if from_bundle is not None:
        if out.resolve() == from_bundle.resolve():
            typer.secho(f"error: --out {out} is --from-bundle itself; write a new directory (the source's ONNX export "
                        f"and model card describe its old parts)", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        try:
            src, settings = bundle_sources(from_bundle)
        except Exception as exc:  # BundleError (a BackendError): missing index entries, parts or files
            typer.secho(f"error: --from-bundle {from_bundle}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
        if teacher is None:
            teacher = "world_model" in src
    else:
        src = default_sources(runs)
    teacher = True if teacher is None else teacher
    for key, val in (("autoencoder", autoencoder), ("world_model", world_model), ("flow_map", flow_map),
                     ("semantic", semantic), ("tiny_decoder", tiny_decoder), ("text_conditioner", text_conditioner)):
        if val is not None:
            src[key] = val
    if heads is not None:
        src["uq_head"], src["reward_head"] = heads / "uq_head", heads / "reward_head"
    for flag, val in (("--tiny-decoder", tiny_decoder), ("--text-conditioner", text_conditioner)):
        if val is not None and not val.is_dir():  # an optional part asked for by name must be there
            typer.secho(f"error: {flag} {val} is not a directory", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    try:
        views = settings.get("map_views") if map_views is None else [int(v) for v in map_views.split(",")
                                                                      if v.strip()]
        d = assemble_model_dir(out, src, overwrite=overwrite, storage_dtype=storage_dtype,
                               config=config or settings.get("config"), teacher=teacher,
                               semantic_view=settings.get("semantic_view") if semantic_view is None else semantic_view,
                               centring_view=settings.get("centring_view") if centring_view is None else centring_view,
                               map_views=views)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:  # BackendError / ModelLoadError: the parts do not fit together
        typer.secho(f"error: the assembled models do not load together: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"model directory {d} ({', '.join(sorted(k for k in src if teacher or k != 'world_model'))}; "
               f"index {d / 'bundle.json'})")
