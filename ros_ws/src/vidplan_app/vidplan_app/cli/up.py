"""``vidplan up PROFILE [NAME:=VALUE ...]``: start a bring-up profile's nodes as supervised processes;
``vidplan params PROFILE``: write their parameters, one params file per node."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from vidplan_app.cli import app
from vidplan_bringup.dds_shm import remove_zombie_segments
from vidplan_bringup.profiles import (
    DeprecatedArgWarning,
    documented_params_file,
    load_profile,
    parse_overrides,
    resolve_profile,
)
from vidplan_bringup.supervisor import MissingBuildError, Supervisor
from vidplan_core.config import ConfigError


def _checked_profile(profile: str, overrides: list[str] | None, **supervisor_kw: Any):
    """Load and resolve ``profile`` with ``overrides``, make its :class:`Supervisor` and check every node parameter
    against what the nodes declare; returns (profile path, resolved nodes, supervisor, check). Exits 2 for an
    invalid profile, override or parameter, 3 when the workspace is not built (notes and deprecation warnings go to
    stderr)."""
    try:
        prof, path = load_profile(profile)
        arg_over, param_over = parse_overrides(list(overrides or []))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecatedArgWarning)
            nodes = resolve_profile(prof, str(path), arg_over, param_over)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    for w in caught:
        if issubclass(w.category, DeprecatedArgWarning):  # an old arg name (task:=): say which name replaces it
            typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    try:
        sup = Supervisor(nodes, **supervisor_kw)
    except MissingBuildError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(3) from exc
    check = sup.check_parameters(param_over)
    for note in check.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if check.problems:
        typer.secho(f"error: {path} (parameters):\n" + "\n".join(f"  - {p}" for p in check.problems),
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return path, nodes, sup, check


@app.command(context_settings={"allow_extra_args": False})
def up(
    profile: str = typer.Argument(..., help="profile name (robot, sim, replay) or path to a profile YAML"),
    overrides: list[str] = typer.Argument(None, help="ARG:=VALUE (profile arg) or NODE.PARAM:=VALUE"),
    shutdown_timeout: float = typer.Option(5.0, help="seconds to stop every node on Ctrl-C / SIGTERM"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved nodes and commands, start nothing"),
) -> None:
    """Start the nodes of a bring-up profile (the same profiles the ros2 launch files read).

    Before anything starts (and in a dry run) every vidplan node is asked which parameters it declares: a profile
    parameter or NODE.PARAM:= override that a node does not declare is an error naming it and the closest declared
    names.

    Exit codes: 0 after Ctrl-C/SIGTERM, 1 when a required node died, 2 for an invalid profile or override (an
    unknown profile arg, node or node parameter, an arg value of the wrong type), 3 when the workspace is not built.
    """
    path, nodes, sup, check = _checked_profile(profile, overrides, shutdown_timeout=shutdown_timeout)
    if dry_run:
        for p in sup.procs:
            typer.echo(f"{p.node.name}{' (required)' if p.node.required else ''}: {' '.join(p.cmd)}")
            for k, v in sorted(p.node.parameters.items()):
                typer.echo(f"    {k}: {v!r}")
        typer.echo(f"parameters checked against what the nodes declare: {', '.join(check.declared) or 'none'}")
        return
    typer.echo(f"[vidplan up] profile {path} ({len(nodes)} nodes); Ctrl-C to stop")
    sys.stdout.flush()
    raise typer.Exit(sup.run())


@app.command(context_settings={"allow_extra_args": False})
def params(
    profile: str = typer.Argument(..., help="profile name (robot, sim, replay) or path to a profile YAML"),
    overrides: list[str] = typer.Argument(None, help="ARG:=VALUE (profile arg) or NODE.PARAM:=VALUE"),
    out: Path = typer.Option(Path("params"), "--out", help="folder for one NODE.yaml per vidplan node"),
) -> None:
    """Write one ``--params-file`` per vidplan node of a profile: every parameter the node declares, with the
    value it takes under the profile (read from the node itself, as `vidplan up` checks parameters), its
    description and whether it is live-tunable. Start from these to tune a robot's parameters in one place.

    Exit codes: 0 written, 2 invalid profile / override / parameter, 3 workspace not built.
    """
    _path, nodes, _sup, check = _checked_profile(profile, overrides)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["vidplan params", profile, *(overrides or [])])
    for node in nodes:
        if node.name in check.listings:
            f = out / f"{node.name}.yaml"
            listing = check.listings[node.name]
            f.write_text(documented_params_file(node, listing, command))
            n = len(set(listing["values"]) - set(listing.get("deprecated", {})))  # old names are left out
            typer.echo(f"wrote {f} ({n} parameters)")


@app.command("shm-clean", context_settings={"allow_extra_args": False})
def shm_clean(
    directory: Path = typer.Option(Path("/dev/shm"), "--dir", help="where Fast DDS keeps its shared-memory files"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be removed, remove nothing"),
) -> None:
    """Remove the Fast DDS shared-memory segments of dead ROS processes (what ``fastdds shm clean`` does; the PyPI
    ROS wheels ship no fastdds tool). A node killed with SIGKILL (kill -9, an OOM kill, a crash) leaves its segment
    (8 MiB with vidplan's DDS profile) in /dev/shm, which is memory. Only segments whose lock no process holds are
    removed, so it is safe while nodes run. ``vidplan up`` does this itself for the nodes it had to kill.

    Exit codes: 0 done, 2 no such directory.
    """
    if not directory.is_dir():
        typer.secho(f"error: --dir {directory}: no such directory", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    n, freed = remove_zombie_segments(None, shm=directory, dry_run=dry_run)
    typer.echo(f"{'would remove' if dry_run else 'removed'} {n} Fast DDS shared-memory segment(s) of dead "
               f"processes ({freed / 2**20:.1f} MiB) in {directory}")
