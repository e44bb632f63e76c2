"""Pick a ROS 2 domain that nobody else on this host is using, for one test run.

Every process a test starts inherits ``ROS_DOMAIN_ID``. Two runs on one host (two CI jobs, a developer's `make demo`
next to `make test`) that land on the same domain see each other's /clock, /joint_states and camera topics, which
breaks timing tests in ways that look like flakiness. So candidates are drawn at random (not from the PID: in fresh
containers PIDs repeat) and each is probed for foreign ROS nodes before it is used.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

__all__ = ["pick_free_domain", "worker_domain_range"]

# The probe joins each candidate domain at once (one rclpy context per domain), waits for discovery, picks the first
# domain with no nodes besides its own, prints it, and then keeps its node on that domain alive until its stdin
# closes (the test session ended or died): a run that probes later sees the domain as taken. Without this
# reservation two runs started minutes apart (the first between its ROS tests) could still pick the same domain.
_PROBE = r"""
import json, os, sys, time
import rclpy
from rclpy.context import Context
domains, settle = json.loads(sys.argv[1]), float(sys.argv[2])
nodes = {}
own = f"vidplan_test_domain_holder_{os.getpid()}_"
for d in domains:
    ctx = Context()
    rclpy.init(context=ctx, domain_id=d, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    nodes[d] = (ctx, rclpy.create_node(f"{own}{d}", context=ctx))
time.sleep(settle)
seen = {d: [n for n, _ns in node.get_node_names_and_namespaces() if not n.startswith(own)]
        for d, (_ctx, node) in nodes.items()}
chosen = next((d for d in domains if not seen[d]), domains[0])
for d, (ctx, node) in nodes.items():
    if d != chosen:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
print(json.dumps({"chosen": chosen, "seen": seen}), flush=True)
sys.stdin.read()  # hold the domain until the parent closes our stdin or exits
"""


def worker_domain_range() -> tuple[int, int]:
    """The domain ids [low, high] this pytest process draws from: pytest-xdist workers get disjoint ranges, so two
    workers probing at the same moment cannot both pick the same free id; a plain run gets 1..100."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if worker.startswith("gw") and count > 1:
        span = 100 // count
        k = int(worker[2:]) % count
        return 1 + k * span, (k + 1) * span
    return 1, 100


class DomainReservation:
    """A domain id picked by :func:`pick_free_domain` and held by a sentinel node until :meth:`release`."""

    def __init__(self, domain: int, seen: dict[int, list[str]], proc: subprocess.Popen | None):
        self.domain, self.seen, self._proc = domain, seen, proc

    def release(self) -> None:
        """Let the sentinel node go (also happens when this process exits: its stdin pipe closes)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()


def pick_free_domain(low: int = 1, high: int = 100, tries: int = 6, settle_s: float = 2.0,
                     avoid: tuple[int, ...] = (42,)) -> DomainReservation:
    """A domain id in [low, high] with no ROS nodes on it (this host), held by a sentinel node.

    ``avoid``: ids never used (42 is scripts/env.sh's default, i.e. a developer's interactive shell). Draws ``tries``
    random candidates and probes them together in one subprocess (≈ ``settle_s`` + 1 s), which then stays alive with
    one node on the chosen domain (see :class:`DomainReservation`). When every candidate is busy, the first one is
    returned (``seen`` says what was found); when the probe fails, the first candidate, unprobed and unreserved.
    """
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    pool = [d for d in range(low, high + 1) if d not in avoid]
    candidates = rng.sample(pool, min(tries, len(pool)))
    # the caller's DDS set-up (conftest: the loopback profile); loopback discovery when it has none
    env = {**os.environ}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.pop("ROS_DOMAIN_ID", None)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _PROBE, json.dumps(candidates), str(settle_s)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        line = proc.stdout.readline()  # blocks until the probe has decided (or died: "")
        out = json.loads(line)
        return DomainReservation(int(out["chosen"]), {int(k): v for k, v in out["seen"].items()}, proc)
    except (OSError, ValueError, KeyError):
        return DomainReservation(candidates[0], {}, None)
