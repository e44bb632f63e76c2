"""Fixtures of the fault-injection tests; the rig itself (processes, observer node) is fault_rig.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_rig import Observer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Randomly initialised tiny planner models (H = 3): plans in milliseconds, loads fast."""
    from vidplan_core.runtime.bundle import random_planner_models

    d = tmp_path_factory.mktemp("fault_injection_model") / "model"
    random_planner_models("tiny", seed=0).save(d)
    return d


@pytest.fixture(scope="module")
def observer() -> Iterator[Observer]:
    obs = Observer()
    try:
        yield obs
    finally:
        obs.close()
