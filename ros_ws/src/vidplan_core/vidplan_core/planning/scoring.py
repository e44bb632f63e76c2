"""How a planner scores its candidates (the hierarchical reward of Algorithm 3): :class:`ScoreConfig` and
:func:`score_rollout` (value weighted by uncertainty, semantic score, centring of the semantic map on the gripper or
the image), and the view and gripper geometry they use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vidplan_core.objective import (
    WeightKind,
    centroid_distance,
    frame_reward,
    soft_centroid,
    suppress_semantic_map,
)
from vidplan_core.planning.proposals import approach_goal
from vidplan_core.runtime.base import RolloutOutput

__all__ = ["ScoreConfig", "ScoreTerms", "TargetMemory", "carry_reference", "close_barred", "grasp_gripper",
           "grasp_reference", "gripper_reference", "image_directions", "locate_on_table", "locate_target",
           "predicted_displacement", "release_gripper", "rollout_displacement", "score_rollout", "score_terms",
           "view_rows", "wrist_locate"]


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
    centring_space: Literal["image", "metric"] = Field("image", description="where the 'gripper' centring "
        "distance is measured: 'image' = between the candidate's projected TCP and the target in each map view, "
        "averaged over the views; 'metric' = in the base frame, between the candidate's TCP and the 3-D point the "
        "'table' fusion puts the target (or the push reference) at [m], times centring_metric_scale. The image "
        "distance is not monotone in the 3-D one: a TCP 5 cm above the table projects behind an object on it, so "
        "on the demo cameras a 3 cm step straight at the point raised the image distance (traced: a push held 7 cm "
        "from its standoff point for 13 cycles, bench/results/centring_metric.md). 'metric' needs 'table' fusion "
        "and falls back to 'image' without it")
    centring_metric_scale: float = Field(1.0, gt=0, description="'metric' centring: normalised image units per "
        "metre, so that lam weighs both spaces alike (on the demo bundle's cropped views 1 m is 0.8–0.9 normalised "
        "units near the workspace centre: 0.091 m ↔ 0.082 and 0.087 m ↔ 0.068 in the traced stall)")
    centroid_temperature: float = Field(0.1, gt=0)
    suppress_semantic: bool = True
    semantic_score: Literal["global", "map_max", "map_mean"] = "global"
    direction_weight: float = Field(0.0, ge=0, description="μ of the push-progress term μ·p: p = how far the target's "
        "semantic-map centroid moves, from the candidate's first predicted frame, along the image direction of the "
        "motion the instruction asks for (:func:`vidplan_core.planning.goal.instruction_direction`; 'push … to the "
        "left' → the base frame's +y), averaged over the exterior map views, in normalised image units like the "
        "centring term. Off for instructions without a direction phrase and for backends without camera geometry "
        "(as 'auto' centring falls back to 'image')")
    direction_radius: float = Field(0.06, gt=0, description="the push-progress term counts a frame only where the "
        "target is within this image distance of the candidate's projected TCP (normalised units, mean over the "
        "exterior views; 0.06 ≈ 8–13 cm at the demo cameras): a target that moves while the gripper is away is not "
        "being pushed by it — on a learned model mostly a semantic map that drifts with the arm")
    push_displacement_weight: float = Field(0.0, ge=0, description="μ_d of a metric push-progress term that only "
        "an action-dependent future can give: per candidate and imagined frame, the target is located on the table as "
        "the 'table' fusion does (the grid cell within table_track_m of this cycle's point whose projections score "
        "highest summed over the exterior views' maps of that frame), and the term is how far [m] it moved along "
        "the motion the instruction asks for since the candidate's first imagined frame, × centring_metric_scale, "
        "added as μ_d × that. A world model that ignores its actions (the static-world diagnostic) gives every "
        "candidate the same value. Needs 'table' fusion and a motion phrase; 0 = off")
    push_track_step_m: float = Field(0.04, ge=0, description="push_displacement_weight's reading follows the target "
        "from frame to frame: in its first imagined frame the target is searched within table_track_m of this "
        "cycle's point, in each later frame within this distance [m] of where it was in the frame before (a "
        "pushed object moves up to the hand's speed: 0.15 m/s is 3 cm per 0.2 s frame). 0 = every frame within "
        "table_track_m of the point (an object pushed farther than that is lost: measured in "
        "bench/results/object_motion.md)")
    target_gate: float = Field(0.0, ge=0, description="object permanence across plan cycles (gripper centring): "
        "each view's centring target is the most confident map centroid within this image distance (normalised "
        "units) of where the previous cycle put it, or stays there when none is; 0 = off: the most confident "
        "centroid anywhere, every cycle, so a distractor the map sees more confidently while the arm hides the "
        "target takes its place")
    target_lost_cycles: int = Field(5, ge=1, description="with target_gate: after this many cycles in a row "
        "without a centroid within the gate, a view takes the most confident centroid anywhere again (the "
        "object was moved, or the memory held a distractor)")
    track_confidence: float = Field(0.5, gt=0, lt=1, description="the push-progress term follows the target "
        "in a view only where that view's map sees it: σ(max logit) of the map before UQ suppression ≥ this; "
        "elsewhere the target stays where the view saw it most confidently (a hidden target neither adds nor "
        "removes progress). Lower values let a target the hand partly hides be followed, and a map that drifts "
        "with the arm: on a traced oracle push, 0.3 scored a push the wrong way highest "
        "(bench/results/closed_loop_oracle_learned_push_contact.md)")
    target_fusion: Literal["off", "table", "auto"] = Field("off", description=(
        "where the centring and push-progress terms put the target where a map does not see it: 'off' = per view, "
        "the centroid of that view's most confident predicted frame (views may settle on different objects: the "
        "centring term, averaged over the views, then pulls the gripper to empty table between them); 'table' = one"
        " point on the table plane for all exterior views — the cell of a grid over the workspace whose projections"
        " score highest summed over the views' semantic maps (logits, in the best imagined frame: table_pool), "
        "projected back into each view (:func:`locate_on_table`); hand-camera views keep their own. Needs camera "
        "geometry and an exterior map view; 'auto' = 'table' where the backend has both (as models/demo does), else"
        " 'off'"
    ))
    table_height_m: float = Field(0.02, description="height of the plane the 'table' fusion searches [m, base frame]: "
        "the centre of a tabletop object of 4 cm")
    table_cell_m: float = Field(0.01, gt=0, description="grid spacing of the 'table' fusion [m]")
    table_pool: Literal["max", "mean"] = Field("max", description="'table' fusion: a cell's score is the sum over "
        "the views of the logits at its projections in one imagined frame, best frame of any candidate ('max'), or "
        "in the maps averaged over candidates and frames ('mean')")
    table_track_m: float = Field(0.06, ge=0, description="'table' fusion across plan cycles: search only within this "
        "distance [m] of the previous cycle's point (an object moves a few cm per cycle when pushed; the arm that "
        "reaches it, which the maps partly light up, stays outside the window); 0 = the whole workspace every cycle")
    table_hold_m: float = Field(0.10, ge=0, description="'table' fusion near the hand: while the TCP is within "
        "this horizontal distance of the previous cycle's point [m], the point may only move along the TCP's own "
        "motion since that cycle, and no farther (the hand pushes what it touches; it does not pull it) — the arm, "
        "which the maps partly light up, otherwise drags the estimate (traced: 40 cm across the table after "
        "contact), and a frozen point stops a push after 1–3 cm. 0 = no such rule")
    push_standoff_m: float = Field(0.0, ge=0, description="'table' fusion, instructions that name a motion ('push "
        "… to the left'): the centring reference is this far behind the target along the motion [m] until the TCP "
        "reaches that point (within push_reach_m horizontally and of the table height), then push_lead_m ahead of "
        "the target, so the hand first goes round to the near side and then moves through the object. Without it "
        "an exact target is a touch: the hand lands on the object and stays (bench/results/"
        "closed_loop_table_fusion.md). 0 = off")
    push_reach_m: float = Field(0.03, gt=0, description="how close [m] the TCP must come to the standoff point for "
        "the push to begin (push_standoff_m)")
    push_lead_m: float = Field(0.10, gt=0, description="while pushing, how far ahead of the target [m] the centring "
        "reference is (push_standoff_m); the push ends when the TCP leaves table_hold_m of the target")
    push_over_hysteresis: float = Field(1.0, ge=1.0, description="with push_clearance_m: once the TCP has come "
        "within push_reach_m of the standoff point horizontally, the lowered reference holds until it is farther than "
        "this × push_reach_m. Without it (1) the reference flipped between raised and lowered 18 times in 38 cycles of "
        "a lost push, the hand hovering at the boundary (bench/results/centring_metric.md)")
    push_clearance_m: float = Field(0.0, ge=0, description="going round to the standoff point (push_standoff_m), "
        "the reference is this far above it [m] until the TCP is within push_reach_m of it horizontally, so the hand "
        "goes over the object rather than through it: after a push overran the object, the way back to the near "
        "side swept it 21 cm the wrong way (traced: ladder push, seed 1, clutter 1). 0 = at table height")
    push_overrun_m: float = Field(0.0, ge=0, description="while pushing, the push ends (the hand goes round to the "
        "standoff point again) when the TCP is this far [m] past the target's centre along the motion: the hand slid "
        "by the object instead of moving it. Without it the push ends only when the TCP leaves table_hold_m of the "
        "target, and a hand that stopped 9.4 cm past an unmoved cylinder, at the push reference, held there for 26 "
        "cycles (traced: push, seed 10, clutter 0). 0 = off")
    push_keepout_m: float = Field(0.0, ge=0, description="going round to the standoff point (push_standoff_m), a "
        "candidate whose TCP comes within this horizontal distance [m] of the target's centre lower than "
        "push_reach_m above it scores, from that frame on, as if 1 m farther from the reference (metric centring) — "
        "except straight behind the object (behind its centre along the motion and within push_lateral_m, or "
        "push_reach_m without it, of the line through it) for a hand already there, the way a push comes in: the "
        "hand must not come down beside or ahead of the object on its way round (traced: a hand that came down "
        "1.9 cm from a ball on its far side swept it the wrong way and off the table; push, seed 6, clutter 0). "
        "0 = off")
    push_lateral_m: float = Field(0.0, ge=0, description="the push begins only while the TCP is within this "
        "horizontal distance [m] of the line through the target along the motion, and ends (the hand goes round "
        "again) when it is farther: a hand beside the object sweeps it sideways as it centres on the line (traced: "
        "a push begun 1.6 cm off the line drifted to 3 cm beside the cube, then dragged it 13 cm across the motion; "
        "push, seed 1, clutter 0). 0 = off")

    carry_height_m: float = Field(0.0, ge=0, description="'table' fusion, instructions that name where an object "
        "goes ('put the red cube in the bowl': :func:`vidplan_core.planning.goal.instruction_destination`): while the "
        "gripper is closed (the current pose's gripper ≥ 0.5) the semantic scorer scores the destination phrase ('the "
        "bowl') instead, the fusion locates it, and the centring reference is this far above it [m] — straight above "
        "the TCP first, until the TCP is within carry_reach_m of that height, then over the destination; there the "
        "gripper reference opens (release_radius_m, gripper_weight_m). Without it the only target of a put is the "
        "named object, and a hand that closed on it holds it there (put 0/20, bench/results/closed_loop_put_shipped."
        "md). 0 = off")
    carry_settle_cycles: int = Field(1, ge=0, description="carry phase: for this many plan cycles after the gripper "
        "closes the carry reference is where the TCP is, so the hand holds still while the fingers settle on the "
        "object, as the demonstrations dwell after closing (a traced carry lost the object in the lift straight "
        "after the closing cycle: put, seed 3, clutter 1; the rule is not measured on its own)")
    carry_semantic_weight: float = Field(0.0, ge=0, description="carry phase: the weight of the semantic score "
        "(the frames scored against the destination phrase) beside the centring on the point over it. That score "
        "rewards seeing the bowl, which a higher hand does more: at weight 1 a traced carry chose +z twice above the "
        "drop height and ended with the object 16 cm up over the bowl, still held (put, seed 1, clutter 3)")
    carry_reach_m: float = Field(0.03, gt=0, description="carry phase: how close [m] to the carry height the TCP must "
        "come before it heads over the destination, and how far below that height the release zone reaches")
    release_radius_m: float = Field(0.04, gt=0, description="carry phase: within this horizontal distance [m] of the "
        "point over the destination (and from carry_reach_m below its height to release_height_m above it) the "
        "gripper reference is open, elsewhere closed. The demo bowl's inner radius is 7.5 cm")
    release_height_m: float = Field(0.05, ge=0, description="carry phase: how far above the carry height [m] the "
        "release zone reaches: a hand that hovers 3.4 cm too high over the bowl, 1.5 cm from its centre, never let go "
        "with a symmetric 3 cm zone (traced: put, seed 2, clutter 1)")
    release_free_entry: bool = Field(False, description="carry phase: a closed frame inside the release zone is "
        "charged (gripper_weight_m) only while the current TCP is in the zone too — the hand may carry the object into "
        "the zone and opens once there. Charged everywhere (False), a closed hand whose every move into the zone paid "
        "30 cm held 4.1 cm from the drop point, just outside the 4 cm zone, for the last 13 cycles with the cube over "
        "the bowl (traced: put, seed 1, clutter 0; 3 of the 4 lost puts of closed_loop_put_grasp ended so). On 20 "
        "fresh put scenes: 15/20 with it, 10/20 without (bench/results/closed_loop_put_release_s10_paired.md)")
    gripper_weight_m: float = Field(0.30, ge=0, description="a put's phases: the gripper is part of the metric "
        "reference: a frame whose gripper command (0 open … 1 closed) differs from the reference's by g scores as "
        "g × this much farther [m] (times centring_metric_scale) — an early release is a 30 cm error, keeping the "
        "object over the destination one too. At 0.10 the semantic score outbid it: with the scored text 'the bowl' "
        "the frames of an opening hand scored 0.2 above holding, and a just-closed hand opened again 4 times in a "
        "row (traced: put, seed 0, clutter 0)")

    grasp_radius_m: float = Field(0.02, gt=0, description="a put's approach (carry_height_m > 0, gripper open): "
        "within this horizontal distance [m] of the located object and grasp_height_m above it an open gripper "
        "scores as gripper_weight_m farther, so the hand closes there; elsewhere closing is left to the scoring, as "
        "before (the planner also leaves the zone out where a grasp already closed on nothing: "
        "planning.put_phase.PutPhase keeps those places per episode). Without it a traced hand waited open at the "
        "object for 25 cycles (put, seed 4, clutter 0). Barring a close outside the zone (a closed reference "
        "inside, open outside) made things worse: a hand parked 2-3 cm from the point (the basis proposals' 3 cm "
        "frames) never closed at 2 cm, and at 3 cm closed on nothing and reopened 7 times at the same spot (put, "
        "seed 0, clutters 0, 2)")
    grasp_height_m: float = Field(0.02, gt=0, description="a put's approach: how far above the located object's "
        "centre [m] the grasp zone reaches (grasp_radius_m)")
    close_radius_m: float = Field(0.0, ge=0, description="a put's approach: a frame whose gripper closes (command g "
        "> 0 while the hand is open) farther than this horizontally [m] from the located object, or higher than "
        "close_height_m above its centre, scores as g × gripper_weight_m farther: the fingers close on nothing there. "
        "With it, the grasp zone's charge on an open hand applies only while the current TCP is in the zone, so a hand "
        "above the zone is free to go down into it (charged, the way down lost to closing where the hand was: traced, "
        "put, seed 8, clutter 0, closed 4.7 cm above a ball). 0 = off: closing outside the zone is left to the "
        "scoring, and the zone charges every open frame in it. In 40 traced puts, every close 3.3 cm or more above the "
        "object or 2.5 cm or more beside it caught nothing (or another object), and each such close cost 2-3 plan "
        "cycles")
    close_height_m: float = Field(0.03, gt=0, description="a put's approach: how far above the located object's "
        "centre [m] closing is allowed (close_radius_m)")
    grasp_clearance_m: float = Field(0.0, ge=0, description="a put's approach ('table' fusion): the centring "
        "reference is this far above the located object [m] until the TCP is within grasp_reach_m of it horizontally, "
        "then the object itself (until the TCP is farther than twice that), so the hand comes down onto the object "
        "from above instead of sweeping into it at table height (traced: a hand moving +x at table height pushed a "
        "ball 2-3 cm per cycle out of reach; put, seed 8, clutter 0). 0 = off: the reference is the object")
    grasp_reach_m: float = Field(0.015, gt=0, description="a put's approach: how close horizontally [m] the TCP must "
        "come to the located object before the reference goes down to it (grasp_clearance_m)")
    wrist_refine_m: float = Field(0.0, ge=0, description="a put's approach: while the TCP is within this horizontal "
        "distance [m] of the point the exterior views' fusion located, the object is placed with the hand camera's "
        "current frame instead: the semantic scorer's map of that observed frame (runtime.frame_scorer), each cell "
        "back-projected onto the table plane (table_height_m) through the hand camera's pose, weighted by the softmax "
        "of its logit (centroid_temperature, as soft_centroid) over the cells within wrist_window_m of the fused "
        "point. A ball or a cylinder slips out of fingers that close 0.4-0.8 cm off its centre across the pads "
        "(the scripted expert, object position offset: bench/results/grasp_tolerance.md) and the fusion's point is "
        "1-2 cm off; the hand camera 6-9 cm above the object placed it 0.2-1.0 cm off. Needs a backend with a frame "
        "scorer and a hand camera in its geometry; 0 = off")
    approach_observed: bool = Field(False, description="a put's approach: the 'table' fusion scores the table cells "
        "on the semantic scorer's maps of the observed exterior frames (runtime.frame_scorer) instead of the "
        "imagined ones. The object to grasp stands still until the hand reaches it, and the scorer grounds camera "
        "frames better than the world model's decoded predictions: on the 80 put scenes of seeds 10-29 a put's "
        "first cycle placed the target within 3 cm 71 times on the observed frames against 59 on the imagined ones "
        "(13 vs 1 discordant; the 21 misses of the imagined: 12 on an object of the same colour; "
        "bench/results/put_locate.md). Needs a backend with a frame scorer; without one, the imagined maps")
    locate_observed: bool = Field(False, description="touch and push (every task but a put): the 'table' fusion "
        "scores the table cells on the semantic scorer's maps of the observed exterior frames, as approach_observed "
        "does for a put's approach. The object stands still until the hand reaches it; a push moves it, and the "
        "current frame shows where it is now. On the 160 touch and push scenes of seeds 10-29 a first cycle placed "
        "the target within 3 cm 142 times on the observed frames against 124 on the imagined ones (22 vs 4; every "
        "observed miss on an object of the same colour; bench/results/locate_touch_push.md); closed loop on the "
        "fresh seeds 40-49, 55/70 against 52/70 (7 vs 4, not resolved; "
        "closed_loop_touch_push_observed_s40_49_paired.md). Needs a backend with a frame scorer; without one, the "
        "imagined maps")
    wrist_window_m: float = Field(0.04, gt=0, description="wrist_refine_m: only map cells whose table point lies "
        "within this distance [m] of the fused point count (another object in the hand camera's view otherwise "
        "pulls the estimate: 11 cm off beside a distractor of the same colour)")
    wrist_mask_logit: float | None = Field(None, description="wrist_refine_m: the cells whose logit exceeds this "
        "(the object's silhouette; -1 is a probability of 0.27 for the grounded scorer) are averaged with equal "
        "weights instead of the softmax's; none above it: the softmax. The softmax leans on the brightest faces, "
        "which moved the point with the object's colour (blue cylinders +0.8 cm along the hand's view, cyan -1.1 cm); "
        "the silhouette's mean does not (grasp_tolerance.md, estimators). None = the softmax weights")
    wrist_plane_m: float | None = Field(None, description="wrist_refine_m: height [m, base frame] of the plane the "
        "hand camera's cells are back-projected onto; None = table_height_m. Seen from behind and above, an object's "
        "silhouette holds its top face and its near side: on the plane through the centres (0.02) the silhouette's "
        "mean lands 0.4 cm short of a cylinder's centre along the hand's view, on 0.025 0.2 cm (balls, cubes: "
        "within 0.15 cm; grasp_tolerance.md, estimators)")
    wrist_freeze_m: float = Field(0.0, ge=0, description="wrist_refine_m: while the TCP is less than this above the "
        "object plane (table_height_m) [m], the hand camera's refinement keeps the point it found last (with this "
        "target memory) instead of measuring again. At the object's height the fingers hide part of it and the "
        "silhouette's mean follows the hand: a traced put (seed 33, clutter 2) moved its point 1.4 cm after the hand "
        "slid 2 cm at table height, closed there and squeezed the cylinder out. No point found yet: it measures. "
        "0 = off")
    relook_after_empty: bool = Field(False, description="a put: after a grasp that closed on nothing (let go, "
        "empty_grasp_closure), the approach goes up to grasp_clearance_m over the located object before it may come "
        "down and close again; until the TCP is 0.8 × grasp_clearance_m above the object plane, the reference is "
        "that point above it, every closing frame pays as a barred close (close_radius_m) and the grasp zone is off. "
        "From there the hand camera sees the object whole again (wrist_freeze_m). The traced put above closed 12 "
        "times at table height 2-3 cm beside the cylinder it had pushed away and caught nothing")
    empty_grasp_closure: float = Field(0.95, gt=0, le=1.0, description="carry phase: a closed gripper whose measured "
        "closure (PlanningContext.gripper_closure, 0 open … 1 fingers together) is at least this holds nothing — it "
        "missed, or the object slipped out — so there is no carry: the gripper reference is open until it is (then "
        "the object is approached again). 0.95 is 4 mm between the Franka Hand's fingers; the demo objects are 3-5 "
        "cm wide. Without a measured closure every closed gripper counts as holding (a traced miss carried nothing "
        "to the bowl and ran out of time coming back; put, seed 0, clutter 3)")

    @model_validator(mode="after")
    def _one_memory(self) -> ScoreConfig:
        if self.target_fusion != "off" and self.target_gate > 0:
            raise ValueError(f"score.target_fusion {self.target_fusion!r} keeps its own memory across cycles "
                             "(table_track_m); set score.target_gate to 0 or target_fusion to 'off'")
        return self


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


def image_directions(pose: np.ndarray, direction: np.ndarray, geometry: Any, views: tuple[int, ...],
                     step_m: float = 0.05) -> torch.Tensor:
    """Where a base-frame motion points in each view's image: (V, 2) unit vectors in normalised image coordinates,
    zero for hand cameras (what rides with the hand does not move in them).

    ``pose``: (7,) raw action at which the motion starts (its TCP position is used, m); ``direction``: (3,) base
    frame; ``step_m``: the length of the projected step (short enough for the projection to be locally linear)."""
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    a = np.repeat(np.asarray(pose, np.float64)[None, None], 2, axis=0)  # (2, 1, 7)
    a[1, 0, :3] += step_m * np.asarray(direction, np.float64) / max(float(np.linalg.norm(direction)), 1e-12)
    uv = gripper_reference(a, r, views)[:, 0]  # (2, V, 2)
    d = uv[1] - uv[0]
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    exterior = torch.tensor([not r.on_hand[v] for v in views], dtype=d.dtype)
    return d * exterior[:, None]


def _view_maps(out: RolloutOutput, cfg: ScoreConfig, views: tuple[int | None, ...]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per map view: the semantic map as the scorer gave it and after UQ suppression, each (N, F, h, w)."""
    sem_all = torch.as_tensor(out.semantic_map, dtype=torch.float64)
    unc_all = torch.as_tensor(out.uq_map, dtype=torch.float64)
    raws, sems = [], []
    for k, v in enumerate(views):
        sem = view_rows(sem_all, k, len(views)) if len(views) > 1 else sem_all
        raws.append(sem)
        if cfg.suppress_semantic:
            sem = suppress_semantic_map(sem, view_rows(unc_all, v), cfg.weighting, cfg.kappa)
        sems.append(sem)
    return raws, sems


