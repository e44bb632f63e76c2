"""``vidplan import ctrl-world|svd-vae|siglip``: public checkpoints → the parts of a model directory.

Each command writes one part (``world_model/``, ``autoencoder/``, ``semantic/``) under ``--out``, in the layout
``vidplan train`` reads as ``init.*`` and the planner's loader reads: the ``full-*`` training configs start from
``models/droid/{world_model,autoencoder,semantic}``. Nothing is downloaded: every source is a local path.
Pickled checkpoints are opened only with ``torch.load(weights_only=True)``.

Exit codes: 0 ok, 2 bad input (missing file, a refused pickle, keys or shapes that do not match the config — named).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from vidplan_app.cli import app
from vidplan_core.config import ConfigError

import_app = typer.Typer(help="Import public checkpoints (Ctrl-World, the SVD VAE, SigLIP/CLIP) into a model "
                         "directory.", no_args_is_help=True)
app.add_typer(import_app, name="import")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2) from exc


def _section(model: str, name: str) -> dict:
    from vidplan_core.models.configs import load_suite_config

    cfg, _ = load_suite_config(model)
    return dict(getattr(cfg, name))


@import_app.command("ctrl-world")
def ctrl_world(
    checkpoint: Path = typer.Argument(..., help="Ctrl-World checkpoint: checkpoint-*.pt (read with "
                                      "weights_only=True) or a .safetensors conversion"),
    out: Path = typer.Option(..., "--out", "-o", help="model directory; writes OUT/world_model"),
    model: str = typer.Option("full", help="model preset or suite YAML whose world_model section the checkpoint "
                              "fills (Ctrl-World: full)"),
    stats: Path | None = typer.Option(None, help="JSON {p01: [7], p99: [7]}: the action statistics the checkpoint "
                                      "was trained with (DROID's); default: the config's"),
) -> None:
    """Ctrl-World's UNet + action encoder → OUT/world_model (its VAE/CLIP copies are ignored: import those with
    svd-vae / siglip). The current frame sits in a different slot in Ctrl-World (the first predicted one) than in
    vidplan (the last history one): the imported weights are an initialisation for `train world-model`."""
    import json

    from vidplan_core.models import ModelLoadError, WorldModel, import_ctrl_world
    from vidplan_core.spaces import ActionNormalizer

    try:
        from vidplan_core.models import VideoAutoencoder

        C, h, w = VideoAutoencoder(**_section(model, "autoencoder")).latent_shape
        wm_cfg = {**_section(model, "world_model"), "latent_channels": C, "latent_height": h, "latent_width": w}
        wm = WorldModel(**wm_cfg)
        import_ctrl_world(checkpoint, wm)
        if stats is not None:
            d = json.loads(stats.read_text())
            wm.set_action_stats(ActionNormalizer(d["p01"], d["p99"]))
    except (ConfigError, ModelLoadError, OSError, KeyError, ValueError) as exc:
        _fail(exc)
        return
    dest = out / "world_model"
    wm.save_pretrained(str(dest))
    n = sum(p.numel() for p in wm.parameters())
    typer.echo(f"{dest}: Ctrl-World world model, {n / 1e6:.1f} M parameters (initialisation: fine-tune with "
               "'vidplan train world-model --config full-world-model')")


@import_app.command("svd-vae")
def svd_vae(
    source: Path = typer.Argument(..., help="a diffusers AutoencoderKLTemporalDecoder directory (e.g. "
                                  "stable-video-diffusion-img2vid/vae, or the pipeline directory with vae/)"),
    out: Path = typer.Option(..., "--out", "-o", help="model directory; writes OUT/autoencoder"),
    model: str = typer.Option("full", help="model preset or suite YAML whose autoencoder section it fills"),
) -> None:
    """SVD's temporal-decoder VAE → OUT/autoencoder (strict: every key and shape must match the config)."""
    from diffusers import AutoencoderKLTemporalDecoder

    from vidplan_core.models import ModelLoadError, VideoAutoencoder

    src = source / "vae" if (source / "vae" / "config.json").is_file() else source
    try:
        if not (src / "config.json").is_file():
            raise ModelLoadError(f"{source}: no config.json (a diffusers VAE directory, or a pipeline with vae/)")
        ae = VideoAutoencoder(**_section(model, "autoencoder"))
        if not isinstance(ae.vae, AutoencoderKLTemporalDecoder):
            raise ConfigError(model, [("autoencoder.kind", "svd-vae fills a 'temporal' autoencoder")])
        try:
            vae = AutoencoderKLTemporalDecoder.from_pretrained(str(src), local_files_only=True, use_safetensors=True)
        except OSError as exc:
            raise ModelLoadError(f"{src}: cannot be loaded as a safetensors AutoencoderKLTemporalDecoder ({exc})"
                                 ) from exc
        own, theirs = ae.vae.state_dict(), vae.state_dict()
        problems = [f"missing '{k}'" for k in own if k not in theirs]
        problems += [f"'{k}': config {tuple(v.shape)} vs file {tuple(theirs[k].shape)}" for k, v in own.items()
                     if k in theirs and theirs[k].shape != v.shape]
        if problems:
            raise ModelLoadError(f"{src} does not match the {model} autoencoder:\n  " + "\n  ".join(problems[:12]))
        ae.vae.load_state_dict({k: theirs[k] for k in own}, strict=True)
        ae.register_to_config(scaling_factor=float(vae.config.scaling_factor))
    except (ConfigError, ModelLoadError) as exc:
        _fail(exc)
        return
    dest = out / "autoencoder"
    ae.save_pretrained(str(dest))
    typer.echo(f"{dest}: SVD temporal-decoder VAE (scaling factor {vae.config.scaling_factor:g})")


@import_app.command("siglip")
def siglip(
    source: Path = typer.Argument(..., help="a transformers SigLIP (or CLIP) directory with model.safetensors and "
                                  "its tokenizer"),
    out: Path = typer.Option(..., "--out", "-o", help="model directory; writes OUT/semantic"),
) -> None:
    """A SigLIP / CLIP directory → OUT/semantic, after checking that the planner's semantic scorer loads it and
    encodes an instruction with its tokenizer (the same command imports CLIP)."""
    import torch

    from vidplan_core.models import ModelLoadError, SemanticScorer

    try:
        scorer = SemanticScorer.from_pretrained(source)
        if scorer.tokenizer is None:
            raise ModelLoadError(f"{source}: no tokenizer files (tokenizer.json / spiece.model / vocab.json)")
        with torch.no_grad():
            scorer.encode_text(["pick up the marker"])
    except (ModelLoadError, OSError, ValueError) as exc:
        _fail(exc)
        return
    dest = out / "semantic"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5"))
    typer.echo(f"{dest}: {type(scorer.model).__name__} semantic model")
