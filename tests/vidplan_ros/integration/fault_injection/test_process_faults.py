"""Process faults around a moving arm (issue 13): each fault is injected into real node processes — MuJoCo sim_node,
executor_node, planner_node, recorder_node over DDS — and the SAFE outcome is asserted.

* kill -9 of the recorder mid-recording: a recording with the default settings (one bag, flushed every second) and
  one split into 1 s bags both read back (BagReader recovery) at least every message the recorder reported flushed
  before the kill, in order, every bag closed before the kill whole;
* kill -9 of the planner while the executor executes its chunk: the executor stays alive, finishes that chunk and
  commands nothing beyond it; the arm comes to rest at the chunk's end;
* a second sim on the same ROS domain: the executor reports two /joint_states publishers (ERROR) and refuses chunks;
* an e-stop in the middle of a flood of thousands of PlanChunks: the arm stands still from 1 s (sim time) after the
  e-stop on (the measured stop time and latencies are printed), and no chunk is commanded after the hold;
* kill -9 of the sim mid-run: executor and planner stay alive, the executor reports ERROR (no fresh joint states)
  and nothing new moves once its joint states are older than joint_state_timeout_s.

Where today's behaviour is not the safe one, a test states the safe behaviour and is marked ``xfail(strict=True)``
with what the node should do. Each scenario runs once (a module-scoped fixture returning a record of what was
observed) and its tests assert on that record; every xfail test has a plain sibling on the same record, so a broken
scenario shows as an error there. The scenarios share one sim + executor and two planners that load while the first
scenarios run and start planning when given an instruction (the sim-kill scenario, which ends the sim, runs last).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fault_rig import (
    EXECUTOR,
    EXECUTOR_PARAMS,
    JOINTS,
    PLANNER,
    PLANNER_PARAMS,
    Observer,
    Stack,
    executor_cmd,
    joint_span,
    kv,
    level,
    planner_cmd,
    ros_cmd,
    sim_cmd,
    wait_executor_ready,
)
from proc_helpers import started, wait_for
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vidplan_core.data.bags import BagReader, find_bags
from vidplan_core.kinematics import PandaKinematics
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_ros.conversions import sec_to_stamp

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
R = ExecuteChunk.Result
KIN = PandaKinematics()
JS_TIMEOUT = float(EXECUTOR_PARAMS["joint_state_timeout_s"])
CLOCK_TIMEOUT = float(PLANNER_PARAMS["clock_timeout_s"])
INSTRUCTION = "put the red cube in the bowl"
STOP_BOUND_S = 1.0  # the e-stop must have stopped the arm this long (sim time) after it was published
# ... and been latched this long (wall time) after it was published: the executor's estop subscriptions are on a
# participant of their own (EstopListener); sharing the chunks' participant, a loaded CI machine latched after 3.4 s
LATCH_BOUND_S = 1.0
HOLD_AGE_BOUND_S = 1.0  # the e-stop's hold is a position the arm was at at most this long before it (sim time)
SERVO_OVERSHOOT_M = 0.003  # how far past a hold the sim's joint servo may carry the TCP while settling
INSTRUCTION_TOPICS = {"planner_a": "/fault_injection/instruction_a", "planner_b": "/fault_injection/instruction_b"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, observer, tiny_model_dir) -> Stack:
    """sim_node + executor_node (sim time), running and idle, and two idle planner_nodes ("planner_a",
    "planner_b", each on its own instruction topic: INSTRUCTION_TOPICS) that load their models while the first
    scenarios run."""
    s = Stack(tmp_path_factory.mktemp("fault_injection"))
    try:
        s.start("sim", sim_cmd())
        # A plan cycle of even the tiny model takes seconds on 2 loaded cores (≈ 3-5 s measured, mostly the
        # rollout): with the default 1 s bound every plan would be rejected as stale. Staleness has its own tests;
        # here the planner's chunks must reach the arm.
        s.start("executor", executor_cmd(max_plan_age_s=30.0))
        for name, topic in INSTRUCTION_TOPICS.items():
            s.start(name, planner_cmd(tiny_model_dir, instruction_topic=topic))
        wait_executor_ready(observer, s)
        yield s
    finally:
        s.stop_all()


def _executing_planner_chunks(obs: Observer, stack: Stack, name: str, timeout: float = 120.0) -> None:
    """Give planner ``name`` its instruction; wait until the executor has turned at least two of its chunks into
    trajectories, then until the next one arrives: on return the executor is executing a fresh chunk."""
    assert stack.alive(name), stack.output(name)
    since = time.monotonic()
    obs.set_instruction(INSTRUCTION_TOPICS[name], INSTRUCTION)
    assert wait_for(lambda: len(obs.trajectories(since, min_points=2)) >= 2, timeout), (
        [(d.status, d.reason) for _t, d in obs.plan_diags[-5:]], obs.status(EXECUTOR), stack.output(name),
        stack.output("executor"))
    n = len(obs.trajs)
    assert wait_for(lambda: len(obs.trajs) > n, 10), stack.output(name)


# ------------------------------------------------------------------------------------------- recorder: kill -9


@pytest.fixture(scope="module")
def recorder_killed(stack, observer, tmp_path_factory) -> dict:
    """Two recorders of the sim's /joint_states, /clock and wrist camera — one split into 1 s bags, one with the
    defaults (one bag) — both killed with SIGKILL after ~5 s of recording."""
    out = tmp_path_factory.mktemp("recordings")
    topics = "['/joint_states:sensor_msgs/msg/JointState', '/clock:rosgraph_msgs/msg/Clock', " \
             "'/cameras/wrist/image_raw:sensor_msgs/msg/Image']"
    common = {"topics": topics, "output_dir": str(out), "stats_interval_s": 0.5, "discovery_timeout_s": 5.0}
    rec = {"split": stack.start("rec_split", ros_cmd("vidplan_ros", "recorder_node",
                                                       {**common, "bag_name": "split", "split_duration_s": 1.0},
                                                       {"__node": "recorder_split"})),
           "default": stack.start("rec_default", ros_cmd("vidplan_ros", "recorder_node",
                                                           {**common, "bag_name": "default"},
                                                           {"__node": "recorder_default"}))}

    def received(p) -> int:
        counts = re.findall(r"received (\d+),", p.output())
        return int(counts[-1]) if counts else 0

    assert wait_for(lambda: all(received(p) > 300 for p in rec.values()), 60), stack.outputs()
    time.sleep(4.0)
    # the recorders' own progress lines (every 0.5 s) up to here: what each had handed to the OS before the kill
    flushed = {k: [int(n) for n in re.findall(r"flushed (\d+),", p.output())] for k, p in rec.items()}
    t_kill_ns = time.time_ns()
    stack.kill9("rec_split")
    stack.kill9("rec_default")
    return {"t_kill_ns": t_kill_ns, "paths": {k: out / k for k in rec}, "flushed": flushed,
            "received": {k: received(p) for k, p in rec.items()},
            "logs": {k: p.output()[-2000:] for k, p in rec.items()}}


def _read_recording(path: Path) -> tuple[list, int, list[str]]:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    with BagReader(path, recover=True) as reader:  # a recording that salvaged nothing has no topics at all
        msgs = list(reader.messages())
        warnings = list(reader.warnings)
    decoded = [(m.timestamp_ns, deserialize_message(m.data, JointState)) for m in msgs if m.topic == "/joint_states"]
    return decoded, len(msgs), warnings


def _check_recording(rec: dict, which: str) -> None:
    path = rec["paths"][which]
    decoded, n_read, warnings = _read_recording(path)
    assert decoded, f"nothing of the {which} recording reads back ({warnings}); recorder log:\n{rec['logs'][which]}"
    last_ns = decoded[-1][0]
    lost_s = (rec["t_kill_ns"] - last_ns) * 1e-9
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _t, m in decoded])
    gaps = np.diff(stamps)
    flushed = rec["flushed"][which]
    print(f"{which}: {n_read} messages ({len(decoded)} joint states) read back ({warnings}); the recorder reported "
          f"{flushed} flushed; last joint state received {lost_s:.2f} s before the kill; largest gap "
          f"{gaps.max(initial=0):.3f} s (sim time)")
    # What the recorder handed to the OS survives its kill -9: everything its last progress line before the kill
    # counted as flushed reads back. Not asserted: a wall-clock bound on the loss. BagWriter flushes once the oldest
    # unflushed message is flush_period_s (1 s) old, but a writer thread starved of the CPU (2 loaded cores, two
    # planners loading torch) falls behind what it received: CI once lost 2.4 s that way, all of it unwritten or
    # unflushed, none of it flushed and then lost.
    assert flushed and flushed[-1] > 0, f"the {which} recorder reported nothing flushed: {rec['logs'][which]}"
    assert len(set(flushed) - {0}) >= 2, f"the {which} recorder flushed once or never while recording: {flushed}"
    assert n_read >= flushed[-1], (f"{which}: {n_read} messages read back, but the recorder had flushed "
                                   f"{flushed[-1]} before the kill ({warnings})")
    # What was written reads back whole and in order. Not asserted: no gap in the sim stamps. A recorder starved of
    # the CPU for over a second (2 loaded cores, two planners loading torch) misses joint states at the DDS level
    # (the sim's reliable keep-last-100 history moves on): CI once saw a 1.2 s gap in a recording whose bags were
    # all complete. That is delivery, not the recording, and rosbag2 behaves the same.
    assert np.all(gaps >= 0), f"joint states out of order in the {which} recording"
    assert np.all(np.diff([t for t, _m in decoded]) >= 0), f"receive times of the {which} recording go back"
    bags = find_bags(path)
    if which == "split":
        assert len(bags) >= 3, f"a ~5 s recording split every 1 s has {len(bags)} bags"
    # every bag but the one open at the kill was closed by the recorder: it opens without recovery and holds every
    # joint state its metadata counts. Not asserted: joint states in each of them. A split can pass with none (CI
    # once saw split_0 empty: the recorder had subscribed but the loaded sim had not yet reached it), so only the
    # closed bags together must hold some.
    closed_counts = []
    for bag in bags[:-1]:
        with BagReader(bag) as reader:
            meta = reader.topics.get("/joint_states")
            n_meta = meta.message_count if meta is not None else 0
            n_read = sum(1 for m in reader.messages(["/joint_states"])) if meta is not None else 0
        assert n_read == n_meta, f"{bag.name}: metadata counts {n_meta} joint states, {n_read} read"
        closed_counts.append(n_meta)
    if which == "split":  # the default recording is one bag, open at the kill
        assert sum(closed_counts) > 0, f"the closed bags of the split recording hold no joint states: {closed_counts}"
    assert all(len(m.position) >= 7 and m.name[0].startswith("panda_") for _t, m in decoded[-10:])


def test_recorder_killed_split_recording_reads_back_everything_it_flushed(recorder_killed):
    _check_recording(recorder_killed, "split")


def test_recorder_killed_default_recording_reads_back_everything_it_flushed(recorder_killed):
    # recorder_node hands its messages to the OS at least every flush_period_s (default 1 s; BagWriter.flush)
    _check_recording(recorder_killed, "default")


# ------------------------------------------------------------------------------------------- planner: kill -9


@pytest.fixture(scope="module")
def planner_killed(stack, observer) -> dict:
    """The planner drives the executor; SIGKILL to the planner right after the executor started one of its chunks;
    then 6 s of watching."""
    obs = observer
    _executing_planner_chunks(obs, stack, "planner_a")
    last_before = obs.trajectories()[-1][1]
    t_kill = stack.kill9("planner_a")
    # the chunk in flight ends within its horizon (3 steps × 0.2 s of sim time) and the executor goes idle
    idle = wait_for(lambda: (s := obs.status(EXECUTOR, t_kill + 0.3)) is not None and kv(s)["state"] == "idle", 20)
    time.sleep(4.0)
    t_end = time.monotonic()
    return {"t_kill": t_kill, "t_end": t_end, "idle": idle, "last_before": last_before,
            "trajs_after": obs.trajectories(t_kill), "executor_alive": stack.alive("executor"),
            "statuses": obs.statuses(EXECUTOR, t_kill, t_end), "q_end": obs.joints_between(t_end - 2.0, t_end),
            "logs": stack.output("executor")}


def test_planner_killed_executor_finishes_its_chunk_and_commands_nothing_more(planner_killed):
    r = planner_killed
    assert r["executor_alive"], r["logs"]
    assert r["idle"], [(s.message, kv(s).get("state")) for s in r["statuses"]]
    after = r["trajs_after"]
    # at most one chunk that was already on its way when the planner died; nothing later than that
    assert len(after) <= 1 and all(t <= r["t_kill"] + 1.0 for t, _m in after), [(t - r["t_kill"], len(m.points))
                                                                              for t, m in after]
    last = after[-1][1] if after else r["last_before"]
    # the arm came to rest at the end of the last commanded chunk and stays there
    q_end = r["q_end"]
    assert len(q_end) > 20, "no joint states from the sim in the last 2 s"
    span = joint_span(q_end)
    err = float(np.max(np.abs(q_end[-1] - np.array(last.points[-1].positions))))
    print(f"after the planner's kill: {len(after)} trajectory(ies) in flight; the arm rests {err:.4f} rad from the "
          f"last chunk's end (moved {span:.5f} rad in the last 2 s)")
    assert span < 2e-3 and err < 0.02, (span, err)
    assert all(level(s) <= 1 for s in r["statuses"]), [(level(s), s.message) for s in r["statuses"]]


def test_planner_killed_executor_diagnostics_report_the_missing_plans(planner_killed):
    # the age of the last chunk (last_chunk_age_s) and a WARN once it exceeds plan_timeout_s tell a dead planner from
    # an idle executor
    r = planner_killed
    assert r["statuses"], "no executor diagnostics after the kill"
    st = r["statuses"][-1]  # ≥ 6 s after the last chunk arrived
    values = kv(st)
    ages = [float(v) for k, v in values.items() if re.search(r"(chunk|plan).*age", k) and re.fullmatch(
        r"[-+0-9.eE]+|inf|nan", v)]
    reported = any(a >= 3.0 for a in ages) or re.search(r"(no|stale|missing).*(plan|chunk)", st.message, re.I)
    assert reported, (level(st), st.message, values)
    assert level(st) == 1 and "no plan for" in st.message, (level(st), st.message)


# ------------------------------------------------------------------------------------------- a second sim


def _small_chunk(obs: Observer, dz: float = 0.02) -> PlanChunk:
    """A 3-step chunk moving the EE (as the sim reports it) dz up, stamped with the sim time seen here."""
    from geometry_msgs.msg import Pose

    v = obs.ee[-1][1]
    msg = PlanChunk()
    msg.header.stamp, msg.header.frame_id = sec_to_stamp(obs.sim_time), "panda_link0"
    msg.dt = 0.3
    poses = []
    for k in range(3):
        p = Pose()
        p.position.x, p.position.y, p.position.z = float(v[0]), float(v[1]), float(v[2] + dz * (k + 1) / 3)
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(x) for x in v[3:])
        poses.append(p)
    msg.poses, msg.gripper = poses, [0.0] * 3
    return msg


@pytest.fixture(scope="module")
def second_sim(stack, observer) -> dict:
    """A second sim_node (another scene) joins the domain; the executor's diagnostics and its answer to a chunk
    sent meanwhile are recorded; then the second sim is stopped."""
    obs = observer
    t0 = time.monotonic()
    stack.start("sim2", sim_cmd(scene_seed=3))  # same node name and topics: a second copy of the same launch
    try:
        seen = wait_for(lambda: (s := obs.status(EXECUTOR, t0)) is not None
                        and kv(s).get("joint_state_publishers") == "2", 60)
        t_two = time.monotonic()
        goal = ExecuteChunk.Goal(chunk=_small_chunk(obs))
        fut = obs.action.send_goal_async(goal)
        assert wait_for(fut.done, 10)
        handle = fut.result()
        res_fut = handle.get_result_async() if handle.accepted else None
        assert res_fut is None or wait_for(res_fut.done, 20), "no ExecuteChunk result"
        result = res_fut.result().result if res_fut is not None else None
        time.sleep(1.0)
        return {"seen_two": seen, "status": obs.status(EXECUTOR, t_two), "result": result,
                "trajs": obs.trajectories(t_two, min_points=2), "logs": stack.output("executor")}
    finally:
        stack.stop("sim2")
        t_stop = time.monotonic()
        assert wait_for(lambda: (s := obs.status(EXECUTOR, t_stop)) is not None
                        and kv(s).get("joint_state_publishers") == "1", 30), obs.status(EXECUTOR)


def test_second_sim_on_the_domain_is_reported(second_sim):
    st = second_sim["status"]
    assert second_sim["seen_two"], (st.message if st else None)
    assert level(st) >= 1 and "2 publishers on /joint_states" in st.message, (level(st), st.message)


def test_second_sim_on_the_domain_chunks_are_refused(second_sim):
    # joint states interleaved from two arms: plan from them, hold at them or track them and the arm goes anywhere
    res = second_sim["result"]
    assert res is not None and res.status == R.STATUS_REJECTED, (res.status, res.reason) if res else None
    assert re.search(r"publisher", res.reason) and "/joint_states" in res.reason, res.reason
    assert second_sim["trajs"] == []
    assert level(second_sim["status"]) == 2, second_sim["status"].message


# ------------------------------------------------------------------------------------------- e-stop under a flood


@pytest.fixture(scope="module")
def estop_flood(stack, observer, tmp_path_factory) -> dict:
    """3000 valid PlanChunks as fast as one process publishes them, each continuing the arm's motion 20 cm along −y;
    the e-stop after the first 1500 (flood_chunks.py)."""
    obs = observer
    out = tmp_path_factory.mktemp("flood") / "flood.json"
    t0 = time.monotonic()
    cmd = [sys.executable, str(HERE / "flood_chunks.py"), "--count", "3000", "--estop-after", "1500", "--out",
           str(out)]
    with started(cmd, stack.logs / "flood.log") as flood:
        assert flood.wait(120) == 0, flood.output()
    sent = json.loads(out.read_text())
    t_estop, t_sim = sent["t_estop"], sent["t_estop_sim"]
    assert wait_for(lambda: obs.sim_time > t_sim + 3.0, 30), "sim time stopped"
    t_end = time.monotonic()
    record = {"sent": sent, "t_estop": t_estop, "t_end": t_end,
              "holds": [(t, m) for t, m in obs.trajectories(t_estop) if len(m.points) == 1],
              "moving_before": obs.trajectories(t0, t_estop, min_points=2),
              "moving_after": obs.trajectories(t_estop, min_points=2),
              "t_sim": t_sim, "around": obs.joints_sim(t_sim - HOLD_AGE_BOUND_S - 0.5, t_sim + 3.0),
              "status": obs.status(EXECUTOR, t_end - 0.5), "executor_alive": stack.alive("executor"),
              "logs": stack.output("executor", tail=None)}
    # release the estop for whatever runs next: the executor by its reset service, the planners by a False
    fut = obs.reset.call_async(Trigger.Request())
    assert wait_for(fut.done, 10) and fut.result().success
    obs.estop_pub.publish(Bool(data=False))
    return record


def _nearest_on_path(ts: np.ndarray, path: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Distance [m] from ``p`` (3,) to the polyline ``path`` (M, 3) sampled at times ``ts`` (M,) [s], and the time at
    the nearest point (interpolated along its segment: a starved observer may miss samples)."""
    if len(path) == 1:
        return float(np.linalg.norm(path[0] - p)), float(ts[0])
    a, ab = path[:-1], np.diff(path, axis=0)
    u = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18), 0.0, 1.0)
    d = np.linalg.norm(a + u[:, None] * ab - p, axis=1)
    j = int(np.argmin(d))
    return float(d[j]), float(ts[j] + u[j] * (ts[j + 1] - ts[j]))


