"""Shared pytest set-up: an isolated ROS 2 domain per test run, loopback-only discovery, offline model hubs,
and markers derived from the test folder. Tests mirror the packages: ``tests/<package>/<layer>/test_*.py``, where
<layer> (unit, integration, e2e) is the marker (``tests/project/`` holds the whole-tree checks: lint, architecture).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from vidplan_bringup.dds_shm import fastdds_files, remove_zombie_segments  # noqa: E402

_RESERVATION = None  # ros_domain.DomainReservation of this run (released in pytest_unconfigure)


def _pick_domain_id() -> tuple[int, str]:
    # A fixed id when the caller asks for one; else a random id with no ROS nodes on it (see ros_domain.py: two runs on
    # one host sharing a domain break each other's timing tests). Probed before anything here imports rclpy.
    if os.environ.get("VIDPLAN_TEST_DOMAIN_ID"):
        return int(os.environ["VIDPLAN_TEST_DOMAIN_ID"]), "fixed by VIDPLAN_TEST_DOMAIN_ID"
    from ros_domain import pick_free_domain, worker_domain_range

    global _RESERVATION
    # pytest-xdist (make test runs 2 workers): each worker is its own run with its own domain, from its own id range
    low, high = worker_domain_range()
    _RESERVATION = pick_free_domain(low=low, high=high)
    domain, seen = _RESERVATION.domain, _RESERVATION.seen
    busy = {d: n for d, n in seen.items() if n}
    note = ("probed free, held by a sentinel node" if seen and domain not in busy
            else "not probed (probe failed)" if not seen else "ALL BUSY")
    if busy:
        note += f"; skipped busy domains {busy}"
    return domain, note


# DDS on loopback, sockets included: the Fast DDS profile that scripts/env.sh exports binds every socket to 127.0.0.1
# (discovery by unicast to 127.0.0.1). SYSTEM_DEFAULT, because with LOCALHOST rmw_fastrtps adds a UDP transport of its
# own that binds to every interface. Forced (a developer's own profile may open the network); set before the domain
# probe and before anything imports rclpy. tests/vidplan_bringup/integration/test_dds_loopback.py checks the sockets.
DDS_PROFILE = REPO / "ros_ws" / "src" / "vidplan_bringup" / "config" / "fastdds_loopback.xml"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"

# Set before anything imports rclpy, and inherited by every process a test starts. VIDPLAN_TEST_RUN marks the
# processes of this run, so the session can find any it left behind (see _no_leftover_processes).
_DOMAIN, _DOMAIN_NOTE = _pick_domain_id()
os.environ["ROS_DOMAIN_ID"] = str(_DOMAIN)
os.environ["VIDPLAN_TEST_RUN"] = str(os.getpid())
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RESERVATION is not None:
        _RESERVATION.release()


_SHM_AT_START = fastdds_files()  # Fast DDS's /dev/shm files before this run (see pytest_terminal_summary)


def pytest_terminal_summary(terminalreporter) -> None:
    # Once every test has ended (the main process; pytest-xdist workers have no summary): the shared-memory segments
    # that this run's SIGKILLed node processes left in /dev/shm (memory, 8 MiB each) are removed; only files that
    # appeared during the run and whose owner is dead (vidplan_bringup.dds_shm).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    n, freed = remove_zombie_segments(fastdds_files() - _SHM_AT_START)
    if n:
        terminalreporter.write_line(f"vidplan: removed {n} Fast DDS shared-memory segments of killed node processes "
                                    f"({freed / 2**20:.0f} MiB of /dev/shm)")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"vidplan: ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} ({_DOMAIN_NOTE}; DDS on loopback: "
            f"{DDS_PROFILE.name}), repo {REPO}")


# The longest test files (CI's --durations, 2 cores), handed out first when pytest-xdist splits the run by file
# (make test: -n 2 --dist loadfile): a long file that starts last would run alone at the end.
LONGEST_FIRST = (
    "vidplan_core/unit/test_runtime_onnx.py",
    "vidplan_core/unit/test_action_maps.py",
    "vidplan_app/e2e/test_pipeline.py",
    "vidplan_core/unit/test_grounded_runtime.py",
    "vidplan_ros/integration/test_planner_node.py",
    "vidplan_app/e2e/test_eval_bag_cli.py",
    "vidplan_ros/integration/fault_injection/test_fuzz_live.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts  # (<package>, <layer>, ...)
        layer = next((p for p in parts[:-1] if p in ("unit", "integration", "e2e")), None)
        if layer:
            item.add_marker(getattr(pytest.mark, layer))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {f: i for i, f in enumerate(LONGEST_FIRST)}
        # stable: every other file keeps its place, and so does the order of tests within a file
        items.sort(key=lambda it: rank.get(Path(str(it.fspath)).relative_to(REPO / "tests").as_posix(), len(rank)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Repository root."""
    return REPO


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (restored after): tiny models run ~10x faster on one thread than
    on two contended ones, and the CI machine runs two test workers on 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model directory of randomly initialised tiny planner models (random_planner_models("tiny", seed=0), H = 3):
    a planner node loads it in seconds and plans in milliseconds. One per test module."""
    import torch

    from vidplan_core.runtime.bundle import random_planner_models

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = tmp_path_factory.mktemp("tiny_model") / "model"
        random_planner_models("tiny", seed=0).save(d)
    finally:
        torch.set_num_threads(n)
    return d


def _processes_of_this_run() -> dict[int, str]:
    """PID → command line of live processes (other than pytest itself) that carry this run's VIDPLAN_TEST_RUN."""
    marker = f"VIDPLAN_TEST_RUN={os.getpid()}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie waiting for its parent: already dead
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_processes():
    """After each test module: no process this run started may still be alive (a leftover sim or replay node keeps
    publishing /clock and /joint_states into the next module's tests). Leftovers are killed — they carry this run's
    marker, so they are ours — and reported as an error of the module that left them."""
    yield
    if not sys.platform.startswith("linux"):
        return
    import signal
    import time

    left = _processes_of_this_run()
    deadline = time.monotonic() + 3.0
    while left and time.monotonic() < deadline:  # processes stopping right now get a moment
        time.sleep(0.2)
        left = _processes_of_this_run()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if left:
        pytest.fail("processes left running by this module (killed now): "
                    + "; ".join(f"{pid}: {cmd[:200]}" for pid, cmd in left.items()), pytrace=False)
