"""`vidplan serve openpi`: the planner behind the openpi protocol, driven by the real openpi-client the way a DROID
lab's evaluation script drives π0: observations of a MuJoCo episode with DROID's keys (images resized with padding
to 224×224), the returned joint velocities integrated at 15 Hz into the arm's joint targets, in real time as on the
robot (the server keeps its observation history by receipt time, so a client faster than real time would hand it
frames closer than the model's 5 Hz and it would keep waiting for history)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from proc_helpers import free_port, http_healthy, started, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def test_an_openpi_client_episode_in_the_sim(tmp_path):
    from openpi_client import image_tools, websocket_client_policy

    from vidplan_sim.env import SimEnv

    port = free_port()
    cmd = ["vidplan", "serve", "openpi", "--model", str(REPO / "models" / "demo"), "--port", str(port)]
    env = SimEnv(width=320, height=180)
    env.reset(seed=3, clutter=1, task="touch the red cube")
    with started(cmd, tmp_path / "server.log", env={"OMP_NUM_THREADS": "1"}) as server:
        assert wait_for(lambda: http_healthy(port), 120), server.output()[-3000:]
        client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)
        meta = client.get_server_metadata()
        assert meta["policy"] == "vidplan" and meta["action_space"] == "joint_velocity"
        q_target, statuses, moved = env.joint_positions(), [], 0.0
        for _ in range(4):
            obs = env.observe()
            imgs = {v: image_tools.convert_to_uint8(image_tools.resize_with_pad(obs["images"][i], 224, 224))
                    for i, v in enumerate(("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"))}
            req = {f"observation/{k}": im for k, im in imgs.items()}
            req.update({"observation/joint_position": env.joint_positions(),
                        "observation/gripper_position": np.array([env.gripper_command]),
                        "prompt": "touch the red cube"})
            resp = client.infer(req)
            acts = np.asarray(resp["actions"])
            statuses.append(resp["vidplan"]["status"])
            assert acts.ndim == 2 and acts.shape[1] == 8 and np.isfinite(acts).all(), acts.shape
            q0, tick = env.joint_positions(), time.monotonic()
            for a in acts[:8]:  # DROID's open-loop horizon: 8 of the chunk's 15 Hz steps, then a new query
                q_target = q_target + a[:7] / 15.0
                env.set_joint_targets(q_target)
                env.set_gripper(float(a[7]))
                env.step(1 / 15)
                tick += 1 / 15  # DROID's client runs at 15 Hz wall-clock; never faster than the robot would
                time.sleep(max(0.0, tick - time.monotonic()))
            moved = max(moved, float(np.abs(env.joint_positions() - q0).max()))
        assert statuses[0] == "waiting" and statuses[-1] in ("ok", "budget"), statuses  # T = 2 history frames
        assert moved > 1e-3, moved  # the planned joint velocities moved the arm
        # a malformed observation: the client gets the server's error naming the missing key
        with pytest.raises(Exception, match="observation lacks"):
            client.infer({"prompt": "touch the red cube"})
        assert server.alive()
