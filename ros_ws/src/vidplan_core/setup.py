from setuptools import find_packages, setup

package_name = "vidplan_core"

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
    description="vidplan library: no rclpy, no simulator.",
    license="Apache-2.0",
)
