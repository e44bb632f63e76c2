"""Cached autoencoder latents of a dataset's frames (encode once, train the world model many times).

Layout: ``DATASET/latents/<tag>/<episode>.safetensors`` with ``latents`` float32 (T, C, h, w) — the scaled
latents of the stacked views of every frame (``VideoAutoencoder.encode``). ``<tag>`` is the first 16 hex digits
of the SHA-256 of the autoencoder's weights and config, so latents of another autoencoder are never mixed in.
Caching is resumable (episodes already cached are skipped; files are written atomically).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["autoencoder_tag", "cache_latents"]


def autoencoder_tag(ae_dir: str | Path) -> str:
    """Content hash of a saved autoencoder directory (config + weights)."""
    h = hashlib.sha256()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        p = Path(ae_dir) / name
        if p.is_file():
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def cache_latents(root: str | Path, autoencoder: Any, tag: str, batch_size: int = 16,
                  progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> Path:
    """Encode every episode's frames of the dataset at ``root`` with ``autoencoder`` (a VideoAutoencoder) into
    ``root/latents/<tag>/``; returns that directory. Raises DatasetError for an invalid dataset and ValueError
    when the frame size does not match the autoencoder's."""
    import torch
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    from vidplan_core.data.schema import validate_dataset

    root = Path(root)
    meta = validate_dataset(root, splits=("train", "val"))
    c = autoencoder.config
    if tuple(meta.view_hw) != (c.view_height, c.view_width):
        raise ValueError(f"dataset {root} has views of {meta.view_hw[0]}×{meta.view_hw[1]} px but the autoencoder "
                         f"expects {c.view_height}×{c.view_width}; convert with --size {c.view_height}x{c.view_width}")
    out = root / "latents" / tag
    out.mkdir(parents=True, exist_ok=True)
    todo = [e for e in meta.episodes if not (out / f"{e.name}.safetensors").is_file()]
    dev = next(autoencoder.parameters()).device if any(True for _ in autoencoder.parameters()) else "cpu"
    autoencoder.eval()
    for ep in (progress(todo) if progress else todo):
        frames = load_file(str(root / ep.shard))["frames"]
        chunks = []
        with torch.no_grad():
            for i in range(0, len(frames), batch_size):
                x = torch.from_numpy(frames[i:i + batch_size]).to(dev).float().div_(255.0)
                chunks.append(autoencoder.encode(x).float().cpu())
        lat = torch.cat(chunks).contiguous()
        tmp = out / f".{ep.name}.tmp"
        save_file({"latents": lat}, str(tmp))
        tmp.replace(out / f"{ep.name}.safetensors")
    return out
