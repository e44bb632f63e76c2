"""A small openpi-protocol policy server of ours (``openpi_server.WebsocketPolicyServer``), for tests and demos.

``python -m vidplan_core.planning.openpi_server --port 8765`` serves a deterministic DROID-style policy: it
answers ``actions`` of shape (chunk, 8) — a constant joint velocity [rad/s] that drives joint 1 (base yaw) at
``--speed`` plus the observed gripper — and echoes the prompt and the received joint positions so a client can
check the round trip. It is not a learned policy; use a real openpi checkpoint server for that.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

__all__ = ["SweepPolicy", "main"]


class SweepPolicy:
    """openpi ``BasePolicy``: constant joint-1 velocity, gripper held; echoes prompt and joint positions."""

    def __init__(self, chunk: int = 10, speed: float = 0.2):
        self.chunk, self.speed = int(chunk), float(speed)

    def infer(self, obs: dict) -> dict:
        q = np.asarray(obs["observation/joint_position"], np.float64)
        g = float(np.asarray(obs["observation/gripper_position"]).reshape(-1)[0])
        acts = np.zeros((self.chunk, 8))
        acts[:, 0] = self.speed
        acts[:, 7] = g
        img = np.asarray(obs["observation/wrist_image_left"])
        return {"actions": acts, "echo_prompt": obs.get("prompt", ""), "echo_joint_position": q,
                "echo_image_shape": np.array(img.shape)}

    def reset(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    from openpi_client import base_policy
    from openpi_server import WebsocketPolicyServer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--speed", type=float, default=0.2, help="joint-1 velocity [rad/s]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    class _Policy(SweepPolicy, base_policy.BasePolicy):
        pass

    server = WebsocketPolicyServer(_Policy(args.chunk, args.speed), host=args.host, port=args.port,
                                   metadata={"policy": "vidplan-sweep", "action_space": "joint_velocity"})
    server.serve_forever()


if __name__ == "__main__":
    main()
