"""DDS traffic stays on this machine, sockets included.

ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST only limits discovery: Fast DDS still binds its sockets to 0.0.0.0 and to the
machine's addresses. The Fast DDS profile ros_ws/src/vidplan_bringup/config/fastdds_loopback.xml (exported by
scripts/env.sh, set by tests/conftest.py) binds every socket to 127.0.0.1. Checked on real node processes: their
sockets are read from /proc/<pid>/fd (socket inodes) and /proc/<pid>/net/{udp,tcp,udp6,tcp6} (local addresses).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

from proc_helpers import node_executable, started, wait_for

REPO = Path(__file__).resolve().parents[3]
PROFILE = REPO / "ros_ws" / "src" / "vidplan_bringup" / "config" / "fastdds_loopback.xml"
LOOPBACK = {"127.0.0.1", "::1"}


def _ipv4(hex_addr: str) -> str:
    return ".".join(str(int(hex_addr[i:i + 2], 16)) for i in (6, 4, 2, 0))  # little-endian hex in /proc/net


def _ipv6(hex_addr: str) -> str:
    words = [bytes.fromhex(hex_addr[i:i + 8])[::-1].hex() for i in range(0, 32, 8)]
    import ipaddress

    return str(ipaddress.IPv6Address(bytes.fromhex("".join(words))))


def socket_addresses(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local address, port) of every UDP/TCP socket the process holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            f = row.split()
            if f[9] in inodes:
                addr, port = f[1].split(":")
                found.append((proto, _ipv6(addr) if proto.endswith("6") else _ipv4(addr), int(port, 16)))
    return found


def _talking_pair(tmp_path: Path, env: dict[str, str]):
    report = tmp_path / "probe.json"
    pub = [node_executable("vidplan_ros", "scripted_chunk_node"), "--ros-args", "-p", "rate_hz:=10.0",
           "-p", "topic:=/dds_test/plan"]
    probe = [node_executable("vidplan_ros", "latency_probe"), "--ros-args", "-p", "topic:=/dds_test/plan",
             "-p", f"report_path:={report}", "-p", "report_period_s:=0.5"]
    return report, started(pub, tmp_path / "pub.log", env=env), started(probe, tmp_path / "probe.log", env=env)


def test_with_the_profile_node_sockets_bind_to_loopback_only_and_nodes_talk(tmp_path):
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE)  # conftest's set-up, inherited by the nodes
    report, pub_cm, probe_cm = _talking_pair(tmp_path, {})
    with pub_cm as pub, probe_cm as probe:
        # the profile must not cost connectivity: chunks flow from one process to the other
        assert wait_for(lambda: report.is_file() and json.loads(report.read_text())["count"] >= 3, 60), (
            pub.output() + probe.output())
        for proc in (pub, probe):
            addrs = socket_addresses(proc.pid)
            assert addrs, f"no UDP sockets found for pid {proc.pid}: the check would prove nothing"
            outside = [a for a in addrs if a[1] not in LOOPBACK]
            assert not outside, f"{proc.cmd[0]} binds beyond loopback: {outside} (all: {addrs})"
            assert "XMLPARSER" not in proc.output(), proc.output()  # the profile parsed (else: defaults)


def udp_buffers(pid: int) -> dict[int, tuple[int, int]]:
    """Local UDP port → (receive, send) buffer [bytes] of the process's sockets (``ss -uampn``: skmem ``rb`` and
    ``tb``, what the kernel granted: twice the SO_RCVBUF / SO_SNDBUF asked for, capped by net.core.rmem_max /
    wmem_max)."""
    out = subprocess.run(["ss", "-u", "-a", "-m", "-p", "-n"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.splitlines()

    def field(mem: str, key: str) -> int:
        return int(mem.split(f",{key}", 1)[1].split(",", 1)[0])

    found = {}
    for head, mem in itertools.pairwise(out):
        if f"pid={pid}," in head and "skmem:" in mem:
            port = int(head.split()[3].rsplit(":", 1)[1])
            found[port] = (field(mem, "rb"), field(mem, "tb"))
    return found


#: one camera triplet at the demo's 320x180 rgb8, sent back to back: what a receive buffer must hold while the
#: receiving process waits for a core
TRIPLET_BYTES = 3 * 320 * 180 * 3


def test_with_the_profile_node_sockets_can_hold_camera_triplets(tmp_path):
    """A 208 KiB default receive buffer lost the right and wrist images of ~40 % of the triplets in `make demo`
    (bench/results/dds_image_drops.md); the profile's UDP transport asks for 4 MiB. Without the profile the same
    nodes get the kernel default, so the check can fail."""
    granted = {}
    for env in ({}, {"FASTDDS_DEFAULT_PROFILES_FILE": "", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}):
        run_dir = tmp_path / ("without" if env else "with")
        run_dir.mkdir()
        report, pub_cm, probe_cm = _talking_pair(run_dir, env)
        with pub_cm as pub, probe_cm as probe:
            assert wait_for(lambda r=report: r.is_file() and json.loads(r.read_text())["count"] >= 1, 60), (
                pub.output() + probe.output())
            granted[bool(env)] = {"probe": udp_buffers(probe.pid), "pub": udp_buffers(pub.pid)}
    with_profile, without = granted[False], granted[True]
    assert all(with_profile.values()) and all(without.values()), f"no UDP sockets seen by ss: {granted}"
    for node, socks in with_profile.items():
        # receiving sockets got the large receive buffer; the one sending socket (an ephemeral port) the send buffer
        assert sum(rb >= 2 * TRIPLET_BYTES for rb, _ in socks.values()) >= 2, (node, socks)
        assert all(max(rb, tb) >= 2 * TRIPLET_BYTES for rb, tb in socks.values()), (node, socks)
    for node, socks in without.items():  # the kernel default: the control
        assert all(max(rb, tb) < TRIPLET_BYTES for rb, tb in socks.values()), (node, socks)


def test_without_the_profile_localhost_discovery_alone_binds_every_interface(tmp_path):
    # The control: the same nodes with only ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (env.sh before the profile) bind
    # to 0.0.0.0, so the test above can fail.
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": "", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    report, pub_cm, probe_cm = _talking_pair(tmp_path, env)
    with pub_cm as pub, probe_cm:
        assert wait_for(lambda: report.is_file() and json.loads(report.read_text())["count"] >= 1, 60)
        addrs = socket_addresses(pub.pid)
        assert [a for a in addrs if a[1] not in LOOPBACK], addrs


def _env_after_sourcing(pre: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE", "VIDPLAN_DDS_LOOPBACK")}
    out = subprocess.run(["bash", "-c", "set -eu; source scripts/env.sh; "
                          'echo "${FASTDDS_DEFAULT_PROFILES_FILE:-}|${ROS_AUTOMATIC_DISCOVERY_RANGE:-}"'],
                         cwd=REPO, env={**env, **pre}, capture_output=True, text=True, timeout=60, check=True)
    profile, rng = out.stdout.strip().splitlines()[-1].split("|")
    return {"profile": profile, "range": rng}


def test_env_sh_exports_the_profile_keeps_a_users_own_and_can_switch_it_off():
    assert _env_after_sourcing({}) == {"profile": str(PROFILE), "range": "SYSTEM_DEFAULT"}
    # a profile of the user's own is kept, with loopback discovery as before
    assert _env_after_sourcing({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_dds.xml"}) == {
        "profile": "/etc/my_dds.xml", "range": "LOCALHOST"}
    # a robot with cameras on other machines: off, and discovery on the subnet
    assert _env_after_sourcing({"VIDPLAN_DDS_LOOPBACK": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}) == {
        "profile": "", "range": "SUBNET"}
