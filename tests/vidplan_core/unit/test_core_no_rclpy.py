"""vidplan_core must never import rclpy, directly or through anything it imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "ros_ws" / "src" / "vidplan_core" / "vidplan_core"
FORBIDDEN = ("rclpy", "launch_ros", "rosidl_runtime_py")


def _modules() -> list[str]:
    mods = []
    for f in sorted(CORE.rglob("*.py")):
        rel = f.relative_to(CORE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def test_no_source_file_imports_rclpy():
    offenders = []
    for f in CORE.rglob("*.py"):
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{f.relative_to(CORE.parent)}:{node.lineno} imports {n}"
                          for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, "vidplan_core must not import ROS client libraries:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_importing_every_module_does_not_pull_in_rclpy():
    # A subprocess with rclpy made unimportable: any transitive import fails loudly.
    code = (
        "import importlib, sys\n"
        f"for m in {FORBIDDEN!r}: sys.modules[m] = None\n"
        f"mods = {_modules()!r}\n"
        "failed = []\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError as e:\n"
        "        if any(f in str(e) for f in " + repr(FORBIDDEN) + "): failed.append(f'{m}: {e}')\n"
        "        else: raise\n"
        "print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"modules importing rclpy transitively:\n{res.stdout}\n{res.stderr[-3000:]}"


def test_the_checker_detects_an_offender(tmp_path):
    # Guard against a vacuous test: the AST check must flag a file that imports rclpy.
    bad = tmp_path / "bad.py"
    bad.write_text("from rclpy.node import Node\n")
    tree = ast.parse(bad.read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in FORBIDDEN]
    assert found
