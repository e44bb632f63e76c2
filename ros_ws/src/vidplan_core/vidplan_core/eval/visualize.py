"""Pictures users look at: the uncertainty heat map over a frame, prediction strips, GIFs.

Pure numpy (+ Pillow/imageio for files) so nodes, reports and notebooks share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["blue_green_red", "prediction_strip", "save_gif", "to_uint8_hwc", "uncertainty_overlay"]


def to_uint8_hwc(img: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) image, float [0, 1] or uint8 → (H, W, 3) uint8."""
    a = np.asarray(img)
    if a.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {a.shape}")
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def blue_green_red(u: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to colours: 0 blue → 0.5 green → 1 red (the paper's uncertainty colouring).

    Returns:
        (..., 3) float in [0, 1].
    """
    u = np.clip(np.nan_to_num(np.asarray(u, dtype=np.float64), nan=1.0), 0.0, 1.0)[..., None]
    blue, green, red = np.array([0.0, 0.2, 1.0]), np.array([0.1, 0.9, 0.1]), np.array([1.0, 0.1, 0.0])
    low = blue + (green - blue) * (u / 0.5)
    high = green + (red - green) * ((u - 0.5) / 0.5)
    return np.where(u < 0.5, low, high)


def _resize_nearest(m: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) * m.shape[0] / h).astype(int)
    xs = (np.arange(w) * m.shape[1] / w).astype(int)
    return m[ys][:, xs]


def uncertainty_overlay(frame: np.ndarray, uq_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a per-latent uncertainty map (h, w) in [0, 1] over a decoded frame.

    Args:
        frame: (3, H, W) / (H, W, 3) image (float [0, 1] or uint8).
        uq_map: (h, w) normalised entropy; upsampled (nearest: one latent = one block) to H×W.
        alpha: weight of the heat map.

    Returns:
        (H, W, 3) uint8.
    """
    img = to_uint8_hwc(frame).astype(np.float64) / 255.0
    heat = blue_green_red(_resize_nearest(np.asarray(uq_map), img.shape[0], img.shape[1]))
    return to_uint8_hwc((1 - alpha) * img + alpha * heat)


def prediction_strip(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile images into a grid: one row per sequence (e.g. current frames; predicted frames; heat maps).

    Args:
        rows: rows of images ((3, H, W) or (H, W, 3), any size; each row may have a different length).

    Returns:
        (H_total, W_total, 3) uint8 on a white background.
    """
    imgs = [[to_uint8_hwc(i) for i in r] for r in rows]
    if not imgs or not any(imgs):
        raise ValueError("prediction_strip needs at least one image")
    cell_h = max(i.shape[0] for r in imgs for i in r)
    cell_w = max(i.shape[1] for r in imgs for i in r)
    ncol = max(len(r) for r in imgs)
    out = np.full((len(imgs) * (cell_h + gap) - gap, ncol * (cell_w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(imgs):
        for c, im in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
    return out


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write images (any of the accepted layouts) as a looping GIF."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = [Image.fromarray(to_uint8_hwc(f)) for f in frames]
    if not pil:
        raise ValueError("save_gif needs at least one frame")
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
    return path
