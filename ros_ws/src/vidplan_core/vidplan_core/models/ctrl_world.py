"""Ctrl-World checkpoints into a :class:`~vidplan_core.models.world_model.WorldModel`: reading safetensors or
pickled torch files safely (``torch.load(weights_only=True)``), mapping keys (the world model keeps Ctrl-World's
module layout) and padding the UNet's input convolution for the action-map channels Ctrl-World does not have."""

from __future__ import annotations

from pathlib import Path

import torch

from ._io import ModelLoadError
from .action_maps import ActionMapRenderer
from .world_model import WorldModel

__all__ = ["PICKLED_SUFFIXES", "import_ctrl_world", "pad_input_conv_for_action_maps", "read_checkpoint"]

#: suffixes of pickled torch checkpoints, read with ``torch.load(weights_only=True)`` (tensors and containers only)
PICKLED_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` state dict from ``.safetensors`` or a pickled torch file.

    Pickled files are opened only with ``torch.load(..., weights_only=True)``: its restricted unpickler builds
    tensors and plain containers and refuses any other object, so a checkpoint cannot run code here. A state dict
    nested under ``state_dict`` / ``model`` / ``module`` is unwrapped; DDP's ``module.`` key prefix is removed.

    Raises:
        ModelLoadError: missing file, an unsupported suffix, a pickle holding other objects (refused), or no
            tensors.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in PICKLED_SUFFIXES:
        raise ModelLoadError(f"{path}: expected .safetensors or a torch checkpoint ({', '.join(PICKLED_SUFFIXES)})")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(f"{path}: refused — the pickle holds objects other than tensors and containers, and "
                             f"it is only ever opened with torch.load(weights_only=True) ({str(exc).splitlines()[0]})"
                             ) from exc
    except Exception as exc:  # truncated / not a torch file
        raise ModelLoadError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not isinstance(obj.get(key), torch.Tensor):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()
             if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelLoadError(f"{path}: holds no tensors")
    return state


def import_ctrl_world(checkpoint: str | Path, model: WorldModel) -> WorldModel:
    """Load a Ctrl-World checkpoint's UNet + action encoder into a ``full``-shaped :class:`WorldModel`.

    Ctrl-World (Guo et al. 2025) publishes ``checkpoint-*.pt``: a *pickled* ``state_dict`` of its ``CrtlWorld``
    module with keys ``unet.*`` (an SVD ``UNetSpatioTemporalConditionModel``, in_channels 8, keys identical to
    diffusers'), ``action_encoder.action_encode.{0,2,4}.*`` (7→1024→1024→1024), plus frozen ``vae.*`` /
    ``image_encoder.*`` / ``text_encoder.*`` copies of SVD and CLIP (ignored here). Pickled files are read with
    ``torch.load(weights_only=True)`` only (:func:`read_checkpoint`); ``.safetensors`` directly.

    Conditioning shared with this class: history latents as context frames, the current-frame latent
    concatenated on channels divided by the VAE scaling factor (``cond_latent_scale = 1/0.18215``), frame-level
    action tokens, EDM with σ_data = 1 and negative c_out, text = CLIP ``text_embeds`` (512) tiled ×2
    (``text_embed_dim = 512``), actions min/max-normalised with DROID statistics (put them in
    ``action_p01``/``action_p99``).

    **Where the current frame sits differs.** Ctrl-World's training step takes the current image from
    ``latents[:, num_history]`` — the *first predicted slot* — and computes its loss on that slot too: its
    ``num_history`` context frames are the frames *before* the current one, and its predicted frames start with a
    re-prediction of the current frame. vidplan puts the current frame in the *last history slot* (clean context)
    and predicts only later frames. An imported Ctrl-World UNet therefore sees, at the current frame's slot, a
    clean latent where it was trained on a noisy one: the weights are an initialisation, to be fine-tuned in
    vidplan's convention (``full-world-model`` does), not a drop-in replacement.

    A target with spatial action maps (``action_maps`` set) gets the checkpoint's input convolution padded with
    zero weights for the map channels (:func:`pad_input_conv_for_action_maps`), so it starts as Ctrl-World.

    Args:
        checkpoint: a ``.safetensors`` file or a pickled torch checkpoint with those keys.
        model: the target :class:`WorldModel` (``full`` config with the settings above).
    Returns:
        ``model`` with the weights loaded (strict: every key and shape must match; errors list mismatches).
    """
    checkpoint = Path(checkpoint)
    state = {k: v for k, v in read_checkpoint(checkpoint).items() if k.startswith(("unet.", "action_encoder."))}
    own = model.state_dict()
    state = pad_input_conv_for_action_maps(model, state)
    problems = [f"missing '{k}' {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"'{k}': model {tuple(own[k].shape)} vs file {tuple(v.shape)}" for k, v in state.items()
                 if k in own and own[k].shape != v.shape]
    problems += [f"unexpected '{k}'" for k in state if k not in own]
    if problems:
        raise ModelLoadError(f"{checkpoint} does not match the WorldModel config:\n  " + "\n  ".join(problems[:12]))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model


def pad_input_conv_for_action_maps(model: WorldModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a model *without* action maps, made loadable into ``model`` *with* them: the UNet's input
    convolution ``unet.conv_in.weight`` (out, C_in, 3, 3) gains zero input weights for the map channels (appended
    last, as :meth:`WorldModel.assemble` concatenates them), so the loaded model computes exactly what the
    checkpoint did until it is trained. Other state dicts are returned unchanged."""
    key = "unet.conv_in.weight"
    if model.map_renderer is None or key not in state:
        return state
    want = model.unet.conv_in.weight.shape
    w = state[key]
    n = ActionMapRenderer.num_channels
    if w.shape[1] == want[1] - n and w.shape[0] == want[0]:
        pad = torch.zeros(w.shape[0], n, *w.shape[2:], dtype=w.dtype)
        state = {**state, key: torch.cat([w, pad], dim=1)}
    return state
