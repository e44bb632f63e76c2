"""PNG plots of an eval-bag run (matplotlib, Agg backend: no display needed).

Every function takes the cleaned ``metrics.json`` dict of :func:`vidplan_core.eval.bag_eval.eval_bag` (``None``
where a metric is unavailable) and writes one PNG; :func:`write_plots` writes all that apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.eval.visualize import prediction_strip, uncertainty_overlay

__all__ = ["write_plots"]

VIEWS = ("left", "right", "wrist")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _arr(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _per_step(metrics: dict[str, Any], key: str, ylabel: str, path: Path, ceiling: dict[str, Any] | None = None
              ) -> Path:
    plt = _plt()
    data = metrics["prediction"][key]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    steps = np.arange(1, len(data["mean"]) + 1)
    for v in (*VIEWS, "mean"):
        ax.plot(steps, _arr(data[v]), marker="o", lw=2.5 if v == "mean" else 1.2, label=v)
    if ceiling:
        for i, v in enumerate(VIEWS):
            if ceiling.get(v) is not None:
                ax.axhline(ceiling[v], ls="--", lw=0.8, color=f"C{i}", label="VAE reconstruction" if i == 0 else None)
    ax.set_xlabel(f"horizon step (1/{metrics['input']['fps']:g} s)")
    ax.set_ylabel(ylabel)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _latent_mse(metrics: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    per = _arr(metrics["prediction"]["latent_mse"]["per_step"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar(np.arange(1, len(per) + 1), per, color="C4")
    ax.set_xlabel("horizon step")
    ax.set_ylabel("latent MSE")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _reliability(diag: dict[str, Any], title: str, path: Path) -> Path:
    plt = _plt()
    edges = np.asarray(diag["edges"])
    acc, conf, cnt = _arr(diag["accuracy"]), _arr(diag["confidence"]), np.asarray(diag["count"], float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres, np.nan_to_num(acc), width=np.diff(edges), edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot(centres, conf, "o", color="C3", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax2.bar(centres, cnt, width=np.diff(edges), color="C7")
    ax2.set_yscale("log" if cnt.max() > 100 else "linear")
    ax2.set_xlabel("confidence (max bin probability)")
    ax2.set_ylabel("count")
    return _save(fig, path)


def _reward(metrics: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    pts = np.asarray(metrics["reward"]["points"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(pts):
        order = np.argsort(pts[:, 0])
        ax.plot(pts[order, 0], pts[order, 3], "k-", lw=1.5, label="Monte-Carlo value γ^(F−τ)·success")
        sc = ax.scatter(pts[:, 0], pts[:, 2], c=pts[:, 1] + 1, cmap="viridis", s=12, label="reward head E[V]")
        fig.colorbar(sc, ax=ax, label="horizon step")
    ax.set_xlabel("frame τ (model rate)")
    ax.set_ylabel("value")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _shadow(metrics: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    sh = metrics["shadow"]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax, key, label in zip(axes, ("position_m", "rotation_rad", "gripper"),
                              ("position error [m]", "rotation error [rad]", "gripper error [0..1]"), strict=True):
        per = _arr(sh[f"{key}_per_step"])
        ax.bar(np.arange(1, len(per) + 1), per, color="C2")
        ax.set_xlabel("chunk step")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _controllability(metrics: dict[str, Any], path: Path) -> Path:
    """Latent MSE ratio (shuffled / true, mirrored / true) per horizon step, with the action-blind line at 1.0."""
    plt = _plt()
    c = metrics["controllability"]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    H = len(metrics["prediction"]["latent_mse"]["per_step"])
    steps = np.arange(1, H + 1)
    lo, hi = 0.95, 1.05  # at least ±5 %: an action-blind model's ±0.1 % wiggle must not look like an effect
    for i, v in enumerate(("shuffled", "mirrored")):
        r = (c.get("ratio") or {}).get(v)
        if r:
            y = _arr(r["per_step"])
            ax.plot(steps, y, marker="o", color=f"C{i}",
                    label=f"{v} / true (mean {r['mean']:.3f})" if r.get("mean") is not None else f"{v} / true")
            if np.isfinite(y).any():
                lo, hi = min(lo, float(np.nanmin(y))), max(hi, float(np.nanmax(y)))
    ax.axhline(1.0, ls="--", color="k", lw=1.0, label="1.0 = action-blind")
    pad = 0.05 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("latent MSE ratio")
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _latency(metrics: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    stages = [(k, v) for k, v in metrics["latency"].items() if isinstance(v, dict) and v.get("count")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(stages))
    ax.bar(x - 0.2, [v["p50_ms"] for _, v in stages], 0.4, label="p50")
    ax.bar(x + 0.2, [v["p95_ms"] for _, v in stages], 0.4, label="p95")
    ax.set_xticks(x, [k for k, _ in stages], rotation=20, fontsize=8)
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _entropy_error(metrics: dict[str, Any], frame_pairs: np.ndarray | None, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if frame_pairs is not None and len(frame_pairs):
        ax.scatter(frame_pairs[:, 0], frame_pairs[:, 1], s=10, alpha=0.6)
    corr = metrics["uq"]["entropy_error_correlation"]["per_frame"]
    if corr:
        ax.set_title(f"per frame: Pearson {corr['pearson_r']:.2f} (p={corr['pearson_p']:.2g}), "
                     f"Spearman {corr['spearman_r']:.2f}", fontsize=9)
    ax.set_xlabel("mean normalised UQ entropy")
    ax.set_ylabel("mean |latent error|")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _example(ex: dict[str, Any], path: Path) -> Path:
    """Rows: recorded future, predicted future, uncertainty over the prediction (views stacked vertically)."""
    from PIL import Image

    from vidplan_core.spaces import stack_views

    rec = stack_views(np.asarray(ex["recorded"]))  # (H, 3, 3h, w)
    pred = stack_views(np.asarray(ex["predicted"]))
    rows = [list(rec), list(pred)]
    if ex.get("uq_map") is not None:
        rows.append([uncertainty_overlay(p, u) for p, u in zip(pred, ex["uq_map"], strict=True)])
    img = prediction_strip(rows, gap=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 480 // img.shape[0])  # small models: enlarge (nearest) so the strip is readable
    Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.Resampling.NEAREST).save(path)
    return path


def write_plots(metrics: dict[str, Any], examples: list[dict[str, Any]], plot_dir: str | Path) -> dict[str, Path]:
    """Write every plot that applies; returns name → PNG path (names are the report's figure ids)."""
    d = Path(plot_dir)
    out: dict[str, Path] = {}
    out["psnr_per_step"] = _per_step(metrics, "psnr_db", "PSNR [dB]", d / "psnr_per_step.png",
                                     metrics["prediction"].get("reconstruction_psnr_db"))
    out["ssim_per_step"] = _per_step(metrics, "ssim", "SSIM", d / "ssim_per_step.png")
    out["latent_mse_per_step"] = _latent_mse(metrics, d / "latent_mse_per_step.png")
    if metrics.get("uq"):
        u = metrics["uq"]
        out["uq_reliability"] = _reliability(u["reliability"], f"UQ head: ECE {u['ece']:.3f} over {u['elements']} "
                                             f"latent elements", d / "uq_reliability.png")
        pf = u.get("per_frame") or {}
        pairs = np.stack([_arr(pf.get("normalized_entropy", [])), _arr(pf.get("abs_error", []))], axis=1)
        out["uq_entropy_vs_error"] = _entropy_error(metrics, pairs, d / "uq_entropy_vs_error.png")
    if metrics.get("reward"):
        out["reward_value"] = _reward(metrics, d / "reward_value.png")
        r = metrics["reward"]["on_predicted"]
        out["reward_reliability"] = _reliability(r["reliability"], f"reward head (predicted latents): ECE "
                                                 f"{r['ece']:.3f}, bin accuracy {r['bin_accuracy']:.2f}",
                                                 d / "reward_reliability.png")
    if metrics.get("shadow"):
        out["shadow_errors"] = _shadow(metrics, d / "shadow_errors.png")
    if (metrics.get("controllability") or {}).get("ratio"):
        out["controllability"] = _controllability(metrics, d / "controllability.png")
    if any(isinstance(v, dict) and v.get("count") for v in metrics.get("latency", {}).values()):
        out["latency"] = _latency(metrics, d / "latency.png")
    for i, ex in enumerate(examples):
        out[f"example_{i}"] = _example(ex, d / f"example_{i}_frame{ex['frame']:04d}.png")
    return out