def test_estop_stops_the_arm_within_1s_under_a_flood_of_chunks(estop_flood):
    r = estop_flood
    assert r["executor_alive"], r["logs"][-3000:]
    values = kv(r["status"])
    assert r["sent"]["estop_acked"], ("the e-stop was never acknowledged by every reliable reader", r["sent"])
    assert values["estop"] == "True" and level(r["status"]) == 2, (r["status"].message, values, r["sent"],
                                                                   r["logs"][-3000:])
    # keep-last-10 QoS drops most of the flood on the way; what gets through keeps the executor saturated
    assert int(values["chunks_received"]) >= 20, values
    assert r["moving_before"], "the flood's chunks never reached the arm before the e-stop"
    # The e-stop's effect at the arm, in sim time, on the TCP (FK of the sim's joint states): the flood drives it
    # along −y; "stopped" = from then on it never gets more than 1 mm further along −y.
    ts, qs = r["around"]
    assert len(ts) > 100, "too few joint states from the sim around the e-stop"
    tcp = KIN.fk_batch(qs)[:, :3, 3]
    y = tcp[:, 1]
    # the last 0.5 s of joint states this observer got before the e-stop (a loaded observer may miss some)
    assert np.sum(ts < r["t_sim"]) >= 2, f"no joint states stamped in the {HOLD_AGE_BOUND_S + 0.5} s before the e-stop"
    before = (ts < r["t_sim"]) & (ts >= ts[ts < r["t_sim"]].max() - 0.5)
    speed_before = (y[before][0] - y[before][-1]) / max(ts[before][-1] - ts[before][0], 1e-6)
    # a precondition, not the property: the arm must move well over the 1 mm "stopped" tolerance per second, or an
    # arm at rest would pass. 5 mm/s does; the flood's speed varies with load (a CI run measured 0.0099 m/s)
    assert speed_before > 0.005, f"the arm was not moving when the e-stop came ({speed_before:.4f} m/s along -y)"
    ahead = y - np.minimum.accumulate(y[::-1])[::-1]  # how much further along −y the TCP still gets
    still = np.nonzero((ahead <= 0.001) & (ts >= r["t_sim"]))[0]
    assert len(still), "the arm never stopped"
    k = still[0]
    t_stop = ts[k] - r["t_sim"]
    drift = float(np.max(np.linalg.norm(tcp[k:] - tcp[k], axis=1)))
    latched = re.search(r"\[(\d+\.\d+)\] \[executor\]: EMERGENCY STOP latched", r["logs"])
    t_hold = r["holds"][0][0] - r["t_estop"] if r["holds"] else float("nan")
    late = [t for t, _m in r["moving_after"] if r["holds"] and t > r["holds"][0][0]]
    # The hold is the executor's latest joint state at the latch. Under the flood that state trails the arm (its
    # joint states queue behind chunks in the same process), so the arm, already past it, settles back to it: a
    # position it passed, not one a chunk asked for. Where on its path the arm was at the hold, in sim time:
    assert r["holds"], "no hold trajectory after the e-stop"
    hold = r["holds"][0][1]
    hold_tcp = KIN.fk(np.array([hold.points[0].positions[list(hold.joint_names).index(n)] for n in JOINTS]))[:3, 3]
    off_path, t_at = _nearest_on_path(ts[:k + 1], tcp[:k + 1], hold_tcp)
    hold_age = r["t_sim"] - t_at
    settled = float(np.linalg.norm(tcp[-1] - hold_tcp))
    print(f"flood: {r['sent']}, {values['chunks_received']} received by the executor; latch logged "
          f"{(float(latched.group(1)) - r['sent']['t_estop_wall']) * 1e3 if latched else float('nan'):.0f} ms and "
          f"hold seen here {t_hold * 1e3:.0f} ms after the e-stop was published; {len(r['moving_after'])} chunk "
          f"trajectories seen in between, {len(late)} after the hold. TCP at {speed_before:.3f} m/s before the "
          f"e-stop, stopped {t_stop * 1e3:.0f} ms (sim time) after it, {drift * 1e3:.1f} mm of settling afterwards, "
          f"to a hold {off_path * 1e3:.1f} mm from where the arm was at {-hold_age * 1e3:+.0f} ms from the e-stop "
          f"(sim time); {settled * 1e3:.1f} mm from the hold at the end")
    profile = [(round((t - r["t_sim"]) * 1e3), round(v * 1e3, 1)) for t, v in zip(ts[::5], y[::5], strict=True)]
    assert latched, "the executor never logged the e-stop's latch"
    t_latch = float(latched.group(1)) - r["sent"]["t_estop_wall"]
    assert t_latch <= LATCH_BOUND_S, f"the e-stop was latched {t_latch:.3f} s after it was published"
    assert t_stop <= STOP_BOUND_S, f"stopped {t_stop:.3f} s after the e-stop; (ms, y mm): {profile}"
    # the hold is a measured position on the arm's path, at most HOLD_AGE_BOUND_S old, and the arm comes to rest
    # there, moving no further than back to it (plus the servo's overshoot)
    assert off_path < 0.002, (f"the hold is {off_path * 1e3:.1f} mm from every position the arm passed", profile)
    assert hold_age <= HOLD_AGE_BOUND_S, f"the hold is the arm's position {hold_age:.3f} s before the e-stop"
    assert settled < 0.002, f"the arm came to rest {settled * 1e3:.1f} mm from the hold"
    assert drift < float(np.linalg.norm(tcp[k] - hold_tcp)) + SERVO_OVERSHOOT_M, (drift, profile)
    assert late == [], f"chunks were commanded after the e-stop's hold: {late[:10]}"


