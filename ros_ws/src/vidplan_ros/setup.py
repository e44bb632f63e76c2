from setuptools import find_packages, setup

package_name = "vidplan_ros"

# Node executables (ros2 run vidplan_ros <name>); each module has a main().
NODES = {
    "scripted_chunk_node": "vidplan_ros.scripted_chunk_node:main",
    "latency_probe": "vidplan_ros.latency_probe:main",
    "executor_node": "vidplan_ros.executor_node:main",
    "recorder_node": "vidplan_ros.recorder_node:main",
    "replay_node": "vidplan_ros.replay_node:main",
    "planner_node": "vidplan_ros.planner_node:main",
    "lifecycle_manager_node": "vidplan_ros.lifecycle_manager_node:main",
}

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vidplan developers",
    maintainer_email="dev@vidplan.invalid",
    description="vidplan rclpy nodes",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in NODES.items()]},
)
