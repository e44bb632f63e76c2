"""Gazebo (gz-sim) counterpart of the MuJoCo scene, generated from the same scene description.

NOT RUN ON OUR MACHINES: Gazebo cannot be installed here. What is generated is checked for well-formed XML and for
naming the same objects and cameras as the MuJoCo scene (tests/vidplan_sim/unit/test_sim_gazebo.py); running it
needs gz-sim (Harmonic), ros_gz (ros_gz_sim, ros_gz_bridge) and franka_ros2 (franka_description, franka_gazebo_bringup).

Generates, for one (scene description, seed, clutter, task):

* ``<name>.sdf`` — SDF 1.9 world: ground, table (top at z = 0 in the robot base frame, i.e. the robot stands on
  it), bowl (static ring of boxes), coloured objects (dynamic, same sizes, masses and colours), the left/right
  exterior cameras (gz ``camera`` sensors from the calibration; SDF cameras look along +x with z up) and the
  Sensors/Physics/SceneBroadcaster/UserCommands systems.
* ``wrist_camera.urdf`` — a URDF fragment (link, fixed joint on ``<arm_id>_hand``, ``<gazebo>`` camera sensor) that the
  launch file appends to franka_description's robot_description, since the wrist camera rides on the robot.
* ``fr3_arm_controller.yaml`` — the JointTrajectoryController's ros2_control parameters.
The launch file beside them, ``gazebo/vidplan_sim_gazebo.launch.py``, is static (not generated): it starts gz-sim with a
world (``world:=``, default the shipped seed-0 one), spawns the FR3 from franka_description with ros2_control, loads
joint_state_broadcaster + a JointTrajectoryController named ``fr3_arm_controller`` (the topic our executor's ``jtc``
backend drives) and bridges the cameras and /clock to the robot's topic names.

CLI::

    python -m vidplan_sim.gazebo --seed 0 --clutter 1 [--task "put the red cube in the bowl"] \
        [--out ros_ws/src/vidplan_sim/gazebo] [--name vidplan_droid]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import CameraCalibration, RigCalibration, load_calibration
from vidplan_sim.scene import SceneConfig, SceneLayout, load_scene_config, sample_layout

__all__ = ["controllers_yaml", "generate", "optical_to_sdf_pose", "scene_to_sdf", "wrist_camera_urdf"]

# SDF camera link axes (x forward, y left, z up) expressed in the optical frame (z forward, x right, y down).
_SDF_FROM_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def optical_to_sdf_pose(T_parent_optical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optical-frame pose (4, 4) → (xyz [m], roll-pitch-yaw [rad]) of an SDF/URDF camera frame (looks along +x)."""
    T = np.asarray(T_parent_optical, float)
    R = T[:3, :3] @ _SDF_FROM_OPTICAL
    return T[:3, 3].copy(), Rotation.from_matrix(R).as_euler("xyz")


def _f(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.atleast_1d(v))


def _rgba(c: list[float]) -> str:
    return _f(c)


def _camera_sensor(view: str, cam: CameraCalibration, width: int, height: int, rate: float, pose: str) -> str:
    c = cam.scaled(width, height)
    hfov = 2.0 * math.atan2(c.width / 2.0, c.fx)
    return f"""<sensor name="{view}" type="camera">
          <pose>{pose}</pose>
          <always_on>1</always_on>
          <update_rate>{rate:g}</update_rate>
          <topic>cameras/{view}/image_raw</topic>
          <gz_frame_id>{escape(c.frame_id)}</gz_frame_id>
          <camera name="{view}">
            <horizontal_fov>{hfov:.6f}</horizontal_fov>
            <image><width>{c.width}</width><height>{c.height}</height><format>R8G8B8</format></image>
            <clip><near>0.02</near><far>10</far></clip>
            <camera_info_topic>cameras/{view}/camera_info</camera_info_topic>
          </camera>
        </sensor>"""


def _shape_geometry(shape: str, size: dict[str, float]) -> str:
    if shape == "cube":
        return f"<box><size>{_f([2 * size['half_size']] * 3)}</size></box>"
    if shape == "cylinder":
        return f"<cylinder><radius>{size['radius']:g}</radius><length>{2 * size['half_height']:g}</length></cylinder>"
    return f"<sphere><radius>{size['radius']:g}</radius></sphere>"


