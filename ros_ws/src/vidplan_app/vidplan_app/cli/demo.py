"""``vidplan demo --scripted``: a pick-and-place in simulation through the real topics (scripted expert → executor).

rclpy and vidplan_sim are imported inside the command (vidplan_core imports no rclpy at module level).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from vidplan_app.cli import app
from vidplan_bringup.supervisor import MissingBuildError, die_with_parent, find_executable


def _vidplan_cmd() -> list[str]:
    exe = shutil.which("vidplan")
    return [exe] if exe else [sys.executable, "-c", "from vidplan_app.cli import main; main()"]


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """Stop the `vidplan up` child we started (by its PID; it stops its own nodes on SIGINT)."""
    for sig, wait in ((signal.SIGINT, 0.7 * timeout), (signal.SIGTERM, 0.2 * timeout), (signal.SIGKILL, 0.1 * timeout)):
        if proc.poll() is not None:
            break
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


# What the learned demo records (typed, so the recorder subscribes at once; the debug images make the planner
# publish what it imagines, which it only does for a subscriber).
RECORD_TOPICS = [
    *(f"/cameras/{v}/image_raw:sensor_msgs/msg/Image" for v in ("left", "right", "wrist")),
    "/ee_pose:geometry_msgs/msg/PoseStamped",
    "/joint_states:sensor_msgs/msg/JointState",
    "/vidplan/plan:vidplan_interfaces/msg/PlanChunk",
    "/vidplan/plan_diagnostics:vidplan_interfaces/msg/PlanDiagnostics",
    "/vidplan/debug/prediction:sensor_msgs/msg/Image",
    "/vidplan/debug/uncertainty:sensor_msgs/msg/Image",
    "/vidplan/debug/plan_markers:visualization_msgs/msg/MarkerArray",
    "/fr3_arm_controller/joint_trajectory:trajectory_msgs/msg/JointTrajectory",
    "/gripper/command:std_msgs/msg/Float64",
    "/sim/scene:std_msgs/msg/String",
    "/diagnostics:diagnostic_msgs/msg/DiagnosticArray",
]


def _fail(msg: str, code: int) -> int:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return code


def _check_model_dir(model: Path, backend: str) -> str:
    """'' when ``model`` looks loadable by ``backend``, else what is wrong (before anything is started): the
    model directory's index check (:func:`vidplan_core.runtime.bundle_index.bundle_problems`; no model is loaded)."""
    from vidplan_core.runtime.bundle_index import bundle_problems

    hint = "(the demo models are made by `make demo-models`; for a quick look use any bundle, e.g. --model DIR)"
    problems = bundle_problems(model, backend)
    return f"{'; '.join(problems)} {hint}" if problems else ""