@dataclass
class TargetMemory:
    """Where each map view last put the target (object permanence across plan cycles, ``ScoreConfig.
    target_gate``). ``position``: (V, 2) normalised image coordinates, None before the first cycle; ``misses``:
    (V,) cycles in a row without a centroid within the gate; ``point``: the 'table' fusion's last target (3,) [m]
    (``ScoreConfig.target_fusion``), ``tcp`` the TCP then (3,) [m] and ``reference`` where the centring term pulls the
    TCP (3,) [m]: the point, or the push reference. A planner keeps one per instruction."""

    position: torch.Tensor | None = None
    misses: np.ndarray | None = None
    point: np.ndarray | None = None  # (3,) the 'table' fusion's target [m, base frame]
    tcp: np.ndarray | None = None  # (3,) the TCP when that point was found [m]
    pushing: bool = False  # push_standoff_m: the hand reached the standoff point and now moves through the object
    reference: np.ndarray | None = None  # (3,) where the centring pulls the TCP: the point, or the push reference [m]
    over: bool = False  # push_clearance_m: the hand came over the standoff point (push_over_hysteresis)
    keepout: np.ndarray | None = None  # (3,) the target's centre while a push goes round (push_keepout_m) [m]
    motion: np.ndarray | None = None  # (3,) unit horizontal motion of the push (push_standoff_m)
    drop: np.ndarray | None = None  # (3,) the point over the destination a carry releases at (carry_height_m) [m]
    found: list[np.ndarray] = field(default_factory=list)  # carry: every cycle's point of the destination [m]
    wrist: np.ndarray | None = None  # (3,) the hand camera's last point of the object (wrist_refine_m) [m]