def _inertia(shape: str, size: dict[str, float], m: float) -> tuple[float, float, float]:
    if shape == "cube":
        a = 2 * size["half_size"]
        i = m * a * a / 6.0
        return i, i, i
    if shape == "cylinder":
        r, h = size["radius"], 2 * size["half_height"]
        ixx = m * (3 * r * r + h * h) / 12.0
        return ixx, ixx, 0.5 * m * r * r
    i = 0.4 * m * size["radius"] ** 2
    return i, i, i


def scene_to_sdf(cfg: SceneConfig, layout: SceneLayout, calibration: RigCalibration, width: int = 320,
                 height: int = 180, camera_rate_hz: float = 15.0, name: str = "vidplan_droid") -> str:
    """The world as SDF 1.9 text (see module docstring)."""
    t = cfg.table
    models = []
    models.append("""    <model name="ground_plane">
      <static>true</static>
      <pose>0 0 -0.75 0 0 0</pose>
      <link name="link">
        <collision name="collision"><geometry><plane><normal>0 0 1</normal><size>6 6</size></plane></geometry>
        </collision>
        <visual name="visual"><geometry><plane><normal>0 0 1</normal><size>6 6</size></plane></geometry>
          <material><ambient>0.45 0.47 0.5 1</ambient><diffuse>0.45 0.47 0.5 1</diffuse></material></visual>
      </link>
    </model>""")
    tsize = _f([t.size[0], t.size[1], t.thickness])
    models.append(f"""    <model name="table">
      <static>true</static>
      <pose>{_f([t.center[0], t.center[1], -t.thickness / 2])} 0 0 0</pose>
      <link name="link">
        <collision name="collision"><geometry><box><size>{tsize}</size></box></geometry>
          <surface><friction><ode><mu>1.0</mu><mu2>1.0</mu2></ode></friction></surface></collision>
        <visual name="visual"><geometry><box><size>{tsize}</size></box></geometry>
          <material><ambient>{_rgba(t.rgba)}</ambient><diffuse>{_rgba(t.rgba)}</diffuse></material></visual>
      </link>
    </model>""")
    b = cfg.bowl
    r_mid = b.radius + b.wall / 2
    seg = 2 * (r_mid * math.tan(math.pi / b.segments) + b.wall / 2)
    parts = [f"""        <collision name="base_collision"><pose>0 0 0.003 0 0 0</pose>
          <geometry><cylinder><radius>{b.radius + b.wall:g}</radius><length>0.006</length></cylinder></geometry>
        </collision>
        <visual name="base_visual"><pose>0 0 0.003 0 0 0</pose>
          <geometry><cylinder><radius>{b.radius + b.wall:g}</radius><length>0.006</length></cylinder></geometry>
          <material><ambient>{_rgba(b.rgba)}</ambient><diffuse>{_rgba(b.rgba)}</diffuse></material></visual>"""]
    for k in range(b.segments):
        a = 2 * math.pi * k / b.segments
        pose = f"{_f([r_mid * math.cos(a), r_mid * math.sin(a), b.height / 2])} 0 0 {a:.6f}"
        geo = f"<geometry><box><size>{_f([b.wall, seg, b.height])}</size></box></geometry>"
        parts.append(f"""        <collision name="wall{k}_collision"><pose>{pose}</pose>{geo}</collision>
        <visual name="wall{k}_visual"><pose>{pose}</pose>{geo}
          <material><ambient>{_rgba(b.rgba)}</ambient><diffuse>{_rgba(b.rgba)}</diffuse></material></visual>""")
    models.append(f"""    <model name="bowl">
      <static>true</static>
      <pose>{_f([layout.bowl_pos[0], layout.bowl_pos[1], 0.0])} 0 0 0</pose>
      <link name="link">
{chr(10).join(parts)}
      </link>
    </model>""")
    mu = cfg.object_friction[0]
    for o in layout.objects:
        ixx, iyy, izz = _inertia(o.shape, o.size, cfg.object_mass)
        geo = _shape_geometry(o.shape, o.size)
        models.append(f"""    <model name="obj_{o.name}">
      <pose>{_f(o.pos)} 0 0 {o.yaw:.6f}</pose>
      <link name="link">
        <inertial><mass>{cfg.object_mass:g}</mass>
          <inertia><ixx>{ixx:.6g}</ixx><iyy>{iyy:.6g}</iyy><izz>{izz:.6g}</izz><ixy>0</ixy><ixz>0</ixz><iyz>0</iyz>
          </inertia></inertial>
        <collision name="collision"><geometry>{geo}</geometry>
          <surface><friction><ode><mu>{mu:g}</mu><mu2>{mu:g}</mu2></ode></friction></surface></collision>
        <visual name="visual"><geometry>{geo}</geometry>
          <material><ambient>{_rgba(o.rgba)}</ambient><diffuse>{_rgba(o.rgba)}</diffuse></material></visual>
      </link>
    </model>""")
    for view in ("left", "right"):
        cam = calibration.cameras[view]
        if cam.parent_frame != calibration.base_frame:
            raise ValueError(f"camera {view} must be calibrated in {calibration.base_frame} for the world file, "
                             f"got {cam.parent_frame}")
        xyz, rpy = optical_to_sdf_pose(cam.transform())
        sensor = _camera_sensor(view, cam, width, height, camera_rate_hz, "0 0 0 0 0 0")
        models.append(f"""    <model name="{view}_camera">
      <static>true</static>
      <pose>{_f(xyz)} {_f(rpy)}</pose>
      <link name="link">
        <visual name="body"><geometry><box><size>0.03 0.09 0.03</size></box></geometry>
          <material><ambient>0.1 0.1 0.1 1</ambient><diffuse>0.1 0.1 0.1 1</diffuse></material></visual>
        {sensor}
      </link>
    </model>""")
    model_text = "\n".join(models)
    return f"""<?xml version="1.0"?>
<!-- GENERATED by `python -m vidplan_sim.gazebo` from the vidplan_sim scene description (seed {layout.seed},
     clutter {layout.clutter}, task "{escape(layout.task.instruction)}"). Do not edit; regenerate.
     NOT RUN ON OUR MACHINES (no Gazebo there): it is checked for well-formedness and contents only.
     Frame: the world origin is the robot base (panda_link0 / fr3_link0); the table top is z = 0. -->
<sdf version="1.9">
  <world name="{escape(name)}">
    <physics name="1ms" type="ignored"><max_step_size>{cfg.physics.timestep:g}</max_step_size>
      <real_time_factor>1.0</real_time_factor></physics>
    <plugin filename="gz-sim-physics-system" name="gz::sim::systems::Physics"/>
    <plugin filename="gz-sim-user-commands-system" name="gz::sim::systems::UserCommands"/>
    <plugin filename="gz-sim-scene-broadcaster-system" name="gz::sim::systems::SceneBroadcaster"/>
    <plugin filename="gz-sim-sensors-system" name="gz::sim::systems::Sensors">
      <render_engine>ogre2</render_engine>
    </plugin>
    <gravity>0 0 -9.81</gravity>
    <scene><ambient>0.5 0.5 0.5 1</ambient><background>0.2 0.2 0.2 1</background>
      <shadows>{'true' if cfg.render.shadows else 'false'}</shadows></scene>
    <light type="directional" name="key">
      <cast_shadows>{'true' if cfg.render.shadows else 'false'}</cast_shadows>
      <pose>0.4 0 1.6 0 0 0</pose><diffuse>0.8 0.8 0.8 1</diffuse><direction>0 0 -1</direction>
    </light>
{model_text}
  </world>
</sdf>
"""


