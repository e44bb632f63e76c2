"""OpenPIPolicy round trip against a real openpi websocket policy server in a separate process."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from proc_helpers import free_port, http_healthy, started, wait_for

from vidplan_core.kinematics import HOME_Q, PandaKinematics
from vidplan_core.planning.nominal import NominalObservation, OpenPIPolicy
from vidplan_core.planning.proposals import perturbation_proposals


def test_openpi_round_trip(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "vidplan_core.planning.openpi_server", "--port", str(port), "--chunk", "10",
           "--speed", "0.3"]
    with started(cmd, tmp_path / "server.log") as proc:
        assert wait_for(lambda: http_healthy(port), timeout=30), proc.output()
        kin = PandaKinematics()
        policy = OpenPIPolicy("127.0.0.1", port, horizon=3, kinematics=kin)
        try:
            assert policy.server_metadata["policy"] == "vidplan-sweep"
            pose = np.concatenate([kin.fk_action(HOME_Q), [0.25]])
            obs = NominalObservation(ee_pose=pose, joint_positions=HOME_Q,
                                     images={"wrist": np.zeros((180, 320, 3), np.uint8)}, instruction="pick the cube")
            req = policy.build_request(obs)
            raw = policy._client.infer(req)  # the raw protocol: what the server saw comes back
            assert raw["echo_prompt"] == "pick the cube"
            np.testing.assert_allclose(raw["echo_joint_position"], HOME_Q)
            assert tuple(raw["echo_image_shape"]) == (224, 224, 3)
            assert raw["actions"].shape == (10, 8)

            chunk = policy.infer(obs)
            assert chunk.shape == (3, 7) and np.isfinite(chunk).all()
            # 3 model steps = 9 control steps at 15 Hz of joint-1 velocity 0.3 rad/s → base yaw by 0.18 rad.
            q_end = HOME_Q.copy()
            q_end[0] += 0.3 * 9 / 15
            np.testing.assert_allclose(chunk[-1, :3], kin.fk_action(q_end)[:3], atol=1e-6)
            assert chunk[-1, 1] > pose[1] + 0.03  # yaw of the base moves the TCP to +y
            np.testing.assert_allclose(chunk[:, 6], 0.25)

            props = perturbation_proposals(chunk, 10, rng=0)
            assert props.actions.shape == (10, 3, 7)
            np.testing.assert_allclose(props.actions[0], chunk)
        finally:
            policy.close()


def test_openpi_missing_server_is_clear_error():
    port = free_port()
    with pytest.raises(ConnectionError, match="no openpi policy server"):
        OpenPIPolicy("127.0.0.1", port, horizon=3, kinematics=PandaKinematics(), connect_timeout_s=0.5)
