"""Accumulators and helpers of ``vidplan eval-bag``'s metrics: reliability bins (ECE), correlations with
null reasons, PSNR on moving pixels, rotation errors, JSON-safe numbers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vidplan_core.eval import metrics as M
from vidplan_core.eval.bag_config import PSNR_MSE_FLOOR
from vidplan_core.spaces import EULER_SEQ

__all__ = [
    "MOVING_THRESHOLD",
    "ReliabilityAccumulator",
    "correlation",
    "finite_or_null",
    "moving_psnr",
    "rotation_errors",
]

MOVING_THRESHOLD = 0.05


def moving_psnr(sse: dict[str, np.ndarray], n: np.ndarray) -> dict[str, Any]:
    """PSNR [dB] of the prediction and of the copy baseline on the pixels that change, pooled over windows and
    views per horizon step, and the gain (prediction − copy) per step and pooled over all steps
    (``gain_db_mean``); None where no pixel changed. ``values``: pixel-channel values pooled. With
    ``sse["copy_decoded"]`` also the gain over copying the *decoded* current frame (the autoencoder's
    reconstruction — the copy a latent model can output, so its error is the model's, not the autoencoder's)."""
    def db(e: np.ndarray) -> list[float | None]:
        return [None if k == 0 else 10 * math.log10(1.0 / max(x / k, PSNR_MSE_FLOOR))
                for x, k in zip(e, n, strict=True)]

    def pooled(key: str) -> float | None:
        tot = float(n.sum())
        return None if tot == 0 else 10 * math.log10(1.0 / max(float(sse[key].sum()) / tot, PSNR_MSE_FLOOR))

    pred, copy = db(sse["prediction"]), db(sse["copy"])
    gain = [None if a is None else a - b for a, b in zip(pred, copy, strict=True)]
    p_all, c_all = pooled("prediction"), pooled("copy")
    out = {"threshold": MOVING_THRESHOLD, "values": int(n.sum()), "psnr_db": pred, "copy_psnr_db": copy,
           "gain_db": gain, "gain_db_mean": None if p_all is None else p_all - c_all}
    if "copy_decoded" in sse:  # the current frame through the autoencoder: the copy the model itself could output
        cd = db(sse["copy_decoded"])
        d_all = pooled("copy_decoded")
        out.update(copy_decoded_psnr_db=cd,
                   gain_vs_decoded_copy_db=[None if a is None else a - b for a, b in zip(pred, cd, strict=True)],
                   gain_vs_decoded_copy_db_mean=None if p_all is None else p_all - d_all)
    return out




class ReliabilityAccumulator:
    """Streaming reliability diagram / ECE over ``n_bins`` equal-width confidence bins (same binning as
    :func:`vidplan_core.eval.metrics.reliability_diagram`), so millions of latent elements need no memory."""

    def __init__(self, n_bins: int = 15):
        self.n_bins = n_bins
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins, np.int64)
        self.conf_sum = np.zeros(n_bins)
        self.acc_sum = np.zeros(n_bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        c = np.asarray(confidence, np.float64).reshape(-1)
        a = np.asarray(correct, np.float64).reshape(-1)
        idx = np.clip(np.digitize(c, self.edges[1:-1], right=True), 0, self.n_bins - 1)
        self.count += np.bincount(idx, minlength=self.n_bins)
        self.conf_sum += np.bincount(idx, weights=c, minlength=self.n_bins)
        self.acc_sum += np.bincount(idx, weights=a, minlength=self.n_bins)

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def diagram(self) -> dict[str, list]:
        """Like :func:`~vidplan_core.eval.metrics.reliability_diagram` (NaN in empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(self.count > 0, self.conf_sum / np.maximum(self.count, 1), np.nan)
            acc = np.where(self.count > 0, self.acc_sum / np.maximum(self.count, 1), np.nan)
        return {"edges": self.edges.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist(),
                "count": self.count.tolist()}

    def ece(self) -> float:
        if self.n == 0:
            raise ValueError("ECE of an empty set")
        m = self.count > 0
        return float(np.sum(np.abs(self.acc_sum[m] - self.conf_sum[m])) / self.n)

    def accuracy(self) -> float:
        return float(self.acc_sum.sum() / max(self.n, 1))


def finite_or_null(obj: Any, reasons: dict[str, str], path: str = "",
                   reason_for: Callable[[str], str] | None = None) -> Any:
    """Copy of a JSON-like tree with numpy scalars/arrays as Python values and every NaN/Inf replaced by ``None``;
    each replacement (and each ``None`` already there) gets its reason in ``reasons[path]`` (``reason_for(path)``
    or a generic one, unless a reason was registered for that path or a parent before)."""

    def why(p: str) -> str:
        return reason_for(p) if reason_for else "not a finite number"

    if isinstance(obj, dict):
        return {k: finite_or_null(v, reasons, f"{path}.{k}" if path else str(k), reason_for) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v, reasons, f"{path}[{i}]", reason_for) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist(), reasons, path, reason_for)
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        if math.isfinite(v):
            return v
        if not _has_reason(reasons, path):
            reasons[path] = why(path)
        return None
    if obj is None and not _has_reason(reasons, path):
        reasons[path] = why(path)
    return obj


def _has_reason(reasons: dict[str, str], path: str) -> bool:
    p = path
    while p:
        if p in reasons:
            return True
        cut = max(p.rfind("."), p.rfind("["))
        if cut <= 0:
            break
        p = p[:cut]
    return False


def correlation(x: np.ndarray, y: np.ndarray, what: str, nulls: dict[str, str], key: str) -> dict[str, Any] | None:
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.size < 3:
        nulls[key] = f"{what}: only {x.size} samples (need ≥ 3)"
        return None
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        nulls[key] = f"{what}: one of the two samples is constant, correlation undefined"
        return None
    out = M.rank_correlations(x, y)
    out["n"] = int(x.size)
    return out


def rotation_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Geodesic angle [rad] between Euler-xyz orientations (H, 3) and (H, 3)."""
    from scipy.spatial.transform import Rotation


    r = Rotation.from_euler(EULER_SEQ, pred).inv() * Rotation.from_euler(EULER_SEQ, ref)
    return np.abs(r.magnitude())