def wrist_camera_urdf(calibration: RigCalibration, width: int = 320, height: int = 180,
                      camera_rate_hz: float = 15.0, hand_link: str = "fr3_hand") -> str:
    """URDF fragment: the wrist camera on ``hand_link`` with a gz camera sensor (appended to robot_description)."""
    cam = calibration.cameras["wrist"]
    xyz, rpy = optical_to_sdf_pose(cam.transform())
    sensor = _camera_sensor("wrist", cam, width, height, camera_rate_hz, "0 0 0 0 0 0")
    return f"""<?xml version="1.0"?>
<!-- GENERATED by `python -m vidplan_sim.gazebo`: DROID wrist camera on {hand_link} (calibration parent_frame
     {cam.parent_frame}; the hand frames of panda and fr3 agree). vidplan_sim_gazebo.launch.py appends the
     elements below to franka_description's robot description. NOT RUN ON OUR MACHINES. -->
<robot name="vidplan_wrist_camera">
  <link name="wrist_camera_link">
    <inertial><mass value="0.05"/><inertia ixx="1e-5" iyy="1e-5" izz="1e-5" ixy="0" ixz="0" iyz="0"/></inertial>
    <visual><geometry><box size="0.02 0.06 0.02"/></geometry></visual>
  </link>
  <joint name="wrist_camera_joint" type="fixed">
    <parent link="{hand_link}"/>
    <child link="wrist_camera_link"/>
    <origin xyz="{_f(xyz)}" rpy="{_f(rpy)}"/>
  </joint>
  <gazebo reference="wrist_camera_link">
    {sensor}
  </gazebo>
</robot>
"""


