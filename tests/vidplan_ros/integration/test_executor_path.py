"""executor_node's path-deviation abort (``path_position_tolerance``), against joint states this test controls.

The abort is geometric: an arm that trails its command (late trajectory, loaded machine) is not off its path and must
not be stopped; an arm pushed sideways off the commanded path must be stopped and held.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from proc_helpers import wait_for
from test_executor import HOME_Q, KIN, rig_with_arm_at_home

from vidplan_interfaces.action import ExecuteChunk

R = ExecuteChunk.Result


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    yield from rig_with_arm_at_home(tmp_path_factory, "executor_path", "joint_state_timeout_s:=2.0",
                                    "path_position_tolerance:=0.05")


def test_arm_trailing_its_command_is_not_aborted(rig):
    # 12 cm along x in 0.6 s while the "arm" (our joint states) stays at the start: the time-based tracking error
    # reaches 12 cm (> the 5 cm tolerance), but the arm is on its path, so the chunk runs to its end
    rig.q = HOME_Q.copy()
    feedback = []
    offsets = [[0.02 * (i + 1), 0.0, 0.0] for i in range(6)]
    res = rig.result(rig.send(rig.chunk_msg(offsets, dt=0.1), feedback=lambda fb: feedback.append(fb.feedback)))
    assert res.status == R.STATUS_SUCCEEDED, res.reason
    assert max(f.position_error for f in feedback) > 0.05  # the time-based error did exceed the tolerance


def test_arm_off_its_path_is_aborted_and_held(rig):
    rig.q = HOME_Q.copy()
    n0 = len(rig.trajs)
    offsets = [[0.01 * (i + 1), 0.0, 0.0] for i in range(10)]
    handle = rig.send(rig.chunk_msg(offsets, dt=0.2))
    time.sleep(0.3)
    pushed = HOME_Q.copy()
    pushed[0] += 0.25  # base joint: the TCP swings ~8 cm sideways, off the x-line of the chunk
    off = np.linalg.norm(KIN.fk(pushed)[:3, 3] - KIN.fk(HOME_Q)[:3, 3])
    assert off > 0.06, off
    rig.q = pushed
    res = rig.result(handle)
    assert res.status == R.STATUS_ABORTED and "off the commanded path" in res.reason, res.reason
    # the hold: a one-point trajectory at the measured (pushed) position
    assert wait_for(lambda: len(rig.trajs) >= n0 + 2, 2)
    hold = rig.trajs[-1][1]
    assert len(hold.points) == 1
    np.testing.assert_allclose(hold.points[0].positions, pushed, atol=1e-9)
    rig.q = HOME_Q.copy()
