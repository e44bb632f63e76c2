"""Model-rate history from camera-rate observations."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.observation import ObservationHistory


def _frames(v: int = 0, h: int = 4, w: int = 6) -> np.ndarray:
    return np.full((3, h, w, 3), v, dtype=np.uint8)


def _ee(x: float = 0.4, rx: float = np.pi - 0.01) -> np.ndarray:
    return np.array([x, 0.0, 0.3, rx, 0.0, 0.0, 0.0])


def test_keeps_model_rate_spacing_from_15hz_stream():
    hist = ObservationHistory(length=4, model_rate_hz=5.0)
    kept = [hist.push(i / 15, _frames(i), _ee(0.4 + 0.001 * i)) for i in range(12)]
    assert kept == [i % 3 == 0 for i in range(12)]
    assert hist.ready()
    frames, poses, stamp = hist.window()
    assert frames.shape == (4, 3, 3, 4, 6)
    # The newest frame (i = 11) replaces the last kept one (i = 9).
    assert [int(f[0, 0, 0, 0]) for f in frames] == [0, 3, 6, 11]
    assert stamp == pytest.approx(11 / 15)
    assert np.allclose(np.diff(poses[:3, 0]), 0.003)


def test_not_ready_until_full_and_clear():
    hist = ObservationHistory(length=3)
    hist.push(0.0, _frames(), _ee())
    assert not hist.ready()
    with pytest.raises(RuntimeError, match="1 of 3"):
        hist.window()
    assert hist.age(1.0) == pytest.approx(1.0)
    hist.clear()
    assert hist.age(1.0) == float("inf")


def test_euler_kept_continuous_across_pi():
    hist = ObservationHistory(length=3)
    for i, rx in enumerate([np.pi - 0.01, -np.pi + 0.01, np.pi - 0.02]):
        hist.push(i * 0.2, _frames(), _ee(rx=rx))
    _, poses, _ = hist.window()
    assert np.all(np.abs(np.diff(poses[:, 3])) < 0.05), poses[:, 3]


@pytest.mark.parametrize(
    "frames, ee, match",
    [
        (np.zeros((2, 4, 6, 3), np.uint8), _ee(), "3, H, W, 3"),
        (np.zeros((3, 4, 6, 3), np.float32), _ee(), "uint8"),
        (_frames(), np.array([np.nan] * 7), "finite"),
    ],
)
def test_bad_input_is_named(frames, ee, match):
    with pytest.raises(ValueError, match=match):
        ObservationHistory(2).push(0.0, frames, ee)


def test_size_change_and_time_going_back_are_errors():
    hist = ObservationHistory(2)
    hist.push(1.0, _frames(), _ee())
    with pytest.raises(ValueError, match="image size changed"):
        hist.push(1.1, _frames(h=8), _ee())
    with pytest.raises(ValueError, match="backwards"):
        hist.push(0.5, _frames(), _ee())
