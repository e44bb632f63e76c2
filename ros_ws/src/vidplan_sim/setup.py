from glob import glob

from setuptools import find_packages, setup

package_name = "vidplan_sim"

# Node executables (ros2 run vidplan_sim <name>).
NODES: dict[str, str] = {
    "sim_node": "vidplan_sim.sim_node:main",
}

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/scenes", glob("scenes/*.yaml")),
        ("share/" + package_name + "/gazebo", glob("gazebo/*.*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vidplan developers",
    maintainer_email="dev@vidplan.invalid",
    description="vidplan MuJoCo simulation counterpart",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in NODES.items()]},
)
