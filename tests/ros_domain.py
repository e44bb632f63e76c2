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

__all__ = ["pick_free_domain"]

# The probe joins each candidate domain at once (one rclpy context per domain), waits for discovery and lists the
# nodes it sees besides its own.
_PROBE = r"""
import json, sys, time
import rclpy
from rclpy.context import Context
domains, settle = json.loads(sys.argv[1]), float(sys.argv[2])
nodes = {}
for d in domains:
    ctx = Context()
    rclpy.init(context=ctx, domain_id=d)
    nodes[d] = (ctx, rclpy.create_node(f"vidplan_domain_probe_{d}", context=ctx))
time.sleep(settle)
seen = {d: [n for n, _ns in node.get_node_names_and_namespaces() if not n.startswith("vidplan_domain_probe")]
        for d, (_ctx, node) in nodes.items()}
for ctx, node in nodes.values():
    node.destroy_node()
    rclpy.shutdown(context=ctx)
print(json.dumps(seen))
"""


def pick_free_domain(low: int = 1, high: int = 100, tries: int = 6, settle_s: float = 2.0,
                     avoid: tuple[int, ...] = (42,)) -> tuple[int, dict[int, list[str]]]:
    """A domain id in [low, high] with no ROS nodes on it (loopback discovery), and what the probe saw.

    ``avoid``: ids never used (42 is scripts/env.sh's default, i.e. a developer's interactive shell). Draws ``tries``
    random candidates and probes them together in one subprocess (≈ ``settle_s`` + 1 s). Falls back to the first
    candidate when every one is busy or the probe fails (the caller reports what was seen).
    """
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    pool = [d for d in range(low, high + 1) if d not in avoid]
    candidates = rng.sample(pool, min(tries, len(pool)))
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.pop("ROS_DOMAIN_ID", None)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(candidates), str(settle_s)], env=env,
                             capture_output=True, text=True, timeout=60 + 5 * settle_s)
        seen = {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return candidates[0], {}
    for d in candidates:
        if not seen.get(d):
            return d, seen
    return candidates[0], seen
