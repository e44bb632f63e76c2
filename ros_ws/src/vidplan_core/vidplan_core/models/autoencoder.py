"""Latent autoencoder for 3-view frames: views stacked vertically (left, right, wrist) into one frame.

Backends (``kind``):
* ``"temporal"`` — diffusers ``AutoencoderKLTemporalDecoder`` (SVD's VAE; used by ``full``),
* ``"kl"`` — diffusers ``AutoencoderKL`` (``demo``),
* ``"pixel"`` — exact, weight-free space-to-depth (pixel-unshuffle by ``patch``) of [−1, 1] pixels: a
  pixel-space "latent" for tests and the procedural distillation benchmark, where it isolates the dynamics
  model from VAE reconstruction error.

Images are float in [0, 1], (…, V=3, 3, H, W) per view; latents are (…, C, h, w) already multiplied by the
scaling factor (the world model's units). Encoding is deterministic (posterior mode). The history of the
current cycle is encoded once and cached: :meth:`VideoAutoencoder.encode_history` keys each frame by a
caller-given hashable id (e.g. its stamp in ns) and only encodes frames it has not seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from vidplan_core.spaces import VIEW_ORDER, stack_views, unstack_views

from ._io import StrictLoadMixin, check_finite

__all__ = ["VideoAutoencoder"]


class VideoAutoencoder(StrictLoadMixin, ModelMixin, ConfigMixin):
    """VAE wrapper: (B, F, 3 views, 3, H, W) images in [0, 1] ↔ (B, F, C, h, w) scaled latents.

    Args:
        kind: "temporal", "kl" or "pixel" (see module docstring).
        view_height, view_width: per-view image size H × W (the stacked frame is 3H × W).
        num_views: 3 (left, right, wrist).
        block_out_channels, layers_per_block, latent_channels, norm_num_groups: VAE shape (diffusers names).
            The spatial downsampling factor is 2^(len(block_out_channels) − 1).
        scaling_factor: latents are multiplied by this after encoding (SVD: 0.18215).
        patch: pixel-unshuffle factor for kind "pixel" (latent channels = 3·patch²).
        cache_size: how many encoded frames :meth:`encode_history` keeps.
    """

    @register_to_config
    def __init__(self, kind: str = "temporal", view_height: int = 192, view_width: int = 320, num_views: int = 3,
                 block_out_channels: tuple[int, ...] = (128, 256, 512, 512), layers_per_block: int = 2,
                 latent_channels: int = 4, norm_num_groups: int = 32, scaling_factor: float = 0.18215,
                 patch: int = 2, cache_size: int = 64):
        super().__init__()
        if num_views != len(VIEW_ORDER):
            raise ValueError(f"num_views must be {len(VIEW_ORDER)} ({VIEW_ORDER}), got {num_views}")
        n = len(block_out_channels)
        if kind == "temporal":
            self.vae: nn.Module | None = AutoencoderKLTemporalDecoder(
                down_block_types=("DownEncoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block, latent_channels=latent_channels, scaling_factor=scaling_factor)
        elif kind == "kl":
            self.vae = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                latent_channels=latent_channels, norm_num_groups=norm_num_groups, scaling_factor=scaling_factor)
        elif kind == "pixel":
            self.vae = None
        else:
            raise ValueError(f"autoencoder kind must be 'temporal', 'kl' or 'pixel', got {kind!r}")
        self.factor = patch if kind == "pixel" else 2 ** (n - 1)
        if (num_views * view_height) % self.factor or view_width % self.factor:
            raise ValueError(f"stacked frame {num_views * view_height}x{view_width} is not divisible by the "
                             f"autoencoder's downsampling factor {self.factor}")
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        # a persistent buffer so a weight-free ("pixel") autoencoder still has a dtype/device and a weights file
        self.register_buffer("scale", torch.tensor([float(scaling_factor)]))

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    @property
    def device(self) -> torch.device:
        return self.scale.device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent frame (h covers the stacked views)."""
        c = self.config
        ch = 3 * c.patch ** 2 if c.kind == "pixel" else c.latent_channels
        return (ch, c.num_views * c.view_height // self.factor, c.view_width // self.factor)

    def _check_views(self, images: torch.Tensor) -> None:
        c = self.config
        exp = (c.num_views, 3, c.view_height, c.view_width)
        if images.ndim < 4 or tuple(images.shape[-4:]) != exp:
            raise ValueError(f"images: expected (..., {', '.join(map(str, exp))}) = (views {VIEW_ORDER}, RGB, H, W), "
                             f"got {tuple(images.shape)}")
        check_finite("images", images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(..., 3, 3, H, W) views in [0, 1] → (..., C, h, w) scaled latents (posterior mode)."""
        self._check_views(images)
        lead = images.shape[:-4]
        x = stack_views(images).reshape(-1, 3, self.config.num_views * self.config.view_height,
                                         self.config.view_width)
        x = x.to(self.dtype) * 2.0 - 1.0
        if self.vae is None:
            z = F.pixel_unshuffle(x, self.factor)
        else:
            z = self.vae.encode(x).latent_dist.mode() * self.config.scaling_factor
        return z.reshape(*lead, *z.shape[1:])

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """(..., C, h, w) scaled latents → (..., 3, 3, H, W) views in [0, 1] (differentiable)."""
        exp = self.latent_shape
        if latents.ndim < 3 or tuple(latents.shape[-3:]) != exp:
            raise ValueError(f"latents: expected (..., {', '.join(map(str, exp))}), got {tuple(latents.shape)}")
        lead = latents.shape[:-3]
        z = latents.reshape(-1, *exp).to(self.dtype)
        if self.vae is None:
            x = F.pixel_shuffle(z, self.factor)
        elif isinstance(self.vae, AutoencoderKLTemporalDecoder):
            # the temporal decoder mixes frames in groups of num_frames; decode per clip of the last lead dim
            nf = lead[-1] if len(lead) else 1
            x = self.vae.decode(z / self.config.scaling_factor, num_frames=nf).sample
        else:
            x = self.vae.decode(z / self.config.scaling_factor).sample
        x = (x + 1.0) * 0.5
        if clamp:
            x = x.clamp(0.0, 1.0)
        return unstack_views(x.reshape(*lead, *x.shape[1:]), self.config.num_views)

    # ------------------------------------------------------------------ history cache
    @torch.no_grad()
    def encode_history(self, images: torch.Tensor, keys: Sequence[Hashable]) -> torch.Tensor:
        """Encode T history frames, re-using cached latents for keys seen before.

        Args:
            images: (T, 3, 3, H, W) views in [0, 1] (one robot, oldest first).
            keys: T hashable ids (e.g. the frames' header stamps in ns); equal key ⇒ same image.
        Returns:
            (T, C, h, w) latents.
        """
        if images.ndim != 5 or len(keys) != images.shape[0]:
            raise ValueError(f"encode_history: expected images (T, 3, 3, H, W) and T keys, got "
                             f"{tuple(images.shape)} and {len(keys)} keys")
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            z = self.encode(images[todo])
            for j, i in enumerate(todo):
                self._cache[keys[i]] = z[j]
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
        self.last_encoded = len(todo)  # how many frames the last call actually encoded (diagnostics)
        return torch.stack(out)

    def clear_cache(self) -> None:
        self._cache.clear()

    def extra_repr(self) -> str:
        return f"kind={self.config.kind}, latent={self.latent_shape}"


