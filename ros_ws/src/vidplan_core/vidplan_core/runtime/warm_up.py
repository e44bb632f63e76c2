"""Warm-up of a planning backend: one planning pass on synthetic inputs before the first real cycle, checked for
non-finite outputs (a :class:`WarmUpError` names the stage), with the torch RNG state left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.runtime.base import BackendError, PlanningContext
from vidplan_core.runtime.bundle_index import BundleError, BundleIndex
from vidplan_core.spaces import ACTION_DIM

__all__ = [
    "WarmUpError",
    "warm_up",
]


class WarmUpError(BundleError):
    """The start-up warm-up pass (:func:`warm_up`) produced NaN/Inf: ``part`` names the model part whose output was
    first non-finite (``key`` ``parts.<part>``, ``path`` its directory when the index names one)."""

    def __init__(self, message: str, part: str, key: str | None = None, path: str | Path | None = None):
        super().__init__(message, key=key, path=path)
        self.part = part


def _non_finite(x: Any) -> bool:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    return a.size > 0 and not np.isfinite(a).all()


def warm_up(backend: Any, index: BundleIndex | None = None, seed: int = 0) -> float:
    """One planning pass on a synthetic context, checked for NaN/Inf, so bad weights fail at start-up instead of in
    every control cycle.

    The context: ``num_history`` grey frames (128) of the backend's view size (from the index, else the
    autoencoder/manifest), the history poses all at the centre of the action statistics, instruction "warm-up";
    the candidate: that pose held for the H steps (the hold chunk). It runs, where the backend has them, the text
    embedding, the history encoder, the rollout (world model, heads, semantic reward), the decoder and
    value_and_grad, and names the first part whose output is non-finite. Global torch/numpy random states are left
    as they were; a backend's caches keep only entries no real input reuses.

    Args:
        backend: a :class:`~vidplan_core.runtime.base.Backend` (torch, onnxruntime, TensorRT).
        index: the bundle's index, to name the part's directory in the error.
        seed: noise seed of the synthetic context.

    Returns:
        Seconds spent.

    Raises:
        WarmUpError: a non-finite output; the message names the part and the outputs.
        BackendError: the backend fails on the synthetic context.
    """
    import time


    t0 = time.perf_counter()
    vh, vw = _view_size(backend, index)
    t_hist, horizon = int(backend.num_history), int(backend.horizon)
    norm = backend.normalizer
    pose = ((np.asarray(norm.p01, np.float64) + np.asarray(norm.p99, np.float64)) / 2).reshape(ACTION_DIM)
    frames = np.full((t_hist, 3, 3, vh, vw), 128, dtype=np.uint8)
    hold = np.tile(pose, (1, horizon, 1))
    where = index.describe() if index is not None else type(backend).__name__

    def fail(part: str, what: str) -> None:
        path = index.path(part) if index is not None and part in index.parts else None
        located = f" ({path})" if path is not None else ""
        raise WarmUpError(f"{where}: start-up warm-up produced NaN/Inf in {what} of '{part}'{located}: the model's "
                          f"weights (or its export) are bad; re-train or restore the part", part=part,
                          key=f"parts.{part}", path=path)

    rng_state = np.random.get_state()
    torch_rng = _torch_rng_state()
    try:
        text_fn = getattr(backend, "text_embedding", None)
        if text_fn is not None and _non_finite(text_fn("warm-up")):
            fail("semantic", "the instruction's text embedding")
        cond_fn = getattr(backend, "conditioning_embedding", None)  # the world model's, when it has its own
        if cond_fn is not None and _non_finite(cond_fn("warm-up")):
            fail("text_conditioner", "the instruction's conditioning text embedding")
        encode = getattr(backend, "encode_frames", None)
        if encode is not None and _non_finite(encode(frames[-1:])):
            fail("autoencoder", "the encoded history frames")
        backend.set_context(PlanningContext(frames, np.tile(pose, (t_hist, 1)), "warm-up", seed=seed))
        predict, score = getattr(backend, "predict_latents", None), getattr(backend, "score_latents", None)
        if predict is not None and score is not None:  # stage by stage: the heads refuse non-finite latents
            latents = predict(hold)
            if _non_finite(latents):
                fail("flow_map", "the predicted latents (world model rollout)")
            out = score(latents, hold)
        else:
            out = backend.rollout(hold)
        if out.latents is not None and _non_finite(out.latents):
            fail("flow_map", "the predicted latents (world model rollout)")
        bad = set(out.non_finite())
        for part, names in (("uq_head", ("h_bar", "uq_map")), ("reward_head", ("value", "value_entropy"))):
            if bad & set(names):
                fail(part, "the outputs " + ", ".join(sorted(bad & set(names))))
        if bad:  # the semantic reward decodes the latents first: blame the decoder when its pictures are bad
            decode = getattr(backend, "decode", None)
            if out.latents is not None and decode is not None and _decoded_non_finite(decode, out.latents[0]):
                fail("autoencoder", "the decoded frames")
            fail("semantic", "the outputs " + ", ".join(sorted(bad)))
        vg = getattr(backend, "value_and_grad", None)
        if vg is not None:
            try:
                j, g = vg(hold)
            except BackendError as exc:
                if "value_grad" not in str(exc):
                    raise
            else:  # (an export without the value-and-grad graph has nothing to check here)
                if _non_finite(j) or _non_finite(g):
                    fail("flow_map", "the refinement objective or its gradient (flow map + heads)")
    finally:
        np.random.set_state(rng_state)
        _set_torch_rng_state(torch_rng)
    return time.perf_counter() - t0


def _decoded_non_finite(decode: Any, latents: Any) -> bool:
    try:
        return _non_finite(decode(latents))
    except BackendError:  # an export without a decode graph
        return False


def _view_size(backend: Any, index: BundleIndex | None) -> tuple[int, int]:
    manifest = getattr(backend, "manifest", None)
    if manifest is not None:
        vh, vw = manifest.model["view_size"]
        return int(vh), int(vw)
    models = getattr(backend, "models", None)
    if models is not None:
        c = models.suite.autoencoder.config
        return int(c.view_height), int(c.view_width)
    size = index.view_size() if index is not None else None
    if size is None:
        raise BackendError("warm-up: cannot tell the backend's view size")
    return size


def _torch_rng_state() -> Any:
    import sys

    torch = sys.modules.get("torch")  # only when some backend already imported it
    return None if torch is None else torch.random.get_rng_state()


def _set_torch_rng_state(state: Any) -> None:
    if state is not None:
        import torch

        torch.random.set_rng_state(state)
