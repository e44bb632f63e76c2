"""Gazebo world generator (not run here: no Gazebo): well-formed SDF/URDF/launch/YAML naming the same objects and
cameras as the MuJoCo scene; the checked-in files are up to date with the generator."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import load_calibration
from vidplan_sim.gazebo import generate, optical_to_sdf_pose
from vidplan_sim.scene import build_model, load_scene_config, sample_layout

SHIPPED = Path(__file__).resolve().parents[3] / "ros_ws" / "src" / "vidplan_sim" / "gazebo"


@pytest.mark.parametrize("seed, clutter", [(0, 1), (4, 3)])
def test_sdf_names_same_objects_and_cameras_as_mujoco(tmp_path, seed, clutter):
    paths = generate(tmp_path, seed=seed, clutter=clutter)
    root = ET.parse(paths["world"]).getroot()  # raises on malformed XML
    assert root.tag == "sdf" and root.get("version") == "1.9"
    world = root.find("world")
    models = {m.get("name"): m for m in world.findall("model")}
    cfg, calib = load_scene_config(), load_calibration()
    layout = sample_layout(cfg, seed, clutter)
    mj = build_model(cfg, layout, calib)
    mj_bodies = {mj.body(i).name for i in range(mj.nbody)}
    mj_objects = {n for n in mj_bodies if n.startswith("obj_")}
    assert {n for n in models if n.startswith("obj_")} == mj_objects
    assert {"table", "bowl"} <= set(models) and "bowl" in mj_bodies
    for o in layout.objects:
        pose = [float(x) for x in models[f"obj_{o.name}"].find("pose").text.split()]
        np.testing.assert_allclose(pose[:3], o.pos, atol=1e-5)
        diffuse = [float(x) for x in models[f"obj_{o.name}"].find("link/visual/material/diffuse").text.split()]
        np.testing.assert_allclose(diffuse, o.rgba, atol=1e-5)
    # Cameras: left/right in the world, wrist on the hand in the URDF fragment — the MuJoCo scene's three.
    sensors = {s.get("name"): s for s in world.iter("sensor")}
    wrist = ET.parse(paths["wrist"]).getroot()
    sensors.update({s.get("name"): s for s in wrist.iter("sensor")})
    assert set(sensors) == {mj.camera(i).name for i in range(mj.ncam)} == {"left", "right", "wrist"}
    for name, s in sensors.items():
        assert s.get("type") == "camera"
        assert s.find("topic").text == f"cameras/{name}/image_raw"
        assert (int(s.find("camera/image/width").text), int(s.find("camera/image/height").text)) == (320, 180)
        hfov = float(s.find("camera/horizontal_fov").text)
        assert hfov == pytest.approx(2 * np.arctan2(160, calib.cameras[name].fx), abs=1e-5)
    assert wrist.find("joint/parent").get("link") == "fr3_hand"


def test_sdf_camera_pose_looks_where_the_optical_frame_looks():
    calib = load_calibration()
    for cam in calib.cameras.values():
        T = cam.transform()
        xyz, rpy = optical_to_sdf_pose(T)
        R = Rotation.from_euler("xyz", rpy).as_matrix()
        np.testing.assert_allclose(R[:, 0], T[:3, 2], atol=1e-9)  # SDF x (view direction) = optical z
        np.testing.assert_allclose(R[:, 2], -T[:3, 1], atol=1e-9)  # SDF z (up) = −optical y
        np.testing.assert_allclose(xyz, T[:3, 3])


def test_shipped_files_are_current_and_well_formed(tmp_path):
    paths = generate(tmp_path, seed=0, clutter=1)
    for p in paths.values():
        shipped = SHIPPED / p.name
        assert shipped.is_file(), f"{shipped} missing: run `python -m vidplan_sim.gazebo --seed 0 --clutter 1`"
        assert shipped.read_text() == p.read_text(), f"{shipped} is stale: regenerate with `python -m " \
                                                      "vidplan_sim.gazebo --seed 0 --clutter 1`"
    # the launch file is static: it parses, and its default files are the shipped ones the generator writes
    launch = (SHIPPED / "vidplan_sim_gazebo.launch.py").read_text()
    tree = ast.parse(launch)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert "NOT RUN ON OUR MACHINES" in launch
    declared = {c.args[0].value: c for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert set(declared) == {"arm_id", "world", "wrist_camera", "controllers"}
    defaults = {k: ast.unparse(next(kw.value for kw in c.keywords if kw.arg == "default_value"))
                for k, c in declared.items()}
    for arg, key in (("world", "world"), ("wrist_camera", "wrist"), ("controllers", "controllers")):
        assert repr(paths[key].name) in defaults[arg], (arg, defaults[arg])
    ctrl = yaml.safe_load((SHIPPED / "fr3_arm_controller.yaml").read_text())
    assert ctrl["fr3_arm_controller"]["ros__parameters"]["joints"] == [f"fr3_joint{i}" for i in range(1, 8)]
