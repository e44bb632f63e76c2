"""Scene description (YAML + seed + clutter level) → object layout → MuJoCo model (``MjSpec``).

* :class:`SceneConfig` — the scene description (``scenes/default.yaml``; schema errors are
  :class:`vidplan_core.config.ConfigError` naming file, key and reason).
* :func:`sample_layout` — deterministic object placement from a seed: the task's target object, distractors
  (0, 2, 4, 7 for clutter levels 0..3 by default; never the target's colour *and* shape), the bowl; no overlaps.
* :func:`build_spec` / :func:`build_model` — the Menagerie Franka Panda (its ``link0`` = ``panda_link0`` at the
  world origin), a table whose top is z = 0, a static bowl (a ring of boxes on a base plate), free-floating
  objects, and the three DROID cameras from the calibration (left/right in the base frame, wrist on the hand).

Frames: MuJoCo's world = panda_link0 (x forward, y left, z up). The Menagerie ``hand`` body equals the URDF's
``panda_hand`` (7th link + 0.107 m along z, rotated −π/4 about z; z along the fingers). The TCP is the hand frame
moved :data:`TCP_OFFSET` along its z (franka_ros convention, between the fingertips). Camera optical frames (z
forward, y down) become MuJoCo cameras (looking along −z with y up) by a rotation of π about x. MuJoCo
quaternions are [w, x, y, z]; calibration quaternions are ROS [x, y, z, w].
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import RigCalibration
from vidplan_core.config import ConfigError, load_model, validate_model
from vidplan_core.paths import share_file
from vidplan_sim.tasks import TASK_KINDS, Task, parse_instruction, sample_task

__all__ = [
    "ARM_JOINTS",
    "HOME_Q",
    "TCP_OFFSET",
    "ObjectSpec",
    "SceneConfig",
    "SceneLayout",
    "build_model",
    "build_spec",
    "default_scene_path",
    "load_scene_config",
    "menagerie_dir",
    "optical_to_mujoco_quat",
    "sample_layout",
]

#: franka_ros "ready" pose [rad] (Menagerie's own home has q7 = −π/4; ours is +π/4).
HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
#: TCP offset along the hand's z axis [m] (franka_ros ``panda_hand_tcp``).
TCP_OFFSET = 0.1034
#: Stiffness multiplier of Menagerie's gripper servo (see build_spec).
GRIPPER_STIFFNESS_SCALE = 5.0
#: MuJoCo (Menagerie) names of the arm joints, in order.
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
#: Menagerie body names of the robot (link0 … hand, fingers) — they get gravity compensation.
ROBOT_BODIES = tuple([f"link{i}" for i in range(8)] + ["hand", "left_finger", "right_finger"])
#: Camera name → MuJoCo body it hangs on, for parent frames of the calibration.
_PARENT_BODY = {"panda_link0": None, "panda_hand": "hand"}


def _pair(v: list[float], name: str) -> list[float]:
    if len(v) != 2 or v[0] >= v[1]:
        raise ValueError(f"{name} must be [min, max] with min < max, got {v}")
    return v


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    center: list[float] = Field(default=[0.35, 0.0], min_length=2, max_length=2, description="[m] x, y")
    size: list[float] = Field(default=[1.3, 1.4], min_length=2, max_length=2, description="[m] extent x, y")
    thickness: float = Field(0.05, gt=0)
    rgba: list[float] = Field(default=[0.62, 0.5, 0.38, 1.0], min_length=4, max_length=4)


class WorkspaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: list[float] = Field(default=[0.38, 0.66], description="[m] min, max")
    y: list[float] = Field(default=[-0.26, 0.26], description="[m] min, max")

    @field_validator("x", "y")
    @classmethod
    def _range(cls, v: list[float]) -> list[float]:
        return _pair(v, "workspace range")


class BowlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    radius: float = Field(0.075, gt=0.03, lt=0.2, description="[m] inner radius")
    height: float = Field(0.045, gt=0.005, lt=0.2, description="[m] wall height")
    wall: float = Field(0.008, gt=0.001, lt=0.05, description="[m] wall thickness")
    segments: int = Field(16, ge=6, le=64)
    rgba: list[float] = Field(default=[0.85, 0.85, 0.88, 1.0], min_length=4, max_length=4)


class ShapesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cube: dict[str, float] = Field(default={"half_size": 0.02})
    cylinder: dict[str, float] = Field(default={"radius": 0.02, "half_height": 0.025})
    ball: dict[str, float] = Field(default={"radius": 0.022})

    @model_validator(mode="after")
    def _keys(self) -> ShapesConfig:
        need = {"cube": {"half_size"}, "cylinder": {"radius", "half_height"}, "ball": {"radius"}}
        for shape, keys in need.items():
            got = getattr(self, shape)
            if set(got) != keys:
                raise ValueError(f"{shape} needs exactly the keys {sorted(keys)}, got {sorted(got)}")
            if any(not 0.005 <= v <= 0.04 for v in got.values()):
                raise ValueError(f"{shape} sizes must lie in [0.005, 0.04] m (graspable), got {got}")
        return self


class PhysicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timestep: float = Field(0.002, gt=0, le=0.01, description="[s]")


class RenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    robot_meshes: Literal["visual", "collision"] = Field(
        "collision", description="visual: Menagerie's detailed meshes (135k triangles); collision: its convex hulls "
        "(3k triangles, ~4× faster on a CPU rasteriser, blockier robot)")
    shadows: bool = False
    reflections: bool = False
    msaa_samples: int = Field(0, ge=0, le=16)
    skybox: bool = False


class SceneConfig(BaseModel):
    """Scene description (see ``scenes/default.yaml`` for every field with units)."""

    model_config = ConfigDict(extra="forbid")
    table: TableConfig = TableConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()
    bowl: BowlConfig = BowlConfig()
    shapes: ShapesConfig = ShapesConfig()
    object_mass: float = Field(0.05, gt=0, le=1.0)
    object_friction: list[float] = Field(default=[1.2, 0.01, 0.0005], min_length=3, max_length=3)
    colours: dict[str, list[float]] = Field(min_length=6)
    clutter_distractors: list[int] = Field(default=[0, 2, 4, 7], min_length=4, max_length=4)
    min_gap: float = Field(0.025, ge=0)
    push_distance: float = Field(0.08, gt=0)
    physics: PhysicsConfig = PhysicsConfig()
    render: RenderConfig = RenderConfig()

    @field_validator("colours")
    @classmethod
    def _colours(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, rgba in v.items():
            if not name.isalpha() or not name.islower():
                raise ValueError(f"colour name {name!r} must be one lower-case word")
            if len(rgba) != 4 or not all(0 <= c <= 1 for c in rgba):
                raise ValueError(f"colour {name!r} must be rgba with 4 values in [0, 1], got {rgba}")
        return v

    @field_validator("clutter_distractors")
    @classmethod
    def _clutter(cls, v: list[int]) -> list[int]:
        if v[0] != 0 or any(b < a for a, b in itertools.pairwise(v)) or v[-1] > 12:
            raise ValueError(f"clutter_distractors must start at 0, not decrease and stay <= 12, got {v}")
        return v

    @property
    def shape_names(self) -> list[str]:
        return ["cube", "cylinder", "ball"]

    @property
    def colour_names(self) -> list[str]:
        return list(self.colours)


def default_scene_path() -> Path:
    """``scenes/default.yaml`` of the installed package (ament share), else of the source tree."""
    return share_file("vidplan_sim", "scenes/default.yaml",
                      Path(__file__).resolve().parents[1] / "scenes" / "default.yaml")


def load_scene_config(path: str | Path | None = None) -> SceneConfig:
    """Load and validate a scene description (default: :func:`default_scene_path`)."""
    return load_model(SceneConfig, path or default_scene_path())


def menagerie_dir() -> Path:
    """Directory of the Menagerie Franka Panda (``$VIDPLAN_MENAGERIE_DIR``, else ``<repo>/.cache/menagerie/...``)."""
    env = os.environ.get("VIDPLAN_MENAGERIE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[4] / ".cache" / "menagerie" / "franka_emika_panda")
    for c in candidates:
        if (c / "panda.xml").is_file():
            return c
    raise FileNotFoundError(f"Franka Panda MJCF (panda.xml) not found in {[str(c) for c in candidates]}; run "
                            "`make setup` (it extracts MuJoCo Menagerie's franka_emika_panda) or set "
                            "VIDPLAN_MENAGERIE_DIR")


# ----------------------------------------------------------------------------------------------------- layout


@dataclass
class ObjectSpec:
    """One free-floating object. ``pos`` is its initial centre [m] in panda_link0, ``yaw`` [rad] about z."""

    name: str
    colour: str
    shape: str
    size: dict[str, float]
    pos: np.ndarray
    yaw: float
    rgba: list[float]

    @property
    def radius(self) -> float:
        """Horizontal bounding radius [m]."""
        if self.shape == "cube":
            return float(self.size["half_size"] * np.sqrt(2))
        return float(self.size["radius"])

    @property
    def half_width(self) -> float:
        """Narrowest horizontal half-extent [m]: what a centred grasp closes the fingers on (cube: half its side,
        cylinder and ball: the radius)."""
        return float(self.size["half_size"] if self.shape == "cube" else self.size["radius"])

    @property
    def half_height(self) -> float:
        """Half of the vertical extent [m] (the centre height when resting on the table)."""
        return float({"cube": self.size.get("half_size", 0), "cylinder": self.size.get("half_height", 0),
                      "ball": self.size.get("radius", 0)}[self.shape])


@dataclass
class SceneLayout:
    """A sampled scene: task, target object name, all objects (target first) and the bowl centre [m]."""

    seed: int
    clutter: int
    task: Task
    objects: list[ObjectSpec]
    bowl_pos: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def target(self) -> ObjectSpec:
        return self.objects[0]

    def object(self, name: str) -> ObjectSpec:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object {name!r} in the scene; objects: {[o.name for o in self.objects]}")


def _resolve_task(cfg: SceneConfig, rng: np.random.Generator, task: Task | str | None) -> Task:
    if task is None or (isinstance(task, str) and not task.strip()):
        return sample_task(rng, cfg.colour_names, cfg.shape_names, TASK_KINDS)
    if isinstance(task, str):
        return parse_instruction(task, cfg.colour_names, cfg.shape_names)
    if task.colour not in cfg.colours or task.shape not in cfg.shape_names:
        raise ValueError(f"task {task.instruction!r} names an object outside the scene's colours "
                         f"{cfg.colour_names} / shapes {cfg.shape_names}")
    return task


def sample_layout(cfg: SceneConfig, seed: int, clutter: int = 1, task: Task | str | None = None,
                  max_tries: int = 500, exclude: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
                  ) -> SceneLayout:
    """Place the bowl, the target and ``cfg.clutter_distractors[clutter]`` distractors without overlaps.

    Deterministic in (cfg, seed, clutter, task). With ``task=None`` (or "") the task is drawn from the seed.
    Push targets get a free corridor (no object or bowl within 0.22 m in the push direction) so a push can
    succeed; put targets are placed apart from the bowl.

    ``exclude``: (colour, shape) pairs never used as distractors (held-out combinations of a training set; the
    target is the caller's choice).

    Raises:
        ValueError: bad clutter level or instruction, or no valid placement within ``max_tries`` attempts.
    """
    if not 0 <= clutter < len(cfg.clutter_distractors):
        raise ValueError(f"clutter must be in 0..{len(cfg.clutter_distractors) - 1}, got {clutter}")
    rng = np.random.default_rng(seed)
    task = _resolve_task(cfg, rng, task)
    n_dist = cfg.clutter_distractors[clutter]
    # Distractors: any (colour, shape) except the target's, so the instruction names exactly one object.
    combos = [(c, s) for c in cfg.colour_names for s in cfg.shape_names
              if (c, s) != (task.colour, task.shape) and (c, s) not in exclude]
    picks = rng.choice(len(combos), size=min(n_dist, len(combos)), replace=False)
    kinds = [(task.colour, task.shape)] + [combos[i] for i in picks]
    wx, wy = cfg.workspace.x, cfg.workspace.y
    bowl_r = cfg.bowl.radius + cfg.bowl.wall
    for _attempt in range(max_tries):
        bowl = np.array([rng.uniform(*wx), rng.uniform(*wy), 0.0])
        placed: list[ObjectSpec] = []
        ok = True
        for i, (colour, shape) in enumerate(kinds):
            size = dict(getattr(cfg.shapes, shape))
            spec = ObjectSpec(name=f"{colour}_{shape}", colour=colour, shape=shape, size=size, pos=np.zeros(3),
                              yaw=float(rng.uniform(-np.pi / 4, np.pi / 4)), rgba=list(cfg.colours[colour]))
            for _ in range(60):
                xy = np.array([rng.uniform(wx[0], wx[1]), rng.uniform(wy[0], wy[1])])
                if np.linalg.norm(xy - bowl[:2]) < bowl_r + spec.radius + cfg.min_gap:
                    continue
                if any(np.linalg.norm(xy - o.pos[:2]) < o.radius + spec.radius + cfg.min_gap for o in placed):
                    continue
                if i == 0 and task.kind == "push" and not _corridor_free(xy, task.push_sign, bowl[:2], bowl_r, wy):
                    continue
                if i > 0 and task.kind == "push" and not _corridor_free(
                        placed[0].pos[:2], task.push_sign, xy, spec.radius, None):
                    continue
                spec.pos = np.array([xy[0], xy[1], spec.half_height + 0.001])
                placed.append(spec)
                break
            else:
                ok = False
                break
        if ok:
            return SceneLayout(seed=seed, clutter=clutter, task=task, objects=placed, bowl_pos=bowl,
                               meta={"attempt": _attempt})
    raise ValueError(f"could not place {len(kinds)} objects and the bowl without overlap for seed {seed}, clutter "
                     f"{clutter} in {max_tries} attempts; enlarge the workspace or lower clutter_distractors")


def _corridor_free(xy: np.ndarray, sign: float, other_xy: np.ndarray, other_r: float,
                   wy: list[float] | None) -> bool:
    """Push corridor: 0.22 m from the target towards ``sign``·y (and 0.08 m behind for the pusher) stays free."""
    if wy is not None and not (wy[0] - 0.04 <= xy[1] + sign * 0.14 <= wy[1] + 0.04):
        return False
    dx = abs(other_xy[0] - xy[0])
    along = (other_xy[1] - xy[1]) * sign
    return not (dx < 0.06 + other_r and -0.10 - other_r < along < 0.22 + other_r)


# ----------------------------------------------------------------------------------------------------- model


def optical_to_mujoco_quat(T_parent_optical: np.ndarray) -> np.ndarray:
    """Quaternion [w, x, y, z] of the MuJoCo camera frame for an optical frame pose (4×4 in the parent frame).

    MuJoCo cameras look along their −z with +y up; optical frames look along +z with +y down: rotate by π
    about the optical x axis.
    """
    R = np.asarray(T_parent_optical, float)[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])


def _quat_wxyz_yaw(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def build_spec(cfg: SceneConfig, layout: SceneLayout, calibration: RigCalibration, width: int = 320,
               height: int = 180, panda_dir: str | Path | None = None):
    """Compose the scene as a ``mujoco.MjSpec`` (not compiled). See the module docstring for frames."""
    import mujoco

    pdir = Path(panda_dir) if panda_dir else menagerie_dir()
    spec = mujoco.MjSpec.from_file(str(pdir / "panda.xml"))
    spec.modelname = "vidplan_droid_scene"
    spec.meshdir = str(pdir / "assets")  # absolute: the spec may be saved elsewhere (to_xml keeps it relative)
    spec.option.timestep = cfg.physics.timestep
    spec.visual.global_.offwidth = max(int(width), 640)
    spec.visual.global_.offheight = max(int(height), 480)
    spec.visual.quality.shadowsize = 4096 if cfg.render.shadows else 0
    spec.visual.quality.offsamples = cfg.render.msaa_samples
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    if cfg.render.robot_meshes == "collision":  # shown instead of the visual meshes: give them the robot's colours
        for g in spec.geoms:
            if g.classname.name == "collision" or g.group == 3:
                g.rgba = [0.92, 0.92, 0.92, 1.0]
    # Gravity compensation on the arm, as the Franka's own controller does (position tracking without sag).
    for body in spec.bodies:
        if body.name in ROBOT_BODIES:
            body.gravcomp = 1.0
    # Menagerie's keyframe has 9 qpos values; free-floating objects add more, and our home differs (q7 = +π/4).
    for key in list(spec.keys):
        spec.delete(key)

    # Menagerie's gripper is a position servo of 100 N/m on the finger tendon: closed on a 4 cm object it squeezes
    # with ~1 N per finger and objects slip out when the arm accelerates. A real Franka Hand grasps with 20–70 N;
    # 5× stiffer (same 0..255 command range, same 100 N force limit) gives ~5 N per finger.
    grip = spec.actuator("actuator8")
    grip.gainprm[0] = grip.gainprm[0] * GRIPPER_STIFFNESS_SCALE
    grip.biasprm[1] = grip.biasprm[1] * GRIPPER_STIFFNESS_SCALE
    grip.biasprm[2] = grip.biasprm[2] * GRIPPER_STIFFNESS_SCALE

    hand = spec.body("hand")
    tcp = hand.add_site()
    tcp.name = "tcp"
    tcp.pos = [0.0, 0.0, TCP_OFFSET]
    tcp.size = [0.004, 0.004, 0.004]
    tcp.rgba = [1, 0, 0, 0]
    tcp.group = 4

    wb = spec.worldbody
    # Table (top at z = 0) and a floor far below for a neutral background.
    t = cfg.table
    table = wb.add_geom()
    table.name = "table"
    table.type = mujoco.mjtGeom.mjGEOM_BOX
    table.size = [t.size[0] / 2, t.size[1] / 2, t.thickness / 2]
    table.pos = [t.center[0], t.center[1], -t.thickness / 2]
    table.rgba = t.rgba
    table.friction = [1.0, 0.005, 0.0001]
    floor = wb.add_geom()
    floor.name = "floor"
    floor.type = mujoco.mjtGeom.mjGEOM_PLANE
    floor.size = [3, 3, 0.1]
    floor.pos = [0, 0, -0.75]
    floor.rgba = [0.45, 0.47, 0.5, 1]
    light = wb.add_light()
    light.name = "key"
    light.pos = [0.4, 0.0, 1.6]
    light.dir = [0.0, 0.0, -1.0]
    light.diffuse = [0.55, 0.55, 0.55]
    light.castshadow = bool(cfg.render.shadows)

    # Bowl: a static ring of boxes on a thin base plate.
    b = cfg.bowl
    bowl = wb.add_body()
    bowl.name = "bowl"
    bowl.pos = [float(layout.bowl_pos[0]), float(layout.bowl_pos[1]), 0.0]
    base = bowl.add_geom()
    base.name = "bowl_base"
    base.type = mujoco.mjtGeom.mjGEOM_CYLINDER
    base.size = [b.radius + b.wall, 0.003, 0]
    base.pos = [0, 0, 0.003]
    base.rgba = b.rgba
    r_mid = b.radius + b.wall / 2
    seg_half = r_mid * np.tan(np.pi / b.segments) + b.wall / 2
    for k in range(b.segments):
        a = 2 * np.pi * k / b.segments
        g = bowl.add_geom()
        g.name = f"bowl_wall{k}"
        g.type = mujoco.mjtGeom.mjGEOM_BOX
        g.size = [b.wall / 2, seg_half, b.height / 2]
        g.pos = [r_mid * np.cos(a), r_mid * np.sin(a), b.height / 2]
        g.quat = _quat_wxyz_yaw(a)
        g.rgba = b.rgba

    for o in layout.objects:
        body = wb.add_body()
        body.name = f"obj_{o.name}"
        body.pos = [float(v) for v in o.pos]
        body.quat = _quat_wxyz_yaw(o.yaw)
        fj = body.add_freejoint()
        fj.name = f"obj_{o.name}_free"
        g = body.add_geom()
        g.name = f"obj_{o.name}"
        if o.shape == "cube":
            g.type = mujoco.mjtGeom.mjGEOM_BOX
            g.size = [o.size["half_size"]] * 3
        elif o.shape == "cylinder":
            g.type = mujoco.mjtGeom.mjGEOM_CYLINDER
            g.size = [o.size["radius"], o.size["half_height"], 0]
        else:
            g.type = mujoco.mjtGeom.mjGEOM_SPHERE
            g.size = [o.size["radius"], 0, 0]
            g.condim = 6  # rolling friction: balls come to rest instead of rolling off the table
        g.rgba = o.rgba
        g.mass = cfg.object_mass
        g.friction = list(cfg.object_friction)
        g.condim = max(g.condim, 4)

    # Cameras from the calibration (optical frame → MuJoCo camera frame).
    for view, cam in calibration.cameras.items():
        parent = _PARENT_BODY.get(cam.parent_frame, "missing")
        if parent == "missing":
            raise ConfigError("calibration", [(f"cameras.{view}.parent_frame",
                                               f"must be one of {sorted(_PARENT_BODY)}, got {cam.parent_frame!r}")])
        holder = wb if parent is None else spec.body(parent)
        c = holder.add_camera()
        c.name = view
        T = cam.transform()
        c.pos = [float(v) for v in T[:3, 3]]
        c.quat = [float(v) for v in optical_to_mujoco_quat(T)]
        c.fovy = cam.fovy_deg
        # The full pinhole model (fx, fy, cx, cy at the calibration's resolution): MuJoCo then renders the same
        # frustum at any image size — stretched like a resized real image — instead of deriving square pixels from
        # fovy, which moves points sideways whenever the rendered aspect differs from the calibration's.
        pitch = 1e-5  # [m/px]: any sensor pitch gives the same projection
        c.resolution = [cam.width, cam.height]
        c.sensor_size = [cam.width * pitch, cam.height * pitch]
        c.focal_pixel = [cam.fx, cam.fy]
        # MuJoCo's principal offset is measured from the sensor centre with the opposite sign to the optical
        # frame's (checked against segmentation renders in tests/vidplan_core/unit/test_action_maps.py)
        c.principal_pixel = [cam.width / 2 - cam.cx, cam.height / 2 - cam.cy]
    return spec


def build_model(cfg: SceneConfig, layout: SceneLayout, calibration: RigCalibration, width: int = 320,
                height: int = 180, panda_dir: str | Path | None = None):
    """Compile :func:`build_spec` into a ``mujoco.MjModel``."""
    return build_spec(cfg, layout, calibration, width, height, panda_dir).compile()


def validate_scene_dict(data: dict, source: str = "<scene>") -> SceneConfig:
    """Validate an in-memory scene description (same errors as :func:`load_scene_config`)."""
    return validate_model(SceneConfig, data, source)
