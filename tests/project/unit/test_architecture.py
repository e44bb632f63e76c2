"""The architecture contracts (`.importlinter`, import-linter) hold, imports inside functions included; and they are
not decoration: a deliberate violation in a copy of the packages breaks them, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from import_audit import ImportAudit

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("vidplan_app", "vidplan_core", "vidplan_ros", "vidplan_sim", "vidplan_bringup")


def _lint(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not on PATH: make setup installs import-linter (requirements/base.txt)")
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([exe, "--config", str(cwd / ".importlinter"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "5 kept, 0 broken" in res.stdout


def test_a_deliberate_violation_breaks_them(tmp_path):
    for p in PACKAGES:
        shutil.copytree(ROOT / "ros_ws" / "src" / p / p, tmp_path / p,
                        ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.safetensors"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    # a library module reaching up into a ROS node, inside a function (where the old no-rclpy test looked no further)
    (tmp_path / "vidplan_core" / "_layer_violation.py").write_text(
        "def publish():\n    from vidplan_ros import conversions\n    return conversions\n")
    # and a network module importing the planner
    (tmp_path / "vidplan_core" / "models" / "_violation.py").write_text("import vidplan_core.planning.planner\n")
    # and a folder-level loop: the runtime reaching up into the planner that uses it
    (tmp_path / "vidplan_core" / "runtime" / "_violation.py").write_text(
        "def f():\n    import vidplan_core.planning.session\n")
    # and the simulator reaching up into the application's closed-loop job
    (tmp_path / "vidplan_sim" / "_violation.py").write_text("from vidplan_app.jobs import closed_loop\n")
    res = _lint(tmp_path, pythonpath=str(tmp_path))
    assert res.returncode != 0
    assert "vidplan_core._layer_violation -> vidplan_ros.conversions" in res.stdout, res.stdout[-4000:]
    assert "vidplan_core.models._violation -> vidplan_core.planning.planner" in res.stdout, res.stdout[-4000:]
    assert "vidplan_core.runtime._violation -> vidplan_core.planning.session" in res.stdout, res.stdout[-4000:]
    assert "vidplan_sim._violation -> vidplan_app.jobs.closed_loop" in res.stdout, res.stdout[-4000:]
    assert "4 broken" in res.stdout  # the layers contract sees the network module reach up too


def test_each_package_xml_declares_the_ros_packages_it_imports():
    """Every ROS package a vidplan package imports (module-level or inside a function) is an exec_depend of its
    package.xml, so rosdep installs it on a robot. (Declared but not imported is allowed: launch files and the
    executables a profile starts need packages that no Python module imports.)"""
    import re

    import grimp
    from ament_index_python.packages import get_packages_with_prefixes

    ament = set(get_packages_with_prefixes())
    graph = grimp.build_graph(*PACKAGES, include_external_packages=True)
    missing = {}
    for pkg in PACKAGES:
        imported = {dep.split(".")[0] for mod in graph.find_descendants(pkg) | {pkg}
                    for dep in graph.find_modules_directly_imported_by(mod)}
        xml = (ROOT / "ros_ws" / "src" / pkg / "package.xml").read_text()
        declared = set(re.findall(r"<(?:exec_|build_)?depend>([^<]+)</", xml))
        if gap := sorted((imported & ament) - declared - {pkg}):
            missing[pkg] = gap
    assert not missing, f"package.xml lacks exec_depend for imported ROS packages: {missing}"


# Imports inside functions: only where they defer a heavy or optional library (tests/import_audit.py).


def test_every_function_level_own_import_defers_a_heavy_library():
    audit = ImportAudit(ROOT / "ros_ws" / "src")
    found = audit.function_imports()
    assert len(found) > 20  # the walk reaches the packages (the CLI alone keeps dozens of torch-deferring imports)
    unearned = [f"{f.module}:{f.line} {f.function}() imports {f.target}" for f in audit.unearned()]
    assert not unearned, ("own modules imported inside functions that defer no heavy library; import them at module "
                          "level:\n" + "\n".join(unearned))


def test_the_import_audit_tells_a_hiding_import_from_a_deferring_one(tmp_path):
    pkg = tmp_path / "src" / "demo_pkg" / "demo_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "light.py").write_text("import json\n")
    (pkg / "heavy.py").write_text("import torch\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import heavy\n")
    (pkg / "user.py").write_text(
        "from demo_pkg import typed\n"
        "def hides():\n    from demo_pkg import light\n"
        "def defers():\n    from .heavy import torch\n"
        "class C:\n    def method(self):\n        import demo_pkg.light as lt\n")
    audit = ImportAudit(tmp_path / "src")
    assert audit.load_set("demo_pkg.typed")[1] == frozenset()  # TYPE_CHECKING imports are not executed
    by_line = {(f.line, f.target): f for f in audit.function_imports()}
    assert by_line[(5, "demo_pkg.heavy")].deferred == {"torch"}
    assert [(f.function, f.target) for f in audit.unearned()] == [("hides", "demo_pkg.light"),
                                                                   ("method", "demo_pkg.light")]
