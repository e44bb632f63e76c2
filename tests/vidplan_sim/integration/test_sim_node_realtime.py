"""sim_node in real-time mode (lockstep:=false) as a real process: sim time follows the wall clock.

A separate module from test_sim_node.py so that the two sim_node processes never run at the same time (they share
the test run's ROS domain).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from proc_helpers import node_executable, started
from test_sim_node import Probe


def test_real_time_mode_follows_the_wall_clock(tmp_path):
    """lockstep:=false: sim time follows wall time (frames may drop instead); streams still arrive."""
    cmd = [node_executable("vidplan_sim", "sim_node"), "--ros-args", "-r", "__node:=sim_rt", "-p", "scene_seed:=4",
           "-p", "clutter:=0", "-p", "lockstep:=false", "-p", "camera_rate_hz:=10.0", "-p", "state_rate_hz:=50.0"]
    probe = Probe()  # subscribed before the sim starts
    try:
        with started(cmd, tmp_path / "sim_rt.log") as proc:
            probe.wait_streams(proc)
            c0, w0 = probe.clock[-1], time.monotonic()
            time.sleep(3.0)
            c1, w1 = probe.clock[-1], time.monotonic()
            with probe.lock:
                stamps = sorted({m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in probe.js})
    finally:
        probe.close()
    ratio = (c1 - c0) / (w1 - w0)
    assert 0.5 < ratio < 1.3, f"sim time ran at {ratio:.2f}× wall time in real-time mode"
    # The state rate is in sim time: joint states are 1/50 s of sim time apart (a loaded receiver may miss some).
    gaps = np.diff(stamps[-40:]) * 50.0
    assert np.allclose(gaps, np.round(gaps), atol=0.05) and gaps.min() == pytest.approx(1.0, abs=0.05)
