"""Flow map distilled from the EDM world model: DIFF2FLOW warp, X_{s,t}, K-step sampler, PSD training.

Conventions (DESIGN.md "The math"): flow time t = 0 is noise, t = 1 is data, x_t = t·x1 + (1 − t)·x0.
DIFF2FLOW turns the EDM denoiser into a velocity:
    x_edm = x_t / t,  σ = (1 − t)/t,  x̂1 = D(x_edm; σ),  x̂0 = (x_edm − x̂1)/σ  (closed form, finite at σ→0),
    v = x̂1 − x̂0.
The flow map X_{s,t}(x) = x + (t − s)·v_{s,t}(x) evaluates the UNet at the *current* time s; the target time t
enters through an embedding of (t − s) added to the UNet's timestep embedding, whose last layer is
zero-initialised, so an untrained flow map reproduces the teacher's DIFF2FLOW velocity exactly.
Times live in [t_min, t_max], t_min = 1/(1 + σ_max) (0.0123 for σ_max = 80), t_max = 1.
Sampling starts from x_{t_min} = (1 − t_min)·x0, x0 ~ N(0, I) (the t_min·x1 part is unknown and ≈ 1 %).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

from ._io import StrictLoadMixin, check_shape
from .edm import sigma_to_t, t_to_sigma
from .world_model import WorldModel

__all__ = ["FlowMap", "diff2flow_velocity", "world_model_config_dict"]


def world_model_config_dict(model: WorldModel) -> dict[str, Any]:
    """The constructor arguments of a :class:`WorldModel` (its config without diffusers' private keys)."""
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def _vec(v: Any, B: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1).expand(B)


def diff2flow_velocity(model: WorldModel, x: torch.Tensor, s: torch.Tensor | float, history: torch.Tensor,
                       actions: torch.Tensor, text_embeds: torch.Tensor | None = None,
                       emb_extra: torch.Tensor | None = None, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """DIFF2FLOW velocity of an EDM world model at flow time s.

    Args:
        x: (B, H, C, h, w) flow-space latents x_s; s: (B,) or scalar in (0, 1].
        history, actions, text_embeds, tokens: as :meth:`WorldModel.denoise`.
        emb_extra: additive UNet embedding (the flow map's (t − s) embedding), None for the teacher.
    Returns:
        v = x̂1 − x̂0, (B, H, C, h, w).
    """
    B = x.shape[0]
    s = _vec(s, B, x)
    sigma = t_to_sigma(s)
    x_edm = x / s.reshape(B, 1, 1, 1, 1)
    x1_hat, raw = model.denoise(x_edm, sigma, history, actions, text_embeds, emb_extra, tokens, return_raw=True)
    x0_hat = model.x0_hat(x_edm, raw, sigma, history)
    return x1_hat - x0_hat


class FlowMap(StrictLoadMixin, ModelMixin, ConfigMixin):
    """Few-step flow map X_{s,t} built on a copy of the teacher :class:`WorldModel`.

    Args:
        world_model: the teacher's config dict (see :func:`world_model_config_dict`).
        t_min: smallest flow time; default 1/(1 + σ_max of the world model).
        t_max: largest flow time (1 = data).
        gap_embed_dim: sinusoidal width of the (t − s) embedding.
        gap_scale: (t − s) is multiplied by this before the sinusoidal projection (1000 like diffusion steps).
        flow_fraction: share of each PSD batch used for L_flow (2/3; the rest for L_distill).
        distill_weighting: "velocity" divides L_distill by (t − s)² (compares velocities), "none" does not.
        p_start: probability that a distillation sample starts at s = t_min (the sampler's start).
        p_end: probability that a distillation sample ends at t = t_max.
        grid: default K-step time grid, "uniform" (in t) or "karras" (EDM σ schedule mapped to t).
    """

    @register_to_config
    def __init__(self, world_model: dict[str, Any] | None = None, t_min: float | None = None, t_max: float = 1.0,
                 gap_embed_dim: int = 256, gap_scale: float = 1000.0, flow_fraction: float = 2.0 / 3.0,
                 distill_weighting: str = "velocity", p_start: float = 0.25, p_end: float = 0.25,
                 grid: str = "uniform"):
        super().__init__()
        self.model = WorldModel.from_config(dict(world_model or {}))
        if distill_weighting not in ("velocity", "none"):
            raise ValueError(f"distill_weighting must be 'velocity' or 'none', got {distill_weighting!r}")
        if grid not in ("uniform", "karras"):
            raise ValueError(f"grid must be 'uniform' or 'karras', got {grid!r}")
        if not 0.0 < flow_fraction <= 1.0:
            raise ValueError(f"flow_fraction must be in (0, 1], got {flow_fraction}")
        self.t_lo = float(t_min) if t_min is not None else 1.0 / (1.0 + self.model.config.sigma_max)
        self.t_hi = float(t_max)
        if not 0.0 < self.t_lo < self.t_hi <= 1.0:
            raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={self.t_lo}, t_max={self.t_hi}")
        self.gap_proj = Timesteps(gap_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.gap_embedding = TimestepEmbedding(gap_embed_dim, self.model.time_embed_dim)
        nn.init.zeros_(self.gap_embedding.linear_2.weight)
        nn.init.zeros_(self.gap_embedding.linear_2.bias)

    @classmethod
    def from_teacher(cls, teacher: WorldModel, **kwargs: Any) -> FlowMap:
        """A flow map initialised from ``teacher`` (weights copied; (t − s) embedding zero) — equals it exactly."""
        fm = cls(world_model=world_model_config_dict(teacher), **kwargs)
        fm.model.load_state_dict(teacher.state_dict(), strict=True)
        fm.model.set_action_stats(teacher.normalizer)
        fm = fm.to(teacher.device)
        return fm if teacher.dtype == fm.dtype else fm.to(dtype=teacher.dtype)

    def set_action_stats(self, normalizer: Any) -> None:
        """Set the p01/p99 action statistics (an :class:`~vidplan_core.spaces.ActionNormalizer`)."""
        self.model.set_action_stats(normalizer)
        self.register_to_config(world_model=world_model_config_dict(self.model))

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """diffusers ``save_pretrained``, with the inner world model's current config synced first."""
        self.register_to_config(world_model=world_model_config_dict(self.model))
        super().save_pretrained(save_directory, *args, **kwargs)

    # ------------------------------------------------------------------ the map
    def gap_emb(self, gap: torch.Tensor) -> torch.Tensor:
        """(B,) t − s → (B, time_embed_dim) additive UNet embedding."""
        e = self.gap_proj(gap * self.config.gap_scale).to(self.gap_embedding.linear_1.weight.dtype)
        return self.gap_embedding(e)

    def encode_actions(self, actions: torch.Tensor, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Action tokens (B, T+H, D); pass them as ``tokens=`` to reuse across the K steps."""
        return self.model.encode_actions(actions, text_embeds)

    def velocity(self, x: torch.Tensor, s: torch.Tensor | float, t: torch.Tensor | float, history: torch.Tensor,
                 actions: torch.Tensor, text_embeds: torch.Tensor | None = None,
                 tokens: torch.Tensor | None = None) -> torch.Tensor:
        """v_{s,t}(x): (B, H, C, h, w) for x (B, H, C, h, w) at flow time s, target time t ((B,) or scalars)."""
        B = x.shape[0]
        s, t = _vec(s, B, x), _vec(t, B, x)
        return diff2flow_velocity(self.model, x, s, history, actions, text_embeds, self.gap_emb(t - s), tokens)

    def jump(self, x: torch.Tensor, s: torch.Tensor | float, t: torch.Tensor | float, history: torch.Tensor,
             actions: torch.Tensor, text_embeds: torch.Tensor | None = None,
             tokens: torch.Tensor | None = None) -> torch.Tensor:
        """X_{s,t}(x) = x + (t − s)·v_{s,t}(x), (B, H, C, h, w)."""
        B = x.shape[0]
        s, t = _vec(s, B, x), _vec(t, B, x)
        v = self.velocity(x, s, t, history, actions, text_embeds, tokens)
        return x + (t - s).reshape(B, 1, 1, 1, 1) * v

    def time_grid(self, num_steps: int, kind: str | None = None, rho: float = 7.0) -> torch.Tensor:
        """K + 1 increasing flow times from t_min to t_max ("uniform" in t, or "karras": EDM σ schedule)."""
        if num_steps < 1:
            raise ValueError(f"number of flow-map steps must be ≥ 1, got {num_steps}")
        kind = kind or self.config.grid
        if kind == "uniform":
            return torch.linspace(self.t_lo, self.t_hi, num_steps + 1)
        if kind == "karras":
            s_max, s_min = float(t_to_sigma(torch.tensor(self.t_lo))), float(t_to_sigma(torch.tensor(self.t_hi)))
            i = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
            s_min = max(s_min, 1e-3)
            sig = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            g = sigma_to_t(sig).float()
            g[0], g[-1] = self.t_lo, self.t_hi
            return g
        raise ValueError(f"unknown time grid {kind!r}; use 'uniform' or 'karras'")

    def initial_noise(self, batch: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal x0 of shape (B, H, C, h, w)."""
        c = self.model.config
        return torch.randn((batch, c.num_future, *self.model.latent_shape), generator=generator,
                           device=device or self.device, dtype=dtype or self.dtype)

    def sample(self, history: torch.Tensor, actions: torch.Tensor, num_steps: int = 1,
               time_grid: torch.Tensor | list[float] | None = None, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """K-step rollout: x_{t0} = (1 − t0)·noise, then x_{t_{k+1}} = X_{t_k, t_{k+1}}(x_{t_k}).

        Differentiable (no ``no_grad`` inside): the planner back-propagates to ``actions``.

        Args:
            history: (B, T, C, h, w) latents; actions: (B, T+H, 7) raw EE actions.
            num_steps: K (ignored when ``time_grid`` is given).
            time_grid: K + 1 increasing flow times (default :meth:`time_grid`).
            noise: (B, H, C, h, w) standard normal x0 (default: drawn with ``generator``).
        Returns:
            (B, H, C, h, w) predicted future latents (at t = t_max).
        """
        B = history.shape[0]
        grid = self.time_grid(num_steps) if time_grid is None else torch.as_tensor(time_grid, dtype=torch.float32)
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()):
            raise ValueError(f"time_grid must be ≥ 2 increasing flow times, got {grid.tolist()}")
        if noise is None:
            noise = self.initial_noise(B, generator, history.device, history.dtype)
        check_shape("noise", noise, (B, self.model.config.num_future, *self.model.latent_shape))
        tokens = self.encode_actions(actions, text_embeds)
        g = grid.tolist()
        x = (1.0 - g[0]) * noise
        for k in range(len(g) - 1):
            x = self.jump(x, g[k], g[k + 1], history, actions, tokens=tokens)
        return x

    # ------------------------------------------------------------------ training (Algorithm 2)
    def _sample_t(self, n: int, gen: torch.Generator | None, dev: torch.device) -> torch.Tensor:
        """Flow times from the teacher's log-normal σ distribution, clipped to [t_min, t_max]."""
        c = self.model.config
        sig = (torch.randn(n, generator=gen, device=dev) * c.p_std + c.p_mean).exp()
        return sigma_to_t(sig).clamp(self.t_lo, self.t_hi)

    def psd_loss(self, x1: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
                 text_embeds: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 distill: bool = True) -> dict[str, torch.Tensor]:
        """Progressive self-distillation loss (Algorithm 2, DESIGN.md conventions).

        The batch is split ``flow_fraction`` : rest (2:1) into
            L_flow    = ‖v_{t,t}(x_t) − (x1 − x0)‖²                       (t ~ teacher σ distribution)
            L_distill = ‖X_{s,t}(x_s) − sg(X_{u,t}(X_{s,u}(x_s)))‖² [/(t − s)²]   (t_min ≤ s < u < t ≤ t_max)
        With ``distill=False`` (the flow-loss-only control) the whole batch goes to L_flow.

        Args: x1 (B, H, C, h, w) clean future latents, history (B, T, C, h, w), actions (B, T+H, 7).
        Returns: dict with "loss" (L_flow + L_distill, differentiable), "flow", "distill" (detached).
        """
        B, dev = x1.shape[0], x1.device
        x0 = torch.randn(x1.shape, generator=generator, device=dev, dtype=x1.dtype)
        nf = B if not distill else max(1, min(B - 1, round(B * self.config.flow_fraction)))
        if B < 2 and distill:
            raise ValueError(f"PSD needs a batch of ≥ 2 (flow and distill parts), got {B}")
        r5 = lambda v: v.reshape(-1, 1, 1, 1, 1)  # noqa: E731
        tf = self._sample_t(nf, generator, dev).to(x1.dtype)
        xt = r5(tf) * x1[:nf] + r5(1 - tf) * x0[:nf]
        v = self.velocity(xt, tf, tf, history[:nf], actions[:nf], None if text_embeds is None else text_embeds[:nf])
        err = (v - (x1[:nf] - x0[:nf])) ** 2
        mw = self.model.motion_weights(x1[:nf], history[:nf])  # the teacher's weighting, kept in the student
        l_flow = (err if mw is None else err * mw).mean()
        out = {"flow": l_flow.detach()}
        loss = l_flow
        if distill:
            nd = B - nf
            sl = slice(nf, B)
            s = self._sample_t(nd, generator, dev)
            start = torch.rand(nd, generator=generator, device=dev) < self.config.p_start
            s = torch.where(start, torch.full_like(s, self.t_lo), s)
            s = s.clamp(max=self.t_hi - 1e-3)
            r = torch.rand(nd, generator=generator, device=dev).clamp_min(0.02)
            t = s + (self.t_hi - s) * r
            end = torch.rand(nd, generator=generator, device=dev) < self.config.p_end
            t = torch.where(end, torch.full_like(t, self.t_hi), t)
            u = s + (t - s) * torch.rand(nd, generator=generator, device=dev).clamp(0.05, 0.95)
            s, u, t = (z.to(x1.dtype) for z in (s, u, t))
            xs = r5(s) * x1[sl] + r5(1 - s) * x0[sl]
            h, a = history[sl], actions[sl]
            te = None if text_embeds is None else text_embeds[sl]
            with torch.no_grad():
                tok = self.encode_actions(a, te)
                target = self.jump(self.jump(xs, s, u, h, a, tokens=tok), u, t, h, a, tokens=tok)
            pred = self.jump(xs, s, t, h, a, te)
            err = (pred - target) ** 2
            if self.config.distill_weighting == "velocity":
                err = err / r5(t - s) ** 2
            l_dist = err.mean()
            loss = loss + l_dist
            out["distill"] = l_dist.detach()
        else:
            out["distill"] = torch.zeros((), device=dev)
        out["loss"] = loss
        return out

    def psd_step(self, optimizer: torch.optim.Optimizer, x1: torch.Tensor, history: torch.Tensor,
                 actions: torch.Tensor, text_embeds: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, distill: bool = True,
                 max_grad_norm: float | None = 1.0) -> dict[str, float]:
        """One optimiser step on :meth:`psd_loss`; returns {"loss", "flow", "distill"} as floats."""
        self.train()
        optimizer.zero_grad(set_to_none=True)
        out = self.psd_loss(x1, history, actions, text_embeds, generator, distill)
        out["loss"].backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), max_grad_norm)
        optimizer.step()
        return {k: float(v.detach()) for k, v in out.items()}
