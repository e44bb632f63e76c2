"""Frames with per-pixel labels for training and evaluating the grounded semantic scorer.

Each sample is one scene (seed, clutter level, target chosen by the caller) seen from the three cameras with the
arm placed at a random pose above the workspace (gripper pointing down, random yaw, tilt and opening) or, with
probability ``contact_prob``, at a contact pose (:func:`contact_arm_pose`: the TCP against one object's side at push
height or on its top, as the expert pushes and touches; the hand then hides part of that object), rendered twice:
RGB and MuJoCo's segmentation, turned into labels (0 background, 1 robot, 2 bowl, 3 + i object i).
Views are prepared exactly as the models see them (:func:`vidplan_core.spaces.crop_view`: optional workspace crop
of the exterior views, then resize); labels go through the same crop and a nearest-neighbour resize.

Output: one compressed ``.npz`` shard with

* ``frames``  (N, 3, H, W, 3) uint8 RGB, views (left, right, wrist);
* ``labels``  (N, 3, H, W) uint8;
* ``obj_colour``, ``obj_shape`` (N, K) int8 indices into ``colours`` / ``shapes`` of object i (−1: no object);
* ``target``  (N,) int8 index of the layout's target object; ``seed``, ``clutter`` (N,);
* ``colours``, ``shapes`` (name lists); ``crop`` (JSON of the crop boxes, "" for none).

Used by ``vidplan train grounded`` (:mod:`vidplan_core.training.grounded` reads the shards).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import WORKSPACE_BOX, load_calibration, workspace_crop_boxes
from vidplan_core.spaces import VIEW_ORDER, crop_box_pixels, crop_view
from vidplan_sim.env import SimEnv
from vidplan_sim.scene import HOME_Q, load_scene_config
from vidplan_sim.tasks import Task

__all__ = ["GROUNDING_WORKSPACE", "MAX_OBJECTS", "contact_arm_pose", "generate_grounding_dataset",
           "generate_grounding_shard", "random_arm_pose"]

MAX_OBJECTS = 8  # target + up to 7 distractors (clutter level 3)
#: the box the exterior views are cropped to: the models' workspace crop (objects up to 12 cm high) [m]
GROUNDING_WORKSPACE = WORKSPACE_BOX


def random_arm_pose(rng: np.random.Generator) -> np.ndarray:
    """(4, 4) TCP pose above the table: x 0.30–0.70 m, |y| ≤ 0.30 m, z 0.06–0.45 m, pointing down (±0.25 rad
    tilt) with a yaw in ±0.9 rad about the vertical."""
    T = np.eye(4)
    T[:3, 3] = [rng.uniform(0.30, 0.70), rng.uniform(-0.30, 0.30), rng.uniform(0.06, 0.45)]
    down = Rotation.from_euler("x", np.pi)
    tilt = Rotation.from_rotvec(np.r_[rng.uniform(-0.25, 0.25, 2), 0.0])
    yaw = Rotation.from_euler("z", rng.uniform(-0.9, 0.9))
    T[:3, :3] = (yaw * tilt * down).as_matrix()
    return T


def contact_arm_pose(rng: np.random.Generator, centre: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    """(4, 4) TCP pose in contact with an object resting at ``centre`` (3,) [m] of horizontal bounding ``radius`` and
    ``half_height`` [m]: with probability 0.6 against its side at push height (the TCP 0–3 cm outside the radius in
    a random horizontal direction, 2.0–4.2 cm above the table, as the scripted expert pushes), else on its top
    (within 1 cm of the centre, 0.4 cm into to 4 cm above the top, as it touches). Pointing down (±0.15 rad tilt),
    yaw in ±0.9 rad. The arm is placed kinematically: a finger may overlap the object by a few millimetres."""
    T = np.eye(4)
    c = np.asarray(centre, float)
    if rng.random() < 0.6:
        a = rng.uniform(-np.pi, np.pi)
        r = radius + rng.uniform(0.0, 0.03)
        z = max(min(c[2], 0.022), 0.02) + rng.uniform(0.0, 0.02)
        T[:3, 3] = [c[0] - r * np.cos(a), c[1] - r * np.sin(a), z]
    else:
        top = c[2] + half_height
        T[:3, 3] = [c[0] + rng.uniform(-0.01, 0.01), c[1] + rng.uniform(-0.01, 0.01), top + rng.uniform(-0.004, 0.04)]
    down = Rotation.from_euler("x", np.pi)
    tilt = Rotation.from_rotvec(np.r_[rng.uniform(-0.15, 0.15, 2), 0.0])
    yaw = Rotation.from_euler("z", rng.uniform(-0.9, 0.9))
    T[:3, :3] = (yaw * tilt * down).as_matrix()
    return T


def _resize_labels(lab: np.ndarray, box: Sequence[float] | None, height: int, width: int) -> np.ndarray:
    """The label image through the same crop as :func:`crop_view`, then nearest-neighbour resampling."""
    if box is not None:
        x0, y0, x1, y1 = crop_box_pixels(box, lab.shape[1], lab.shape[0])
        lab = lab[y0:y1, x0:x1]
    h, w = lab.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(int), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(int), w - 1)
    return lab[rows[:, None], cols[None, :]]


def generate_grounding_shard(out: str | Path, seeds: Iterable[int], targets: Sequence[tuple[str, str]],
                             exclude: Iterable[tuple[str, str]] = (), clutter_levels: Sequence[int] = (1, 2, 3),
                             poses_per_scene: int = 2, height: int = 96, width: int = 160,
                             crop: dict[str, list[float]] | None = None, contact_prob: float = 0.0,
                             contact_target_prob: float = 0.5, progress: bool = True) -> dict:
    """Render a shard (see the module docstring) and write it to ``out`` (.npz).

    Args:
        seeds: scene seeds (one scene each); the target combination is drawn from ``targets`` with the seed.
        targets: (colour, shape) pairs a scene's target may be.
        exclude: pairs never placed in a scene at all (held-out combinations of a training set).
        clutter_levels: the clutter level of seed s is ``clutter_levels[s % len]``.
        poses_per_scene: arm poses rendered per scene.
        height, width: output size of each view [px].
        crop: per-view crop boxes in the calibration's pixels (:func:`vidplan_core.calibration.workspace_crop_boxes`).
        contact_prob: share of poses in contact with an object (:func:`contact_arm_pose`); that object is the target
            with probability ``contact_target_prob``, else any object of the layout. 0 draws exactly the random
            numbers of a data set made before contact poses existed (same frames).
    Returns:
        {"samples": N, "path": str}.
    """
    from tqdm import tqdm

    if not (0.0 <= contact_prob <= 1.0 and 0.0 <= contact_target_prob <= 1.0):
        raise ValueError(f"contact_prob and contact_target_prob must be in [0, 1], got {contact_prob}, "
                         f"{contact_target_prob}")
    excl = frozenset(tuple(e) for e in exclude)
    if any(tuple(t) in excl for t in targets):
        raise ValueError(f"targets {sorted(set(map(tuple, targets)) & excl)} are also excluded")
    env = SimEnv()  # renders at the calibration's resolution; views are prepared as the models see them
    colours, shapes = env.cfg.colour_names, env.cfg.shape_names
    seeds = list(seeds)
    frames, labels, oc, osh, tgt, sd, cl = [], [], [], [], [], [], []
    try:
        for seed in tqdm(seeds, desc="grounding frames", unit="scene", disable=not progress):
            rng = np.random.default_rng(10_000_019 + int(seed))
            colour, shape = targets[int(rng.integers(len(targets)))]
            task = Task(kind="touch", colour=colour, shape=shape)
            clutter = int(clutter_levels[int(seed) % len(clutter_levels)])
            layout = env.reset(int(seed), clutter, task, settle=0.2, exclude=excl)
            for _ in range(poses_per_scene):
                if contact_prob > 0 and rng.random() < contact_prob:
                    objs = layout.objects[:MAX_OBJECTS]
                    o = objs[0] if rng.random() < contact_target_prob else objs[int(rng.integers(len(objs)))]
                    centre = env.object_pose(o.name)[:3]
                    sol = env.solve_ik(contact_arm_pose(rng, centre, o.radius, o.half_height), q0=HOME_Q)
                else:
                    sol = env.solve_ik(random_arm_pose(rng), q0=HOME_Q)
                if not sol.success:
                    sol = env.solve_ik(random_arm_pose(rng), q0=HOME_Q)
                env.pose_arm(sol.q if sol.success else HOME_Q, gripper_width=float(rng.uniform(0.0, 0.08)))
                views, labs = [], []
                for v in VIEW_ORDER:
                    box = (crop or {}).get(v)
                    views.append(crop_view(env.render_view(v), box, height, width))
                    labs.append(_resize_labels(env.render_labels(v), box, height, width))
                frames.append(np.stack(views))
                labels.append(np.stack(labs))
                c_idx = np.full(MAX_OBJECTS, -1, np.int8)
                s_idx = np.full(MAX_OBJECTS, -1, np.int8)
                for i, o in enumerate(layout.objects[:MAX_OBJECTS]):
                    c_idx[i], s_idx[i] = colours.index(o.colour), shapes.index(o.shape)
                oc.append(c_idx)
                osh.append(s_idx)
                tgt.append(0)  # sample_layout puts the target first
                sd.append(int(seed))
                cl.append(clutter)
    finally:
        env.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.npz")
    np.savez_compressed(tmp, frames=np.stack(frames), labels=np.stack(labels), obj_colour=np.stack(oc),
                        obj_shape=np.stack(osh), target=np.asarray(tgt, np.int8), seed=np.asarray(sd),
                        clutter=np.asarray(cl), colours=np.asarray(colours), shapes=np.asarray(shapes),
                        crop=np.asarray(json.dumps(crop) if crop else ""))
    tmp.replace(out)  # a shard is complete or absent (resumable generation skips complete shards)
    return {"samples": len(frames), "path": str(out)}


def generate_grounding_dataset(out: str | Path, held_out: Sequence[Sequence[str]], train_scenes: int = 600,
                               eval_scenes: int = 150, scenes_per_shard: int = 150, poses_per_scene: int = 2,
                               height: int = 96, width: int = 160, contact_prob: float = 0.0,
                               progress: bool = True) -> list[dict]:
    """The grounded scorer's data set: every scene rendered twice, with whole exterior views (``*_full``) and with
    them cropped to :data:`GROUNDING_WORKSPACE` (``*_crop``), so the scorer works with or without the crop.

    Shards (resumable: complete shards are skipped):

    * ``train_{full,crop}_K.npz`` — seeds 1000 + …, targets and distractors never a ``held_out`` combination;
    * ``eval_unseen_{full,crop}.npz`` — seeds 500 + …, the target always a held-out combination;
    * ``eval_seen_{full,crop}.npz`` — seeds 650 + …, targets from the training combinations (no held-out objects);
    * ``eval_contact_{unseen,seen}_crop.npz`` — the same scenes with every pose in contact with the target
      (:func:`contact_arm_pose`): grounding while the hand hides part of the object, as in a push or touch.

    ``contact_prob`` is the share of contact poses in the training shards (0: the data set made before contact
    poses existed, frame for frame).

    Returns one {"samples", "path"} per shard written now.
    """
    cfg = load_scene_config()
    held = [(str(c), str(s)) for c, s in held_out]
    combos = [(c, s) for c in cfg.colour_names for s in cfg.shape_names]
    unknown = [p for p in held if p not in combos]
    if unknown:
        raise ValueError(f"held-out combinations {unknown} are not objects of the scene ({combos})")
    train = [p for p in combos if p not in held]
    if eval_scenes > 150:
        raise ValueError("eval_scenes must be ≤ 150 (seeds 500–649 and 650–799 are reserved for evaluation)")
    crop = workspace_crop_boxes(load_calibration(), GROUNDING_WORKSPACE, width / height)
    jobs: list[tuple[str, range, list, list, dict | None]] = []
    for name, c in (("full", None), ("crop", crop)):
        jobs.append((f"eval_unseen_{name}.npz", range(500, 500 + eval_scenes), held, [], c))
        jobs.append((f"eval_seen_{name}.npz", range(650, 650 + eval_scenes), train, held, c))
    # (shard, seeds, targets, excluded, crop, share of contact poses, share of those against the target)
    contact_eval = [("eval_contact_unseen_crop.npz", range(500, 500 + eval_scenes), held, [], crop, 1.0, 1.0),
                    ("eval_contact_seen_crop.npz", range(650, 650 + eval_scenes), train, held, crop, 1.0, 1.0)]
    for k in range(max(1, -(-train_scenes // scenes_per_shard))):
        lo = 1000 + k * scenes_per_shard
        seeds = range(lo, min(lo + scenes_per_shard, 1000 + train_scenes))
        for name, c in (("full", None), ("crop", crop)):
            jobs.append((f"train_{name}_{k}.npz", seeds, train, held, c))
    jobs = [(*j, 0.0, 0.5) for j in jobs[:4]] + contact_eval + [(*j, contact_prob, 0.5) for j in jobs[4:]]
    out = Path(out)
    done = []
    for fn, seeds, targets, excl, c, p_contact, p_target in jobs:
        if (out / fn).is_file():
            continue
        done.append(generate_grounding_shard(out / fn, seeds, targets, exclude=excl, crop=c,
                                             poses_per_scene=poses_per_scene, height=height, width=width,
                                             contact_prob=p_contact, contact_target_prob=p_target,
                                             progress=progress))
    return done
