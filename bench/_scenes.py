"""Planning contexts for the planner benchmarks (noise_samples, refine_value): one fresh simulated scene per index,
the demo task kinds in turn, clutter 1, the arm at its home pose, the history = the current frames repeated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class HomeScene:
    """One scene's planning inputs: ``history`` (T, 3, 3, H, W) uint8 frames prepared for the model, ``poses`` (T, 7)
    EE actions [m, rad, gripper], ``q`` the arm's joint positions [rad]."""

    index: int
    kind: str
    instruction: str
    history: np.ndarray
    poses: np.ndarray
    q: np.ndarray


def home_scenes(loaded, n: int, progress: bool = True) -> Iterator[HomeScene]:
    """Yield ``n`` scenes (seeds 0..n-1, never used by the demo models' training data) for ``loaded`` (a
    :class:`~vidplan_core.runtime.loader.LoadedBackend`); the simulator is closed when the iteration ends."""
    from tqdm import tqdm

    from vidplan_sim.env import SimEnv
    from vidplan_sim.tasks import sample_task

    env = SimEnv()
    try:
        for sc in tqdm(range(n), desc="scenes", disable=not progress):
            kind = ("touch", "push", "put")[sc % 3]
            task = sample_task(np.random.default_rng([sc, 11]), env.cfg.colour_names, env.cfg.shape_names,
                               kinds=(kind,))
            env.reset(seed=sc, clutter=1, task=task.instruction)
            frames = loaded.views.prepare(env.render()).transpose(0, 3, 1, 2)
            yield HomeScene(sc, kind, task.instruction, np.repeat(frames[None], loaded.num_history, 0),
                            np.repeat(env.ee_action()[None], loaded.num_history, 0), env.joint_positions())
    finally:
        env.close()
