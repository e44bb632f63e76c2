"""``vidplan demo --scripted``: a pick-and-place in simulation through the real topics (scripted expert → executor).

rclpy and vidplan_sim are imported inside the command (vidplan_core imports no rclpy at module level).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import typer

from vidplan_core.cli import app


def _vidplan_cmd() -> list[str]:
    exe = shutil.which("vidplan")
    return [exe] if exe else [sys.executable, "-c", "from vidplan_core.cli import main; main()"]


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


@app.command()
def demo(
    scripted: bool = typer.Option(False, "--scripted", help="drive the executor with the scripted expert (no "
                                  "planner needed)"),
    launch: bool = typer.Option(False, "--launch", help="start `vidplan up sim planner:=false` for the demo and stop "
                                "it afterwards"),
    seed: int = typer.Option(0, help="scene seed"),
    task: str = typer.Option("", help="instruction; empty = put the seed's target object in the bowl"),
    clutter: int = typer.Option(1, help="clutter level 0..3 (with --launch)"),
    chunk_steps: int = typer.Option(15, help="15 Hz steps per ExecuteChunk goal"),
    timeout: float = typer.Option(90.0, help="seconds to wait for the sim/executor and for each chunk"),
    json_out: str = typer.Option("", "--json", help="also write the result as JSON to this file"),
) -> None:
    """Run a simulated pick-and-place through the robot's topics and print success, steps and tracking error.

    Without --launch, the sim and executor must already run (`vidplan up sim planner:=false`). Exit code 0 on task
    success, 1 on task failure, 2 on bad options, 3 when the sim/executor could not be reached.
    """
    if not scripted:
        typer.secho("error: only the scripted demo exists so far: use `vidplan demo --scripted`", fg="red", err=True)
        raise typer.Exit(2)
    if not 0 <= clutter <= 3:
        typer.secho(f"error: --clutter must be 0..3, got {clutter}", fg="red", err=True)
        raise typer.Exit(2)
    from vidplan_sim.scripted_client import run_scripted_demo  # imports rclpy

    up = None
    if launch:
        cmd = [*_vidplan_cmd(), "up", "sim", "planner:=false", f"scene_seed:={seed}", f"clutter:={clutter}"]
        typer.echo(f"[demo] starting: {' '.join(cmd)}")
        up = subprocess.Popen(cmd, start_new_session=True)
        time.sleep(1.0)
        if up.poll() is not None:
            typer.secho(f"error: `vidplan up sim` exited with code {up.returncode}", fg="red", err=True)
            raise typer.Exit(3)
    try:
        try:
            res = run_scripted_demo(scene_seed=seed, instruction=task, chunk_steps=chunk_steps, timeout=timeout,
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
