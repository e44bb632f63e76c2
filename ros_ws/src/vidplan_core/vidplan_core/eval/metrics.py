"""Evaluation metrics shared by benchmarks, eval-bag, model cards and closed-loop evaluation.

All functions take numpy arrays or torch tensors (converted to numpy float64 unless stated) and return plain
Python floats / dicts so results serialise to JSON directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage, stats

__all__ = [
    "calibration_from_probs",
    "expected_calibration_error",
    "latency_summary",
    "latent_mse",
    "psnr",
    "rank_correlations",
    "reliability_diagram",
    "ssim",
    "wilson_interval",
]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def psnr(pred: Any, target: Any, data_range: float = 1.0, reduce_dims: tuple[int, ...] | None = None) -> Any:
    """Peak signal-to-noise ratio [dB].

    Args:
        pred, target: same shape, values in [0, data_range] (e.g. images (..., C, H, W) in [0, 1]).
        data_range: peak value (1.0 for [0, 1] images, 255 for uint8).
        reduce_dims: axes averaged inside the MSE; default all axes (one number). Pass e.g. (-3, -2, -1) to get
            one PSNR per image.

    Returns:
        float, or an array over the remaining axes. Identical inputs give +inf.
    """
    p, t = _np(pred), _np(target)
    if p.shape != t.shape:
        raise ValueError(f"psnr: shapes differ, pred {p.shape} vs target {t.shape}")
    mse = np.mean((p - t) ** 2, axis=reduce_dims)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(data_range**2 / mse)
    return float(out) if np.ndim(out) == 0 else out


def ssim(pred: Any, target: Any, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004, Gaussian window σ = 1.5 px, K1 = 0.01, K2 = 0.03).

    Args:
        pred, target: (..., H, W) or (..., C, H, W) images in [0, data_range]; SSIM is computed per 2-D plane
            and averaged.
    """
    p, t = _np(pred), _np(target)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"ssim: need equal shapes with ≥ 2 dims, got {p.shape} vs {t.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    p2, t2 = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
    vals = []
    for a, b in zip(p2, t2, strict=True):
        f = lambda x: ndimage.gaussian_filter(x, sigma, truncate=3.5, mode="reflect")  # noqa: E731
        mu_a, mu_b = f(a), f(b)
        saa, sbb, sab = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
        vals.append(np.mean(num / den))
    return float(np.mean(vals))


def latent_mse(pred: Any, target: Any) -> float:
    """Mean squared error between latents of equal shape."""
    p, t = _np(pred), _np(target)
    if p.shape != t.shape:
        raise ValueError(f"latent_mse: shapes differ, pred {p.shape} vs target {t.shape}")
    return float(np.mean((p - t) ** 2))


def calibration_from_probs(probs: Any, target_bins: Any) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (max probability) and correctness (argmax == true bin) of binned predictions.

    Args:
        probs: (..., B) probabilities over B bins.
        target_bins: (...) integer index of the true bin.

    Returns:
        (confidence, correct) flattened to 1-D.
    """
    p = _np(probs)
    y = _np(target_bins).astype(np.int64)
    if p.shape[:-1] != y.shape:
        raise ValueError(f"calibration: probs {p.shape} do not match targets {y.shape}")
    conf = p.max(-1).reshape(-1)
    correct = (p.argmax(-1) == y).reshape(-1).astype(np.float64)
    return conf, correct


def reliability_diagram(confidence: Any, correct: Any, n_bins: int = 15) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count over ``n_bins`` equal-width confidence bins in [0, 1]."""
    c, a = _np(confidence).reshape(-1), _np(correct).reshape(-1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(c, edges[1:-1], right=True), 0, n_bins - 1)
    conf_b, acc_b, cnt_b = [], [], []
    for b in range(n_bins):
        m = idx == b
        cnt_b.append(int(m.sum()))
        conf_b.append(float(c[m].mean()) if m.any() else float("nan"))
        acc_b.append(float(a[m].mean()) if m.any() else float("nan"))
    return {"edges": edges.tolist(), "confidence": conf_b, "accuracy": acc_b, "count": cnt_b}


def expected_calibration_error(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """ECE = Σ_b (n_b / N)·|acc_b − conf_b| over ``n_bins`` equal-width confidence bins (DESIGN: 15)."""
    d = reliability_diagram(confidence, correct, n_bins)
    n = sum(d["count"])
    if n == 0:
        raise ValueError("ECE of an empty set")
    return float(sum(k / n * abs(a - c) for k, a, c in zip(d["count"], d["accuracy"], d["confidence"], strict=True)
                     if k))


def rank_correlations(x: Any, y: Any) -> dict[str, float]:
    """Pearson and Spearman correlation of two 1-D samples with two-sided p-values."""
    a, b = _np(x).reshape(-1), _np(y).reshape(-1)
    if a.shape != b.shape or a.size < 3:
        raise ValueError(f"correlation needs two equal-length samples of ≥ 3 values, got {a.shape}, {b.shape}")
    pr = stats.pearsonr(a, b)
    sr = stats.spearmanr(a, b)
    return {"pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "spearman_r": float(sr.statistic), "spearman_p": float(sr.pvalue)}


def latency_summary(seconds: Any) -> dict[str, float]:
    """count, mean, p50, p95, max of latencies given in seconds (reported in milliseconds)."""
    s = _np(seconds).reshape(-1) * 1e3
    if s.size == 0:
        return {"count": 0}
    return {"count": int(s.size), "mean_ms": float(s.mean()), "p50_ms": float(np.percentile(s, 50)),
            "p95_ms": float(np.percentile(s, 95)), "max_ms": float(s.max())}


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score 95 % interval of a success rate k/n (None for n = 0)."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # exact at the edges (0/n → 0, n/n → 1): the closed form lands there only up to rounding
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def make_lpips(device: str = "cpu") -> tuple[Any, str]:
    """LPIPS (Zhang et al. 2018, AlexNet features + the learned linear layers of the reference ``lpips`` package),
    where that package and its pretrained weights are available offline; else ``(None, reason)``.

    Returns:
        ``(fn, "")`` with ``fn(pred, target) -> float`` on (3, H, W) images in [0, 1] (lower is closer), or
        ``(None, reason)``. LPIPS needs torchvision's ImageNet AlexNet weights, which no package on our machines
        ships (no torchvision build for our torch either): there it is reported as null with this reason.
    """
    try:
        import lpips  # the reference implementation (pip install lpips; needs torchvision)
    except ImportError:
        return None, ("LPIPS not computed: the reference 'lpips' package (with torchvision and its ImageNet AlexNet "
                      "weights) is not installed; PSNR and SSIM are reported")
    try:
        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception as exc:  # weights absent offline: torchvision tries to download them
        return None, f"LPIPS not computed: its pretrained AlexNet weights are not available offline ({exc})"
    import torch

    def fn(pred: Any, target: Any) -> float:
        with torch.no_grad():
            a = torch.as_tensor(pred, dtype=torch.float32, device=device)[None] * 2 - 1  # lpips takes [-1, 1]
            b = torch.as_tensor(target, dtype=torch.float32, device=device)[None] * 2 - 1
            return float(net(a, b).mean())

    return fn, ""
