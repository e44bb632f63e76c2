"""The ``vidplan`` command line: one entry point, one sub-command module per job.

Sub-command modules register themselves on :data:`app`; heavy libraries (torch, mujoco) are imported inside
the commands so ``vidplan --help`` and ``vidplan up`` start fast.
"""

from __future__ import annotations

import sys

import typer

from vidplan_core.config import ConfigError

app = typer.Typer(
    name="vidplan",
    help="Video-world-model planning for a Franka arm (DROID setup): bring-up, simulation, training, export, "
    "evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """vidplan: video-world-model planning for a Franka arm."""


# Register sub-commands (each module adds its commands to `app`).
from vidplan_app.cli import data as _data  # noqa: E402,F401
from vidplan_app.cli import demo as _demo  # noqa: E402,F401
from vidplan_app.cli import eval as _eval  # noqa: E402,F401
from vidplan_app.cli import export as _export  # noqa: E402,F401
from vidplan_app.cli import imports as _imports  # noqa: E402,F401
from vidplan_app.cli import serve as _serve  # noqa: E402,F401
from vidplan_app.cli import train as _train  # noqa: E402,F401
from vidplan_app.cli import up as _up  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Configuration errors exit with code 2 and a message naming file/key/reason."""
    try:
        app(args=argv, standalone_mode=True)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
