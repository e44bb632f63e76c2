"""Evaluation metrics against closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.eval.metrics import (
    calibration_from_probs,
    expected_calibration_error,
    latency_summary,
    psnr,
    rank_correlations,
    reliability_diagram,
    ssim,
)


def test_psnr_closed_form():
    a = np.zeros((3, 8, 8))
    b = np.full((3, 8, 8), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == np.inf
    per_img = psnr(np.zeros((2, 3, 4, 4)), np.stack([np.full((3, 4, 4), 0.1), np.full((3, 4, 4), 0.01)]),
                   reduce_dims=(-3, -2, -1))
    assert np.allclose(per_img, [20.0, 40.0])
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:2])


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(0)
    img = ndimage_smooth(rng.random((3, 32, 32)))
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    assert ssim(img, noisy) < 0.9
    assert ssim(img, np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)) > ssim(img, noisy)


def ndimage_smooth(x):
    from scipy import ndimage

    return ndimage.gaussian_filter(x, 1.0)


def test_ece_perfectly_calibrated_and_overconfident():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.05, 1.0, 200_000)
    correct = rng.random(conf.size) < conf
    assert expected_calibration_error(conf, correct) < 0.01
    assert expected_calibration_error(np.full(1000, 0.9), np.zeros(1000)) == pytest.approx(0.9)
    d = reliability_diagram(conf, correct)
    assert len(d["count"]) == 15 and sum(d["count"]) == conf.size


def test_calibration_from_probs():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    conf, correct = calibration_from_probs(probs, np.array([0, 1]))
    assert np.allclose(conf, [0.7, 0.8]) and np.allclose(correct, [1, 0])


def test_correlations_and_latency():
    x = np.arange(50.0)
    r = rank_correlations(x, x**3)
    assert r["spearman_r"] == pytest.approx(1.0) and r["pearson_r"] < 1.0 and r["spearman_p"] < 1e-10
    lat = latency_summary([0.001, 0.002, 0.003])
    assert lat["p50_ms"] == pytest.approx(2.0) and lat["count"] == 3


def test_uncertainty_colours_and_overlay(tmp_path):
    from vidplan_core.eval.visualize import blue_green_red, prediction_strip, save_gif, uncertainty_overlay

    c = blue_green_red(np.array([0.0, 0.5, 1.0]))
    assert c[0].argmax() == 2 and c[1].argmax() == 1 and c[2].argmax() == 0  # blue, green, red
    frame = np.zeros((3, 8, 12))
    uq = np.array([[0.0, 1.0], [0.5, 0.5]])
    over = uncertainty_overlay(frame, uq, alpha=1.0)
    assert over.shape == (8, 12, 3) and over.dtype == np.uint8
    assert over[0, 0].argmax() == 2 and over[0, 11].argmax() == 0 and over[7, 0].argmax() == 1
    strip = prediction_strip([[frame, frame], [over]])
    assert strip.shape == (8 * 2 + 2, 12 * 2 + 2, 3)
    assert save_gif([over, over], tmp_path / "a.gif").stat().st_size > 0
