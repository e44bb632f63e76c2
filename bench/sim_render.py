"""Simulation speed: render rate of the three 180×320 cameras and physics real-time factor, with the arm moving.

Part 1 (in-process ``SimEnv``, clutter 3): the scripted expert's pick-and-place runs in a loop; per 15 Hz control
step we time the physics (1/15 s of MuJoCo steps + IK) and the triplet render separately, and derive the
lock-step loop rate (one control step of physics + one triplet). The same triplet is also rendered with MuJoCo's
default quality settings (shadows, reflections, 4× MSAA) for comparison.

Part 2 (real ``sim_node`` process): lock-step with ``real_time_factor:=0`` (as fast as it can) while a
JointTrajectory swings the arm, and real-time mode (``lockstep:=false``, rtf 1); a subscriber in this process
counts triplets per wall second and sim seconds (/clock) per wall second.

    python bench/sim_render.py [--steps 300] [--node-seconds 10]

Writes bench/results/sim_render.json and .md. Goal: ≥ 15 Hz triplets with the arm moving.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x), q))


def bench_inprocess(steps: int) -> dict:
    from vidplan_sim.env import SimEnv
    from vidplan_sim.expert import SceneObservation, ScriptedExpert
    from vidplan_sim.scene import load_scene_config

    env = SimEnv(width=320, height=180, render=True)
    env.reset(seed=0, clutter=3, task=None)
    env.render()  # warm-up (shader compilation, first upload)
    t_phys, t_rend, moved = [], [], []
    actions: list[np.ndarray] = []
    seed = 0
    while len(t_phys) < steps:
        if not actions:
            env.reset(seed=seed, clutter=3, task=None)
            actions = list(ScriptedExpert(env.task).plan(SceneObservation.from_env(env)))
            seed += 1
        a = actions.pop(0)
        p0 = env.ee_pose()[:3, 3]
        t0 = time.perf_counter()
        env.step_ee(a)
        t1 = time.perf_counter()
        frames = env.render()
        t2 = time.perf_counter()
        assert frames.shape == (3, 180, 320, 3)
        t_phys.append(t1 - t0)
        t_rend.append(t2 - t1)
        moved.append(float(np.linalg.norm(env.ee_pose()[:3, 3] - p0)))
    dt = 1.0 / 15.0
    loop = [a + b for a, b in zip(t_phys, t_rend, strict=True)]
    # Physics alone, no IK: joint-space motion for 10 s of sim time.
    from vidplan_sim.scene import HOME_Q
    from vidplan_sim.trajectory import JointTrajectoryTracker

    env.reset(seed=0, clutter=3, task=None)
    goal = HOME_Q + np.array([0.6, 0.3, -0.3, 0.5, 0.3, -0.3, 0.6])
    env.set_trajectory(JointTrajectoryTracker(env.time, HOME_Q, [5.0, 10.0], np.stack([goal, HOME_Q])))
    t0 = time.perf_counter()
    env.step(10.0)
    phys_only = time.perf_counter() - t0
    env.close()
    # Other render settings on the same scene for comparison: the detailed visual meshes (otherwise the same fast
    # settings), and MuJoCo's default quality (visual meshes, shadows, reflections, 4× MSAA).
    cfg = load_scene_config()
    variants = {
        "visual_meshes": {"robot_meshes": "visual"},
        "mujoco_default_quality": {"robot_meshes": "visual", "shadows": True, "reflections": True,
                                   "msaa_samples": 4},
    }
    t_var: dict[str, list[float]] = {}
    for name, upd in variants.items():
        e = SimEnv(cfg.model_copy(update={"render": cfg.render.model_copy(update=upd)}), width=320, height=180)
        e.reset(seed=0, clutter=3)
        e.render()
        t_var[name] = []
        for _ in range(10 if name == "mujoco_default_quality" else 30):
            t0 = time.perf_counter()
            e.render()
            t_var[name].append(time.perf_counter() - t0)
        e.close()
    return {
        "steps": steps,
        "mean_ee_motion_per_step_m": float(np.mean(moved)),
        "render_triplet_ms": {"p50": 1e3 * _pct(t_rend, 50), "p95": 1e3 * _pct(t_rend, 95),
                              "mean": 1e3 * float(np.mean(t_rend))},
        "render_triplet_hz": 1.0 / float(np.mean(t_rend)),
        "physics_ik_step_ms": {"p50": 1e3 * _pct(t_phys, 50), "p95": 1e3 * _pct(t_phys, 95)},
        "physics_ik_real_time_factor": dt / float(np.mean(t_phys)),
        "physics_only_real_time_factor": 10.0 / phys_only,
        "lockstep_loop_hz": 1.0 / float(np.mean(loop)),
        "robot_meshes": cfg.render.robot_meshes,
        "visual_meshes_render_triplet_ms": {"p50": 1e3 * _pct(t_var["visual_meshes"], 50),
                                            "mean": 1e3 * float(np.mean(t_var["visual_meshes"]))},
        "default_quality_render_triplet_ms": {"p50": 1e3 * _pct(t_var["mujoco_default_quality"], 50),
                                              "mean": 1e3 * float(np.mean(t_var["mujoco_default_quality"]))},
    }


def bench_node(seconds: float, lockstep: bool, rtf: float) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    sys.path.insert(0, str(REPO / "tests"))
    from proc_helpers import node_executable, started, wait_for

    from vidplan_sim.scene import HOME_Q

    cmd = [node_executable("vidplan_sim", "sim_node"), "--ros-args", "-r", "__node:=sim", "-p", "clutter:=3",
           "-p", f"lockstep:={'true' if lockstep else 'false'}", "-p", f"real_time_factor:={rtf}"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("sim_bench_probe", context=ctx)
    counts = {v: 0 for v in ("left", "right", "wrist")}
    clock = [0.0]
    diag: dict[str, str] = {}
    for v in counts:
        node.create_subscription(Image, f"/cameras/{v}/image_raw",
                                 lambda m, v=v: counts.__setitem__(v, counts[v] + 1), qos_profile_sensor_data)
    node.create_subscription(Clock, "/clock", lambda m: clock.__setitem__(0, m.clock.sec + m.clock.nanosec * 1e-9),
                             10)
    from diagnostic_msgs.msg import DiagnosticArray

    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.update(
        {kv.key: kv.value for st in m.status if st.name.startswith("vidplan_sim") for kv in st.values}), 10)
    pub = node.create_publisher(JointTrajectory, "/fr3_arm_controller/joint_trajectory", 10)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()
    th = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.02) for _ in iter(stop.is_set, True)],
                          daemon=True)
    th.start()
    log = Path("/tmp") / f"sim_render_bench_{os.getpid()}.log"
    try:
        with started(cmd, log):
            if not wait_for(lambda: min(counts.values()) > 2, 60.0):
                raise RuntimeError(f"sim_node did not publish; see {log}")
            # Swing the arm back and forth (a 4-point trajectory, ~1.5 s per leg in sim time), re-sent each leg.
            goal = HOME_Q + np.array([0.6, 0.3, -0.3, 0.5, 0.3, -0.3, 0.6])
            msg = JointTrajectory(joint_names=[f"panda_joint{i}" for i in range(1, 8)])
            for k, q in enumerate([goal, HOME_Q, goal, HOME_Q] * 10):
                pt = JointTrajectoryPoint(positions=[float(x) for x in q])
                pt.time_from_start.sec, pt.time_from_start.nanosec = divmod(int((k + 1) * 1.5e9), 10**9)
                msg.points.append(pt)
            pub.publish(msg)
            time.sleep(1.0)
            wait_for(lambda: "triplets" in diag, 5.0)
            d0 = dict(diag)
            c0, s0, w0 = dict(counts), clock[0], time.monotonic()
            time.sleep(seconds)
            c1, s1, w1 = dict(counts), clock[0], time.monotonic()
            d1 = dict(diag)
    finally:
        stop.set()
        th.join(timeout=2)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    wall = w1 - w0
    per_view = {v: (c1[v] - c0[v]) / wall for v in counts}
    # The node's own counters (/diagnostics, 1 s period): rendered triplets per wall second, dropped frames.
    node_rate = ((int(d1["triplets"]) - int(d0["triplets"])) / wall) if d0 and d1 else float("nan")
    return {"lockstep": lockstep, "real_time_factor_param": rtf, "seconds": wall,
            "triplets_per_wall_s": node_rate, "received_triplets_per_wall_s": min(per_view.values()),
            "dropped_by_sim": (int(d1["dropped"]) - int(d0["dropped"])) if d0 and d1 else None,
            "per_view_hz_received": per_view,
            "sim_seconds_per_wall_s": (s1 - s0) / wall,
            "triplets_per_sim_s": ((int(d1["triplets"]) - int(d0["triplets"]))
                                   / max(float(d1["sim_time_s"]) - float(d0["sim_time_s"]), 1e-9))
            if d0 and d1 else float("nan")}


def main() -> None:
    # Own DDS domain on loopback: other runs on this machine (tests, `vidplan up`) must not add to the counts.
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("VIDPLAN_BENCH_DOMAIN_ID", str(1 + (os.getpid() * 7919) % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="control steps in the in-process part")
    ap.add_argument("--node-seconds", type=float, default=10.0, help="measurement window per sim_node run [s]")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version(), "load_avg_at_start": load0,
                       "MUJOCO_GL": os.environ.get("MUJOCO_GL", "")},
           "command": "python bench/sim_render.py " + " ".join(sys.argv[1:])}
    res["inprocess"] = bench_inprocess(args.steps)
    res["node_lockstep_unlimited"] = bench_node(args.node_seconds, True, 0.0)
    res["node_realtime"] = bench_node(args.node_seconds, False, 1.0)
    goal = 15.0
    res["goal_hz"] = goal
    res["goal_met"] = bool(res["inprocess"]["lockstep_loop_hz"] >= goal
                           and res["node_lockstep_unlimited"]["triplets_per_wall_s"] >= goal)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sim_render.json").write_text(json.dumps(res, indent=2))
    cpu = subprocess.run(["bash", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()
    ip, nl, nr = res["inprocess"], res["node_lockstep_unlimited"], res["node_realtime"]
    rows = [
        ("triplet render, default scene settings (robot convex-hull meshes), in-process, p50 / p95",
         f"{ip['render_triplet_ms']['p50']:.1f} / {ip['render_triplet_ms']['p95']:.1f} ms "
         f"({ip['render_triplet_hz']:.1f} Hz)"),
        ("triplet render with Menagerie's detailed visual meshes (`render.robot_meshes: visual`) p50",
         f"{ip['visual_meshes_render_triplet_ms']['p50']:.1f} ms"),
        ("triplet render, MuJoCo default quality (visual meshes, shadows, reflections, 4× MSAA) p50",
         f"{ip['default_quality_render_triplet_ms']['p50']:.1f} ms"),
        ("physics + IK per 15 Hz control step p50",
         f"{ip['physics_ik_step_ms']['p50']:.2f} ms (real-time factor {ip['physics_ik_real_time_factor']:.1f})"),
        ("physics only (joint trajectory), real-time factor", f"{ip['physics_only_real_time_factor']:.1f}"),
        ("lock-step loop (1/15 s physics + triplet), in-process", f"**{ip['lockstep_loop_hz']:.1f} Hz**"),
        ("sim_node lock-step, rtf unlimited: triplets per wall second",
         f"**{nl['triplets_per_wall_s']:.1f} Hz** rendered and published ({nl['received_triplets_per_wall_s']:.1f} Hz "
         f"received by a Python subscriber), sim time ×{nl['sim_seconds_per_wall_s']:.2f} real time"),
        ("sim_node real-time mode (rtf 1): triplets per wall second",
         f"{nr['triplets_per_wall_s']:.1f} Hz rendered, {nr['dropped_by_sim']} frames skipped to keep up "
         f"(sim time ×{nr['sim_seconds_per_wall_s']:.2f} real time)"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    verdict = "met" if res["goal_met"] else "not met"
    md = f"""# sim_render

MuJoCo DROID scene (Menagerie Panda, clutter 3: 8 objects + bowl), three 180×320 rgb8 cameras, the scene's
default fast render settings (no shadows, reflections, MSAA; robot drawn with its convex-hull meshes), arm
moving (scripted pick-and-place in-process; a joint trajectory swinging the arm for sim_node).

- Machine: {cpu or res['machine']['cpu']}, {res['machine']['cores']} cores (shared with other work; load average
  {load0:.2f} at start), Python {res['machine']['python']}, MUJOCO_GL={res['machine']['MUJOCO_GL']} (Mesa llvmpipe).
- Command: `{res['command'].strip()}`

| measurement | value |
|---|---|
{table}

Goal (≥ {goal:.0f} Hz triplets with the arm moving, in-process lock-step loop and through sim_node): **{verdict}**.
"""
    (RESULTS / "sim_render.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