# ------------------------------------------------------------------------------------------- sim: kill -9 (last)


@pytest.fixture(scope="module")
def sim_killed(stack, observer) -> dict:
    """The planner drives the executor; SIGKILL to the sim while a chunk executes; then 6 s of watching. Ends the
    module's sim."""
    obs = observer
    _executing_planner_chunks(obs, stack, "planner_b")
    t_kill = stack.kill9("sim")
    time.sleep(6.0)
    t_end = time.monotonic()
    return {"t_kill": t_kill, "t_end": t_end, "executor_alive": stack.alive("executor"),
            "planner_alive": stack.alive("planner_b"), "executor": obs.statuses(EXECUTOR, t_kill, t_end),
            "planner": obs.statuses(PLANNER, t_kill + 2.0, t_end),
            "plan_diags": [d for t, d in obs.plan_diags if t > t_kill + 1.0],
            "plans_after": [t for t, _m in obs.plans if t > t_kill],
            "moving_after": obs.trajectories(t_kill, min_points=2),
            "logs": {n: stack.output(n) for n in ("executor", "planner_b")}}


def test_sim_killed_executor_and_planner_stay_alive_report_and_send_no_motion(sim_killed):
    r = sim_killed
    assert r["executor_alive"] and r["planner_alive"], r["logs"]
    # joint states stop: after joint_state_timeout_s (2 s) the executor says so, at ERROR
    late = [s for s in r["executor"]][-3:]
    assert late and all(level(s) == 2 and "joint states" in s.message for s in late), [(level(s), s.message)
                                                                                      for s in late]
    # A plan cycle that started before the kill may still deliver its chunk, and the executor may execute it while
    # its last joint state is younger than joint_state_timeout_s (it cannot tell a dead sim from a slow one sooner);
    # after that, nothing moves.
    late_motion = [(round(t - r["t_kill"], 2), len(m.points)) for t, m in r["moving_after"]
                   if t > r["t_kill"] + JS_TIMEOUT + 0.5]
    print(f"after the sim's kill: trajectories at {[round(t - r['t_kill'], 2) for t, _m in r['moving_after']]} s, "
          f"plans at {[round(t - r['t_kill'], 2) for t in r['plans_after']]} s")
    assert late_motion == [], late_motion
    # The planner cannot tell a dead sim from a slow one until /clock has stood still for clock_timeout_s: every cycle
    # that starts and ends inside that window may still publish (one or two at the tiny model's ~0.5 s cycles; CI
    # once saw plans at 0.52 and 0.99 s). A cycle whose inputs went stale meanwhile is dropped, so no plan is published
    # later than clock_timeout_s (plus delivery to this observer) after the kill.
    late_plans = [round(t - r["t_kill"], 2) for t in r["plans_after"] if t > r["t_kill"] + CLOCK_TIMEOUT + 0.5]
    assert late_plans == [], f"plans published {late_plans} s after the sim died (clock_timeout_s={CLOCK_TIMEOUT})"


def test_sim_killed_planner_reports_stale_inputs(sim_killed):
    """/clock stops with the sim, so the planner's node clock stands still: it judges that on the steady clock
    (clock_timeout_s, 1 s by default) and keeps reporting ERROR on both topics, naming /clock and the silent inputs."""
    r = sim_killed
    errors = [d for d in r["plan_diags"] if d.status == PlanDiagnostics.STATUS_ERROR]
    planner = [s for s in r["planner"] if kv(s).get("instruction") == INSTRUCTION]  # planner_b (planner_a: alive, idle)
    assert planner and level(planner[-1]) == 2, [(level(s), s.message) for s in r["planner"]]
    assert "/clock stopped" in planner[-1].message, planner[-1].message
    assert errors and errors[-1].reason, [(d.status, d.reason) for d in r["plan_diags"]]
    for word in ("/clock stopped", "wrist", "/joint_states"):
        assert word in errors[-1].reason, (word, errors[-1].reason)