def _model_view_size(model: Path, backend: str) -> tuple[int, int] | None:
    """(height, width) of one model view [px] from the bundle's autoencoder config or the export manifest."""
    from vidplan_core.runtime.bundle_index import BundleError, read_bundle_index

    try:
        return read_bundle_index(model, check=False).view_size(backend)
    except BundleError:
        return None


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _run_learned(*, seed: int, task: str, clutter: int, model: str, backend: str, max_steps: int, timeout: float,
                 out: str, overrides: list[str], camera_size: str, real_time_factor: float, threads: int,
                 connect_timeout: float, json_out: str) -> int:
    """The learned demo (see ``demo``'s docstring); returns the exit code."""
    import json
    import math
    from datetime import datetime, timezone

    if backend not in ("torch", "onnxruntime"):
        return _fail(f"--backend must be torch or onnxruntime, got {backend!r}", 2)
    if not 0 <= real_time_factor <= 10:
        return _fail(f"--real-time-factor must be in [0, 10] (0 = as fast as the sim renders), got {real_time_factor}",
                     2)
    if max_steps < 1 or timeout <= 0 or connect_timeout <= 0:
        return _fail(f"--max-steps, --timeout and --connect-timeout must be > 0, got {max_steps}, {timeout}, "
                     f"{connect_timeout}", 2)
    model_dir = Path(model).expanduser().resolve()
    problem = _check_model_dir(model_dir, backend)
    if problem:
        return _fail(problem, 2)
    cam: list[str] = []
    if camera_size:
        try:
            w, h = (int(x) for x in camera_size.lower().split("x"))
            if w < 16 or h < 16:
                raise ValueError
        except ValueError:
            return _fail(f"--camera-size must be WIDTHxHEIGHT with both ≥ 16 px, got {camera_size!r}", 2)
        cam = [f"sim.camera_width:={w}", f"sim.camera_height:={h}"]
    bad = [o for o in overrides if ":=" not in o]
    if bad:
        return _fail(f"--set expects NAME:=VALUE or NODE.PARAM:=VALUE, got {bad}", 2)
    out_dir = Path(out or Path("runs") / "demo" / datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")).resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        return _fail(f"output directory {out_dir} exists and is not empty; choose another --out", 2)
    try:
        recorder_exe = find_executable("vidplan_ros", "recorder_node")
    except MissingBuildError as exc:
        return _fail(str(exc), 3)
    from vidplan_ros.learned_demo import UnreachableError, run_learned_demo  # imports rclpy

    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bag = out_dir / "recording"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads) if threads > 0 else os.environ.get("OMP_NUM_THREADS", "1")}
    # The sim publishes no instruction of its own (instruction_topic ""): the planner stays idle until we reset the
    # scene and hand it the instruction, so it never plans on the scene before the reset.
    up_cmd = [*_vidplan_cmd(), "up", "sim", f"model_dir:={model_dir}", f"backend:={backend}", f"scene_seed:={seed}",
              f"clutter:={clutter}", "planner:=true", "sim.instruction_topic:=", f"planner.seed:={seed}",
              f"sim.real_time_factor:={real_time_factor}", *cam, *overrides]
    rec_cmd = [str(recorder_exe), "--ros-args", "-p", f"topics:={json.dumps(RECORD_TOPICS)}",
               "-p", f"output_dir:={out_dir}", "-p", "bag_name:=recording", "-p", "use_sim_time:=true",
               "-p", f"stats_path:={out_dir / 'recorder_stats.json'}", "-p", "stats_interval_s:=0.0"]
    procs: dict[str, subprocess.Popen] = {}
    files = {}

    def on_term(signum, frame):  # SIGTERM like Ctrl-C: unwind through the finally below
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    code, res, report = 3, None, None
    t0 = time.monotonic()
    try:
        for name, cmd in (("up", up_cmd), ("recorder", rec_cmd)):
            typer.echo(f"[demo] starting {name}: {' '.join(cmd)}  (log: {logs / (name + '.log')})")
            with open(logs / f"{name}.log", "wb") as f:
                procs[name] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=env, start_new_session=True, preexec_fn=die_with_parent)

        up_log = {"offset": 0, "text": ""}

        def abort() -> str:
            for name, p in procs.items():
                if p.poll() is not None:
                    return f"`{name}` exited with code {p.returncode} (log {logs / (name + '.log')})"
            # The planner is not a required node of the profile: `vidplan up` goes on without it, so watch its log.
            try:
                with open(logs / "up.log", "rb") as f:
                    f.seek(up_log["offset"])
                    new = f.read()
            except OSError:
                return ""
            up_log["offset"] += len(new)
            up_log["text"] = (up_log["text"] + new.decode(errors="replace"))[-4000:]
            m = re.search(r"node 'planner' ([^\n]*); continuing without it", up_log["text"])
            return f"the planner node {m.group(1)} (see its output in {logs / 'up.log'})" if m else ""

        try:
            res = run_learned_demo(scene_seed=seed, instruction=task, max_steps=max_steps, timeout=timeout,
                                   connect_timeout=connect_timeout, abort=abort, log=typer.echo)
        except UnreachableError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            for name in procs:
                typer.echo(f"--- last lines of {logs / (name + '.log')}:\n{_tail(logs / (name + '.log'))}", err=True)
            return 3
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            return 2
        code = 0 if res.success else 1
        if res.chunks_planned == 0:
            typer.secho(f"error: the planner published no chunk in {timeout:.0f} s (last planner status: "
                        f"{res.last_plan_reason or 'none'}; log {logs / 'up.log'})", fg="red", err=True)
            code = 3
    except KeyboardInterrupt:
        typer.secho("[demo] interrupted: stopping everything", fg="yellow", err=True)
        code = 130
    finally:
        # The recorder first (it flushes and closes the bag on SIGINT), then the nodes.
        for name in ("recorder", "up"):
            if name in procs:
                rc = _stop(procs[name], timeout=15.0)
                typer.echo(f"[demo] stopped {name} (pid {procs[name].pid}, exit code {rc})")
        signal.signal(signal.SIGTERM, old_term)
    if res is None:
        return code
    result = {**res.to_dict(), "clutter": clutter, "model_dir": str(model_dir), "backend": backend,
              "real_time_factor": real_time_factor,
              "out_dir": str(out_dir), "recording": str(bag), "exit_code": code,
              "total_wall_time_s": time.monotonic() - t0}
    try:
        from vidplan_core.eval.demo_report import write_demo_report

        report = write_demo_report(out_dir, bag, result, view_size=_model_view_size(model_dir, backend))
        files = report["files"]
        result.update(report=report)
        for w in report["warnings"]:
            typer.secho(f"[demo] warning: {w}", fg="yellow")
    except Exception as exc:  # the episode's outcome stands; say why the pictures are missing
        typer.secho(f"[demo] warning: could not write the report from {bag}: {type(exc).__name__}: {exc}",
                    fg="yellow", err=True)
        result["report_error"] = f"{type(exc).__name__}: {exc}"
    text = json.dumps(result, indent=2, default=str)
    (out_dir / "result.json").write_text(text)
    if json_out:
        Path(json_out).write_text(text)

    def ms(v: float) -> str:
        return f"{v:.0f} ms" if math.isfinite(v) else "n/a"

    typer.echo(f"[demo] {'SUCCESS' if res.success else 'FAILURE'} — '{res.instruction}' (seed {seed}, clutter "
               f"{clutter}): {res.steps_executed}/{max_steps} steps executed (stopped by {res.stopped_by}), "
               f"{res.chunks_planned} chunks planned, plan latency p50 {ms(res.plan_latency_ms_p50)}, p95 "
               f"{ms(res.plan_latency_ms_p95)}")
    rejected, received = res.executor.get("chunks_rejected", "0"), res.executor.get("chunks_received", "?")
    if rejected not in ("0", ""):
        reason = res.executor.get("last_rejection_reason", "")
        hint = (f"; stale chunks: lower --real-time-factor (plan latency p95 {ms(res.plan_latency_ms_p95)} wall ≈ "
                f"{res.plan_latency_ms_p95 * real_time_factor:.0f} ms of sim time)" if "[stale]" in reason else "")
        # the executor clears its last reason once a later chunk executes; the log has every reason
        last = f" (last: {reason[:160]}{'…' if len(reason) > 160 else ''})" if reason else ""
        typer.secho(f"[demo] note: the executor rejected {rejected} of {received} chunks{last}{hint}; reasons in "
                    f"{logs / 'up.log'}", fg="yellow")
    n_msgs = sum((report or {}).get("recording", {}).values()) if report else 0
    typer.echo(f"[demo] recording: {bag} ({n_msgs} messages)")
    typer.echo(f"[demo] report: {files.get('report', '(not written)')}; strip {files.get('strip', '-')}; "
               f"gif {files.get('gif', '-')}; result {out_dir / 'result.json'}")
    return code