def _most_confident(cents: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Per view, the centroid of the most confident (candidate, frame): cents (N, F, V, 2), conf (N, F, V) → (V, 2)."""
    flat = conf.reshape(-1, conf.shape[-1]).argmax(0)
    return cents.reshape(-1, *cents.shape[-2:])[flat, torch.arange(conf.shape[-1])]


def locate_target(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...],
                  memory: TargetMemory | None = None) -> torch.Tensor:
    """This cycle's centring target per map view: (V, 2) normalised image coordinates.

    Per view, the centroid of the (candidate, frame) whose UQ-suppressed map is the most confident — among those
    within ``cfg.target_gate`` of ``memory.position`` when a memory and a gate are given (else the memory's
    position, counted as a miss; after ``cfg.target_lost_cycles`` misses, anywhere again). ``memory`` is updated in
    place."""
    views = (map_views,) if isinstance(map_views, int) else tuple(map_views)
    _, sems = _view_maps(out, cfg, views)
    cents = torch.stack([soft_centroid(m, cfg.centroid_temperature) for m in sems], dim=2)  # (N, F, V, 2)
    conf = _confidence(sems)  # (N, F, V)
    anywhere = _most_confident(cents, conf)  # (V, 2)
    conf, cents = conf.reshape(-1, len(views)), cents.reshape(-1, len(views), 2)  # (N·F, V), (N·F, V, 2)
    if memory is None or cfg.target_gate <= 0:
        return anywhere
    if memory.position is None:
        memory.position, memory.misses = anywhere.clone(), np.zeros(len(views), int)
        return anywhere
    target = memory.position.clone()
    for v in range(len(views)):
        near = (cents[:, v] - memory.position[v]).norm(dim=-1) <= cfg.target_gate
        if near.any():
            target[v] = cents[torch.where(near, conf[:, v], -torch.inf).argmax(), v]
            memory.misses[v] = 0
        elif memory.misses[v] + 1 >= cfg.target_lost_cycles:
            target[v] = anywhere[v]
            memory.misses[v] = 0
        else:
            memory.misses[v] += 1
    memory.position = target.clone()
    return target


def _cell_logits(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """The logits of B maps (B, 1, h, w) at G projected table cells ``uv`` (G, 2) [normalised image coordinates],
    bilinear: (B, G), −inf for a cell outside the view."""
    g = (uv * 2 - 1)[None, None].to(maps.dtype).expand(len(maps), 1, -1, -1)  # grid_sample's [-1, 1]
    s = F.grid_sample(maps, g, align_corners=False, padding_mode="border")[:, 0, 0]
    inside = ((uv >= 0) & (uv <= 1)).all(-1)
    return torch.where(inside, s, torch.full_like(s, -torch.inf))


def locate_on_table(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...], geometry: Any,
                    region: tuple[tuple[float, float], tuple[float, float]],
                    memory: TargetMemory | None = None, tcp: np.ndarray | None = None,
                    direction: np.ndarray | None = None, carry: bool = False, settle: bool = False,
                    approach: bool = False, refine: Callable[[np.ndarray], np.ndarray | None] | None = None,
                    observed: list[torch.Tensor | None] | None = None, relook: bool = False) -> torch.Tensor:
    """The target as one point on the table, seen by every exterior map view (``ScoreConfig.target_fusion`` =
    'table'): (V, 2) its projection into each map view, normalised image coordinates.

    Every cell of a ``cfg.table_cell_m`` grid over ``region`` ((x_min, x_max), (y_min, y_max) [m]) at height
    ``cfg.table_height_m`` is projected into each exterior view and scored by the sum over the views of the
    semantic maps' logits (before UQ suppression, bilinear) there — in the best of this rollout's imagined frames
    (``cfg.table_pool`` 'max') or in the maps averaged over them ('mean'); a cell outside a view is no candidate.
    An object only one view confuses with the target thus loses to the one both views agree on. The best cell
    wins — within ``cfg.table_track_m`` of ``memory.point`` when a memory holds one, and only along the motion of
    ``tcp`` (3,) [m], the current TCP, since the last call while the TCP is within ``cfg.table_hold_m`` of it.
    Hand-camera views get their most confident centroid (their projection moves with the hand). With
    ``direction`` (3,), the motion the instruction asks for, and ``cfg.push_standoff_m`` > 0, the projected point
    is the push reference instead (see ``push_standoff_m``; needs ``memory`` and ``tcp``). With ``carry`` (a put's
    carry phase: the located point is the destination, which does not move with the hand, so no ``table_hold_m``)
    and ``cfg.carry_height_m`` > 0 it is the carry reference (:func:`carry_reference`; ``memory.drop`` is set), or
    with ``settle`` (the grasp is settling, ``cfg.carry_settle_cycles``) the TCP itself. With ``approach`` (a put's
    approach) and ``cfg.grasp_clearance_m`` > 0 it is :func:`grasp_reference`. ``refine``: fused point (3,) [m] → a
    better one, or None to keep it (the hand camera's: ``cfg.wrist_refine_m``); not while carrying. ``observed``:
    per map view, the (gh, gw) logits of an observed frame scored in place of that view's imagined maps (or None:
    the imagined; ``cfg.approach_observed``, ``cfg.locate_observed``). ``relook``: a put's approach after an empty grasp
    (``cfg.relook_after_empty``): the reference is over the object (:func:`grasp_reference`). ``memory`` is updated
    in place."""
    views = (map_views,) if isinstance(map_views, int) else tuple(map_views)
    raws, sems = _view_maps(out, cfg, views)
    cents = torch.stack([soft_centroid(m, cfg.centroid_temperature) for m in sems], dim=2)
    target = _most_confident(cents, _confidence(sems))  # (V, 2): kept for hand views
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    ext = [k for k, v in enumerate(views) if not r.on_hand[v]]
    if not ext:
        raise ValueError("score.target_fusion 'table' needs at least one exterior (fixed) camera among the map views")
    (x0, x1), (y0, y1) = region
    xs = np.arange(x0, x1 + 1e-9, cfg.table_cell_m)
    ys = np.arange(y0, y1 + 1e-9, cfg.table_cell_m)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, cfg.table_height_m)], -1)  # (G, 3)
    if memory is not None and memory.point is not None:
        keep = np.ones(len(pts), bool)
        if cfg.table_track_m > 0:
            keep &= np.linalg.norm(pts[:, :2] - memory.point[:2], axis=-1) <= cfg.table_track_m
        # (no previous TCP — a memory seeded where a put's hand lost its object — leaves the hold rule out: there is
        # no motion of the hand since the last cycle to move the point along)
        if (not carry and tcp is not None and memory.tcp is not None
                and np.linalg.norm(np.asarray(tcp)[:2] - memory.point[:2]) <= cfg.table_hold_m):
            # near the hand: within a cell of the segment from the point along the hand's motion since last cycle
            step = np.asarray(tcp)[:2] - memory.tcp[:2]
            rel = pts[:, :2] - memory.point[:2]
            t = np.clip(rel @ step / max(float(step @ step), 1e-12), 0.0, 1.0)
            keep &= np.linalg.norm(rel - t[:, None] * step, axis=-1) <= cfg.table_cell_m
        pts = np.concatenate([pts[keep], memory.point[None]])  # staying put is always allowed
    a = np.zeros((len(pts), 1, 7))
    a[:, 0, :3], a[:, 0, 3] = pts, np.pi  # a TCP at each cell; only its position is projected
    uv = gripper_reference(a, r, views)[:, 0]  # (G, V, 2)
    total = None
    for k in ext:
        if observed is not None and observed[k] is not None:  # one observed map, the same for every candidate
            m = torch.as_tensor(observed[k], dtype=raws[k].dtype).reshape(1, 1, *observed[k].shape[-2:])
        else:
            m = raws[k].reshape(-1, 1, *raws[k].shape[-2:])  # (N·F, 1, h, w)
        if cfg.table_pool == "mean":
            m = m.mean(0, keepdim=True)
        s = _cell_logits(m, uv[:, k])  # (N·F or 1, G)
        total = s if total is None else total + s
    total = total.amax(0)  # (G,): the best imagined frame per cell ("max"), or the one mean map
    if memory is not None and tcp is not None:
        memory.tcp = np.asarray(tcp, np.float64).copy()
    if not torch.isfinite(total).any():  # no cell in every exterior view: the per-view targets
        return target
    best = int(total.argmax())
    point = pts[best].copy()
    refined = refine(point) if refine is not None and not carry else None
    if refined is not None:
        point = np.asarray(refined, np.float64).reshape(3).copy()
    if memory is not None:
        memory.point = point.copy()
    if carry and cfg.carry_height_m > 0 and tcp is not None:
        # the destination stands still: the mean of the points found so far, not the last one (the bowl's point
        # moved 3-6 cm from cycle to cycle of a traced carry, and the hand chased it back and forth over the bowl)
        if memory is not None:
            memory.found.append(pts[best].copy())
        dest = np.mean(memory.found, axis=0) if memory is not None else pts[best]
        drop = dest + np.array([0.0, 0.0, cfg.carry_height_m])
        ref = np.asarray(tcp, np.float64).copy() if settle else carry_reference(drop, np.asarray(tcp, np.float64), cfg)
        if memory is not None:
            memory.drop = drop
    elif approach and cfg.grasp_clearance_m > 0:
        ref = grasp_reference(point, cfg, memory, tcp, relook)
    else:
        ref = _push_reference(point, cfg, memory, tcp, direction)
    if memory is not None:
        memory.reference = (point if ref is None else ref).copy()
    if ref is None and refined is not None:
        ref = point  # the refined point is no grid cell: project it
    if ref is not None:
        a = np.zeros((1, 1, 7))
        a[0, 0, :3], a[0, 0, 3] = ref, np.pi
        uv = gripper_reference(a, r, views)[:, 0]
        best = 0
    for k in ext:
        target[k] = uv[best, k].to(target.dtype)
    return target


def carry_reference(drop: np.ndarray, tcp: np.ndarray, cfg: ScoreConfig) -> np.ndarray:
    """Where a carry's centring pulls the TCP (``ScoreConfig.carry_height_m``): (3,) [m]. ``drop``: (3,) the point
    over the destination [m]; ``tcp``: (3,) the current TCP [m]. Straight up to the drop's height first (a held
    object dragged over the table slips out of the fingers and sweeps the clutter), then over to the drop point;
    a TCP already over the destination goes to it directly."""
    drop, tcp = np.asarray(drop, np.float64), np.asarray(tcp, np.float64)
    over = np.linalg.norm(tcp[:2] - drop[:2]) <= cfg.release_radius_m
    if not over and tcp[2] < drop[2] - cfg.carry_reach_m:
        return np.array([tcp[0], tcp[1], drop[2]])
    return drop.copy()


def release_gripper(tcp: torch.Tensor, drop: np.ndarray, cfg: ScoreConfig) -> torch.Tensor:
    """The carry phase's gripper reference at each candidate frame: (…, 3) TCP [m] → (…) 0.0 (open) where the TCP is
    in the release zone over ``drop`` (3,) [m] (``release_radius_m`` horizontally, from ``carry_reach_m`` below to
    ``release_height_m`` above it), else 1.0 (closed: keep holding)."""
    d = torch.as_tensor(np.asarray(drop, np.float64).reshape(3)).to(tcp)
    dz = tcp[..., 2] - d[2]
    near = ((torch.linalg.vector_norm(tcp[..., :2] - d[:2], dim=-1) <= cfg.release_radius_m)
            & (dz >= -cfg.carry_reach_m) & (dz <= cfg.release_height_m))
    return torch.where(near, torch.zeros_like(tcp[..., 0]), torch.ones_like(tcp[..., 0]))


def grasp_gripper(tcp: torch.Tensor, point: np.ndarray, cfg: ScoreConfig) -> torch.Tensor:
    """A put's approach: (…, 3) TCP [m] → (…) 1.0 where the TCP is in the grasp zone of the object at ``point`` (3,)
    [m] (``grasp_radius_m`` horizontally, at most ``grasp_height_m`` above it: there the gripper should close), else
    0.0 (no preference)."""
    p = torch.as_tensor(np.asarray(point, np.float64).reshape(3)).to(tcp)
    near = ((torch.linalg.vector_norm(tcp[..., :2] - p[:2], dim=-1) <= cfg.grasp_radius_m)
            & (tcp[..., 2] - p[2] <= cfg.grasp_height_m))
    return near.to(tcp.dtype)


def wrist_locate(logits: torch.Tensor, geometry: Any, view: int, pose: np.ndarray, point: np.ndarray,
                 cfg: ScoreConfig) -> np.ndarray | None:
    """Where the hand camera's map of an observed frame puts the target on the table (``ScoreConfig.
    wrist_refine_m``): (3,) [m] at height ``cfg.table_height_m``, or None when no map cell near ``point`` sees the
    table.

    ``logits``: (gh, gw) the scorer's patch logits of the frame; ``geometry``: the backend's view geometry (an
    :class:`~vidplan_core.models.action_maps.ActionMapRenderer` or its config); ``view``: the hand camera's index;
    ``pose``: (7,) the TCP pose the frame was taken at [m, rad, gripper]; ``point``: (3,) the exterior views' fused
    point [m]. Each cell centre is back-projected onto the plane z = ``cfg.wrist_plane_m`` (default
    ``cfg.table_height_m``); the cells within
    ``cfg.wrist_window_m`` of ``point`` are averaged with the weights of :func:`~vidplan_core.models.semantic.
    soft_centroid` (``cfg.centroid_temperature``), or with equal weights over those whose logit exceeds
    ``cfg.wrist_mask_logit`` when it is set and some do."""
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    L = torch.as_tensor(logits, dtype=torch.float64)
    gh, mw = L.shape[-2:]
    ys = (torch.arange(gh, dtype=torch.float64) + 0.5) / gh * r.grid_hw[0]  # in the geometry's pixel units
    xs = (torch.arange(mw, dtype=torch.float64) + 0.5) / mw * r.grid_hw[1]
    v, u = torch.meshgrid(ys, xs, indexing="ij")
    pix = torch.stack([u.ravel(), v.ravel(), torch.ones(gh * mw, dtype=torch.float64)], -1)  # (G, 3)
    T = r.camera_poses(torch.as_tensor(np.asarray(pose, np.float64).reshape(1, 1, 7)), 0)[0, view].double()
    rays = torch.linalg.solve(r.K[view].double(), pix.T).T @ T[:3, :3].T  # (G, 3) base-frame directions
    down = rays[:, 2] < -1e-9
    plane = cfg.table_height_m if cfg.wrist_plane_m is None else cfg.wrist_plane_m
    s = (plane - T[2, 3]) / torch.where(down, rays[:, 2], torch.full_like(rays[:, 2], -1.0))
    pts = T[:3, 3] + s[:, None] * rays  # (G, 3) on the plane
    p = torch.as_tensor(np.asarray(point, np.float64).reshape(3))
    near = down & (s > 0) & (torch.linalg.vector_norm(pts[:, :2] - p[:2], dim=-1) <= cfg.wrist_window_m)
    if not bool(near.any()):
        return None
    flat = L.reshape(-1)
    mask = None if cfg.wrist_mask_logit is None else near & (flat > cfg.wrist_mask_logit)
    if mask is not None and bool(mask.any()):
        q = pts[mask].mean(0)
    else:
        z = (flat - flat.amax()) / (cfg.centroid_temperature * flat.std().clamp_min(1e-6))
        w = torch.where(near, z, torch.full_like(z, -torch.inf)).softmax(0)
        q = (w[:, None] * pts).sum(0)
    q[2] = cfg.table_height_m  # where the fusion's points are: the grasp's height does not move with the plane
    return q.numpy()


def grasp_reference(point: np.ndarray, cfg: ScoreConfig, memory: TargetMemory | None, tcp: np.ndarray | None,
                    relook: bool = False) -> np.ndarray | None:
    """A put's approach reference (``ScoreConfig.grasp_clearance_m``): (3,) [m] ``grasp_clearance_m`` above the
    object at ``point`` (3,) [m] until the TCP ``tcp`` (3,) [m] is within ``grasp_reach_m`` of it horizontally (twice
    that once it was: ``memory.over``), then the point; None when the rule is off or there is no TCP. ``relook``
    (``cfg.relook_after_empty``): the point above the object, wherever the TCP is."""
    if cfg.grasp_clearance_m <= 0 or tcp is None:
        return None
    if relook:
        if memory is not None:
            memory.over = False
        return np.asarray(point, np.float64).reshape(3) + np.array([0.0, 0.0, cfg.grasp_clearance_m])
    reach = cfg.grasp_reach_m * (2.0 if memory is not None and memory.over else 1.0)
    over = bool(np.linalg.norm(np.asarray(tcp, np.float64)[:2] - np.asarray(point, np.float64)[:2]) <= reach)
    if memory is not None:
        memory.over = over
    return approach_goal(tcp, point, cfg.grasp_clearance_m, reach)


def close_barred(tcp: torch.Tensor, point: np.ndarray, cfg: ScoreConfig) -> torch.Tensor:
    """A put's approach (``ScoreConfig.close_radius_m``): (…, 3) TCP [m] → (…) 1.0 where closing the gripper is
    barred — farther than ``close_radius_m`` horizontally from the object at ``point`` (3,) [m] or higher than
    ``close_height_m`` above it — else 0.0."""
    p = torch.as_tensor(np.asarray(point, np.float64).reshape(3)).to(tcp)
    far = ((torch.linalg.vector_norm(tcp[..., :2] - p[:2], dim=-1) > cfg.close_radius_m)
           | (tcp[..., 2] - p[2] > cfg.close_height_m))
    return far.to(tcp.dtype)


def _push_reference(point: np.ndarray, cfg: ScoreConfig, memory: TargetMemory | None, tcp: np.ndarray | None,
                    direction: np.ndarray | None) -> np.ndarray | None:
    """The centring reference of a push (``ScoreConfig.push_standoff_m``): (3,) [m], or None when there is none."""
    if direction is None or cfg.push_standoff_m <= 0 or memory is None or tcp is None:
        return None
    u = np.array([direction[0], direction[1], 0.0], np.float64)
    if np.linalg.norm(u) < 1e-9:
        return None
    u /= np.linalg.norm(u)
    behind = point - cfg.push_standoff_m * u
    tcp = np.asarray(tcp, np.float64)
    if memory.pushing and np.linalg.norm(tcp[:2] - point[:2]) > cfg.table_hold_m:
        memory.pushing = False  # the object got away from the hand: go round again
    if memory.pushing and cfg.push_overrun_m > 0 and float((tcp - point) @ u) > cfg.push_overrun_m:
        memory.pushing = False  # the hand passed the object (slid by its side): go round again
    rel = (tcp - point)[:2]
    aligned = cfg.push_lateral_m <= 0 or abs(float(rel[0] * u[1] - rel[1] * u[0])) <= cfg.push_lateral_m
    if memory.pushing and not aligned:
        memory.pushing = False  # the hand is beside the object, not behind it: go round again
    if (not memory.pushing and aligned and np.linalg.norm(tcp[:2] - behind[:2]) <= cfg.push_reach_m
            and tcp[2] <= point[2] + cfg.push_reach_m):
        memory.pushing = True
    memory.keepout = None if memory.pushing else np.asarray(point, np.float64).copy()
    memory.motion = u
    if memory.pushing:
        return point + cfg.push_lead_m * u
    # going round: over the standoff point first, then down (the approach candidates' rule); once over it, the
    # lowered reference holds out to push_over_hysteresis × push_reach_m
    reach = cfg.push_reach_m * (cfg.push_over_hysteresis if memory.over else 1.0)
    memory.over = cfg.push_clearance_m > 0 and bool(np.linalg.norm(tcp[:2] - behind[:2]) <= reach)
    return approach_goal(tcp, behind, cfg.push_clearance_m, reach)


def predicted_displacement(raws: list[torch.Tensor], views: tuple[int, ...], geometry: Any, point: np.ndarray,
                           direction: np.ndarray, cfg: ScoreConfig) -> torch.Tensor:
    """How far the target moves along ``direction`` in each imagined frame (``ScoreConfig.push_displacement_weight``):
    (N, F) [m], 0 at each candidate's first frame.

    ``raws``: per map view, the semantic maps as the scorer gave them, (N, F, h, w) logits; ``point``: (3,) this
    cycle's fused target [m, base frame]; ``direction``: (3,) the asked-for motion, base frame (its horizontal part
    is used). In every frame the target is the cell of a ``cfg.table_cell_m`` grid at ``cfg.table_height_m`` whose
    projections score highest summed over the exterior views — the 'table' fusion's rule (:func:`locate_on_table`),
    frame by frame: in the first frame within ``cfg.table_track_m`` (or 0.06 m when that is 0) of ``point``, in each
    later one within ``cfg.push_track_step_m`` of the previous frame's cell (0: within the first radius of
    ``point`` in every frame). A frame where no allowed cell is in any view keeps the previous frame's cell."""
    from vidplan_core.models.action_maps import ActionMapRenderer

    r = geometry if isinstance(geometry, ActionMapRenderer) else ActionMapRenderer(geometry)
    ext = [k for k, v in enumerate(views) if not r.on_hand[v]]
    n, f = raws[0].shape[:2]
    u = np.array([direction[0], direction[1]], np.float64)
    if not ext or np.linalg.norm(u) < 1e-9:
        return torch.zeros(n, f, dtype=torch.float64)
    u /= np.linalg.norm(u)
    radius = cfg.table_track_m if cfg.table_track_m > 0 else 0.06
    step = cfg.push_track_step_m
    extent = radius + step * max(f - 1, 0)  # the farthest a followed target can get from the point
    k = int(np.floor(extent / cfg.table_cell_m))
    off = np.arange(-k, k + 1) * cfg.table_cell_m
    ox, oy = np.meshgrid(off, off, indexing="ij")
    keep = np.hypot(ox, oy) <= extent + 1e-9
    pts = np.stack([point[0] + ox[keep], point[1] + oy[keep], np.full(int(keep.sum()), cfg.table_height_m)], -1)
    a = np.zeros((len(pts), 1, 7))
    a[:, 0, :3], a[:, 0, 3] = pts, np.pi  # a TCP at each cell; only its position is projected
    uv = gripper_reference(a, r, views)[:, 0]  # (G, V, 2)
    total = None
    for j in ext:
        s = _cell_logits(raws[j].reshape(n * f, 1, *raws[j].shape[-2:]), uv[:, j])  # (N·F, G)
        total = s if total is None else total + s
    total = total.reshape(n, f, -1)
    xy = torch.as_tensor(pts[:, :2])
    from_point = torch.as_tensor(np.hypot(ox[keep], oy[keep]) <= radius + 1e-9)  # (G,)
    along = xy @ torch.as_tensor(u)  # (G,) each cell's position along the motion [m]
    def best_allowed(t: int, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best = torch.where(allowed, total[:, t], torch.full_like(total[:, t], -torch.inf)).max(-1)
        return best.indices, torch.isfinite(best.values)

    at = torch.zeros(n, f, dtype=torch.float64)
    cell, first_seen = best_allowed(0, from_point.expand(n, -1))
    at[:, 0] = along[cell]
    for t in range(1, f):
        # within step of the previous frame's cell (step 0: around the point, as in the first frame)
        allowed = torch.cdist(xy[cell], xy) <= step + 1e-9 if step > 0 else from_point.expand(n, -1)  # (N, G)
        idx, seen = best_allowed(t, allowed)
        cell = torch.where(seen, idx, cell)
        at[:, t] = torch.where(seen, along[cell], at[:, t - 1])
    # a candidate whose first frame has no allowed cell in any view has no start to measure from: no motion
    return torch.where(first_seen[:, None], at - at[:, :1], torch.zeros_like(at))


def rollout_displacement(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...], geometry: Any,
                         point: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The target's motion along ``direction`` read from a rollout's semantic maps, as the planner's
    ``push_displacement_weight`` term reads it (:func:`predicted_displacement` on the maps as the scorer gave them):
    (N, F) [m], 0 at each candidate's first frame. ``map_views``: the backend's map view(s); ``geometry``: its view
    geometry; ``point``: (3,) the target [m, base frame]; ``direction``: (3,) the asked-for motion."""
    views = (map_views,) if isinstance(map_views, int) else tuple(map_views)
    raws, _ = _view_maps(out, cfg, views)
    d = predicted_displacement(raws, views, geometry, np.asarray(point, np.float64).reshape(3),
                               np.asarray(direction, np.float64).reshape(3), cfg)
    return d.numpy()


@dataclass
class ScoreTerms:
    """The terms of the hierarchical reward, per candidate and frame, each (N, F) (:func:`score_terms`).

    ``r_s``: semantic score; ``h_bar``: mean normalised UQ entropy in [0, 1]; ``dist``: centring distance (normalised
    image units, or metres × ``centring_metric_scale``), None without centring; ``progress``: push progress, None
    without a direction term; ``displacement``: the target's predicted motion along the asked-for direction [m ×
    centring_metric_scale] (:func:`predicted_displacement`), None without it."""

    r_s: torch.Tensor
    h_bar: torch.Tensor
    dist: torch.Tensor | None = None
    progress: torch.Tensor | None = None
    displacement: torch.Tensor | None = None

    def reward(self, cfg: ScoreConfig) -> torch.Tensor:
        """(N, F) per-frame rewards (:func:`~vidplan_core.objective.frame_reward`); a candidate's score is the max
        over its frames. Both progress terms enter ``frame_reward``'s μ·p, each with its own weight."""
        progress, mu = self.progress, cfg.direction_weight
        if self.displacement is not None and cfg.push_displacement_weight > 0:
            extra = cfg.push_displacement_weight * self.displacement
            progress = extra if progress is None or not mu else mu * progress + extra
            mu = 1.0
        return frame_reward(self.r_s, self.h_bar, self.dist, cfg.lam, cfg.weighting, cfg.kappa, progress, mu)

    def at(self, frames: torch.Tensor) -> dict[str, list[float]]:
        """Each term at one frame per candidate (``frames``: (N,) indices, e.g. each candidate's best frame), as
        lists for a trace: ``{"r_s": [...], "h_bar": [...], "dist": [...], "progress": [...], "displacement": [...],
        "frame": [...]}``
        (absent terms left out)."""
        n = torch.arange(len(frames))
        rows = {"frame": [int(f) for f in frames]}
        for k in ("r_s", "h_bar", "dist", "progress", "displacement"):
            v = getattr(self, k)
            if v is not None:
                rows[k] = [round(float(x), 5) for x in v[n, frames]]
        return rows


