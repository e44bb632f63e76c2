"""EDM preconditioning (Karras et al. 2022) and the flow-time ↔ EDM-σ conversions of DESIGN.md.

Conventions (DESIGN.md "The math"):
    EDM:   x_σ = x1 + σ·n,            D(x_σ; σ) = c_skip(σ)·x_σ + c_out(σ)·F(c_in(σ)·x_σ; c_noise(σ))
    flow:  x_t = t·x1 + (1 − t)·x0,   t = 0 noise, t = 1 data;  x_edm = x_t / t,  σ = (1 − t) / t
SVD / Ctrl-World use σ_data = 1 and a *negative* c_out (``c_out_sign = −1``); both are configurable.
"""

from __future__ import annotations

import math

import torch

__all__ = ["EDMPreconditioning", "karras_sigmas", "lognormal_sigmas", "sigma_to_t", "t_to_sigma"]


def t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """Flow time t ∈ (0, 1] → EDM noise level σ = (1 − t)/t."""
    return (1.0 - t) / t


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    """EDM noise level σ ≥ 0 → flow time t = 1/(1 + σ)."""
    return 1.0 / (1.0 + sigma)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """EDM sampling schedule: ``n`` noise levels from σ_max down to σ_min, then a final 0 → (n + 1,)."""
    if n < 1:
        raise ValueError(f"number of sampling steps must be ≥ 1, got {n}")
    i = torch.arange(n, dtype=torch.float64, device=device)
    inv = 1.0 / rho
    if n == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64, device=device)
    else:
        s = (sigma_max ** inv + i / (n - 1) * (sigma_min ** inv - sigma_max ** inv)) ** rho
    return torch.cat([s, s.new_zeros(1)]).float()


def lognormal_sigmas(batch: int, p_mean: float, p_std: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Training noise levels ln σ ~ N(P_mean, P_std²) → (batch,)."""
    n = torch.randn(batch, generator=generator, device=device)
    return (n * p_std + p_mean).exp()


class EDMPreconditioning:
    """The four EDM scalings and the Eq. 2 loss weight for a given σ_data.

    All methods take σ as a tensor of any shape and return a tensor of the same shape.
    Identities (tested): c_skip + (c_out/σ_d)² = 1, c_in²·(σ² + σ_d²) = 1, λ·c_out² = 1.
    """

    def __init__(self, sigma_data: float = 1.0, c_out_sign: float = -1.0, sigma_floor: float = 1e-4):
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        if c_out_sign not in (-1.0, 1.0):
            raise ValueError(f"c_out_sign must be +1 or -1, got {c_out_sign}")
        self.sigma_data = float(sigma_data)
        self.sign = float(c_out_sign)
        self.sigma_floor = float(sigma_floor)  # c_noise = ln σ / 4 needs σ > 0

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        sd2 = self.sigma_data ** 2
        return sd2 / (sigma ** 2 + sd2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        return self.sign * sigma * sd / (sigma ** 2 + sd ** 2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.clamp_min(self.sigma_floor).log() / 4.0

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (= 1/c_out²)."""
        sd = self.sigma_data
        s = sigma.clamp_min(self.sigma_floor)
        return (s ** 2 + sd ** 2) / (s * sd) ** 2

    def denoise(self, x: torch.Tensor, raw: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D = c_skip·x + c_out·F with σ broadcast over the trailing dims of x."""
        s = _bcast(sigma, x)
        return self.c_skip(s) * x + self.c_out(s) * raw

    def x0_hat(self, x: torch.Tensor, raw: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Noise estimate x̂0 = (x − D)/σ in closed form, finite as σ → 0.

        x − D = σ²/(σ²+σ_d²)·x − c_out·F, so (x − D)/σ = [σ·x − sign·σ_d·√(σ²+σ_d²)·F]/(σ² + σ_d²).
        """
        s = _bcast(sigma, x)
        sd = self.sigma_data
        r = s ** 2 + sd ** 2
        return (s * x - self.sign * sd * r.sqrt() * raw) / r


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


SIGMA_MAX_DEFAULT = 80.0
SIGMA_MIN_DEFAULT = 0.002
T_MIN_DEFAULT = 1.0 / (1.0 + SIGMA_MAX_DEFAULT)
assert math.isclose(T_MIN_DEFAULT, 0.012345679, rel_tol=1e-6)
