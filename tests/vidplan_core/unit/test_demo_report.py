"""Pure parts of the learned demo: executed-time accounting and cutting the planner's prediction image."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.eval.demo_report import split_prediction_image
from vidplan_core.eval.visualize import prediction_strip


def test_split_prediction_image_inverts_the_planner_layout():
    rng = np.random.default_rng(0)
    vh, vw, n = 8, 12, 4
    current = rng.integers(0, 255, (3 * vh, vw, 3), dtype=np.uint8)
    predicted = [rng.integers(0, 255, (3 * vh, vw, 3), dtype=np.uint8) for _ in range(n)]
    img = prediction_strip([[current], predicted])  # what planner_node publishes on /vidplan/debug/prediction
    cur, pred = split_prediction_image(img, view_width=vw)
    assert np.array_equal(cur, current)
    assert len(pred) == n and all(np.array_equal(a, b) for a, b in zip(pred, predicted, strict=True))
    with pytest.raises(ValueError, match="not a planner prediction image"):
        split_prediction_image(np.zeros((51, 40, 3), np.uint8))
    # Square views need no width.
    sq = [rng.integers(0, 255, (3 * vh, vh, 3), dtype=np.uint8) for _ in range(2)]
    cur, pred = split_prediction_image(prediction_strip([[sq[0]], sq]))
    assert np.array_equal(cur, sq[0]) and len(pred) == 2 and np.array_equal(pred[1], sq[1])


def test_executed_seconds_counts_each_trajectory_until_replaced():
    pytest.importorskip("rclpy")
    from vidplan_ros.learned_demo import executed_seconds

    # (receipt time, last point due) [s]: 1st replaced after 0.4 s, 2nd ran fully (0.3 s) then idle, 3rd still runs.
    trajs = [(10.0, 0.6), (10.4, 0.3), (11.0, 0.6)]
    assert executed_seconds(trajs, now=11.2) == pytest.approx(0.4 + 0.3 + 0.2)
    assert executed_seconds(trajs, now=20.0) == pytest.approx(0.4 + 0.3 + 0.6)
    assert executed_seconds([], now=5.0) == 0.0
