"""vidplan Gazebo simulation: gz-sim with a DROID world generated from the MuJoCo scene description, the FR3 from
franka_description, cameras bridged to the robot's topic names, and a JointTrajectoryController named
fr3_arm_controller.

NOT RUN ON OUR MACHINES (no Gazebo there). Written against franka_ros2 (franka_description
robots/<arm_id>/<arm_id>.urdf.xacro with ros2_control/gazebo args, as its franka_gazebo_bringup launch files use),
ros_gz_sim (gz_sim.launch.py, `create`) and ros_gz_bridge.

    ros2 launch vidplan_sim vidplan_sim_gazebo.launch.py [world:=/path/to/world.sdf] [arm_id:=fr3]
    vidplan up robot ...   # or start executor_node with joint_prefix:=fr3 and the planner yourself

The world, the wrist-camera fragment and the controller parameters default to the files installed with this launch
file (share/vidplan_sim/gazebo: seed 0, clutter 1); `python -m vidplan_sim.gazebo --seed S --clutter C --out DIR`
writes another scene's world to pass as `world:=`. The executor then needs joint_prefix:=fr3 (franka_ros2 names the
joints fr3_joint1..7); the gripper is driven through franka_gripper's actions there, not the sim's /gripper/command.
"""
# ruff: noqa: I001  (`launch` is the ROS package here, not this repository's launch/ folder)

import os

import xacro
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HERE = os.path.join(get_package_share_directory("vidplan_sim"), "gazebo")
VIEWS = ("left", "right", "wrist")


def _robot_description(arm_id, wrist_file):
    """franka_description's URDF with the wrist camera fragment (link, joint, gz sensor) appended."""
    xacro_file = os.path.join(get_package_share_directory("franka_description"), "robots", arm_id,
                              arm_id + ".urdf.xacro")
    urdf = xacro.process_file(xacro_file, mappings={"hand": "true", "ros2_control": "true", "gazebo": "true",
                                                    "ee_id": "franka_hand"}).toxml()
    with open(wrist_file) as f:
        wrist = f.read()
    body = wrist[wrist.index("<robot"):]
    body = body[body.index(">") + 1:body.rindex("</robot>")]
    return urdf[:urdf.rindex("</robot>")] + body.replace("fr3_hand", arm_id + "_hand") + "</robot>"


def _setup(context):
    arm_id = LaunchConfiguration("arm_id").perform(context)
    world = LaunchConfiguration("world").perform(context)
    controllers = LaunchConfiguration("controllers").perform(context)
    description = _robot_description(arm_id, LaunchConfiguration("wrist_camera").perform(context))
    gz = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("ros_gz_sim"), "launch",
                                                   "gz_sim.launch.py")),
        launch_arguments={"gz_args": "-r " + world}.items())
    rsp = Node(package="robot_state_publisher", executable="robot_state_publisher",
               parameters=[{"robot_description": description, "use_sim_time": True}])
    spawn = Node(package="ros_gz_sim", executable="create",
                 arguments=["-topic", "/robot_description", "-name", arm_id, "-x", "0", "-y", "0", "-z", "0"])
    bridges = ["/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock"]
    for v in VIEWS:
        bridges += ["/cameras/" + v + "/image_raw@sensor_msgs/msg/Image[gz.msgs.Image",
                    "/cameras/" + v + "/camera_info@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo"]
    bridge = Node(package="ros_gz_bridge", executable="parameter_bridge", arguments=bridges,
                  parameters=[{"use_sim_time": True}])
    spawners = [
        Node(package="controller_manager", executable="spawner", arguments=["joint_state_broadcaster"],
             parameters=[{"use_sim_time": True}]),
        Node(package="controller_manager", executable="spawner",
             arguments=["fr3_arm_controller", "--param-file", controllers, "--controller-type",
                        "joint_trajectory_controller/JointTrajectoryController"],
             parameters=[{"use_sim_time": True}]),
    ]
    return [gz, rsp, spawn, bridge, *spawners]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("arm_id", default_value="fr3", description="franka_description robot (fr3, fp3)"),
        DeclareLaunchArgument("world", default_value=os.path.join(HERE, "vidplan_droid.sdf"),
                              description="SDF world (python -m vidplan_sim.gazebo writes one per scene seed)"),
        DeclareLaunchArgument("wrist_camera", default_value=os.path.join(HERE, "wrist_camera.urdf"),
                              description="URDF fragment of the wrist camera, appended to the robot description"),
        DeclareLaunchArgument("controllers", default_value=os.path.join(HERE, "fr3_arm_controller.yaml"),
                              description="ros2_control parameters of fr3_arm_controller"),
        OpaqueFunction(function=_setup),
    ])
