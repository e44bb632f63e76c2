"""Post-hoc calibration of a classifier head by temperature scaling (Guo et al., 2017), used for the UQ head.

The UQ head predicts, per latent element, a distribution over error bins. Trained with cross-entropy for a few
hundred steps it can be consistently over- or under-confident; dividing its logits by one scalar T fitted on held-out
episodes (minimum negative log-likelihood of the true bins) fixes that without changing which bin is most likely.
T < 1 sharpens (the head was under-confident), T > 1 flattens. The entropy the planner weights frames by changes
with T, so a new temperature is a planner change and is measured in closed loop like one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.eval.bag_config import EvalBagConfig

__all__ = ["calibrate_uq", "fit_temperature", "nll", "top_bin_ece"]


def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    from scipy.special import log_softmax  # defers scipy (the CLI imports this module)

    return log_softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def nll(logits: np.ndarray, target: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood [nats] of ``target`` (n,) int bins under softmax(logits / T), logits (n, B)."""
    lp = _log_softmax(logits, temperature)
    return float(-lp[np.arange(len(lp)), np.asarray(target, np.int64)].mean())


def top_bin_ece(logits: np.ndarray, target: np.ndarray, temperature: float = 1.0, n_bins: int = 15) -> float:
    """Expected calibration error of the most likely bin's probability (``n_bins`` equal-width confidence bins),
    the UQ metric of ``vidplan eval bag``: logits (n, B), target (n,) int."""
    from vidplan_core.eval.bag_metrics import ReliabilityAccumulator

    lp = _log_softmax(logits, temperature)
    rel = ReliabilityAccumulator(n_bins)
    rel.add(np.exp(lp.max(-1)), (lp.argmax(-1) == np.asarray(target)).astype(np.float64))
    return rel.ece()


def fit_temperature(logits: np.ndarray, target: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T that minimises :func:`nll` of ``target`` (n,) under softmax(logits / T), logits (n, B).

    Raises:
        ValueError: on empty, mismatched or non-finite input, or when the optimum lies on a bound (the logits
            carry no usable signal at any temperature in ``bounds``).
    """
    from scipy.optimize import minimize_scalar

    logits, target = np.asarray(logits, np.float64), np.asarray(target)
    if logits.ndim != 2 or target.shape != (len(logits),) or len(logits) == 0:
        raise ValueError(f"fit_temperature needs logits (n, B) and target (n,), got {logits.shape} and "
                         f"{target.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("fit_temperature: the logits are not all finite")
    if target.min() < 0 or target.max() >= logits.shape[1]:
        raise ValueError(f"fit_temperature: target bins must lie in [0, {logits.shape[1]}), got "
                         f"[{target.min()}, {target.max()}]")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda x: nll(logits, target, math.exp(x)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-4})
    if min(res.x - lo, hi - res.x) < 1e-3:
        raise ValueError(f"fit_temperature: the optimum lies on the bound {math.exp(res.x):.3g} of {bounds}")
    return float(math.exp(res.x))


def calibrate_uq(model_dir: str | Path, bags: Sequence[str | Path], out: str | Path, windows: int = 8,
                 flow_steps: int = 1, write: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fit the temperature of the bundle's UQ head on recorded episodes held out from its training (and from the
    episodes it will be evaluated on), as the planner uses it: flow map with ``flow_steps`` steps, ``windows``
    windows per episode (``vidplan eval bag``'s sampled latent elements, 2048 per window).

    Writes ``OUT/<bag>/`` (each episode's evaluation and ``uq_samples.npz``) and ``OUT/calibration.json`` (the
    returned report); with ``write``, also the temperature into ``<model_dir>/uq_head/config.json`` and the report
    into ``uq_head/calibration.json`` — the ONNX export is then stale until ``vidplan export`` is re-run (the
    onnxruntime backend refuses to load it).

    Returns:
        {"temperature", "previous_temperature", "episodes", "elements", "windows", "flow_steps", "bags",
        "nll": {"before", "after"}, "ece": {"before", "after"}} (nll in nats per element; ECE of the most likely
        bin, 15 bins, over all sampled elements together).
    Raises:
        ValueError: no bags, or a fit that fails (see :func:`fit_temperature`).
        EvalBagError: a bag or bundle ``vidplan eval bag`` refuses (a bundle without a UQ head among them).
    """
    from vidplan_core.eval.bag_eval import eval_bag  # defers torch

    model_dir, out = Path(model_dir), Path(out)
    bags = [Path(b) for b in bags]
    if not bags:
        raise ValueError("calibrate_uq needs at least one recorded episode")
    cfg = EvalBagConfig(flow_steps=flow_steps, max_steps=windows, shadow=False, examples=0, progress=False,
                        controllability=False, uq_samples=True)
    from tqdm import tqdm

    logits, bins, t0 = [], [], None
    for bag in tqdm(bags, desc="calibrate-uq", unit="episode", disable=not progress):
        res = eval_bag(bag, model_dir, out / bag.name, config=cfg)
        with np.load(res.out_dir / "uq_samples.npz") as d:
            t = float(d["temperature"])
            logits.append(d["logits"].astype(np.float64) * t)  # back to the head's raw logits
            bins.append(d["bin"].astype(np.int64))
        t0 = t
    raw, target = np.concatenate(logits), np.concatenate(bins)
    temperature = round(fit_temperature(raw, target), 4)  # as stored in config.json
    report = {"temperature": temperature, "previous_temperature": t0, "episodes": len(bags),
              "elements": len(target), "windows": windows, "flow_steps": flow_steps,
              "bags": [str(b) for b in bags],
              "nll": {"before": nll(raw, target, t0), "after": nll(raw, target, temperature)},
              "ece": {"before": top_bin_ece(raw, target, t0), "after": top_bin_ece(raw, target, temperature)}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(report, indent=2))
    if write:
        cfg_path = model_dir / "uq_head" / "config.json"
        conf = json.loads(cfg_path.read_text())
        conf["temperature"] = temperature
        cfg_path.write_text(json.dumps(conf, indent=2) + "\n")
        (model_dir / "uq_head" / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
