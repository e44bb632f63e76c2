"""Per-window accumulators of ``vidplan eval-bag``: each takes one window's numbers and sums them up into its part of
metrics.json (prediction, uq, reward, shadow). The model calls stay in :func:`vidplan_core.eval.bag_eval.eval_bag`,
which times them; these classes only count.

Shapes: H horizon steps, V = 3 views (left, right, wrist), images (3, h, w) in [0, 1], latents (C, h, w).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vidplan_core.eval import metrics as M
from vidplan_core.eval.bag_config import EMPTY_BIN, PSNR_MSE_FLOOR
from vidplan_core.eval.bag_metrics import (
    MOVING_THRESHOLD,
    ReliabilityAccumulator,
    correlation,
    moving_psnr,
    rotation_errors,
)
from vidplan_core.spaces import VIEW_ORDER


def _psnr(a: np.ndarray, b: np.ndarray, axis: Any = None) -> Any:
    mse = np.maximum(np.mean((a - b) ** 2, axis=axis), PSNR_MSE_FLOOR)
    return 10 * np.log10(1.0 / mse)


class PredictionMetrics:
    """Image metrics of the predicted frames against the recorded ones, per window, horizon step and view; the
    copy-the-current-frame baselines; the autoencoder's reconstruction PSNR (the ceiling)."""

    def __init__(self, windows: int, horizon: int, device: str) -> None:
        shape = (windows, horizon, len(VIEW_ORDER))
        self.psnr, self.copy, self.ssim, self.lpips = (np.zeros(shape) for _ in range(4))
        self.latent_mse = np.zeros((windows, horizon))
        # pooled squared errors on the pixels that change (|future − current| > MOVING_THRESHOLD in some channel):
        # what the copy baseline cannot get right and planning needs (robot, pushed objects) — per horizon step
        self.moving_sse = {"prediction": np.zeros(horizon), "copy": np.zeros(horizon),
                           "copy_decoded": np.zeros(horizon)}
        self.moving_n = np.zeros(horizon)
        self.recon_psnr: dict[str, list[float]] = {v: [] for v in VIEW_ORDER}
        self.lpips_fn, self.lpips_reason = M.make_lpips(device)  # None where the package or weights are missing

    def add_reconstruction(self, recon: np.ndarray, frames: np.ndarray) -> None:
        """``recon``, ``frames``: (N, V, 3, h, w) decoded and recorded frames in [0, 1]."""
        for vi, v in enumerate(VIEW_ORDER):
            self.recon_psnr[v] += _psnr(recon[:, vi], frames[:, vi], axis=(-3, -2, -1)).tolist()

    def add(self, wi: int, pred: np.ndarray, target: np.ndarray, now: np.ndarray, now_decoded: np.ndarray,
            latent_mse: np.ndarray) -> None:
        """Window ``wi``: ``pred``, ``target`` (H, V, 3, h, w); ``now``, ``now_decoded`` (V, 3, h, w) the current
        frame as recorded and through the autoencoder; ``latent_mse`` (H,)."""
        self.latent_mse[wi] = latent_mse
        for h in range(pred.shape[0]):
            for vi in range(len(VIEW_ORDER)):
                self.psnr[wi, h, vi] = float(_psnr(pred[h, vi], target[h, vi]))
                self.copy[wi, h, vi] = float(_psnr(now[vi], target[h, vi]))
                self.ssim[wi, h, vi] = M.ssim(pred[h, vi], target[h, vi])
                if self.lpips_fn is not None:
                    self.lpips[wi, h, vi] = self.lpips_fn(pred[h, vi], target[h, vi])
                moving = np.abs(target[h, vi] - now[vi]).max(axis=0) > MOVING_THRESHOLD  # (h, w)
                if moving.any():
                    for key, img in (("prediction", pred[h, vi]), ("copy", now[vi]), ("copy_decoded", now_decoded[vi])):
                        self.moving_sse[key][h] += float(((img - target[h, vi])[:, moving] ** 2).sum())
                    self.moving_n[h] += 3 * int(moving.sum())

    def window_psnr(self, wi: int) -> list[float]:
        """Window ``wi``'s PSNR [dB] per horizon step, mean over the views."""
        return self.psnr[wi].mean(axis=1).tolist()

    def summary(self, nulls: dict[str, str]) -> dict[str, Any]:
        views = list(VIEW_ORDER)

        def per_view(a: np.ndarray) -> dict[str, Any]:
            return {**{v: a[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                    "mean": a.mean(axis=(0, 2)).tolist()}

        if self.lpips_fn is None:
            nulls["prediction.lpips"] = self.lpips_reason
        return {
            "psnr_db": per_view(self.psnr),
            "ssim": per_view(self.ssim),
            "latent_mse": {"per_step": self.latent_mse.mean(0).tolist(), "mean": float(self.latent_mse.mean())},
            "psnr_db_mean": float(self.psnr.mean()),
            "copy_last_frame_psnr_db": {"per_step": self.copy.mean(axis=(0, 2)).tolist(),
                                        "mean": float(self.copy.mean())},
            "moving_pixels": moving_psnr(self.moving_sse, self.moving_n),
            "ssim_mean": float(self.ssim.mean()),
            "lpips": per_view(self.lpips) if self.lpips_fn is not None else None,
            "reconstruction_psnr_db": {v: float(np.mean(self.recon_psnr[v])) for v in views},
        }


class UQMetrics:
    """The UQ head's 30-bin error distribution against the actual |predicted − true latent|: calibration, and the
    correlation of its normalised entropy with the error per latent element (a seeded subsample) and per frame."""

    def __init__(self, uq: Any, element_samples: int, rng: np.random.Generator, keep_samples: bool = False) -> None:
        self.uq, self.element_samples, self.rng = uq, element_samples, rng
        self.keep_samples = keep_samples  # also keep the sampled elements' logits and bins (:meth:`samples`)
        self.reliability = ReliabilityAccumulator(15)
        self.frame_entropy: list[float] = []
        self.frame_error: list[float] = []
        self.frame_expected: list[float] = []
        self.element_entropy: list[np.ndarray] = []
        self.element_error: list[np.ndarray] = []
        self.element_logits: list[np.ndarray] = []  # (k, B) of the same sampled elements (temperature fitting)
        self.element_bin: list[np.ndarray] = []  # (k,) their true error bins

    def add(self, logits: Any, err: Any) -> np.ndarray:
        """``logits`` (H, C, h, w, B) of the UQ head, ``err`` (H, C, h, w) the actual absolute latent error (torch).
        Returns the window's entropy map (H, h, w), mean over the latent channels."""
        import torch

        from vidplan_core.models import normalized_entropy, to_bins

        uq = self.uq
        probs = logits.float().softmax(-1)
        target = to_bins(err.float(), 0.0, float(uq.config.max_error), int(uq.config.num_bins))
        conf, pbin = probs.max(-1)
        self.reliability.add(conf.cpu().numpy(), (pbin == target).float().cpu().numpy())
        ent = normalized_entropy(logits.float())  # (H, C, h, w)
        exp_err = (probs * uq.centers.to(probs)).sum(-1)
        self.frame_entropy += ent.mean(dim=(1, 2, 3)).cpu().tolist()
        self.frame_error += err.float().mean(dim=(1, 2, 3)).cpu().tolist()
        self.frame_expected += exp_err.mean(dim=(1, 2, 3)).cpu().tolist()
        flat_e, flat_x = ent.reshape(-1).cpu().numpy(), err.reshape(-1).float().cpu().numpy()
        k = min(self.element_samples, flat_e.size)
        pick = self.rng.choice(flat_e.size, size=k, replace=False)
        self.element_entropy.append(flat_e[pick])
        self.element_error.append(flat_x[pick])
        if self.keep_samples:
            idx = torch.from_numpy(pick).to(logits.device)
            self.element_logits.append(logits.float().reshape(-1, logits.shape[-1])[idx].cpu().numpy())
            self.element_bin.append(target.reshape(-1)[idx].cpu().numpy().astype(np.int16))
        return ent.mean(dim=1).cpu().numpy()

    def samples(self) -> dict[str, np.ndarray]:
        """The sampled elements: {"logits": (n, B) float32 as the head returned them (divided by its temperature),
        "bin": (n,) the true error bin, "temperature": () the head's}; what ``vidplan calibrate-uq`` fits on. Needs
        ``keep_samples``."""
        return {"logits": np.concatenate(self.element_logits).astype(np.float32),
                "bin": np.concatenate(self.element_bin), "temperature": np.float64(self.uq.config.temperature)}

    def summary(self, nulls: dict[str, str]) -> dict[str, Any]:
        diag = self.reliability.diagram()
        if 0 in diag["count"]:
            for q in ("confidence", "accuracy"):
                nulls[f"uq.reliability.{q}"] = EMPTY_BIN
        ent, err, exp = (np.asarray(x) for x in (self.frame_entropy, self.frame_error, self.frame_expected))
        return {
            "ece": self.reliability.ece(),
            "bin_accuracy": self.reliability.accuracy(),
            "elements": self.reliability.n,
            "num_bins": int(self.uq.config.num_bins),
            "max_error": float(self.uq.config.max_error),
            "reliability": diag,
            "mean_normalized_entropy": float(np.mean(ent)),
            "mean_abs_error": float(np.mean(err)),
            "expected_error_mae": float(np.mean(np.abs(exp - err))),
            "per_frame": {"normalized_entropy": self.frame_entropy, "abs_error": self.frame_error,
                          "expected_error": self.frame_expected},
            "entropy_error_correlation": {
                "per_element": correlation(np.concatenate(self.element_entropy), np.concatenate(self.element_error),
                                           "per-element entropy vs error", nulls,
                                           "uq.entropy_error_correlation.per_element"),
                "per_frame": correlation(ent, err, "per-frame mean entropy vs mean error", nulls,
                                         "uq.entropy_error_correlation.per_frame"),
            },
        }


REWARD_KINDS = ("on_predicted", "on_recorded")


class RewardMetrics:
    """The reward head's 20-bin value distribution against the Monte-Carlo value V(τ) = γ^(F−τ)·success, on
    predicted and on recorded (encoded) latents."""

    def __init__(self, rw: Any, values: np.ndarray) -> None:
        self.rw, self.values = rw, values  # values: (T,) V(τ) per frame
        self.pred: dict[str, list[np.ndarray]] = {k: [] for k in REWARD_KINDS}
        self.reliability = {k: ReliabilityAccumulator(15) for k in REWARD_KINDS}
        self.points: list[tuple[int, int, float, float]] = []  # (frame τ, horizon step, predicted E[V], target V)

    def add(self, kind: str, logits: Any, frames: np.ndarray) -> None:
        """``logits`` (H, B) of the reward head on the window's future ``frames`` (H,) (frame indices)."""
        import torch

        from vidplan_core.models import to_bins

        target = self.values[frames]
        tbin = to_bins(torch.as_tensor(target, dtype=torch.float32, device=logits.device), 0.0, 1.0,
                       int(self.rw.config.num_bins))
        p = logits.float().softmax(-1)
        conf, pb = p.max(-1)
        ev = (p * self.rw.centers.to(p)).sum(-1)
        self.reliability[kind].add(conf.cpu().numpy(), (pb == tbin).float().cpu().numpy())
        self.pred[kind].append(np.stack([ev.cpu().numpy(), target], axis=1))
        if kind == "on_predicted":
            self.points += [(int(frames[h]), h, float(ev[h]), float(target[h])) for h in range(len(frames))]

    def summary(self, gamma: float, success: bool, nulls: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"gamma": gamma, "success": success, "num_bins": int(self.rw.config.num_bins)}
        for kind in REWARD_KINDS:
            pv = np.concatenate(self.pred[kind])
            rel = self.reliability[kind]
            diag = rel.diagram()
            if 0 in diag["count"]:
                for q in ("confidence", "accuracy"):
                    nulls[f"reward.{kind}.reliability.{q}"] = EMPTY_BIN
            out[kind] = {"bin_accuracy": rel.accuracy(), "ece": rel.ece(),
                         "value_mae": float(np.mean(np.abs(pv[:, 0] - pv[:, 1]))), "frames": len(pv),
                         "reliability": diag}
        out["points"] = [list(p) for p in self.points]
        return out


class ShadowMetrics:
    """The shadow planner's chunks against the recorded actions: position [m], rotation [rad] and gripper error per
    step; plan statuses; stage latencies."""

    MAX_WARNINGS = 3  # the first few planner failures are enough to diagnose

    def __init__(self) -> None:
        self.rows: list[dict[str, np.ndarray]] = []
        self.status: dict[str, int] = {}
        self.stage: dict[str, list[float]] = {}

    @property
    def plans(self) -> int:
        return len(self.rows)

    def failed(self, exc: Exception, frame: int, warnings: list[str]) -> None:
        self.status["error"] = self.status.get("error", 0) + 1
        if self.status["error"] <= self.MAX_WARNINGS:
            warnings.append(f"shadow planner failed at frame {frame}: {type(exc).__name__}: {exc}")

    def add(self, result: Any, recorded: np.ndarray) -> None:
        """``result``: the planner's PlanResult; ``recorded`` (H, 7) the recorded actions of the window's future."""
        self.status[result.status] = self.status.get(result.status, 0) + 1
        for k, v in result.timings.items():
            self.stage.setdefault(k, []).append(float(v))
        ch = result.chunk
        n = min(len(ch.position), len(recorded))
        self.rows.append({"position_m": np.linalg.norm(ch.position[:n] - recorded[:n, :3], axis=1),
                          "rotation_rad": rotation_errors(ch.euler[:n], recorded[:n, 3:6]),
                          "gripper": np.abs(ch.gripper[:n] - recorded[:n, 6])})

    def summary(self, reason: str, nulls: dict[str, str]) -> dict[str, Any] | None:
        if not self.rows:
            nulls["shadow"] = reason or ("the planner failed at every step (see warnings)" if self.status
                                         else "no window was planned")
            return None
        n = min(len(r["position_m"]) for r in self.rows)
        agg = {k: np.stack([r[k][:n] for r in self.rows]) for k in ("position_m", "rotation_rad", "gripper")}
        return {"plans": len(self.rows), "status": self.status,
                **{f"{k}_per_step": v.mean(0).tolist() for k, v in agg.items()},
                **{f"{k}_mean": float(v.mean()) for k, v in agg.items()},
                "stage_latency": {k: M.latency_summary(v) for k, v in self.stage.items()}}

