"""UQ head and reward head: small U-Nets (diffusers ``UNet2DModel``: two down/up blocks, self-attention
bottleneck) on predicted latents, with distributional (binned) outputs and their utilities.

* UQ head: per latent element a distribution over ``num_bins`` = 30 bins of |predicted − true latent| in
  [0, 10]; uncertainty h = entropy / log(30) ∈ [0, 1]; expected error = Σ p·bin centre.
* Reward head: per frame a distribution over 20 bins of the Monte-Carlo value V(o_τ) = γ^(F−τ)·success in
  [0, 1]; the actions of the frame enter as the U-Net's class embedding (MLP of the normalised 7-D action).
The future frame index τ (0 … H−1) enters as the U-Net's timestep. Training steps detach their latent
inputs, so the heads never back-propagate into the flow map.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from vidplan_core.spaces import ACTION_DIM, ActionNormalizer

from ._io import StrictLoadMixin, check_finite, check_shape

__all__ = [
    "RewardHead",
    "UQHead",
    "bin_centers",
    "bin_edges",
    "entropy",
    "expected_value",
    "monte_carlo_value",
    "normalized_entropy",
    "to_bins",
]


# ---------------------------------------------------------------------- bin utilities
def bin_edges(lo: float, hi: float, num_bins: int) -> torch.Tensor:
    """num_bins + 1 equal-width edges over [lo, hi]."""
    if num_bins < 2 or not hi > lo:
        raise ValueError(f"need num_bins ≥ 2 and hi > lo, got {num_bins}, [{lo}, {hi}]")
    return torch.linspace(lo, hi, num_bins + 1)


def bin_centers(lo: float, hi: float, num_bins: int) -> torch.Tensor:
    """(num_bins,) bin centres."""
    e = bin_edges(lo, hi, num_bins)
    return 0.5 * (e[1:] + e[:-1])


def to_bins(values: torch.Tensor, lo: float, hi: float, num_bins: int) -> torch.Tensor:
    """Values → long bin indices in [0, num_bins − 1] (values outside [lo, hi] go to the end bins)."""
    idx = torch.floor((values - lo) / (hi - lo) * num_bins).long()
    return idx.clamp(0, num_bins - 1)


def expected_value(logits: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Σ softmax(logits)·centres over the last dim."""
    return (logits.softmax(-1) * centers.to(logits)).sum(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim."""
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """entropy / log(num_bins) ∈ [0, 1]."""
    return entropy(logits) / math.log(logits.shape[-1])


def monte_carlo_value(success: torch.Tensor, tau: torch.Tensor, episode_len: torch.Tensor | int,
                      gamma: float = 0.98) -> torch.Tensor:
    """V(o_τ) = γ^(F − τ)·success for frame index τ of an episode of F frames (broadcasting)."""
    return gamma ** (torch.as_tensor(episode_len, dtype=torch.float32) - tau.float()) * success.float()


def _unet2d(in_ch: int, out_ch: int, channels: tuple[int, ...], groups: int, head_dim: int,
            class_embed: bool) -> UNet2DModel:
    if len(channels) != 2:
        raise ValueError(f"heads use exactly two down/up blocks, got block_out_channels={channels}")
    return UNet2DModel(
        in_channels=in_ch, out_channels=out_ch, block_out_channels=tuple(channels), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=True, attention_head_dim=head_dim, norm_num_groups=groups,
        class_embed_type="identity" if class_embed else None)


class _HeadBase(StrictLoadMixin, ModelMixin, ConfigMixin):
    def _check_latents(self, latents: torch.Tensor) -> tuple[int, int]:
        c = self.config
        check_shape("predicted latents", latents, (None, None, c.latent_channels, c.latent_height, c.latent_width))
        check_finite("predicted latents", latents)
        return latents.shape[0], latents.shape[1]

    @staticmethod
    def _frame_index(B: int, H: int, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(H, device=like.device, dtype=like.dtype).repeat(B)


class UQHead(_HeadBase):
    """Per-latent-element error distribution.

    Args:
        latent_channels, latent_height, latent_width: the world model's latent frame (C, h, w).
        num_bins: 30; max_error: 10 (bins over |error| ∈ [0, max_error]).
        block_out_channels: the two U-Net widths; norm_num_groups, attention_head_dim: U-Net details.
        temperature: the logits are divided by it (temperature scaling; 1 = as trained). Fitted after training on
            held-out episodes by ``vidplan calibrate-uq`` (:mod:`vidplan_core.eval.calibration`), so the bin
            probabilities, and the entropy the planner weights frames by, are calibrated.
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 72, latent_width: int = 40,
                 num_bins: int = 30, max_error: float = 10.0, block_out_channels: tuple[int, ...] = (128, 256),
                 norm_num_groups: int = 32, attention_head_dim: int = 32, temperature: float = 1.0):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"UQHead temperature must be a finite number > 0, got {temperature}")
        self.unet = _unet2d(latent_channels, latent_channels * num_bins, tuple(block_out_channels),
                            norm_num_groups, attention_head_dim, class_embed=False)
        self.register_buffer("centers", bin_centers(0.0, max_error, num_bins), persistent=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, H, C, h, w) predicted latents → logits (B, H, C, h, w, num_bins)."""
        B, H = self._check_latents(latents)
        c = self.config
        x = latents.flatten(0, 1).to(self.dtype)
        out = self.unet(x, self._frame_index(B, H, x)).sample  # (B·H, C·K, h, w)
        out = out.reshape(B, H, c.latent_channels, c.num_bins, *out.shape[-2:])
        if c.temperature != 1.0:
            out = out / c.temperature
        return out.permute(0, 1, 2, 4, 5, 3)

    def uncertainty(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"h": normalised entropy (B, H, C, h, w) ∈ [0, 1], "expected_error": (B, H, C, h, w)}."""
        lg = self.forward(latents)
        return {"h": normalized_entropy(lg), "expected_error": expected_value(lg, self.centers)}

    def loss(self, pred_latents: torch.Tensor, true_latents: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the bin of |pred − true| (inputs detached: no gradient into the flow map)."""
        pred_latents, true_latents = pred_latents.detach(), true_latents.detach()
        if pred_latents.shape != true_latents.shape:
            raise ValueError(f"pred/true latents differ in shape: {tuple(pred_latents.shape)} vs "
                             f"{tuple(true_latents.shape)}")
        c = self.config
        target = to_bins((pred_latents - true_latents).abs(), 0.0, c.max_error, c.num_bins)
        lg = self.forward(pred_latents)
        return F.cross_entropy(lg.reshape(-1, c.num_bins), target.reshape(-1))

    def training_step(self, optimizer: torch.optim.Optimizer, pred_latents: torch.Tensor,
                      true_latents: torch.Tensor) -> float:
        self.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(pred_latents, true_latents)
        loss.backward()
        optimizer.step()
        return float(loss.detach())


class RewardHead(_HeadBase):
    """Per-frame value distribution from predicted latents and the frame's action.

    Args:
        latent_channels, latent_height, latent_width: (C, h, w).
        num_bins: 20 over V ∈ [0, 1]. action_hidden: width of the action MLP's hidden layer.
        action_p01, action_p99, action_angle_center: action statistics (as the world model's).
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 72, latent_width: int = 40,
                 num_bins: int = 20, block_out_channels: tuple[int, ...] = (128, 256), norm_num_groups: int = 32,
                 attention_head_dim: int = 32, action_hidden: int = 256,
                 action_p01: tuple[float, ...] = (-1.0,) * 7, action_p99: tuple[float, ...] = (1.0,) * 7,
                 action_angle_center: tuple[float, ...] = (0.0, 0.0, 0.0)):
        super().__init__()
        self.unet = _unet2d(latent_channels, num_bins, tuple(block_out_channels), norm_num_groups,
                            attention_head_dim, class_embed=True)
        temb = block_out_channels[0] * 4
        self.action_mlp = nn.Sequential(nn.Linear(ACTION_DIM, action_hidden), nn.SiLU(),
                                        nn.Linear(action_hidden, temb))
        self._normalizer = ActionNormalizer(action_p01, action_p99, action_angle_center)
        self.register_buffer("centers", bin_centers(0.0, 1.0, num_bins), persistent=False)

    def set_action_stats(self, normalizer: ActionNormalizer) -> None:
        self._normalizer = normalizer
        self.register_to_config(action_p01=normalizer.p01.tolist(), action_p99=normalizer.p99.tolist(),
                                action_angle_center=normalizer.angle_center.tolist())

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, H, C, h, w) latents + (B, H, 7) raw actions of those frames → logits (B, H, num_bins)."""
        B, H = self._check_latents(latents)
        check_shape("actions", actions, (B, H, ACTION_DIM))
        check_finite("actions", actions)
        x = latents.flatten(0, 1).to(self.dtype)
        a = self.action_mlp(self._normalizer.normalize(actions.to(self.dtype)).flatten(0, 1))
        out = self.unet(x, self._frame_index(B, H, x), class_labels=a).sample  # (B·H, K, h, w)
        return out.mean(dim=(-2, -1)).reshape(B, H, self.config.num_bins)

    def value(self, latents: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"value": expected V (B, H) ∈ [0, 1], "h": normalised entropy (B, H) ∈ [0, 1]} (differentiable)."""
        lg = self.forward(latents, actions)
        return {"value": expected_value(lg, self.centers), "h": normalized_entropy(lg)}

    def loss(self, pred_latents: torch.Tensor, actions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the bin of the Monte-Carlo value (B, H) ∈ [0, 1]; latents detached."""
        c = self.config
        check_shape("values", values, (pred_latents.shape[0], pred_latents.shape[1]))
        target = to_bins(values.detach(), 0.0, 1.0, c.num_bins)
        lg = self.forward(pred_latents.detach(), actions.detach())
        return F.cross_entropy(lg.reshape(-1, c.num_bins), target.reshape(-1))

    def training_step(self, optimizer: torch.optim.Optimizer, pred_latents: torch.Tensor, actions: torch.Tensor,
                      values: torch.Tensor) -> float:
        self.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(pred_latents, actions, values)
        loss.backward()
        optimizer.step()
        return float(loss.detach())
