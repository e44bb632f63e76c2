"""Action-conditioned video world model (Ctrl-World style) on diffusers' ``UNetSpatioTemporalConditionModel``.

Conditioning (the same layout as Ctrl-World, so its checkpoints map key-for-key, see
:func:`vidplan_core.models.ctrl_world.import_ctrl_world`):

* **History** — the T history latents are *context frames* on the frame axis: the UNet sees
  ``[history (T frames, clean at inference), c_in·x_noisy (H future frames)]`` = T + H frames, and the loss and
  the output use the last H frames only. In addition (SVD style) the latest history latent (the current
  observation) is concatenated on the channel axis of every frame, so ``in_channels = 2·latent_channels``.
  During training the history gets a small random noise augmentation (``history_noise_std``).
* **Actions** — raw 7-D EE poses (m, rad, gripper 0..1) for all T + H frames are p01/p99-normalised
  (:class:`vidplan_core.spaces.ActionNormalizer`, statistics stored in the config) and embedded per frame by an
  MLP (7 → 1024 → 1024 → 1024 in ``full``) into one cross-attention token per frame; frame f's spatial
  cross-attention attends only to its own token ("frame-level conditioning"). An optional pooled text
  embedding (e.g. CLIP ``text_embeds``, dim 512) is tiled to the token width and added (Ctrl-World).
  Classifier-free guidance drops the action tokens to zero.
* **Spatial action maps** (optional, ``action_maps`` config): the same actions rendered through the camera
  calibration into :data:`~vidplan_core.models.action_maps.ACTION_MAP_CHANNELS` per view
  (:class:`~vidplan_core.models.action_maps.ActionMapRenderer`) and concatenated to every frame's UNet input on the
  channel axis. Their input weights start at zero, so a model with maps starts equal to the same model without
  them (and a checkpoint without them loads with the input convolution padded by zeros). Guidance and action
  dropout zero the maps together with the tokens.
* **Residual to the current frame** (``residual_to_current``): the denoiser is
  ``D = current + c_skip·(x − current) + c_out·F(c_in·(x − current))`` instead of ``c_skip·x + c_out·F(c_in·x)``
  — EDM on the residual x1 − current, written in absolute latents (the noising x = x1 + σ·n is unchanged, so
  samplers, the flow map and the exports need nothing else). A network that outputs nothing then predicts the copy
  baseline (a K=1 flow-map rollout returns the current frame); with ``sigma_data`` about the residual's spread
  (the change of the latents over the horizon) training starts there and learns only what moves.
* **Motion-weighted loss** (``motion_loss_weight`` α): each latent pixel's squared error is weighted by
  (1 + α·m/mean(m)) / (1 + α), m = |x1 − current| averaged over channels — the pixels that change (robot,
  pushed objects) count up to (1 + α)× more than the static background, and the weights average 1.
* **Noise level** — EDM preconditioning (:class:`~vidplan_core.models.edm.EDMPreconditioning`);
  ``c_noise(σ) = ln σ / 4`` enters the UNet's timestep embedding. ``emb_extra`` (B, time_embed_dim) is added to
  that embedding — the flow map feeds its (t − s) embedding there.

Tensor conventions: latents are (B, F, C, h, w) in the autoencoder's scaled latent space, where h covers the
3 vertically stacked views; σ is (B,) in EDM units; actions are (B, T + H, 7) *unnormalised*.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from diffusers import ModelMixin, UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from vidplan_core.spaces import ACTION_DIM, ActionNormalizer

from ._io import StrictLoadMixin, check_finite, check_shape
from .action_maps import ActionMapRenderer, resolve_action_map_spec
from .edm import EDMPreconditioning

__all__ = ["ActionEncoder", "WorldModel"]


class ActionEncoder(nn.Module):
    """Per-frame MLP on normalised 7-D actions → one token per frame.

    Layer names (``action_encode.0/2/4``) match Ctrl-World's ``Action_encoder2`` so weights import directly.

    Args:
        action_dim: 7.
        hidden_dims: hidden widths, e.g. (1024, 1024).
        out_dim: token width = the UNet's cross-attention dim.
        text_embed_dim: width of an optional pooled text embedding (must divide ``out_dim``; tiled and added).
    """

    def __init__(self, action_dim: int, hidden_dims: list[int], out_dim: int, text_embed_dim: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        d = action_dim
        for h in hidden_dims:
            layers += [nn.Linear(d, h), nn.SiLU()]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.action_encode = nn.Sequential(*layers)
        if text_embed_dim is not None and out_dim % text_embed_dim:
            raise ValueError(f"text_embed_dim {text_embed_dim} must divide the token width {out_dim}")
        self.text_embed_dim = text_embed_dim
        self.out_dim = out_dim

    def forward(self, actions_norm: torch.Tensor, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F, 7) normalised actions [+ (B, D_text)] → (B, F, out_dim) tokens."""
        tok = self.action_encode(actions_norm)
        if text_embeds is not None:
            if self.text_embed_dim is None:
                raise ValueError("this world model was configured without text conditioning (text_embed_dim=None)")
            check_shape("text_embeds", text_embeds, (tok.shape[0], self.text_embed_dim))
            tok = tok + text_embeds.repeat(1, self.out_dim // self.text_embed_dim)[:, None, :].to(tok.dtype)
        return tok


def _block_types(n: int, attention_levels: tuple[bool, ...] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down/up block types; default = SVD layout (cross-attention in every level but the deepest).

    ``attention_levels[i]`` says whether level i (0 = full resolution) has spatial/temporal transformers; the up
    path mirrors the down path. The mid block always has one.
    """
    if attention_levels is None:
        attention_levels = tuple([True] * (n - 1) + [False])
    if len(attention_levels) != n:
        raise ValueError(f"attention_levels needs one flag per level ({n}), got {list(attention_levels)}")
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention_levels)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attention_levels))
    return down, up


class WorldModel(StrictLoadMixin, ModelMixin, ConfigMixin):
    """Action-conditioned latent video diffusion model (EDM denoiser) — the teacher.

    Construct from a named configuration with :func:`vidplan_core.models.configs.build_world_model` or
    directly with the keyword arguments below (all are saved to ``config.json``).

    Key config fields: ``latent_channels`` C, ``latent_height`` h (all views stacked), ``latent_width`` w,
    ``num_history`` T, ``num_future`` H; UNet shape (``block_out_channels``, ``layers_per_block``,
    ``cross_attention_dim``, ``num_attention_heads``); EDM (``sigma_data``, ``c_out_sign``, ``sigma_min``,
    ``sigma_max``, ``p_mean``, ``p_std``, ``loss_weighting`` ∈ {"edm", "unit"}); training
    (``action_dropout``, ``history_noise_std``, ``cond_noise_max``, ``motion_loss_weight``);
    ``residual_to_current`` (module docstring); action statistics (``action_p01``,
    ``action_p99``, ``action_angle_center``); ``attention_levels`` (one bool per UNet level, default SVD's
    "all but the deepest"; dropping attention at full resolution is the cheapest speed-up on CPU);
    ``action_maps`` (None, or :func:`~vidplan_core.models.action_maps.action_map_config` output: spatial action
    conditioning, whose grid must be one view of the latent, (latent_height / num_views, latent_width)).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        latent_height: int = 72,
        latent_width: int = 40,
        num_views: int = 3,
        num_history: int = 6,
        num_future: int = 5,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        cross_attention_dim: int = 1024,
        num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
        transformer_layers_per_block: int = 1,
        addition_time_embed_dim: int = 256,
        action_dim: int = ACTION_DIM,
        action_hidden_dims: tuple[int, ...] = (1024, 1024),
        text_embed_dim: int | None = None,
        concat_current_frame: bool = True,
        cond_latent_scale: float = 1.0,
        sigma_data: float = 1.0,
        c_out_sign: float = -1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        p_mean: float = 0.7,
        p_std: float = 1.6,
        loss_weighting: str = "edm",
        action_dropout: float = 0.05,
        history_noise_std: float = 0.3,
        cond_noise_max: float = 0.2,
        fps: int = 5,
        motion_bucket_id: int = 127,
        action_p01: tuple[float, ...] = (-1.0,) * 7,
        action_p99: tuple[float, ...] = (1.0,) * 7,
        action_angle_center: tuple[float, ...] = (0.0, 0.0, 0.0),
        attention_levels: tuple[bool, ...] | None = None,
        action_maps: dict[str, Any] | None = None,
        residual_to_current: bool = False,
        motion_loss_weight: float = 0.0,
    ):
        super().__init__()
        if motion_loss_weight < 0:
            raise ValueError(f"motion_loss_weight must be ≥ 0, got {motion_loss_weight}")
        if loss_weighting not in ("edm", "unit"):
            raise ValueError(f"loss_weighting must be 'edm' or 'unit', got {loss_weighting!r}")
        if action_dim != ACTION_DIM:
            raise ValueError(f"action_dim must be {ACTION_DIM} (xyz, Euler xyz, gripper), got {action_dim}")
        if latent_height % num_views:
            raise ValueError(f"latent_height {latent_height} must be divisible by num_views {num_views}")
        down, up = _block_types(len(block_out_channels), None if attention_levels is None else tuple(attention_levels))
        heads = num_attention_heads if isinstance(num_attention_heads, int) else tuple(num_attention_heads)
        if action_maps is not None and "views" not in action_maps:
            # the user form ({calibration: ...}) is resolved here, once, and the resolved cameras are stored in the
            # config: a saved model keeps the calibration it was built with, whatever the calibration file says later
            action_maps = resolve_action_map_spec(dict(action_maps), (latent_height // num_views, latent_width))
            self.register_to_config(action_maps=action_maps)
        self.map_renderer = None if action_maps is None else ActionMapRenderer(action_maps)
        if self.map_renderer is not None:
            want = (latent_height // num_views, latent_width)
            if tuple(self.map_renderer.grid_hw) != want:
                raise ValueError(f"action_maps.grid_hw {list(self.map_renderer.grid_hw)} must be one view of the "
                                 f"latent, (latent_height / num_views, latent_width) = {list(want)}")
        n_maps = 0 if self.map_renderer is None else ActionMapRenderer.num_channels
        self.unet = UNetSpatioTemporalConditionModel(
            sample_size=None,
            in_channels=latent_channels * (2 if concat_current_frame else 1) + n_maps,
            out_channels=latent_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(block_out_channels),
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=3 * addition_time_embed_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=heads,
            num_frames=num_history + num_future,
        )
        if n_maps:  # zero input weights: the model starts equal to one without the maps
            with torch.no_grad():
                self.unet.conv_in.weight[:, -n_maps:].zero_()
        self.action_encoder = ActionEncoder(action_dim, list(action_hidden_dims), cross_attention_dim, text_embed_dim)
        self.edm = EDMPreconditioning(sigma_data, c_out_sign)
        self._normalizer = ActionNormalizer(action_p01, action_p99, action_angle_center)

    # ------------------------------------------------------------------ properties / helpers
    @property
    def time_embed_dim(self) -> int:
        """Width of the UNet timestep embedding (where ``emb_extra`` is added): 4·block_out_channels[0]."""
        return self.unet.time_embedding.linear_2.out_features

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent frame."""
        c = self.config
        return (c.latent_channels, c.latent_height, c.latent_width)

    @property
    def normalizer(self) -> ActionNormalizer:
        return self._normalizer

    def set_action_stats(self, normalizer: ActionNormalizer) -> None:
        """Store p01/p99 action statistics (saved with the model's config)."""
        self._normalizer = normalizer
        self.register_to_config(action_p01=normalizer.p01.tolist(), action_p99=normalizer.p99.tolist(),
                                action_angle_center=normalizer.angle_center.tolist())

    def check_inputs(self, x: torch.Tensor | None, history: torch.Tensor, actions: torch.Tensor) -> int:
        """Check shapes and finiteness of history (B, T, C, h, w), actions (B, T+H, 7) and, when given, noisy
        future latents x (B, H, C, h, w); returns B. Raises ValueError naming the input."""
        c = self.config
        B = history.shape[0] if history.ndim else -1
        check_shape("history latents", history, (None, c.num_history, *self.latent_shape))
        check_shape("actions", actions, (B, c.num_history + c.num_future, ACTION_DIM))
        check_finite("history latents", history)
        check_finite("actions", actions)
        if x is not None:
            check_shape("noisy future latents", x, (B, c.num_future, *self.latent_shape))
            check_finite("noisy future latents", x)
        return B

    # ------------------------------------------------------------------ conditioning
    def encode_actions(self, actions: torch.Tensor, text_embeds: torch.Tensor | None = None,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
        """Raw actions (B, T+H, 7) → tokens (B, T+H, D); rows with ``keep[b] == False`` become zero (uncond)."""
        tok = self.action_encoder(self._normalizer.normalize(actions.to(self.dtype)), text_embeds)
        if keep is not None:
            tok = tok * keep.to(tok.dtype).reshape(-1, 1, 1)
        return tok

    def unet_forward(self, sample: torch.Tensor, c_noise: torch.Tensor, tokens: torch.Tensor,
                     emb_extra: torch.Tensor | None = None) -> torch.Tensor:
        """The diffusers UNet's forward with frame-level cross-attention and an additive embedding.

        Args:
            sample: (B, F, C_in, h, w).
            c_noise: (B,) EDM c_noise.
            tokens: (B, F, D) one token per frame (or (B, F, L, D)).
            emb_extra: (B, time_embed_dim) added to the timestep embedding, or None.
        Returns:
            (B, F, C, h, w) raw network output F_θ.
        """
        u = self.unet
        B, F = sample.shape[:2]
        c = self.config
        emb = u.time_embedding(u.time_proj(c_noise.reshape(B)).to(sample.dtype))
        add_ids = torch.tensor([float(c.fps - 1), float(c.motion_bucket_id), 0.0], dtype=sample.dtype,
                               device=sample.device).repeat(B)
        aug = u.add_embedding(u.add_time_proj(add_ids).reshape(B, -1).to(emb.dtype))
        emb = emb + aug
        if emb_extra is not None:
            emb = emb + emb_extra.to(emb.dtype)
        emb = emb.repeat_interleave(F, dim=0)
        if tokens.ndim == 3:
            tokens = tokens[:, :, None, :]
        ehs = tokens.reshape(B * F, tokens.shape[2], tokens.shape[3]).to(sample.dtype)
        h = u.conv_in(sample.flatten(0, 1))
        ioi = torch.zeros(B, F, dtype=h.dtype, device=h.device)
        up_factor = 2 ** u.num_upsamplers
        forward_upsample_size = any(s % up_factor != 0 for s in sample.shape[-2:])
        res: tuple[torch.Tensor, ...] = (h,)
        for blk in u.down_blocks:
            if getattr(blk, "has_cross_attention", False):
                h, r = blk(hidden_states=h, temb=emb, encoder_hidden_states=ehs, image_only_indicator=ioi)
            else:
                h, r = blk(hidden_states=h, temb=emb, image_only_indicator=ioi)
            res += r
        h = u.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=ehs, image_only_indicator=ioi)
        for i, blk in enumerate(u.up_blocks):
            rs = res[-len(blk.resnets):]
            res = res[: -len(blk.resnets)]
            upsample_size = res[-1].shape[2:] if (i < len(u.up_blocks) - 1 and forward_upsample_size) else None
            kw: dict[str, Any] = dict(hidden_states=h, temb=emb, res_hidden_states_tuple=rs,
                                      upsample_size=upsample_size, image_only_indicator=ioi)
            if getattr(blk, "has_cross_attention", False):
                kw["encoder_hidden_states"] = ehs
            h = blk(**kw)
        h = u.conv_out(u.conv_act(u.conv_norm_out(h)))
        return h.reshape(B, F, *h.shape[1:])

    def render_action_maps(self, actions: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor | None:
        """Raw actions (B, T+H, 7) → spatial action maps (B, T+H, K, h, w), hand cameras posed at the current
        (last history) frame; rows with ``keep[b] == False`` are zero. None when the model has no action maps."""
        if self.map_renderer is None:
            return None
        maps = self.map_renderer(actions.to(self.dtype), self.config.num_history - 1)
        if keep is not None:
            maps = maps * keep.to(maps.dtype).reshape(-1, 1, 1, 1, 1)
        return maps

    def assemble(self, x_in: torch.Tensor, history_in: torch.Tensor, current: torch.Tensor,
                 maps: torch.Tensor | None = None) -> torch.Tensor:
        """Frames [history_in, x_in] (+ channel-concatenated current-frame latent, + action maps (B, T+H, K, h, w))
        → UNet input (B, T+H, C_in, h, w)."""
        sample = torch.cat([history_in, x_in], dim=1)
        if self.config.concat_current_frame:
            cond = (current * self.config.cond_latent_scale)[:, None].expand_as(sample)
            sample = torch.cat([sample, cond], dim=2)
        if self.map_renderer is not None:
            if maps is None:
                raise ValueError("this world model conditions on action maps: pass maps (render_action_maps)")
            sample = torch.cat([sample, maps.to(sample.dtype)], dim=2)
        return sample

    # ------------------------------------------------------------------ denoiser
    def shift(self, history: torch.Tensor) -> torch.Tensor | None:
        """The latent the denoiser is centred on: the current (last history) frame (B, 1, C, h, w) with
        ``residual_to_current``, else None (centred on zero)."""
        return history[:, -1:] if self.config.residual_to_current else None

    def precondition(self, x: torch.Tensor, raw: torch.Tensor, sigma: torch.Tensor,
                     shift: torch.Tensor | None) -> torch.Tensor:
        """Denoised estimate D from the UNet output ``raw`` at noise level σ (B,), centred on ``shift``."""
        if shift is None:
            return self.edm.denoise(x, raw, sigma)
        return shift + self.edm.denoise(x - shift, raw, sigma)

    def x0_hat(self, x: torch.Tensor, raw: torch.Tensor, sigma: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Noise estimate (x − D)/σ of :meth:`denoise`'s output (closed form, finite as σ → 0), (B, H, C, h, w)."""
        shift = self.shift(history)
        return self.edm.x0_hat(x if shift is None else x - shift, raw, sigma)

    def motion_weights(self, x1: torch.Tensor, history: torch.Tensor) -> torch.Tensor | None:
        """Per-pixel loss weights (B, H, 1, h, w) averaging 1, larger where the future differs from the current
        frame (module docstring); None when ``motion_loss_weight`` is 0."""
        a = float(self.config.motion_loss_weight)
        if a == 0.0:
            return None
        m = (x1 - history[:, -1:]).abs().mean(dim=2, keepdim=True)
        return (1.0 + a * m / (m.mean() + 1e-8)) / (1.0 + a)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
                text_embeds: torch.Tensor | None = None, emb_extra: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, return_raw: bool = False, maps: torch.Tensor | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """EDM denoiser D(x; σ, history, actions).

        Args:
            x: (B, H, C, h, w) noisy future latents x1 + σ·n (EDM scale).
            sigma: (B,) or scalar noise level.
            history: (B, T, C, h, w) clean history latents.
            actions: (B, T+H, 7) raw EE actions (history frames first).
            text_embeds: optional (B, text_embed_dim).
            emb_extra: optional (B, time_embed_dim) additive embedding (flow map's (t−s)).
            tokens: precomputed action tokens (B, T+H, D) (skips the encoder; used for guidance / zero tokens).
            return_raw: also return the raw network output F (B, H, C, h, w).
            maps: precomputed action maps (B, T+H, K, h, w) (default: rendered from ``actions``; zero for guidance).
        Returns:
            x̂1 = D (B, H, C, h, w) [, F].
        """
        B = self.check_inputs(x, history, actions)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
        if tokens is None:
            tokens = self.encode_actions(actions, text_embeds)
        shift = self.shift(history)
        x_in = self.edm.c_in(sigma).reshape(B, 1, 1, 1, 1) * (x if shift is None else x - shift)
        if maps is None:
            maps = self.render_action_maps(actions)
        sample = self.assemble(x_in, history, history[:, -1], maps)
        raw = self.unet_forward(sample, self.edm.c_noise(sigma), tokens, emb_extra)[:, self.config.num_history:]
        d = self.precondition(x, raw, sigma, shift)
        return (d, raw) if return_raw else d

    def guided_denoise(self, x: torch.Tensor, sigma: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
                       guidance: float = 1.0, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free action guidance: D_u + w·(D_c − D_u), uncond = zero action tokens (one batched call)."""
        if guidance == 1.0:
            return self.denoise(x, sigma, history, actions, text_embeds)
        B = x.shape[0]
        tok = self.encode_actions(actions, text_embeds)
        tok2 = torch.cat([tok, torch.zeros_like(tok)])
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
        maps = self.render_action_maps(actions)
        maps2 = None if maps is None else torch.cat([maps, torch.zeros_like(maps)])
        d = self.denoise(torch.cat([x, x]), torch.cat([sig, sig]), torch.cat([history, history]),
                         torch.cat([actions, actions]), tokens=tok2, maps=maps2)
        dc, du = d[:B], d[B:]
        return du + guidance * (dc - du)
