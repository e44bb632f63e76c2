"""The flow map's sampler and training loss (DESIGN.md "The math"; Algorithm 2), for a
:class:`~vidplan_core.models.FlowMap`.

Flow time t = 0 is noise, t = 1 is data; sampling starts from x_{t_min} = (1 − t_min)·x0, x0 ~ N(0, I), and
jumps along a K + 1 point time grid with the flow map X_{s,t}.
"""

from __future__ import annotations

import torch

from vidplan_core.models import FlowMap
from vidplan_core.models._io import check_shape
from vidplan_core.models.edm import sigma_to_t, t_to_sigma

__all__ = ["flow_map_sample", "initial_noise", "psd_loss", "time_grid"]


def time_grid(fm: FlowMap, num_steps: int, kind: str | None = None, rho: float = 7.0) -> torch.Tensor:
    """K + 1 = ``num_steps`` + 1 increasing flow times from t_min to t_max (float32): "uniform" in t, or "karras"
    (the EDM σ schedule mapped to t); ``kind`` defaults to the flow map's ``grid``."""
    if num_steps < 1:
        raise ValueError(f"number of flow-map steps must be ≥ 1, got {num_steps}")
    kind = kind or fm.config.grid
    if kind == "uniform":
        return torch.linspace(fm.t_lo, fm.t_hi, num_steps + 1)
    if kind == "karras":
        s_max, s_min = float(t_to_sigma(torch.tensor(fm.t_lo))), float(t_to_sigma(torch.tensor(fm.t_hi)))
        i = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        s_min = max(s_min, 1e-3)
        sig = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        g = sigma_to_t(sig).float()
        g[0], g[-1] = fm.t_lo, fm.t_hi
        return g
    raise ValueError(f"unknown time grid {kind!r}; use 'uniform' or 'karras'")


def initial_noise(fm: FlowMap, batch: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal x0 of shape (B, H, C, h, w) (the flow map's device and dtype unless given)."""
    c = fm.model.config
    return torch.randn((batch, c.num_future, *fm.model.latent_shape), generator=generator,
                       device=device or fm.device, dtype=dtype or fm.dtype)


def flow_map_sample(fm: FlowMap, history: torch.Tensor, actions: torch.Tensor, num_steps: int = 1,
                    time_grid: torch.Tensor | list[float] | None = None, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None,
                    text_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """K-step rollout: x_{t0} = (1 − t0)·noise, then x_{t_{k+1}} = X_{t_k, t_{k+1}}(x_{t_k}).

    Differentiable (no ``no_grad`` inside): the planner back-propagates to ``actions``.

    Args:
        history: (B, T, C, h, w) latents; actions: (B, T+H, 7) raw EE actions.
        num_steps: K (ignored when ``time_grid`` is given).
        time_grid: K + 1 increasing flow times (default :func:`time_grid`).
        noise: (B, H, C, h, w) standard normal x0 (default: drawn with ``generator``).
    Returns:
        (B, H, C, h, w) predicted future latents (at t = t_max).
    """
    B = history.shape[0]
    grid = _grid(fm, num_steps) if time_grid is None else torch.as_tensor(time_grid, dtype=torch.float32)
    if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError(f"time_grid must be ≥ 2 increasing flow times, got {grid.tolist()}")
    if noise is None:
        noise = initial_noise(fm, B, generator, history.device, history.dtype)
    check_shape("noise", noise, (B, fm.model.config.num_future, *fm.model.latent_shape))
    tokens = fm.encode_actions(actions, text_embeds)
    g = grid.tolist()
    x = (1.0 - g[0]) * noise
    for k in range(len(g) - 1):
        x = fm.jump(x, g[k], g[k + 1], history, actions, tokens=tokens)
    return x


_grid = time_grid  # flow_map_sample's argument of the same name shadows the function


def _sample_t(fm: FlowMap, n: int, gen: torch.Generator | None, dev: torch.device) -> torch.Tensor:
    """Flow times from the teacher's log-normal σ distribution, clipped to [t_min, t_max]."""
    c = fm.model.config
    sig = (torch.randn(n, generator=gen, device=dev) * c.p_std + c.p_mean).exp()
    return sigma_to_t(sig).clamp(fm.t_lo, fm.t_hi)


def psd_loss(fm: FlowMap, x1: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
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
    nf = B if not distill else max(1, min(B - 1, round(B * fm.config.flow_fraction)))
    if B < 2 and distill:
        raise ValueError(f"PSD needs a batch of ≥ 2 (flow and distill parts), got {B}")
    r5 = lambda v: v.reshape(-1, 1, 1, 1, 1)  # noqa: E731
    tf = _sample_t(fm, nf, generator, dev).to(x1.dtype)
    xt = r5(tf) * x1[:nf] + r5(1 - tf) * x0[:nf]
    v = fm.velocity(xt, tf, tf, history[:nf], actions[:nf], None if text_embeds is None else text_embeds[:nf])
    err = (v - (x1[:nf] - x0[:nf])) ** 2
    mw = fm.model.motion_weights(x1[:nf], history[:nf])  # the teacher's weighting, kept in the student
    l_flow = (err if mw is None else err * mw).mean()
    out = {"flow": l_flow.detach()}
    loss = l_flow
    if distill:
        nd = B - nf
        sl = slice(nf, B)
        s = _sample_t(fm, nd, generator, dev)
        start = torch.rand(nd, generator=generator, device=dev) < fm.config.p_start
        s = torch.where(start, torch.full_like(s, fm.t_lo), s)
        s = s.clamp(max=fm.t_hi - 1e-3)
        r = torch.rand(nd, generator=generator, device=dev).clamp_min(0.02)
        t = s + (fm.t_hi - s) * r
        end = torch.rand(nd, generator=generator, device=dev) < fm.config.p_end
        t = torch.where(end, torch.full_like(t, fm.t_hi), t)
        u = s + (t - s) * torch.rand(nd, generator=generator, device=dev).clamp(0.05, 0.95)
        s, u, t = (z.to(x1.dtype) for z in (s, u, t))
        xs = r5(s) * x1[sl] + r5(1 - s) * x0[sl]
        h, a = history[sl], actions[sl]
        te = None if text_embeds is None else text_embeds[sl]
        with torch.no_grad():
            tok = fm.encode_actions(a, te)
            target = fm.jump(fm.jump(xs, s, u, h, a, tokens=tok), u, t, h, a, tokens=tok)
        pred = fm.jump(xs, s, t, h, a, te)
        err = (pred - target) ** 2
        if fm.config.distill_weighting == "velocity":
            err = err / r5(t - s) ** 2
        l_dist = err.mean()
        loss = loss + l_dist
        out["distill"] = l_dist.detach()
    else:
        out["distill"] = torch.zeros((), device=dev)
    out["loss"] = loss
    return out
