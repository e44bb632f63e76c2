"""Recorder throughput: three 180×320 rgb8 cameras at 15 Hz + /joint_states at 100 Hz into recorder_node.

A real publisher process (this script with ``--publisher``) publishes for ``--duration`` seconds; a real
``recorder_node`` process records (mcap, default QoS matching: cameras best-effort sensor QoS like a camera
driver, joint states reliable like joint_state_broadcaster). Then the recorder gets SIGTERM and we compare
published vs received vs in-bag counts per topic (goal: zero drops), the recorder's CPU use (of one core, from
/proc over the publishing window) and the bag size.

    python bench/recorder_throughput.py [--duration 60]

Writes bench/results/recorder_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CAMERAS = [f"/cameras/{v}/image_raw" for v in ("left", "right", "wrist")]
STATE = "/joint_states"
H, W = 180, 320
CAM_HZ, STATE_HZ = 15.0, 100.0


# ---------------------------------------------------------------------------------------------------- publisher
def run_publisher(duration: float, out: Path) -> int:
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    rclpy.init()
    node = rclpy.create_node("bench_publisher")
    cams = {t: node.create_publisher(Image, t, qos_profile_sensor_data) for t in CAMERAS}
    state_pub = node.create_publisher(JointState, STATE, QoSProfile(depth=100))
    end = time.monotonic() + 30
    while any(p.get_subscription_count() < 1 for p in [*cams.values(), state_pub]):
        if time.monotonic() > end:
            print("no recorder subscription within 30 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)
    foreign = {t: node.count_publishers(t) - 1 for t in [*cams, STATE] if node.count_publishers(t) > 1}
    if foreign:
        print(f"other publishers on this ROS domain would spoil the counts: {foreign}; use another --domain-id",
              file=sys.stderr)
        return 3
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, H * W * 3, dtype=np.uint8).tobytes() for _ in range(4)]
    images = []
    for i, topic in enumerate(CAMERAS):
        img = Image(height=H, width=W, encoding="rgb8", step=W * 3)
        img.header.frame_id = topic.split("/")[2] + "_optical_frame"
        img.data = frames[i]
        images.append((topic, img))
    js = JointState(name=[f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"])
    counts = {t: 0 for t in [*CAMERAS, STATE]}
    late_ms: list[float] = []
    t0 = time.monotonic()
    next_cam, next_state = t0, t0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        if now >= next_cam:
            late_ms.append((now - next_cam) * 1e3)
            stamp = node.get_clock().now().to_msg()
            for k, (topic, img) in enumerate(images):
                img.header.stamp = stamp
                img.data = frames[(counts[topic] + k) % len(frames)]
                cams[topic].publish(img)
                counts[topic] += 1
            next_cam += 1.0 / CAM_HZ
        if now >= next_state:
            js.header.stamp = node.get_clock().now().to_msg()
            q = 0.1 * np.sin(np.arange(8) + now)
            js.position, js.velocity, js.effort = q.tolist(), (0.1 * q).tolist(), [0.0] * 8
            state_pub.publish(js)
            counts[STATE] += 1
            next_state += 1.0 / STATE_HZ
        time.sleep(max(0.0, min(next_cam, next_state) - time.monotonic()))
    elapsed = time.monotonic() - t0
    state_pub.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    time.sleep(1.0)  # let the best-effort tail arrive
    late = np.asarray(late_ms)
    out.write_text(json.dumps({"published": counts, "elapsed_s": elapsed,
                               "camera_tick_late_ms_p95": float(np.percentile(late, 95)) if late.size else 0.0}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ---------------------------------------------------------------------------------------------------- helpers
def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (s), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _recorder_exe() -> str:
    from ament_index_python.packages import get_package_prefix

    return str(Path(get_package_prefix("vidplan_ros")) / "lib" / "vidplan_ros" / "recorder_node")


# ---------------------------------------------------------------------------------------------------- benchmark
def run_bench(duration: float, storage: str, domain_id: int) -> dict:
    from vidplan_core.data.bags import BagReader

    tmp = Path(tempfile.mkdtemp(prefix="recorder_bench_"))
    # Own domain: the shared shell default (42) may carry someone's simulation on the same topic names.
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id)}
    topics = "[" + ", ".join(f"'{t}:sensor_msgs/msg/Image'" for t in CAMERAS) + f", '{STATE}']"
    rec_cmd = [_recorder_exe(), "--ros-args", "-p", f"topics:={topics}", "-p", f"output_dir:={tmp}",
               "-p", "bag_name:=bench", "-p", f"storage:={storage}", "-p", f"stats_path:={tmp}/stats.json",
               "-p", "stats_interval_s:=5.0", "-p", "discovery_timeout_s:=20.0"]
    pub_cmd = [sys.executable, __file__, "--publisher", "--duration", str(duration), "--out", str(tmp / "pub.json")]
    rec_log, pub_log = open(tmp / "rec.log", "wb"), open(tmp / "pub.log", "wb")  # closed in the finally below
    rec = subprocess.Popen(rec_cmd, stdout=rec_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        time.sleep(1.0)
        pub = subprocess.Popen(pub_cmd, stdout=pub_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        # CPU of the recorder over the publishing window (after both are up)
        while pub.poll() is None and "subscribed /joint_states" not in (tmp / "rec.log").read_text():
            time.sleep(0.1)
        time.sleep(1.5)  # publisher start-up sleep (0.5 s) + margin
        cpu0, w0, rss_peak, load0 = _cpu_seconds(rec.pid), time.monotonic(), 0.0, os.getloadavg()[0]
        while pub.poll() is None:
            rss_peak = max(rss_peak, _rss_mb(rec.pid))
            time.sleep(0.5)
        cpu1, w1 = _cpu_seconds(rec.pid), time.monotonic()
        if pub.returncode != 0:
            raise RuntimeError(f"publisher failed: {(tmp / 'pub.log').read_text()[-2000:]}")
        published = json.loads((tmp / "pub.json").read_text())
        total = sum(published["published"].values())
        end = time.monotonic() + 10
        while time.monotonic() < end:  # until the recorder's periodic count stops growing / reaches the total
            counts = re.findall(r"received (\d+),", (tmp / "rec.log").read_text())
            if counts and int(counts[-1]) >= total:
                break
            time.sleep(0.5)
        rec.send_signal(signal.SIGTERM)
        rec_code = rec.wait(60)
    finally:
        if rec.poll() is None:
            rec.kill()
        rec_log.close()
        pub_log.close()
    stats = json.loads((tmp / "stats.json").read_text())
    with BagReader(tmp / "bench") as reader:
        in_bag = {t: info.message_count for t, info in reader.topics.items()}
        n_read = sum(1 for _ in reader.messages())
    bag_bytes = _dir_bytes(tmp / "bench")
    per_topic = {}
    for t in [*CAMERAS, STATE]:
        p, r = published["published"][t], stats["received"].get(t, 0)
        per_topic[t] = {"published": p, "received": r, "written": stats["written"].get(t, 0),
                        "in_bag": in_bag.get(t, 0), "lost_in_transport": p - r,
                        "dropped_by_recorder": stats["dropped"].get(t, 0)}
    zero_drops = all(v["published"] == v["received"] == v["in_bag"] for v in per_topic.values())
    result = {
        "benchmark": "recorder_throughput",
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_at_start": round(load0, 2), "rmw": os.environ.get("RMW_IMPLEMENTATION", "")},
        "config": {"cameras": len(CAMERAS), "image": f"{H}x{W} rgb8", "camera_hz": CAM_HZ, "state_hz": STATE_HZ,
                   "duration_s": duration, "storage": storage, "ros_domain_id": domain_id,
                   "qos": "cameras best-effort (sensor data), joint_states reliable; recorder matches publishers"},
        "publisher_elapsed_s": round(published["elapsed_s"], 2),
        "publisher_camera_tick_late_ms_p95": round(published["camera_tick_late_ms_p95"], 2),
        "per_topic": per_topic,
        "messages_read_back": n_read,
        "zero_drops": zero_drops,
        "recorder_exit_code": rec_code,
        "recorder_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
        "recorder_peak_rss_mb": round(rss_peak, 1),
        "bag_bytes": bag_bytes,
        "bag_mb_per_s": round(bag_bytes / 2**20 / published["elapsed_s"], 2),
        "payload_mb_per_s": round(stats["bytes_written"] / 2**20 / published["elapsed_s"], 2),
        "write_errors": stats["write_errors"],
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(res: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = {**res, "command": command}
    (RESULTS / "recorder_throughput.json").write_text(json.dumps(res, indent=2) + "\n")
    rows = "\n".join(f"| `{t}` | {v['published']} | {v['received']} | {v['in_bag']} | {v['dropped_by_recorder']} |"
                     for t, v in res["per_topic"].items())
    m = res["machine"]
    md = f"""# recorder_throughput

