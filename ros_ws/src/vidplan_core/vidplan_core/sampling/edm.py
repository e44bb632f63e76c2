"""The EDM teacher's sampler and training loss (DESIGN.md "The math", Eq. 2), for a
:class:`~vidplan_core.models.WorldModel`."""

from __future__ import annotations

import torch

from vidplan_core.models import WorldModel
from vidplan_core.models._io import check_shape
from vidplan_core.models.edm import karras_sigmas, lognormal_sigmas

__all__ = ["edm_loss", "edm_sample"]


def edm_loss(model: WorldModel, x1: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
             text_embeds: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM training loss (Eq. 2): E_σ,n[λ(σ)·‖D(x1 + σn; σ) − x1‖²], ln σ ~ N(P_mean, P_std²).

    Includes classifier-free action dropout (p = ``action_dropout``), history noise augmentation,
    current-frame noise augmentation and the motion weighting (``motion_loss_weight``), all from ``model.config``.

    Args:
        x1: (B, H, C, h, w) clean future latents; history: (B, T, C, h, w); actions: (B, T+H, 7) raw.
    Returns:
        a scalar (mean over elements).
    """
    c = model.config
    B = model.check_inputs(x1, history, actions)
    dev = x1.device
    sigma = lognormal_sigmas(B, c.p_mean, c.p_std, generator, dev).to(x1.dtype)
    noise = torch.randn(x1.shape, generator=generator, device=dev, dtype=x1.dtype)
    x = x1 + sigma.reshape(B, 1, 1, 1, 1) * noise  # (centred on the clean current frame when residual)
    keep = torch.rand(B, generator=generator, device=dev) >= c.action_dropout
    tokens = model.encode_actions(actions, text_embeds, keep)
    # history noise augmentation (variance-preserving), as Ctrl-World
    sh = torch.randn(B, c.num_history, 1, 1, 1, generator=generator, device=dev).abs().to(x1.dtype)
    sh = sh * c.history_noise_std
    hn = torch.randn(history.shape, generator=generator, device=dev, dtype=x1.dtype)
    history_in = (history + sh * hn) / (sh ** 2 + 1).sqrt()
    sc = torch.rand(B, 1, 1, 1, generator=generator, device=dev).to(x1.dtype) * c.cond_noise_max
    cn = torch.randn(history[:, -1].shape, generator=generator, device=dev, dtype=x1.dtype)
    current = (history[:, -1] + sc * cn) / (sc ** 2 + 1).sqrt()
    shift = model.shift(history)
    x_in = model.edm.c_in(sigma).reshape(B, 1, 1, 1, 1) * (x if shift is None else x - shift)
    maps = model.render_action_maps(actions, keep)
    raw = model.unet_forward(model.assemble(x_in, history_in, current, maps), model.edm.c_noise(sigma), tokens)
    d = model.precondition(x, raw[:, c.num_history:], sigma, shift)
    w = model.edm.loss_weight(sigma) if c.loss_weighting == "edm" else torch.ones_like(sigma)
    err = w.reshape(B, 1, 1, 1, 1) * (d - x1) ** 2
    mw = model.motion_weights(x1, history)
    return (err if mw is None else err * mw).mean()


@torch.no_grad()
def edm_sample(model: WorldModel, history: torch.Tensor, actions: torch.Tensor, num_steps: int = 50,
               solver: str = "euler", guidance: float = 1.0, text_embeds: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
               rho: float = 7.0) -> torch.Tensor:
    """Teacher sampler (EDM, Karras σ schedule σ_max → σ_min → 0).

    Args:
        history: (B, T, C, h, w); actions: (B, T+H, 7) raw.
        num_steps: N noise levels; ``euler`` uses N network evaluations (×2 with guidance ≠ 1), ``heun`` 2N − 1.
        guidance: classifier-free action guidance scale (1 = none).
        noise: optional (B, H, C, h, w) standard normal start (x = σ_max·noise).
    Returns:
        (B, H, C, h, w) predicted future latents.
    """
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")
    c = model.config
    B = model.check_inputs(None, history, actions)
    shape = (B, c.num_future, *model.latent_shape)
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=history.device, dtype=history.dtype)
    check_shape("noise", noise, shape)
    sigmas = karras_sigmas(num_steps, c.sigma_min, c.sigma_max, rho, history.device).to(history.dtype)
    x = noise * sigmas[0]
    for i in range(num_steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model.guided_denoise(x, s, history, actions, guidance, text_embeds)
        slope = (x - d) / s
        x_next = x + (s_next - s) * slope
        if solver == "heun" and s_next > 0:
            d2 = model.guided_denoise(x_next, s_next, history, actions, guidance, text_embeds)
            x_next = x + (s_next - s) * 0.5 * (slope + (x_next - d2) / s_next)
        x = x_next
    return x
