"""Fixtures of the fault-injection tests; the rig itself (processes, observer node) is fault_rig.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_rig import Observer
from ros_domain import pick_free_domain, worker_domain_range


@pytest.fixture(scope="module", autouse=True)
def module_ros_domain() -> Iterator[int]:
    """Each fault-injection module runs on a ROS domain of its own (another free id of this worker's range; the
    run's domain is restored after it). These modules SIGKILL node processes, whose Fast DDS participants leave
    shared-memory segments and ports behind. Twice in CI a later module on the same domain (test_sim_node_realtime)
    then received no wrist image in 60 s while left and right arrived. Other domains use other port numbers."""
    run_domain = os.environ["ROS_DOMAIN_ID"]
    if os.environ.get("VIDPLAN_TEST_DOMAIN_ID"):  # the caller fixed the domain: keep to it
        yield int(run_domain)
        return
    low, high = worker_domain_range()
    reservation = pick_free_domain(low=low, high=high, avoid=(42, int(run_domain)))
    os.environ["ROS_DOMAIN_ID"] = str(reservation.domain)
    try:
        yield reservation.domain
    finally:
        os.environ["ROS_DOMAIN_ID"] = run_domain
        reservation.release()


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