Three {res['config']['image']} cameras at {res['config']['camera_hz']:g} Hz + JointState at
{res['config']['state_hz']:g} Hz for {res['config']['duration_s']:g} s, real publisher process → real
`recorder_node` process ({res['config']['storage']}), stopped with SIGTERM. {res['config']['qos']}.

- Machine: {m['cpu']}, {m['cores']} cores (shared with other work; load average {m['loadavg_at_start']} at start),
  Python {m['python']}, {m['rmw']}.
- Command: `{command}`

| topic | published | received | in bag | dropped by recorder |
|---|---|---|---|---|
{rows}

- Recorder CPU: **{res['recorder_cpu_percent_of_one_core']} %** of one core; peak RSS {res['recorder_peak_rss_mb']} MB.
- Bag: {res['bag_bytes'] / 2**20:.1f} MiB ({res['bag_mb_per_s']} MiB/s); {res['messages_read_back']} messages read back.
- Goal (zero drops: published = received = in bag for every topic): **{'met' if res['zero_drops'] else 'NOT met'}**.
"""
    (RESULTS / "recorder_throughput.md").write_text(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="publishing time (s)")
    ap.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    ap.add_argument("--domain-id", type=int, default=1 + (os.getpid() * 7919 + 17) % 100,
                    help="ROS_DOMAIN_ID for the benchmark's processes (default: derived from the PID)")
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publisher:
        return run_publisher(args.duration, args.out)
    res = run_bench(args.duration, args.storage, args.domain_id)
    write_results(res, " ".join(["python bench/recorder_throughput.py", *sys.argv[1:]]))
    print(json.dumps(res, indent=2))
    return 0 if res["zero_drops"] else 1


if __name__ == "__main__":
    sys.exit(main())
