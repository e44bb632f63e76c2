"""The transforms of a URDF's joint tree at given joint positions — what ``robot_state_publisher`` puts on
``/tf`` and ``/tf_static``, for the sim (the robot runs robot_state_publisher itself).

Fixed joints (the flange, hand, TCP and the three camera optical frames of ``urdf/panda_droid.urdf``) never change:
:meth:`RobotStateModel.static_transforms`. Revolute and prismatic joints (arm, fingers; mimic joints follow their
leader): :meth:`RobotStateModel.transforms` at the given positions. Every transform is parent link → child link,
(4, 4) homogeneous [m], with URDF semantics: ``T = origin(xyz, rpy) · motion(axis, q)``.

No ROS import. Parsing with the standard library's ElementTree: the URDF is the repository's own file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from vidplan_core.kinematics import default_urdf_path

__all__ = ["RobotStateModel", "UrdfJoint"]


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint: ``origin`` (4, 4) parent → joint frame, unit ``axis`` (3,), ``mimic`` = (leader, multiplier,
    offset) or None."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray
    mimic: tuple[str, float, float] | None

    def transform(self, q: float = 0.0) -> np.ndarray:
        """(4, 4) parent link → child link at joint position ``q`` [rad or m]."""
        m = np.eye(4)
        if self.type in ("revolute", "continuous"):
            m[:3, :3] = Rotation.from_rotvec(self.axis * q).as_matrix()
        elif self.type == "prismatic":
            m[:3, 3] = self.axis * q
        return self.origin @ m


def _origin(el: ET.Element | None) -> np.ndarray:
    T = np.eye(4)
    if el is not None:
        T[:3, 3] = [float(v) for v in el.get("xyz", "0 0 0").split()]
        # URDF rpy: fixed-axis roll, pitch, yaw = extrinsic xyz
        T[:3, :3] = Rotation.from_euler("xyz", [float(v) for v in el.get("rpy", "0 0 0").split()]).as_matrix()
    return T


class RobotStateModel:
    """The joint tree of a URDF.

    Args:
        urdf_path: the URDF (default: the installed ``urdf/panda_droid.urdf``).
    Raises:
        ValueError: a joint without parent/child, or a mimic of an unknown joint.
    """

    def __init__(self, urdf_path: str | Path | None = None):

        self.urdf_path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
        root = ET.parse(self.urdf_path).getroot()
        joints = []
        for j in root.findall("joint"):
            parent, child = j.find("parent"), j.find("child")
            if parent is None or child is None:
                raise ValueError(f"{self.urdf_path}: joint {j.get('name')!r} lacks a parent or child link")
            axis_el = j.find("axis")
            axis = np.array([float(v) for v in (axis_el.get("xyz") if axis_el is not None else "1 0 0").split()])
            mim = j.find("mimic")
            mimic = None if mim is None else (mim.get("joint"), float(mim.get("multiplier", 1.0)),
                                              float(mim.get("offset", 0.0)))
            joints.append(UrdfJoint(j.get("name"), j.get("type"), parent.get("link"), child.get("link"),
                                    _origin(j.find("origin")), axis / max(np.linalg.norm(axis), 1e-12), mimic))
        self.joints = joints
        names = {j.name for j in joints}
        bad = [j.name for j in joints if j.mimic is not None and j.mimic[0] not in names]
        if bad:
            raise ValueError(f"{self.urdf_path}: joints {bad} mimic unknown joints")
        self.moving = [j for j in joints if j.type != "fixed"]
        self.fixed = [j for j in joints if j.type == "fixed"]
        children = {j.child for j in joints}
        self.root = next(j.parent for j in joints if j.parent not in children)

    @property
    def actuated_names(self) -> list[str]:
        """Names of the moving joints that take a position (mimic joints follow theirs)."""
        return [j.name for j in self.moving if j.mimic is None]

    def static_transforms(self) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, (4, 4)) of every fixed joint (for /tf_static)."""
        return [(j.parent, j.child, j.transform()) for j in self.fixed]

    def transforms(self, positions: Mapping[str, float]) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, (4, 4)) of every moving joint at ``positions`` (joint name → rad or m).

        Raises:
            ValueError: an actuated joint missing from ``positions``.
        """
        missing = [n for n in self.actuated_names if n not in positions]
        if missing:
            raise ValueError(f"no position for joint(s) {missing}")
        out = []
        for j in self.moving:
            if j.mimic is None:
                q = float(positions[j.name])
            else:
                leader, mult, off = j.mimic
                q = mult * float(positions[leader]) + off
            out.append((j.parent, j.child, j.transform(q)))
        return out

    def frame_pose(self, frame: str, positions: Mapping[str, float]) -> np.ndarray:
        """(4, 4) pose of ``frame`` in the root link, composed along the tree (for checks and tests)."""
        by_child = {c: (p, T) for p, c, T in [*self.static_transforms(), *self.transforms(positions)]}
        T = np.eye(4)
        while frame != self.root:
            if frame not in by_child:
                raise ValueError(f"frame '{frame}' is not in {self.urdf_path.name}")
            parent, Tpc = by_child[frame]
            T = Tpc @ T
            frame = parent
        return T
