"""Shared pytest set-up: an isolated ROS 2 domain per test run, loopback-only discovery, offline model hubs,
and markers derived from the test folder (tests/unit → unit, tests/integration → integration, tests/e2e → e2e).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _pick_domain_id() -> int:
    # Distinct per run (pid-based) unless the caller fixed one; 1..100 keeps Fast DDS ports in range.
    if os.environ.get("VIDPLAN_TEST_DOMAIN_ID"):
        return int(os.environ["VIDPLAN_TEST_DOMAIN_ID"])
    return 1 + (os.getpid() * 7919) % 100


# Set before anything imports rclpy, and inherited by every process a test starts.
os.environ["ROS_DOMAIN_ID"] = str(_pick_domain_id())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_report_header(config: pytest.Config) -> str:
    return f"vidplan: ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} (loopback discovery), repo {REPO}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Repository root."""
    return REPO