def controllers_yaml(arm_id: str = "fr3") -> str:
    """ros2_control parameters of the JointTrajectoryController the executor's ``jtc`` backend drives."""
    joints = ", ".join(f"{arm_id}_joint{i}" for i in range(1, 8))
    gains = "\n".join(f"        {arm_id}_joint{i}: {{p: {p}, d: {d}, i: 0.0, i_clamp: 1.0}}"
                      for i, (p, d) in enumerate([(600, 30), (600, 30), (600, 30), (600, 30), (250, 10), (150, 10),
                                                  (50, 5)], start=1))
    return f"""# GENERATED by `python -m vidplan_sim.gazebo`. NOT RUN ON OUR MACHINES (no Gazebo there).
# JointTrajectoryController on the effort interfaces franka_ros2's Gazebo hardware exposes; the executor's jtc
# backend publishes on /fr3_arm_controller/joint_trajectory. Gains are starting values: tune them on your set-up.
fr3_arm_controller:
  ros__parameters:
    type: joint_trajectory_controller/JointTrajectoryController
    joints: [{joints}]
    command_interfaces: [effort]
    state_interfaces: [position, velocity]
    allow_partial_joints_goal: false
    gains:
{gains}
"""


def generate(out_dir: str | Path, seed: int = 0, clutter: int = 1, task: str | None = None,
             name: str = "vidplan_droid", scene_file: str | None = None, calibration_file: str | None = None,
             width: int = 320, height: int = 180, camera_rate_hz: float = 15.0) -> dict[str, Path]:
    """Write the world, the wrist-camera fragment and the controller parameters into ``out_dir``; returns their
    paths (keys ``world``, ``wrist``, ``controllers``). Start it with ``ros2 launch vidplan_sim
    vidplan_sim_gazebo.launch.py world:=<world>``."""
    cfg = load_scene_config(scene_file)
    calib = load_calibration(calibration_file)
    layout = sample_layout(cfg, seed, clutter, task)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"world": out / f"{name}.sdf", "wrist": out / "wrist_camera.urdf",
             "controllers": out / "fr3_arm_controller.yaml"}
    paths["world"].write_text(scene_to_sdf(cfg, layout, calib, width, height, camera_rate_hz, name))
    paths["wrist"].write_text(wrist_camera_urdf(calib, width, height, camera_rate_hz))
    paths["controllers"].write_text(controllers_yaml())
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the Gazebo world, wrist camera and controller files from the "
                                 "vidplan_sim scene description (not run here: no Gazebo).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clutter", type=int, default=1)
    ap.add_argument("--task", default=None, help="instruction; default: the seed's own task")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "gazebo"))
    ap.add_argument("--name", default="vidplan_droid")
    ap.add_argument("--scene-file", default=None)
    ap.add_argument("--calibration-file", default=None)
    args = ap.parse_args(argv)
    paths = generate(args.out, args.seed, args.clutter, args.task, args.name, args.scene_file, args.calibration_file)
    for k, p in paths.items():
        print(f"{k}: {p}")


if __name__ == "__main__":
    main()
