"""How a planner scores its candidates (the hierarchical reward of Algorithm 3): :class:`ScoreConfig` and
:func:`score_rollout` (value weighted by uncertainty, semantic score, centring of the semantic map on the gripper or
the image), and the view and gripper geometry they use."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vidplan_core.objective import (
    WeightKind,
    centroid_distance,
    frame_reward,
    soft_centroid,
    suppress_semantic_map,
)
from vidplan_core.runtime.base import RolloutOutput

__all__ = ["ScoreConfig", "gripper_reference", "planar_image_jacobian", "score_rollout", "view_rows"]


class ScoreConfig(BaseModel):
    """How candidates are scored (hierarchical reward)."""

    model_config = ConfigDict(extra="forbid")
    weighting: WeightKind = "exp"
    kappa: float = Field(3.0, ge=0, description="κ of w(h) = exp(−κ·h̄)")
    lam: float = Field(2.0, ge=0, description="λ of the centring term λ·‖c − c_r‖")
    centroid_ref: tuple[float, float] = (0.5, 0.5)
    centring: Literal["auto", "image", "gripper"] = Field(
        "auto", description="reference point c_r of the centring term: 'image' = centroid_ref in every map view "
        "(the paper's; meant for the wrist view), 'gripper' = the candidate's TCP projected into each map view at "
        "that frame, so the term is the image distance between gripper and target (candidate-dependent on fixed "
        "exterior views too; two exterior views fix the target in 3-D); averaged over the map views. 'auto' = "
        "'gripper' where the backend has semantic-map views and camera geometry (a bundle with map_views), else "
        "'image'")
    centroid_temperature: float = Field(0.1, gt=0)
    suppress_semantic: bool = True
    semantic_score: Literal["global", "map_max", "map_mean"] = "global"
    direction_weight: float = Field(0.0, ge=0, description="μ of the push-progress term μ·p: p = how far [m] the "
        "target's semantic-map centroid moves, from the candidate's first predicted frame, along the motion the "
        "instruction asks for (:func:`vidplan_core.planning.goal.instruction_direction`; 'push … to the left' → the "
        "base frame's +y): each exterior map view's image motion is solved for motion on the table plane "
        "(:func:`planar_image_jacobian`) and the views are averaged. Off for instructions without a direction "
        "phrase and for backends without camera geometry (as 'auto' centring falls back to 'image')")
    direction_radius: float = Field(0.06, gt=0, description="the push-progress term counts a frame only where the "
        "target is within this image distance of the candidate's projected TCP (normalised units, mean over the "
        "exterior views; 0.06 ≈ 8–13 cm at the demo cameras): a target that moves while the gripper is away is not "
        "being pushed by it — on a learned model mostly a semantic map that drifts with the arm")
    track_confidence: float = Field(0.5, gt=0, lt=1, description="the push-progress term follows the target "
        "in a view only where that view's map sees it: σ(max logit) of the map before UQ suppression ≥ this; "
        "elsewhere the target stays where the view saw it most confidently (a hidden target neither adds nor "
        "removes progress)")
    contact_radius: float = Field(0.0, ge=0, description="push-progress term: a target that a view stops seeing "
        "while it was within this image distance of the candidate's reference point (normalised units; the "
        "pre-push point with push_offset) is taken to move with that point — pushed along, since the hand that "
        "hides it is against it — instead of staying where it was seen; 0 = off (a hidden target stays)")
    push_offset: float = Field(0.0, ge=0, description="[m] with a push direction, the centring term's reference "
        "becomes the point this far ahead of the candidate's TCP along that direction (its projection in each map "
        "view): the gripper is drawn to the pre-push point behind the target instead of onto it, and a push that "
        "carries the target along keeps the distance. 0.05 ≈ a 2-cm object's radius + 3 cm, where the scripted "
        "expert starts its pushes. 0 = the TCP itself, as for instructions without a direction")
    push_open_cost: float = Field(0.0, ge=0, description="with a push direction, subtracted per frame times how "
        "open the candidate's hand is (1 − gripper command): open fingers span 8 cm, so an open hand at the "
        "pre-push point clips the target and drags it sideways; closed, it is a narrow pusher (the privileged "
        "reward's 0.03 m, here in the reward's units: λ·image distance)")


def view_rows(uq_map: torch.Tensor, view: int | None, num_views: int = 3) -> torch.Tensor:
    """The rows of one view of a (…, V·h, w) map of the vertically stacked views (:func:`vidplan_core.spaces.
    stack_views`); the whole map when ``view`` is None or the map is not a stack (e.g. an oracle's 1×1 map)."""
    rows = uq_map.shape[-2]
    if view is None or rows < num_views or rows % num_views:
        return uq_map
    h = rows // num_views
    return uq_map[..., view * h:(view + 1) * h, :]


def gripper_reference(actions: np.ndarray, geometry: Any, views: tuple[int, ...]) -> torch.Tensor:
    """The candidates' TCP projected into each view at its own frame: (N, F, 7) raw actions → (N, F, V, 2) (x, y)
    in normalised image coordinates [0, 1]. Exterior cameras are fixed; the wrist camera moves with the hand, so the
    TCP always lands on the same point of the wrist image. ``geometry``: an
    :class:`~vidplan_core.models.action_maps.ActionMapRenderer` over a 1×1-grid configuration, or that configuration
    (:meth:`vidplan_core.runtime.bundle.PlannerModels.view_geometry`)."""
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    a = torch.as_tensor(np.asarray(actions), dtype=torch.float64)
    uv = r.project(a, 0)[0][..., 0, :]  # (N, F, 3, 2): TCP in every view, hand cameras posed at frame 0
    if any(r.on_hand):  # a hand camera sees the TCP of its own frame, the same point at every frame
        own = r.project(a[:, :1], 0)[0][..., 0, :]
        hand = torch.tensor(r.on_hand)[None, None, :, None]
        uv = torch.where(hand, own.expand_as(uv), uv)
    return uv[:, :, list(views)]


def _confidence(maps: list[torch.Tensor]) -> torch.Tensor:
    """σ of each frame's highest logit, per view: V maps (N, F, h, w) → (N, F, V)."""
    return torch.stack([torch.sigmoid(m.flatten(-2).amax(-1)) for m in maps], dim=-1)


def planar_image_jacobian(pose: np.ndarray, direction: np.ndarray, geometry: Any, views: tuple[int, ...],
                          step_m: float = 0.05) -> torch.Tensor:
    """How motion on the table plane shows in each view: (V, 2, 2) image displacement per metre (normalised image
    coordinates), column 0 for motion along ``direction``, column 1 along the horizontal perpendicular
    (ẑ × direction); zero for hand cameras (what rides with the hand does not move in them).

    Solving ``J · m = Δuv`` turns a target's image motion into metres along and across the asked direction, so a
    push the wrong way round (along +x for "to the left") is not read as progress through an oblique camera's
    perspective. ``pose``: (7,) raw action at which the motion starts (its TCP position is used, m); ``direction``:
    (3,) base frame; ``step_m``: the length of the projected steps (short enough for the projection to be locally
    linear)."""
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    d = np.asarray(direction, np.float64)
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    perp = np.cross([0.0, 0.0, 1.0], d)
    perp = perp / np.linalg.norm(perp) if np.linalg.norm(perp) > 1e-9 else np.array([1.0, 0.0, 0.0])
    a = np.repeat(np.asarray(pose, np.float64)[None, None], 3, axis=0)  # (3, 1, 7): start, along, across
    a[1, 0, :3] += step_m * d
    a[2, 0, :3] += step_m * perp
    uv = gripper_reference(a, r, views)[:, 0]  # (3, V, 2)
    jac = torch.stack([uv[1] - uv[0], uv[2] - uv[0]], dim=-1) / step_m  # (V, 2, 2)
    exterior = torch.tensor([not r.on_hand[v] for v in views], dtype=jac.dtype)
    return jac * exterior[:, None, None]


def _track_target(seen: torch.Tensor, visible: torch.Tensor, best: torch.Tensor, ref: torch.Tensor,
                  contact_radius: float) -> torch.Tensor:
    """The target's image position per frame for the push-progress term: (N, F, V, 2).

    ``seen`` (N, F, V, 2) map centroids, ``visible`` (N, F, V) where the map sees the target, ``best`` (V, 2) where
    each view saw it most confidently, ``ref`` (N, F, V, 2) the candidates' reference points. A visible target is
    where its map puts it; a hidden one stays where it was last (``best`` before it was ever seen), or — when it was
    within ``contact_radius`` of the reference point then — moves with that point (the hand that hides it pushes
    it)."""
    n, f, v, _ = seen.shape
    prev = best.expand(n, v, 2)
    attached = torch.zeros(n, v, dtype=torch.bool)
    prev_ref = ref[:, 0]
    out = []
    for t in range(f):
        carried = prev + attached[..., None] * (ref[:, t] - prev_ref)
        cur = torch.where(visible[:, t, :, None], seen[:, t], carried)
        if contact_radius > 0:
            # contact is judged where the target is seen; a hidden one keeps its state
            attached = torch.where(visible[:, t], (cur - ref[:, t]).norm(dim=-1) <= contact_radius, attached)
            if t == 0:
                attached = attached | (~visible[:, 0] & ((cur - ref[:, 0]).norm(dim=-1) <= contact_radius))
        out.append(cur)
        prev, prev_ref = cur, ref[:, t]
    return torch.stack(out, dim=1)


def score_rollout(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...] | None = None,
                  actions: np.ndarray | None = None, geometry: Any = None,
                  goal_direction: np.ndarray | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical reward of a rollout: (N,) candidate scores and (N, F) per-frame rewards.

    ``map_views``: the views the semantic map shows, stacked vertically (the backend's ``map_views``; an int for
    one). Each view's map is suppressed by the uncertainty of that view's rows of the stacked UQ map, has its own
    centroid, and the centring distances are averaged over the views. ``actions`` (N, F, 7) and ``geometry`` are
    needed for ``cfg.centring == "gripper"``. ``goal_direction``: (3,) base-frame motion the instruction asks for
    (:func:`vidplan_core.planning.goal.instruction_direction`), used by ``cfg.direction_weight``."""
    h_bar = torch.as_tensor(out.h_bar, dtype=torch.float64)
    sem_all = torch.as_tensor(out.semantic_map, dtype=torch.float64)
    views = (map_views,) if isinstance(map_views, int) else tuple(map_views) if map_views else (None,)
    unc_all = torch.as_tensor(out.uq_map, dtype=torch.float64)
    raws, sems = [], []  # per view: the map as scored, and after UQ suppression
    for k, v in enumerate(views):
        sem = view_rows(sem_all, k, len(views)) if len(views) > 1 else sem_all
        raws.append(sem)
        if cfg.suppress_semantic:
            sem = suppress_semantic_map(sem, view_rows(unc_all, v), cfg.weighting, cfg.kappa)
        sems.append(sem)
    if cfg.semantic_score == "global":
        r_s = torch.as_tensor(out.semantic_score, dtype=torch.float64)
    elif cfg.semantic_score == "map_max":
        r_s = torch.stack([m.flatten(-2).amax(-1) for m in sems]).mean(0)
    else:
        r_s = torch.stack([m.flatten(-2).mean(-1) for m in sems]).mean(0)
    dist = None
    mode = cfg.centring
    if mode == "auto":
        mode = "gripper" if actions is not None and geometry is not None and None not in views else "image"
    push = cfg.direction_weight > 0 and goal_direction is not None
    if push and (mode != "gripper" or actions is None or geometry is None or None in views):
        raise ValueError("score.direction_weight needs gripper centring: the candidates' actions, the views of the "
                         "semantic maps and the camera geometry (a backend with map_views and view_geometry)")
    progress = None
    if cfg.lam > 0 or push:
        cents = torch.stack([soft_centroid(m, cfg.centroid_temperature) for m in sems], dim=2)  # (N, F, V, 2)
        if mode == "gripper":
            if actions is None or geometry is None or None in views:
                raise ValueError("centring 'gripper' needs the candidates' actions, the views of the semantic maps "
                                 "and the camera geometry (a backend with map_views and view_geometry)")
            a_ref = np.asarray(actions)
            if push and cfg.push_offset > 0:
                # the pre-push point: the TCP's projection lands on the target only with the gripper behind it
                a_ref = a_ref.copy()
                a_ref[..., :3] += cfg.push_offset * np.asarray(goal_direction, a_ref.dtype)
            ref = gripper_reference(a_ref, geometry, views)  # type: ignore[arg-type]
        else:
            ref = torch.as_tensor(cfg.centroid_ref, dtype=torch.float64)
        if mode == "gripper":
            # Object permanence: where a view's map does not see the target (σ(max logit) < 0.5; the grounded
            # scorer's maps are logits) — typically the arm hides it as the gripper arrives — its centroid would
            # jump to another object. There the target is taken to be where that view saw it most confidently in
            # this cycle's futures (any candidate, any frame).
            # (As measured: the test reads the UQ-suppressed maps, whose shift-and-scale pulls the demo bundle's
            # logits far below 0 — σ ≤ 0.08 in all 96 cycles of two traced push episodes — so in practice every
            # centroid becomes that most confident one: a fixed target per cycle, which is what the closed-loop
            # touch/push numbers were measured with.)
            conf = _confidence(sems)  # (N, F, V)
            flat = conf.reshape(-1, conf.shape[-1]).argmax(0)  # per view: the most confident (candidate, frame)
            best = cents.reshape(-1, *cents.shape[-2:])[flat, torch.arange(conf.shape[-1])]  # (V, 2)
            seen = cents
            cents = torch.where((conf >= 0.5)[..., None], cents, best.expand_as(cents))
        if cfg.lam > 0:
            dist = centroid_distance(cents, ref).mean(-1)
        if push:
            # The target's image motion along the asked-for direction, per exterior view, from the candidate's
            # own first predicted frame: a reach that leaves the object where it is scores 0 here, a push > 0.
            # A moving target is followed where the view sees it: σ(max logit) ≥ track_confidence on the map before UQ
            # suppression (the suppressed maps' logits are shifted, see above); elsewhere it stays where it was
            # seen most confidently, so an arm that hides it neither adds nor removes progress — unless it was
            # against the gripper's reference point when last seen (contact_radius): then it moves with that point.
            track = _track_target(seen, _confidence(raws) >= cfg.track_confidence, best, ref, cfg.contact_radius)
            # In metres along the asked direction: each exterior view's image motion solved for motion on the table
            # plane, so motion across the direction adds nothing however the view's perspective shows it (as the
            # privileged reward's displacement; a unit image direction counted part of it)
            jac = planar_image_jacobian(np.asarray(actions)[:, 0].mean(0), goal_direction, geometry, views)
            ext = (jac.det().abs() > 1e-6).to(cents.dtype)  # exterior views that see the plane: the mean runs here
            inv = torch.linalg.pinv(jac) * ext[:, None, None]  # (V, 2, 2); zero for the others

            def ext_mean(x: torch.Tensor) -> torch.Tensor:
                return (x * ext).sum(-1) / ext.sum().clamp_min(1.0)

            along = torch.einsum("vij,nfvj->nfvi", inv, track - track[:, :1])[..., 0]  # (N, F, V) m
            progress = ext_mean(along)  # (N, F) m
            near = ext_mean(centroid_distance(track, ref)) <= cfg.direction_radius
            progress = progress * near.to(progress.dtype)
    per_frame = frame_reward(r_s, h_bar, dist, cfg.lam, cfg.weighting, cfg.kappa, progress, cfg.direction_weight)
    if push and cfg.push_open_cost > 0:
        grip = torch.as_tensor(np.asarray(actions)[..., 6], dtype=per_frame.dtype)  # (N, F) 0 open .. 1 closed
        per_frame = per_frame - cfg.push_open_cost * (1.0 - grip)
    return per_frame.amax(dim=1), per_frame
