"""Planning objective: uncertainty weighting, hierarchical reward and the refinement value (VidPlan §3.4).

Everything here is pure, differentiable torch on tensors with the documented shapes, so the same functions are
used by the eager planner, inside the exported value-and-grad ONNX graph and by the CEM planner.

Notation (per candidate n and predicted frame τ, F predicted frames):

* ``h``     normalised entropy of the UQ head, in [0, 1] (0 = certain). ``h̄`` is its mean over a frame.
* ``w(h)``  uncertainty weight: ``exp(−κ·h̄)`` (``"exp"``) or ``1 − h̄`` (``"linear"``), in [0, 1].
* ``r_s``   semantic image–text score of the frame (SigLIP/CLIP), computed on the semantic patch map after
            suppressing each patch by the uncertainty of the pixels it covers.
* ``c``     centroid of the semantic map's highest-scoring region, normalised image coordinates in [0, 1]²
            (x right, y down); ``c_r`` a reference point (default the image centre).
* ``r``     ``b − (1 − w(h̄))·|b|`` with ``b = r_s − λ·‖c − c_r‖`` per frame (= ``w·b`` for ``b ≥ 0``; uncertainty
            only ever lowers a score); a candidate's score is ``max_τ r``.

The refinement objective is the entropy-weighted expected value of the reward head:
``J = mean_τ w(h̄_τ)·(1 − H_τ)^β · E[V_τ]`` with ``H_τ`` the reward head's normalised entropy (``β = 0`` drops it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "WeightKind",
    "centroid_distance",
    "entropy_weighted_value",
    "frame_reward",
    "hierarchical_reward",
    "soft_centroid",
    "suppress_semantic_map",
    "uncertainty_weight",
]

WeightKind = Literal["exp", "linear"]


def uncertainty_weight(h: torch.Tensor, kind: WeightKind = "exp", kappa: float = 3.0) -> torch.Tensor:
    """Uncertainty weight w(h) elementwise.

    Args:
        h: normalised entropy, any shape, values in [0, 1] (clamped).
        kind: ``"exp"`` → ``exp(−κ·h)``; ``"linear"`` → ``1 − h``.
        kappa: κ ≥ 0 for ``"exp"``.

    Returns:
        Tensor of the same shape, in [0, 1].
    """
    h = h.clamp(0.0, 1.0)
    if kind == "exp":
        if kappa < 0:
            raise ValueError(f"kappa must be ≥ 0, got {kappa}")
        return torch.exp(-kappa * h)
    if kind == "linear":
        return 1.0 - h
    raise ValueError(f"unknown uncertainty weighting {kind!r}; expected 'exp' or 'linear'")


def suppress_semantic_map(sim_map: torch.Tensor, unc_map: torch.Tensor, kind: WeightKind = "exp",
                          kappa: float = 3.0) -> torch.Tensor:
    """Per-pixel suppression of a semantic similarity map by an uncertainty map.

    The uncertainty map is resampled to the semantic map's resolution by area averaging (a patch is as uncertain
    as the mean of the pixels it covers) and the map is multiplied by ``w(h)``. Similarities can be negative
    (SigLIP logits); they are shifted to be ≥ 0 per frame before weighting so that suppression always pulls a
    patch *down*, then shifted back.

    Args:
        sim_map: (..., Hp, Wp) patch similarity map.
        unc_map: (..., Hu, Wu) normalised entropy in [0, 1] with the same leading shape.

    Returns:
        (..., Hp, Wp) suppressed map.
    """
    if sim_map.shape[:-2] != unc_map.shape[:-2]:
        raise ValueError(f"semantic map {tuple(sim_map.shape)} and uncertainty map {tuple(unc_map.shape)} must "
                         "share leading dimensions")
    lead = sim_map.shape[:-2]
    hp, wp = sim_map.shape[-2:]
    u = unc_map.reshape(-1, 1, *unc_map.shape[-2:])
    u = F.adaptive_avg_pool2d(u, (hp, wp)) if u.shape[-2:] != (hp, wp) else u
    w = uncertainty_weight(u.reshape(*lead, hp, wp), kind, kappa)
    floor = sim_map.flatten(-2).amin(-1)[..., None, None].detach()
    return (sim_map - floor) * w + floor


def soft_centroid(sim_map: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Differentiable centroid of the highest-scoring region of a map (softmax-weighted mean position).

    Args:
        sim_map: (..., Hp, Wp) map.
        temperature: softmax temperature relative to the map's per-frame standard deviation (smaller → closer
            to the arg-max patch).

    Returns:
        (..., 2) centroid (x, y) in normalised image coordinates [0, 1] (x right, y down, patch centres).
    """
    hp, wp = sim_map.shape[-2:]
    flat = sim_map.flatten(-2)
    scale = flat.std(-1, keepdim=True).clamp_min(1e-6).detach() * temperature
    p = torch.softmax(flat / scale, dim=-1).reshape(sim_map.shape)
    ys = (torch.arange(hp, dtype=sim_map.dtype, device=sim_map.device) + 0.5) / hp
    xs = (torch.arange(wp, dtype=sim_map.dtype, device=sim_map.device) + 0.5) / wp
    cx = (p.sum(-2) * xs).sum(-1)
    cy = (p.sum(-1) * ys).sum(-1)
    return torch.stack([cx, cy], dim=-1)


