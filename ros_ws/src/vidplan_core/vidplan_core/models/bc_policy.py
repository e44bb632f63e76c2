"""A behaviour-cloned nominal policy: the role π0.5 plays in the paper (VidPlan perturbs its chunks).

It reads what the planner already has at every cycle — the latents of the observation history (the bundle's own
autoencoder, the world model's input), the current EE pose and the instruction's text embedding (the one that
conditions the world model) — and answers the next H EE poses at the model rate. It is trained on the successful
demonstrations only (``vidplan train bc``), with the target expressed as the change from the current pose in the
normalised action space, so a network whose last layer is zero says "hold" — the safe answer — before training.

Shapes: latents (B, T, C, h, w) (T = ``num_history``), pose (B, 7) raw [m, rad, gripper 0..1], text (B, D) →
chunk (B, H, 7) raw poses (:meth:`BCPolicy.act`) or normalised deltas (B, H, 7) (:meth:`forward`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from vidplan_core.spaces import ACTION_DIM, ActionNormalizer

from ._io import StrictLoadMixin, check_finite, check_shape

__all__ = ["BCPolicy"]


class BCPolicy(StrictLoadMixin, ModelMixin, ConfigMixin):
    """Latent history + pose + instruction → the next ``horizon`` EE poses.

    Args:
        latent_channels, latent_height, latent_width: (C, h, w) of the bundle's autoencoder latents.
        num_history: T latent frames read (the last is now). horizon: H poses answered (5 Hz).
        text_dim: width of the instruction embedding (0: no instruction input).
        channels: widths of the three stride-2 convolutions over the stacked history latents.
        pooled: (rows, cols) the feature map is averaged to before the MLP (keeps where things are).
        hidden: width of the MLP. action_p01, action_p99, action_angle_center: the dataset's action statistics.
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 36, latent_width: int = 20,
                 num_history: int = 2, horizon: int = 5, text_dim: int = 384,
                 channels: tuple[int, ...] = (64, 128, 128), pooled: tuple[int, int] = (6, 4), hidden: int = 512,
                 action_p01: tuple[float, ...] = (-1.0,) * 7, action_p99: tuple[float, ...] = (1.0,) * 7,
                 action_angle_center: tuple[float, ...] = (0.0, 0.0, 0.0)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = latent_channels * num_history
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(tuple(pooled)), nn.Flatten())
        feat = c_in * pooled[0] * pooled[1] + ACTION_DIM + (hidden // 4 if text_dim else 0)
        self.text = nn.Sequential(nn.Linear(text_dim, hidden // 4), nn.SiLU()) if text_dim else None
        self.head = nn.Sequential(nn.Linear(feat, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, horizon * ACTION_DIM))
        nn.init.zeros_(self.head[-1].weight)  # untrained = hold the current pose
        nn.init.zeros_(self.head[-1].bias)
        self._normalizer = ActionNormalizer(action_p01, action_p99, action_angle_center)

    @property
    def normalizer(self) -> ActionNormalizer:
        return self._normalizer

    def set_action_stats(self, normalizer: ActionNormalizer) -> None:
        self._normalizer = normalizer
        self.register_to_config(action_p01=normalizer.p01.tolist(), action_p99=normalizer.p99.tolist(),
                                action_angle_center=normalizer.angle_center.tolist())

    def forward(self, latents: torch.Tensor, pose: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C, h, w) latents, (B, 7) raw current pose, (B, D) text → (B, H, 7) normalised pose deltas."""
        cfg = self.config
        B = latents.shape[0]
        check_shape("latents", latents, (B, cfg.num_history, cfg.latent_channels, cfg.latent_height,
                                         cfg.latent_width))
        check_shape("pose", pose, (B, ACTION_DIM))
        check_finite("latents", latents)
        check_finite("pose", pose)
        parts = [self.encoder(latents.flatten(1, 2).to(self.dtype)),
                 self._normalizer.normalize(pose.to(self.dtype))]
        if self.text is not None:
            if text is None:
                raise ValueError(f"this policy reads the instruction: give its text embedding (B, {cfg.text_dim})")
            check_shape("text", text, (B, cfg.text_dim))
            parts.append(self.text(text.to(self.dtype)))
        return self.head(torch.cat(parts, dim=-1)).reshape(B, cfg.horizon, ACTION_DIM)

    def targets(self, pose: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """The training target of :meth:`forward`: (B, H, 7) raw future poses as normalised deltas from (B, 7)."""
        n = self._normalizer
        return n.normalize(future.to(self.dtype)) - n.normalize(pose.to(self.dtype))[:, None]

    @torch.no_grad()
    def act(self, latents: torch.Tensor, pose: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, 7) raw EE poses [m, rad, gripper clipped to 0..1]: the current pose plus the predicted change."""
        n = self._normalizer
        out = n.denormalize(n.normalize(pose.to(self.dtype))[:, None] + self(latents, pose, text))
        out[..., 6] = out[..., 6].clamp(0.0, 1.0)
        return out
