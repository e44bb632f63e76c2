"""A distilled tiny decoder for scoring: diffusers' ``DecoderTiny`` (the TAESD architecture of ``AutoencoderTiny``)
trained to reproduce a :class:`~vidplan_core.models.autoencoder.VideoAutoencoder`'s decoder on its own latents.

Why: the semantic reward decodes every predicted frame of every candidate. The demo VAE's decoder costs 3.5 GFLOP per
frame (its full-resolution ResNet blocks), more than the flow map and heads together; the planner only needs a picture
good enough for the semantic scorer, not the debug picture. ``DecoderTiny`` is plain 3×3 convolutions with nearest
upsampling (no group norm, no attention): cheap, and exports to ONNX as Conv/Relu/Resize only.

It reads the same scaled latents as the autoencoder's :meth:`~VideoAutoencoder.decode` and returns views in the same
layout, so it is a drop-in replacement in the semantic graph; ``vidplan train tiny-decoder`` distils one
(:class:`vidplan_core.training.recipes.TinyDecoderRecipe`) and the bundle carries it as the optional part
``tiny_decoder``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderTiny

from vidplan_core.spaces import VIEW_ORDER, unstack_views

from ._io import StrictLoadMixin

__all__ = ["TinyDecoder", "decode_gflop"]


class TinyDecoder(StrictLoadMixin, ModelMixin, ConfigMixin):
    """(..., C, h, w) scaled latents → (..., 3 views, 3, H, W) images in [0, 1], like ``VideoAutoencoder.decode``.

    Args:
        latent_channels, latent_height, latent_width: the teacher autoencoder's latent (C, h, w); h covers the
            views stacked vertically.
        view_height, view_width: per-view image size [px]; the stacked frame (3·H × W) must be the latent grown by
            2^(len(num_blocks) − 1).
        num_views: 3 (left, right, wrist).
        channels: width of every block (DecoderTiny keeps one width throughout).
        num_blocks: residual blocks per resolution level, coarsest first; one level per ×2 upsampling plus the
            latent's own. A 0 at the last (full-resolution) level leaves only the output convolution there: most
            of the FLOPs sit at full resolution.
        act_fn: activation (diffusers name).
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 36, latent_width: int = 20,
                 view_height: int = 48, view_width: int = 80, num_views: int = 3, channels: int = 32,
                 num_blocks: tuple[int, ...] = (2, 2, 0), act_fn: str = "relu"):
        super().__init__()
        if num_views != len(VIEW_ORDER):
            raise ValueError(f"num_views must be {len(VIEW_ORDER)} ({VIEW_ORDER}), got {num_views}")
        if len(num_blocks) < 1 or any(b < 0 for b in num_blocks):
            raise ValueError(f"num_blocks must be one count >= 0 per resolution level, got {num_blocks}")
        factor = 2 ** (len(num_blocks) - 1)
        if (latent_height * factor, latent_width * factor) != (num_views * view_height, view_width):
            raise ValueError(f"a {latent_height}x{latent_width} latent grown {factor}x by {len(num_blocks) - 1} "
                             f"upsamplings is {latent_height * factor}x{latent_width * factor}, not the stacked "
                             f"frame {num_views * view_height}x{view_width}: give num_blocks "
                             f"{int(math.log2(max(1, num_views * view_height // latent_height))) + 1} levels")
        self.decoder = DecoderTiny(in_channels=latent_channels, out_channels=3, num_blocks=tuple(num_blocks),
                                   block_out_channels=(channels,) * len(num_blocks), upsampling_scaling_factor=2,
                                   act_fn=act_fn, upsample_fn="nearest")
        self.register_buffer("_dtype_anchor", torch.zeros(1), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents it decodes."""
        c = self.config
        return (c.latent_channels, c.latent_height, c.latent_width)

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """(..., C, h, w) scaled latents → (..., 3, 3, H, W) views in [0, 1] (differentiable)."""
        exp = self.latent_shape
        if latents.ndim < 3 or tuple(latents.shape[-3:]) != exp:
            raise ValueError(f"latents: expected (..., {', '.join(map(str, exp))}), got {tuple(latents.shape)}")
        lead = latents.shape[:-3]
        z = latents.reshape(-1, *exp).to(self._dtype_anchor.dtype)
        x = (self.decoder(z) + 1.0) * 0.5  # DecoderTiny returns [−1, 1] (diffusers' convention)
        if clamp:
            x = x.clamp(0.0, 1.0)
        return unstack_views(x.reshape(*lead, *x.shape[1:]), self.config.num_views)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents)

    @classmethod
    def for_autoencoder(cls, autoencoder: nn.Module, channels: int = 32,
                        num_blocks: tuple[int, ...] | None = None) -> TinyDecoder:
        """A tiny decoder shaped for ``autoencoder`` (a :class:`VideoAutoencoder`); ``num_blocks`` defaults to two
        blocks at every level but the full-resolution one."""
        c = autoencoder.config
        C, h, w = autoencoder.latent_shape
        levels = round(math.log2(c.num_views * c.view_height // h)) + 1
        blocks = tuple(num_blocks) if num_blocks is not None else (2,) * (levels - 1) + (0,)
        return cls(latent_channels=C, latent_height=h, latent_width=w, view_height=c.view_height,
                   view_width=c.view_width, num_views=c.num_views, channels=channels, num_blocks=blocks)

    def extra_repr(self) -> str:
        return f"latent={self.latent_shape}, channels={self.config.channels}, blocks={tuple(self.config.num_blocks)}"


def decode_gflop(decoder: nn.Module) -> float | None:
    """Counted GFLOP of decoding one latent frame with ``decoder`` (a ``VideoAutoencoder`` or ``TinyDecoder``):
    a copy built from its config on the meta device is run under torch's FLOP counter, so nothing is computed and
    the weights are not touched. None when the model cannot run on the meta device (SVD's temporal decoder)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            twin = type(decoder).from_config(decoder.config)
            z = torch.zeros(1, *decoder.latent_shape)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            twin.decode(z, clamp=False)
    except Exception:  # the counter is a diagnostic: any failure just leaves the number out
        return None
    return counter.get_total_flops() / 1e9