def _in_keepout(tcp: torch.Tensor, keepout: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: ScoreConfig
                ) -> torch.Tensor:
    """(N, F) 1.0 where a candidate's TCP ``tcp`` (N, F, 3) [m] is, or has been in an earlier frame, in the keep-out
    of a push going round (``cfg.push_keepout_m``; ``keepout``: see :func:`score_terms`), else 0.0."""
    obj = torch.as_tensor(np.asarray(keepout[0], np.float64).reshape(3))
    u = torch.as_tensor(np.asarray(keepout[1], np.float64).reshape(3))[:2]
    now = torch.as_tensor(np.asarray(keepout[2], np.float64).reshape(3))[:2] - obj[:2]
    rel = tcp[..., :2] - obj[:2]  # (N, F, 2)
    along, across = rel @ u, (rel[..., 0] * u[1] - rel[..., 1] * u[0]).abs()
    corridor = cfg.push_lateral_m if cfg.push_lateral_m > 0 else cfg.push_reach_m
    # the corridor behind the object is open to a hand already in it: one that moves into it sideways, close behind
    # the object, sweeps its back face (traced: a cube dragged 13 cm across the motion)
    lined_up = float(now @ u) < 0 and abs(float(now[0] * u[1] - now[1] * u[0])) <= corridor
    inside = ((torch.linalg.vector_norm(rel, dim=-1) < cfg.push_keepout_m) & (tcp[..., 2] < obj[2] + cfg.push_reach_m)
              & ~((along < 0) & (across <= corridor) & lined_up))
    # from the first frame inside on (the chunk's path went through it): a chunk cut at an earlier best frame
    # (stop_at_best_frame) scores as before
    return torch.cummax(inside.to(torch.int8), dim=1).values.to(tcp.dtype)


