"""Controllability: does the world model use its actions at all?

Over the windows of an evaluation (T history + H future frames), every window is predicted several times from the
same history, each time with the *same* initial noise as the window's regular prediction (common random numbers:
with independent noise draws the noise differences would swamp the effect of the actions):

- ``true``: the window's recorded future actions (the regular prediction of eval-bag);
- ``shuffled``: the future chunk of another window (a fixed derangement: window ``i`` takes window
  ``(i + n // 2) % n``), re-expressed relative to this window's current pose: the other chunk's pose
  *displacements* from its own current pose (position in m, Euler angles in rad, wrapped to [−π, π)) added to this
  window's current pose, so the arm starts where it is; the gripper commands are the other window's (a state in
  0..1, not a displacement);
- ``mirrored``: the true future actions mirrored about the current pose in position (x, y, z displacement from
  the current pose negated); orientation and gripper kept;

and once more with the true actions and *another* noise draw, to compare the action effect with the noise effect.

Errors against the recorded future, per horizon step h: latent MSE, pixel MSE and PSNR (decoded frames, mean over
the views). The ratios ``shuffled / true`` and ``mirrored / true`` of the latent MSE (per step, and overall as the
ratio of the means over the steps) say whether the model uses its actions: ≈ 1.0 action-blind (the actions change
nothing: a backend that ignores them gives exactly 1.0), > 1 the wrong actions make the prediction worse. The latent
difference ``‖pred(true) − pred(mirrored)‖ / ‖pred(true) − pred(true, other noise)‖`` compares the action effect
with the noise effect (≪ 1: the prediction is mostly noise, whatever the action).

The "current pose" of a window is the action at its current (last history) frame: the converter's action carries the
measured EE pose of its frame (:class:`vidplan_core.data.topic_map.TopicMap` ``action_pose="measured"``).

Everything here is plain numpy except what the callables ``predict`` / ``decode`` do (eval-bag passes the flow map
or the EDM teacher and the autoencoder; tests pass constructed predictors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidplan_core.spaces import wrap_angle

__all__ = [
    "VARIANTS",
    "ControllabilityAccumulator",
    "WindowResult",
    "evaluate_window",
    "frame_errors",
    "latent_difference",
    "mirrored_chunk",
    "other_noise",
    "partner_windows",
    "relative_chunk",
    "shuffled_chunks",
]

VARIANTS = ("true", "shuffled", "mirrored")
DIFFERENCES = ("action_mirrored", "action_shuffled", "noise")
PSNR_MSE_FLOOR = 1e-10  # as eval-bag: identical images would give +inf dB
SHUFFLE_RULE = ("window i takes the future chunk of window (i + n//2) % n (a fixed derangement), re-expressed as "
                "pose displacements from that window's current pose added to window i's current pose; gripper "
                "commands taken as they are")
MIRROR_RULE = "position displacement from the current pose negated; orientation and gripper kept"


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------------------------- action variants


def partner_windows(n: int) -> np.ndarray | None:
    """The fixed derangement of ``n`` windows: ``partner[i] = (i + n // 2) % n`` (≠ i for every i when n ≥ 2).

    Returns:
        (n,) int array of partner window indices, or None when ``n < 2`` (no other window to take actions from).
    """
    if n < 2:
        return None
    return (np.arange(n) + n // 2) % n


def relative_chunk(current: np.ndarray, other_current: np.ndarray, other_future: np.ndarray) -> np.ndarray:
    """Another window's future chunk re-expressed relative to this window's current pose.

    Args:
        current: (7,) this window's current action (EE pose xyz [m], Euler xyz [rad], gripper).
        other_current: (7,) the other window's current action.
        other_future: (H, 7) the other window's future actions.
    Returns:
        (H, 7): ``current[:6] + (other_future[:, :6] − other_current[:6])`` (angle displacements wrapped to
        [−π, π)), gripper = ``other_future[:, 6]``.
    """
    cur = np.asarray(current, np.float64).reshape(7)
    oc = np.asarray(other_current, np.float64).reshape(7)
    of = np.asarray(other_future, np.float64).reshape(-1, 7)
    out = of.copy()
    out[:, :3] = cur[:3] + (of[:, :3] - oc[:3])
    out[:, 3:6] = cur[3:6] + wrap_angle(of[:, 3:6] - oc[3:6])
    return out


def mirrored_chunk(current: np.ndarray, future: np.ndarray) -> np.ndarray:
    """The future chunk mirrored about the current pose in position.

    Args:
        current: (7,) current action; future: (H, 7) future actions.
    Returns:
        (H, 7): position ``2·current[:3] − future[:, :3]`` (displacement negated), orientation and gripper of
        ``future`` unchanged.
    """
    cur = np.asarray(current, np.float64).reshape(7)
    out = np.asarray(future, np.float64).reshape(-1, 7).copy()
    out[:, :3] = 2.0 * cur[:3] - out[:, :3]
    return out


def shuffled_chunks(actions: np.ndarray, currents: list[int] | np.ndarray, horizon: int
                    ) -> list[np.ndarray] | None:
    """The shuffled future chunk of every window (see :func:`partner_windows`, :func:`relative_chunk`).

    Args:
        actions: (T, 7) the episode's actions at the model rate.
        currents: (n,) index of each window's current frame (its future is ``currents[i] + 1 .. + horizon``).
        horizon: H.
    Returns:
        n arrays (H, 7), or None when there are fewer than 2 windows.
    """
    a = np.asarray(actions, np.float64)
    cur = [int(c) for c in currents]
    partner = partner_windows(len(cur))
    if partner is None:
        return None
    return [relative_chunk(a[c], a[cur[j]], a[cur[j] + 1:cur[j] + 1 + horizon]) for c, j in zip(cur, partner,
                                                                                                   strict=True)]


def other_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A second standard-normal noise draw (1, *shape) float32 for the window whose regular noise has ``seed``;
    from the seed sequence (seed, 1), so it differs from every window's regular noise (``default_rng(seed')``)."""
    return np.random.default_rng([int(seed), 1]).standard_normal((1, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- errors


def frame_errors(pred_latents: Any, true_latents: Any, pred_images: Any = None, target_images: Any = None
                 ) -> dict[str, np.ndarray]:
    """Prediction errors per horizon step.

    Args:
        pred_latents, true_latents: (H, C, h, w) predicted and recorded (encoded) future latents.
        pred_images, target_images: (H, V, 3, h', w') decoded prediction and recorded frames in [0, 1]; optional.
    Returns:
        ``latent_mse`` (H,); with images also ``pixel_mse`` (H,) (mean over views and pixels) and ``psnr_db`` (H,)
        (PSNR per view, floored MSE, then the mean over the views, as eval-bag's ``psnr_db.mean``).
    """
    p, t = _np(pred_latents), _np(true_latents)
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"latents must both be (H, C, h, w), got {p.shape} and {t.shape}")
    out = {"latent_mse": ((p - t) ** 2).mean(axis=(1, 2, 3))}
    if pred_images is not None and target_images is not None:
        pi, ti = _np(pred_images), _np(target_images)
        if pi.shape != ti.shape or pi.ndim != 5:
            raise ValueError(f"images must both be (H, V, 3, h, w), got {pi.shape} and {ti.shape}")
        mse_v = ((pi - ti) ** 2).mean(axis=(2, 3, 4))  # (H, V)
        out["pixel_mse"] = mse_v.mean(axis=1)
        out["psnr_db"] = (10.0 * np.log10(1.0 / np.maximum(mse_v, PSNR_MSE_FLOOR))).mean(axis=1)
    return out


def latent_difference(a: Any, b: Any) -> tuple[np.ndarray, float]:
    """L2 norm of the difference of two predictions (H, C, h, w): per horizon step (over C, h, w) → (H,), and over
    the whole window → float."""
    d = _np(a) - _np(b)
    return np.sqrt((d ** 2).sum(axis=(1, 2, 3))), float(np.sqrt((d ** 2).sum()))


@dataclass
class WindowResult:
    """One window: ``errors[variant]`` = :func:`frame_errors` dict (None: variant not available), ``differences``
    [name] = (per-step (H,), window) norms of :func:`latent_difference` (``action_mirrored``: pred(true) −
    pred(mirrored), ``action_shuffled``: pred(true) − pred(shuffled), ``noise``: pred(true) − pred(true, other
    noise))."""

    errors: dict[str, dict[str, np.ndarray] | None]
    differences: dict[str, tuple[np.ndarray, float] | None]


def evaluate_window(predict: Callable[[np.ndarray, Any], Any], actions: np.ndarray, num_history: int,
                    true_latents: Any, noise: Any, noise_other: Any, *,
                    shuffled_future: np.ndarray | None = None,
                    decode: Callable[[Any], Any] | None = None, target_images: Any = None,
                    pred_true: Any = None, pred_true_images: Any = None) -> WindowResult:
    """Predict one window with the true, shuffled and mirrored future actions (same noise) and with the true actions
    and another noise; measure the errors and the latent differences.

    Args:
        predict: ``predict(actions (T+H, 7) float64 raw EE actions, noise) → (H, C, h, w)`` predicted latents
            (array or tensor), history and conditioning fixed by the caller for this window.
        actions: (T+H, 7) the window's recorded actions (history + future).
        num_history: T; the current pose is ``actions[T − 1]``.
        true_latents: (H, C, h, w) recorded future latents.
        noise: the window's initial noise, passed to ``predict`` unchanged for every action variant.
        noise_other: another noise draw (same shape) for the noise effect.
        shuffled_future: (H, 7) the shuffled chunk (:func:`shuffled_chunks`); None: no shuffle (fewer than 2
            windows), its entries are None.
        decode: ``decode((H, C, h, w) latents) → (H, V, 3, h', w')`` images in [0, 1]; None: latent errors only.
        target_images: (H, V, 3, h', w') recorded future frames in [0, 1] (with ``decode``).
        pred_true, pred_true_images: the regular prediction with the true actions and this noise (and its decoded
            images) when the caller already has them (not predicted again).
    Returns:
        :class:`WindowResult`.
    """
    a = np.asarray(actions, np.float64)
    T = int(num_history)
    cur, fut = a[T - 1], a[T:]
    with_images = decode is not None and target_images is not None

    def run(future: np.ndarray, z: Any) -> Any:
        return predict(np.concatenate([a[:T], future], axis=0), z)

    def errors(pred: Any, images: Any = None) -> dict[str, np.ndarray]:
        if with_images and images is None:
            images = decode(pred)
        return frame_errors(pred, true_latents, images if with_images else None, target_images)

    if pred_true is None:
        pred_true, pred_true_images = run(fut, noise), None
    preds = {"true": pred_true, "mirrored": run(mirrored_chunk(cur, fut), noise)}
    if shuffled_future is not None:
        preds["shuffled"] = run(np.asarray(shuffled_future, np.float64).reshape(fut.shape), noise)
    errs: dict[str, dict[str, np.ndarray] | None] = {v: None for v in VARIANTS}
    for v, p in preds.items():
        errs[v] = errors(p, pred_true_images if v == "true" else None)
    diffs: dict[str, tuple[np.ndarray, float] | None] = {
        "action_mirrored": latent_difference(pred_true, preds["mirrored"]),
        "action_shuffled": latent_difference(pred_true, preds["shuffled"]) if "shuffled" in preds else None,
        "noise": latent_difference(pred_true, run(fut, noise_other)),
    }
    return WindowResult(errs, diffs)


# ------------------------------------------------------------------------------------------------- aggregation


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass
class ControllabilityAccumulator:
    """Collects :class:`WindowResult` of the windows; :meth:`summary` gives the metrics.json section.

    Attributes:
        horizon: H.
        shuffle_reason: why there is no shuffled variant (set by the caller when fewer than 2 windows), or "".
    """

    horizon: int
    shuffle_reason: str = ""
    results: list[WindowResult] = field(default_factory=list)

    def add(self, result: WindowResult) -> None:
        self.results.append(result)

    def summary(self, prefix: str = "controllability") -> tuple[dict[str, Any], dict[str, str]]:
        """(section, null reasons keyed by metrics.json path under ``prefix``).

        Section layout (per_step: H values, mean over windows)::

            windows, shuffle, mirror, noise                      the rules, in words
            error.{true,shuffled,mirrored}.{latent_mse,pixel_mse,psnr_db}.{per_step, mean}
            ratio.{shuffled,mirrored}.{per_step, mean}           latent MSE variant / true (mean: of the step means)
            pixel_mse_ratio.{shuffled,mirrored}.{per_step, mean}
            latent_difference.{action_mirrored,action_shuffled,noise}.{per_step, window}   L2 norms, mean over windows
            latent_difference.action_vs_noise.{mirrored,shuffled}  action norm / noise norm (window norms)
        """
        nulls: dict[str, str] = {}
        n = len(self.results)
        sec: dict[str, Any] = {"windows": n, "shuffle": SHUFFLE_RULE, "mirror": MIRROR_RULE,
                               "noise": "every action variant uses the window's own initial noise (common random "
                                        "numbers); the noise effect uses a second draw (seed sequence (seed, 1))"}
        if n == 0:
            nulls[prefix] = "no window evaluated"
            return {**sec, "error": None, "ratio": None, "pixel_mse_ratio": None, "latent_difference": None}, nulls
        shuffle_why = self.shuffle_reason or "no shuffled prediction"
        errs: dict[str, Any] = {}
        means: dict[str, dict[str, np.ndarray]] = {}  # variant → quantity → (H,) mean over windows
        for v in VARIANTS:
            rows = [r.errors[v] for r in self.results]
            if any(x is None for x in rows):
                errs[v] = None
                nulls[f"{prefix}.error.{v}"] = shuffle_why
                continue
            means[v] = {q: np.mean(np.stack([x[q] for x in rows]), axis=0) for q in rows[0]}
            errs[v] = {q: {"per_step": m.tolist(), "mean": float(m.mean())} for q, m in means[v].items()}
        sec["error"] = errs
        for key, q in (("ratio", "latent_mse"), ("pixel_mse_ratio", "pixel_mse")):
            out: dict[str, Any] = {}
            for v in ("shuffled", "mirrored"):
                if v not in means or q not in means[v]:
                    out[v] = None
                    nulls[f"{prefix}.{key}.{v}"] = (shuffle_why if v not in means
                                                   else "no decoded images (latent errors only)")
                    continue
                num, den = means[v][q], means["true"][q]
                per = _ratio(num, den)
                tot = float(_ratio(np.array(num.mean()), np.array(den.mean())))
                for i in np.flatnonzero(~np.isfinite(per)):
                    nulls[f"{prefix}.{key}.{v}.per_step[{i}]"] = f"the {q} with the true actions is 0 at this step"
                if not np.isfinite(tot):
                    nulls[f"{prefix}.{key}.{v}.mean"] = f"the {q} with the true actions is 0"
                out[v] = {"per_step": per.tolist(), "mean": tot}
            sec[key] = out
        diffs: dict[str, Any] = {}
        window_means: dict[str, float] = {}
        for d in DIFFERENCES:
            rows = [r.differences[d] for r in self.results]
            if any(x is None for x in rows):
                diffs[d] = None
                nulls[f"{prefix}.latent_difference.{d}"] = shuffle_why
                continue
            window_means[d] = float(np.mean([w for _, w in rows]))
            diffs[d] = {"per_step": np.mean(np.stack([p for p, _ in rows]), axis=0).tolist(),
                        "window": window_means[d]}
        avn: dict[str, Any] = {}
        for v in ("mirrored", "shuffled"):
            key = f"action_{v}"
            if key not in window_means:
                avn[v] = None
                nulls[f"{prefix}.latent_difference.action_vs_noise.{v}"] = shuffle_why
            elif window_means.get("noise", 0.0) <= 0.0:
                avn[v] = None
                nulls[f"{prefix}.latent_difference.action_vs_noise.{v}"] = (
                    "the prediction does not depend on the noise (noise effect 0)")
            else:
                avn[v] = window_means[key] / window_means["noise"]
        diffs["action_vs_noise"] = avn
        sec["latent_difference"] = diffs
        return sec, nulls
