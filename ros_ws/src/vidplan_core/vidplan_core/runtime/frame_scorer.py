"""The semantic scorer on observed camera frames (not predicted ones): one patch-logit map per frame.

The planner scores imagined futures through each backend's semantic graph; where it needs to know where the target
is *now* (a put's grasp, :attr:`~vidplan_core.planning.scoring.ScoreConfig.wrist_refine_m`) it reads the hand
camera's current frame with the same scorer. That scorer is small (1.5 MB for the demo bundle's grounded one) and
runs in torch on every backend: the exports carry no graph for it yet, so the onnxruntime and TensorRT backends
load it from the bundle's ``semantic/`` part (:func:`~vidplan_core.runtime.loader.load_planner_backend`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FrameScorer"]


class FrameScorer:
    """Patch-logit maps of observed frames for a text (``scorer``: a loaded semantic scorer, grounded or SigLIP /
    CLIP, with ``encode_text`` and ``score_and_map``)."""

    def __init__(self, scorer: Any = None, path: str | Path | None = None, device: str = "cpu"):
        if (scorer is None) == (path is None):
            raise ValueError("FrameScorer needs a loaded scorer or the directory of one (not both)")
        self._scorer, self._path, self._device = scorer, path, device
        self._text: dict[str, torch.Tensor] = {}

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> FrameScorer:
        """The scorer saved in ``path`` (:func:`~vidplan_core.runtime.loader.load_semantic_scorer`), loaded on first
        use: a planner that never asks for an observed map never pays for it."""
        return cls(path=path, device=device)

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from vidplan_core.runtime.loader import load_semantic_scorer

            self._scorer = load_semantic_scorer(self._path, device=self._device)
        return self._scorer

    def text_embedding(self, text: str) -> torch.Tensor:
        """(D,) the scorer's unit-norm embedding of ``text`` (cached)."""
        if text not in self._text:
            with torch.no_grad():
                self._text[text] = self.scorer.encode_text([text]).reshape(-1)
        return self._text[text]

    def map(self, frame: np.ndarray, text: str) -> torch.Tensor:
        """One frame (3, H, W) of a model view — uint8, or float in [0, 1] — → (gh, gw) patch logits of ``text``
        (before any uncertainty suppression: an observed frame has none)."""
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[0] != 3:
            raise ValueError(f"frame must be (3, H, W), got {f.shape}")
        x = torch.as_tensor(f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32))[None]
        with torch.no_grad():
            _, sim = self.scorer.score_and_map(x, self.text_embedding(text))
        return sim[0].double()