def score_rollout(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...] | None = None,
                  actions: np.ndarray | None = None, geometry: Any = None,
                  goal_direction: np.ndarray | None = None, target: torch.Tensor | None = None,
                  target_point: np.ndarray | None = None,
                  keepout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  drop: np.ndarray | None = None, let_go: bool = False, grasp: np.ndarray | None = None,
                  approach: np.ndarray | None = None, tcp_now: np.ndarray | None = None, relook: bool = False,
                  push_point: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical reward of a rollout: (N,) candidate scores and (N, F) per-frame rewards (the max over frames of
    :meth:`ScoreTerms.reward` of :func:`score_terms`, which takes the same arguments)."""
    per_frame = score_terms(out, cfg, map_views, actions, geometry, goal_direction, target, target_point,
                            keepout, drop, let_go, grasp, approach, tcp_now, relook, push_point).reward(cfg)
    return per_frame.amax(dim=1), per_frame


def score_terms(out: RolloutOutput, cfg: ScoreConfig, map_views: int | tuple[int, ...] | None = None,
                actions: np.ndarray | None = None, geometry: Any = None,
                goal_direction: np.ndarray | None = None, target: torch.Tensor | None = None,
                target_point: np.ndarray | None = None,
                keepout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                drop: np.ndarray | None = None, let_go: bool = False, grasp: np.ndarray | None = None,
                approach: np.ndarray | None = None, tcp_now: np.ndarray | None = None,
                relook: bool = False, push_point: np.ndarray | None = None) -> ScoreTerms:
    """The terms of the hierarchical reward of a rollout, each (N, F) (:class:`ScoreTerms`).

    ``map_views``: the views the semantic map shows, stacked vertically (the backend's ``map_views``; an int for
    one). Each view's map is suppressed by the uncertainty of that view's rows of the stacked UQ map, has its own
    centroid, and the centring distances are averaged over the views. ``actions`` (N, F, 7) and ``geometry`` are
    needed for ``cfg.centring == "gripper"``. ``goal_direction``: (3,) base-frame motion the instruction asks for
    (:func:`vidplan_core.planning.goal.instruction_direction`), used by ``cfg.direction_weight``. ``target``: (V, 2)
    where the target stands in each view where a map does not see it (:func:`locate_target`; default: the most
    confident centroid of this rollout). ``target_point``: (3,) [m, base frame] the same target as a point (the
    'table' fusion's reference), used by ``cfg.centring_space`` 'metric'. ``keepout``: ((3,) [m], (3,), (3,) [m]) the
    target's centre while a push goes round, the push's unit motion and the current TCP (:attr:`TargetMemory.keepout`,
    ``.motion``, ``.tcp``), used by ``cfg.push_keepout_m``. ``drop``: (3,) [m] the point over a put's destination
    during its carry phase (:attr:`TargetMemory.drop`): with metric centring, each frame's gripper command is then
    measured against :func:`release_gripper` (``cfg.gripper_weight_m``); ``let_go``: a closed gripper that holds
    nothing (``cfg.empty_grasp_closure``): the gripper reference is open everywhere; ``grasp``: (3,) [m] the located
    object during a put's approach: an open gripper in :func:`grasp_gripper`'s zone pays the same; ``approach``: (3,)
    [m] the located object during a put's approach, for ``cfg.close_radius_m``: a closing gripper where
    :func:`close_barred` pays the same; ``tcp_now``: (3,) [m] the current TCP, for ``cfg.release_free_entry``;
    ``relook``: a put's approach after an empty grasp (``cfg.relook_after_empty``): every closing frame pays as a
    barred close. ``push_point``: (3,) [m] the fused target of a push (not its reference), for
    ``cfg.push_displacement_weight`` with ``goal_direction``."""
    h_bar = torch.as_tensor(out.h_bar, dtype=torch.float64)
    views = (map_views,) if isinstance(map_views, int) else tuple(map_views) if map_views else (None,)
    raws, sems = _view_maps(out, cfg, views)
    if cfg.semantic_score == "global":
        r_s = torch.as_tensor(out.semantic_score, dtype=torch.float64)
    elif cfg.semantic_score == "map_max":
        r_s = torch.stack([m.flatten(-2).amax(-1) for m in sems]).mean(0)
    else:
        r_s = torch.stack([m.flatten(-2).mean(-1) for m in sems]).mean(0)
    if drop is not None and cfg.carry_semantic_weight != 1.0:
        r_s = r_s * cfg.carry_semantic_weight
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
            ref = gripper_reference(actions, geometry, views)  # type: ignore[arg-type]
        else:
            ref = torch.as_tensor(cfg.centroid_ref, dtype=torch.float64)
        if mode == "gripper":
            # Object permanence: where a view's map does not see the target (σ(max logit) < 0.5; the grounded
            # scorer's maps are logits) — typically the arm hides it as the gripper arrives — its centroid would
            # jump to another object. There the target is taken to be where that view saw it most confidently in
            # this cycle's futures (any candidate, any frame), or where the planner's memory of earlier cycles puts
            # it (``target``, :func:`locate_target`, with score.target_gate).
            # (As measured: the test reads the UQ-suppressed maps, whose shift-and-scale pulls the demo bundle's
            # logits far below 0 — σ ≤ 0.08 in all 96 cycles of two traced push episodes — so in practice every
            # centroid becomes that most confident one: a fixed target per cycle, which is what the closed-loop
            # touch/push numbers were measured with.)
            conf = _confidence(sems)  # (N, F, V)
            best = _most_confident(cents, conf) if target is None else torch.as_tensor(target, dtype=cents.dtype)
            seen = cents
            cents = torch.where((conf >= 0.5)[..., None], cents, best.expand_as(cents))
        if cfg.lam > 0 and mode == "gripper" and cfg.centring_space == "metric" and target_point is not None:
            tcp = torch.as_tensor(np.asarray(actions)[..., :3], dtype=torch.float64)  # (N, F, 3) [m]
            point = torch.as_tensor(np.asarray(target_point, np.float64).reshape(3))
            dist = torch.linalg.vector_norm(tcp - point, dim=-1) * cfg.centring_metric_scale
            if cfg.push_keepout_m > 0 and keepout is not None:
                dist = dist + _in_keepout(tcp, keepout, cfg) * cfg.centring_metric_scale  # as if 1 m farther
            barred = approach is not None and (cfg.close_radius_m > 0 or relook)
            if (drop is not None or let_go or grasp is not None or barred) and cfg.gripper_weight_m > 0:
                g = torch.as_tensor(np.asarray(actions)[..., 6], dtype=torch.float64)  # (N, F) 0 open … 1 closed
                if let_go:  # closed on nothing: open, wherever it is
                    off = g.abs()
                elif drop is not None:  # closed on the way, open over the destination
                    zone = 1.0 - release_gripper(tcp, drop, cfg)  # (N, F) 1 in the release zone
                    off = (g - (1.0 - zone)).abs()
                    if cfg.release_free_entry and tcp_now is not None:
                        now = torch.as_tensor(np.asarray(tcp_now, np.float64).reshape(1, 3))
                        if bool(release_gripper(now, drop, cfg)[0] > 0.5):  # not in the zone yet: entering is free
                            off = (1.0 - g) * (1.0 - zone)
                else:  # approaching: an open gripper in the grasp zone pays, and a closing one where it is barred
                    off = torch.zeros_like(g)
                    if grasp is not None:
                        off = off + (1.0 - g) * grasp_gripper(tcp, grasp, cfg)
                    if barred:
                        off = off + g * (1.0 if relook else close_barred(tcp, approach, cfg))
                dist = dist + off * cfg.gripper_weight_m * cfg.centring_metric_scale
        elif cfg.lam > 0:
            dist = centroid_distance(cents, ref).mean(-1)
        if push:
            # The target's image motion along the asked-for direction, per exterior view, from the candidate's
            # own first predicted frame: a reach that leaves the object where it is scores 0 here, a push > 0.
            # A moving target is followed where the view sees it: σ(max logit) ≥ track_confidence on the map
            # before UQ suppression (the suppressed maps' logits are shifted, see above); elsewhere it stays where it
            # was seen most confidently, so an arm that hides it neither adds nor removes progress.
            track = torch.where((_confidence(raws) >= cfg.track_confidence)[..., None], seen,
                                best.expand_as(seen))  # (N, F, V, 2)
            u = image_directions(np.asarray(actions)[:, 0].mean(0), goal_direction, geometry, views)  # (V, 2)
            ext = (u.norm(dim=-1) > 0).to(cents.dtype)  # exterior views: the mean runs over these

            def ext_mean(x: torch.Tensor) -> torch.Tensor:
                return (x * ext).sum(-1) / ext.sum().clamp_min(1.0)

            progress = ext_mean(((track - track[:, :1]) * u).sum(-1))  # (N, F)
            near = ext_mean(centroid_distance(track, ref)) <= cfg.direction_radius
            progress = progress * near.to(progress.dtype)
    displacement = None
    if (cfg.push_displacement_weight > 0 and goal_direction is not None and push_point is not None
            and geometry is not None and None not in views):
        displacement = predicted_displacement(raws, views, geometry, np.asarray(push_point, np.float64).reshape(3),
                                              goal_direction, cfg) * cfg.centring_metric_scale  # type: ignore[arg-type]
    return ScoreTerms(r_s, h_bar, dist, progress, displacement)