@app.command()
def demo(
    scripted: bool = typer.Option(False, "--scripted", help="drive the executor with the scripted expert (no "
                                  "planner needed)"),
    launch: bool = typer.Option(False, "--launch", help="start `vidplan up sim` for the demo (with the planner unless "
                                "--scripted) and stop it afterwards"),
    seed: int = typer.Option(0, help="scene seed"),
    instruction: str = typer.Option("", "--instruction", help="what to do, e.g. 'put the red cube in the bowl'; "
                                    "empty = the seed's own task (--scripted: put the seed's target object in the "
                                    "bowl)"),
    task: str = typer.Option("", "--task", hidden=True, help="deprecated name of --instruction"),
    clutter: int = typer.Option(1, help="clutter level 0..3 (with --launch)"),
    chunk_steps: int = typer.Option(15, help="--scripted: 15 Hz steps per ExecuteChunk goal"),
    timeout: float | None = typer.Option(None, help="--scripted: seconds to wait for the sim/executor and for each "
                                         "chunk (default 90); learned: wall-clock limit of the episode in s "
                                         "(default 480)"),
    model: str = typer.Option("models/demo", "--model", help="learned: planner model directory (safetensors "
                              "models; for onnxruntime an export directory or one with onnx/)"),
    backend: str = typer.Option("torch", help="learned: planner runtime, torch | onnxruntime"),
    max_steps: int | None = typer.Option(None, help="learned: stop after this many executed 15 Hz control steps "
                                         "(default: the planner configuration's episode_steps, 225 = 15 s)"),
    out: str = typer.Option("", "--out", help="learned: output directory (recording + report); default "
                            "runs/demo/<UTC timestamp>"),
    overrides: list[str] = typer.Option([], "--set", help="learned: extra `vidplan up` override NODE.PARAM:=VALUE "
                                        "or ARG:=VALUE, repeatable (e.g. --set planner.refine_iters:=2)"),
    camera_size: str = typer.Option("", help="learned: camera WIDTHxHEIGHT for the sim (default: the profile's "
                                    "320x180)"),
    real_time_factor: float = typer.Option(0.1, "--real-time-factor", help="learned: sim seconds per wall second "
                                           "at most; below 1 the sim runs in slow motion so that a CPU planner's "
                                           "latency stays short in sim time (chunks older than the executor's "
                                           "max_plan_age_s, 1 s of sim time, are rejected; the demo model, scoring "
                                           "with its tiny decoder, plans in about 2-3.5 s on 2 busy cores, i.e. "
                                           "0.2-0.35 s of sim time at 0.1)"),
    threads: int = typer.Option(0, help="learned: OMP/torch threads of the started nodes (0 = $OMP_NUM_THREADS, "
                                "else 1: on a small CPU the nodes share the cores)"),
    connect_timeout: float = typer.Option(180.0, help="learned: seconds to wait for the sim and for the planner to "
                                          "load its models"),
    json_out: str = typer.Option("", "--json", help="also write the result as JSON to this file"),
) -> None:
    """Run a simulated episode through the robot's topics and print success, steps and (learned) plan latency.

    Learned mode (default; needs --launch): starts `vidplan up sim planner:=true` with --model/--backend plus a
    recorder, resets the sim to --seed/--instruction, hands the instruction to the planner and lets it drive the arm
    through the executor for --max-steps control steps (or until success / --timeout); prints success, steps,
    chunks, plan latency p50/p95 and writes the recording, report.md, strip.png, episode.gif and result.json under
    --out.

    --scripted: the scripted expert sends ExecuteChunk goals instead of the planner; without --launch the sim and
    executor must already run (`vidplan up sim planner:=false`).

    Exit code 0 on task success, 1 on task failure, 2 on bad options, 3 when something could not be reached,
    130 on Ctrl-C.
    """
    if task:  # the old name (before the instruction rename; README "Deprecated names")
        if instruction and instruction != task:
            typer.secho(f"error: --task (deprecated) {task!r} and --instruction {instruction!r} disagree; give "
                        "--instruction only", fg="red", err=True)
            raise typer.Exit(2)
        typer.secho("warning: --task is deprecated; use --instruction", fg="yellow", err=True)
        instruction = task
    if not scripted and not launch:
        typer.secho("error: the learned demo starts its own processes: use `vidplan demo --launch [--model DIR]`, "
                    "or `vidplan demo --scripted` for the scripted expert", fg="red", err=True)
        raise typer.Exit(2)
    if not 0 <= clutter <= 3:
        typer.secho(f"error: --clutter must be 0..3, got {clutter}", fg="red", err=True)
        raise typer.Exit(2)
    if not scripted:
        if max_steps is None:  # the episode length is chosen with the proposal speed (planning/planner.yaml)
            from vidplan_core.planning.config import load_planning_config

            max_steps = load_planning_config().episode_steps
        raise typer.Exit(_run_learned(
            seed=seed, task=instruction, clutter=clutter, model=model, backend=backend, max_steps=max_steps,
            timeout=480.0 if timeout is None else timeout, out=out, overrides=list(overrides),
            camera_size=camera_size, real_time_factor=real_time_factor, threads=threads,
            connect_timeout=connect_timeout, json_out=json_out))
    timeout = 90.0 if timeout is None else timeout
    from vidplan_sim.scripted_client import run_scripted_demo  # imports rclpy

    up = None
    if launch:
        cmd = [*_vidplan_cmd(), "up", "sim", "planner:=false", f"scene_seed:={seed}", f"clutter:={clutter}"]
        typer.echo(f"[demo] starting: {' '.join(cmd)}")
        up = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent)
        time.sleep(1.0)
        if up.poll() is not None:
            typer.secho(f"error: `vidplan up sim` exited with code {up.returncode}", fg="red", err=True)
            raise typer.Exit(3)
    try:
        try:
            res = run_scripted_demo(scene_seed=seed, instruction=instruction, chunk_steps=chunk_steps, timeout=timeout,
                                    log=typer.echo)
        except (TimeoutError, RuntimeError) as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(3) from exc
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        if json_out:
            with open(json_out, "w") as f:
                f.write(res.to_json())
    finally:
        if up is not None:
            code = _stop(up)
            typer.echo(f"[demo] stopped `vidplan up sim` (pid {up.pid}, exit code {code})")
    raise typer.Exit(0 if res.success else 1)
