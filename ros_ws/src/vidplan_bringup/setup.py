from glob import glob

from setuptools import find_packages, setup

package_name = "vidplan_bringup"
share = "share/" + package_name

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        (share, ["package.xml"]),
        (share + "/profiles", glob("profiles/*.yaml")),
        # launch/, urdf/ and calibration/ live at the repository top level; these folders are symlinks to them.
        (share + "/launch", glob("launch/*.launch.py")),
        (share + "/urdf", glob("urdf/*.urdf") + glob("urdf/*.xacro")),
        (share + "/calibration", glob("calibration/*.yaml")),
        # Fast DDS profile that binds every DDS socket to 127.0.0.1 (scripts/env.sh exports it)
        (share + "/config", glob("config/*.xml") + glob("config/*.rviz") + glob("config/*.json")),
        # `vidplan params PROFILE` output: every parameter of each node under the shipped profiles (params files)
        (share + "/config/params/robot", glob("config/params/robot/*.yaml")),
        (share + "/config/params/sim", glob("config/params/sim/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vidplan developers",
    maintainer_email="dev@vidplan.invalid",
    description="vidplan bring-up profiles and launch files",
    license="Apache-2.0",
)
