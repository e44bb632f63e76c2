"""``vidplan serve openpi``: the planner behind the openpi policy protocol (no ROS), for DROID labs' evaluation
clients (openpi_client). See :mod:`vidplan_core.planning.openpi_serving` for the observation and action format."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from vidplan_app.cli import app

serve_app = typer.Typer(help="Serve the planner to clients without ROS: openpi (DROID evaluation clients).",
                        no_args_is_help=True)
app.add_typer(serve_app, name="serve")


@serve_app.command("openpi")
def serve_openpi(
    model: Path = typer.Option(Path("models/demo"), "--model", "-m", help="model directory"),
    backend: str = typer.Option("onnxruntime", help="torch | onnxruntime | tensorrt"),
    device: str = typer.Option("cpu", help="torch device / onnxruntime execution provider"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default; 0.0.0.0 for a lab "
                             "network: the server has no authentication)"),
    port: int = typer.Option(8000, help="port (openpi's serve_policy default)"),
    planner_config: Path | None = typer.Option(None, help="planner YAML (default: the shipped planner.yaml)"),
    seed: int = typer.Option(0, help="base noise seed"),
    nominal: str = typer.Option("hold", help="nominal chunk the perturbation proposals centre on: hold | bc (the "
                                "model directory's behaviour-cloned policy, policy/)"),
    num_nominal: int | None = typer.Option(None, min=0, help="perturbations around the nominal chunk (default: the "
                                           "planner YAML's; give > 0 with --nominal bc)"),
) -> None:
    """Serve VidPlan as an openpi websocket policy: DROID observations in, joint velocities + gripper out (15 Hz).
    Blocks until Ctrl-C."""
    from openpi_client import base_policy
    from openpi_server import WebsocketPolicyServer

    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.openpi_serving import VidPlanOpenPIPolicy
    from vidplan_core.planning.session import PlanningSession
    from vidplan_core.runtime.loader import load_planner_backend

    logging.basicConfig(level=logging.INFO, format="[vidplan serve] %(message)s")
    planning = load_planning_config(planner_config)
    try:
        loaded = load_planner_backend(model, backend, device=device, flow_steps=planning.flow_steps or None)
    except (FileNotFoundError, ImportError, RuntimeError, KeyError, OSError) as exc:
        typer.secho(f"error: cannot load models from {model} with backend {backend}: {exc}", fg=typer.colors.RED,
                    err=True)
        raise typer.Exit(2) from exc
    for w in loaded.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    if nominal not in ("hold", "bc"):
        typer.secho(f"error: --nominal must be hold or bc, got {nominal!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if num_nominal is not None:
        planning.session.proposals.num_nominal = num_nominal
    policy_nominal = None
    if nominal == "bc":  # VidPlan perturbs the behaviour-cloned policy's chunks, as the paper perturbs π0.5's
        from vidplan_core.planning.nominal import BCNominalPolicy

        try:
            policy_nominal = BCNominalPolicy.from_bundle(model, loaded.models)
        except (RuntimeError, ValueError, OSError) as exc:
            typer.secho(f"error: --nominal bc: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
        if not planning.session.proposals.num_nominal:
            typer.secho("warning: --nominal bc with num_nominal 0 scores no perturbation of it (give --num-nominal)",
                        fg=typer.colors.YELLOW, err=True)
    session = PlanningSession(loaded.backend, PandaKinematics(), planning.session, nominal=policy_nominal)

    class _Policy(VidPlanOpenPIPolicy, base_policy.BasePolicy):
        pass

    policy = _Policy(session, loaded.views, planning.limits, seed=seed)
    typer.echo(f"[vidplan serve] openpi policy server on ws://{host}:{port} ({model}, {backend}; H={session.horizon})")
    WebsocketPolicyServer(policy, host=host, port=port, metadata=policy.metadata).serve_forever()