def centroid_distance(c: torch.Tensor, c_ref: torch.Tensor | tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """Euclidean distance ‖c − c_r‖ in normalised image coordinates: (..., 2) → (...)."""
    c_ref = torch.as_tensor(c_ref, dtype=c.dtype, device=c.device)
    return torch.sqrt(((c - c_ref) ** 2).sum(-1) + 1e-12)


def frame_reward(r_s: torch.Tensor, h_bar: torch.Tensor, dist: torch.Tensor | None = None, lam: float = 0.5,
                 kind: WeightKind = "exp", kappa: float = 3.0, progress: torch.Tensor | None = None,
                 mu: float = 0.0) -> torch.Tensor:
    """Per-frame reward: uncertainty can only *lower* it; all inputs (N, F) → (N, F).

    With ``b = r_s − λ·d + μ·p`` (``p``: optional progress towards the instruction's goal, e.g. a push's):
    ``r = b − (1 − w(h̄))·|b|``, i.e. the paper's ``w·b`` for ``b ≥ 0`` and ``(2 − w)·b``
    for ``b < 0``. The plain product ``w·b`` would pull a negative score towards 0 — rewarding doubt — whenever
    ``r_s < λ·d`` (seen on the demo models: b from −0.05 to −0.24).
    """
    base = r_s if dist is None else r_s - lam * dist
    if progress is not None and mu:
        base = base + mu * progress
    return base - (1.0 - uncertainty_weight(h_bar, kind, kappa)) * base.abs()


def hierarchical_reward(r_s: torch.Tensor, h_bar: torch.Tensor, centroid: torch.Tensor | None = None,
                        c_ref: tuple[float, float] | torch.Tensor = (0.5, 0.5), lam: float = 0.5,
                        kind: WeightKind = "exp", kappa: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate scores for the global argmax.

    Args:
        r_s: (N, F) semantic score per predicted frame.
        h_bar: (N, F) mean normalised UQ entropy per frame, in [0, 1].
        centroid: optional (N, F, 2) centroid of the semantic map in [0, 1]².
        c_ref: reference point (2,) for the centring term.
        lam: λ ≥ 0, weight of the centring term.

    Returns:
        ``(score, per_frame)``: (N,) max over frames and the (N, F) per-frame rewards.
    """
    if r_s.shape != h_bar.shape or r_s.ndim != 2:
        raise ValueError(f"r_s {tuple(r_s.shape)} and h_bar {tuple(h_bar.shape)} must both be (N, F)")
    dist = None if centroid is None else centroid_distance(centroid, c_ref)
    per_frame = frame_reward(r_s, h_bar, dist, lam, kind, kappa)
    return per_frame.amax(dim=1), per_frame


def entropy_weighted_value(expected_value: torch.Tensor, h_bar: torch.Tensor,
                           value_entropy: torch.Tensor | None = None, kind: WeightKind = "exp",
                           kappa: float = 3.0, beta: float = 1.0) -> torch.Tensor:
    """Refinement objective ``J = mean_τ w(h̄_τ)·(1 − H_τ)^β·E[V_τ]``.

    Args:
        expected_value: (N, F) reward-head expected value per frame, in [0, 1].
        h_bar: (N, F) mean normalised UQ entropy per frame.
        value_entropy: optional (N, F) normalised entropy of the reward head's distribution, in [0, 1].
        beta: exponent on the reward head's confidence; 0 ignores it.

    Returns:
        (N,) objective (higher is better), differentiable w.r.t. all inputs.
    """
    if expected_value.shape != h_bar.shape or expected_value.ndim != 2:
        raise ValueError(f"expected_value {tuple(expected_value.shape)} and h_bar {tuple(h_bar.shape)} must "
                         "both be (N, F)")
    w = uncertainty_weight(h_bar, kind, kappa)
    if value_entropy is not None and beta != 0:
        w = w * (1.0 - value_entropy.clamp(0.0, 1.0)).clamp_min(1e-6) ** beta
    return (w * expected_value).mean(dim=1)
