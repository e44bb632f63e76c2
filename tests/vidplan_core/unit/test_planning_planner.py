"""Algorithm 3 planner and CEM on the tiny models (torch backend): refinement, CEM without gradients, anytime
budget, NaN/exception → hold."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch

from vidplan_core.planning.planner import CEMConfig, CEMPlanner, GradientPlanner, PlannerConfig
from vidplan_core.planning.proposals import perturbation_proposals
from vidplan_core.runtime.base import Backend, BackendError, PlanningContext
from vidplan_core.runtime.bundle import random_planner_models
from vidplan_core.runtime.torch_backend import TorchBackend

TABLE_GH, TABLE_GW = 24, 40  # per-view semantic map size of the table-fusion tests


@functools.cache
def _table_geometry():
    """The shipped calibration's view geometry at the maps' (1, 1) scale."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config

    return action_map_config(load_calibration(), (1, 1))


def _table_uv(p) -> np.ndarray:
    """(2 views, 2) normalised image position of a table point ``p`` (3,) [m] in the left and right views."""
    from vidplan_core.planning.scoring import gripper_reference

    return gripper_reference(np.array([[[*p, np.pi, 0.0, 0.0, 0.0]]]), _table_geometry(), (0, 1))[0, 0].numpy()


def _table_map(blobs) -> np.ndarray:
    """(2·TABLE_GH, TABLE_GW) logits of the left and right views stacked: background −6 and a Gaussian blob per
    ``(point (3,) [m], (logit in left, logit in right))``."""
    gh, gw = TABLE_GH, TABLE_GW
    yy, xx = np.mgrid[0:gh, 0:gw]
    m = np.full((2 * gh, gw), -6.0, np.float32)
    for p, logits in blobs:
        for v, (u, w) in enumerate(_table_uv(p)):
            g = np.exp(-((xx + 0.5 - u * gw) ** 2 + (yy + 0.5 - w * gh) ** 2) / 2.0)
            m[v * gh:(v + 1) * gh] = np.maximum(m[v * gh:(v + 1) * gh], -6.0 + (logits[v] + 6.0) * g)
    return m


def _table_rollout(sem: np.ndarray):
    """A RolloutOutput whose semantic maps are ``sem`` (N, F, 2·TABLE_GH, TABLE_GW); every other output zero."""
    from vidplan_core.runtime.base import RolloutOutput

    z = np.zeros(sem.shape[:2], np.float32)
    return RolloutOutput(h_bar=z, uq_map=np.zeros_like(sem), value=z, value_entropy=z, semantic_score=z,
                         semantic_map=sem)

POSE = np.array([0.45, 0.05, 0.30, np.pi - 0.02, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    torch.set_num_threads(1)  # the 2 shared cores: oversubscribed threads make tiny models 10× slower
    return TorchBackend(random_planner_models("tiny", seed=0), flow_steps=1)


@pytest.fixture(scope="module")
def ctx(backend) -> PlanningContext:
    cfg = backend.models.suite.autoencoder.config
    frames = np.random.default_rng(0).integers(0, 255, (backend.num_history, 3, 3, cfg.view_height, cfg.view_width),
                                               dtype=np.uint8)
    return PlanningContext(frames, np.repeat(POSE[None], backend.num_history, 0), "pick up the red cube", seed=3)


@pytest.fixture(scope="module")
def proposals(backend):
    return perturbation_proposals(np.repeat(POSE[None], backend.horizon, 0), 6, rng=0)


class Wrapped:
    """Delegates to a real backend; optionally poisons outputs, forbids gradients or adds latency."""

    def __init__(self, inner, nan_in: str | None = None, raise_in: str | None = None, forbid_grad: bool = False,
                 delay_s: float = 0.0):
        self.inner, self.nan_in, self.raise_in, self.forbid_grad, self.delay_s = (inner, nan_in, raise_in,
                                                                                  forbid_grad, delay_s)
        self.name, self.horizon, self.normalizer = inner.name, inner.horizon, inner.normalizer
        # the views and camera geometry of the semantic maps (centring 'auto' scores as the inner backend does)
        for attr in ("map_views", "centring_view", "view_geometry"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))
        self.calls = {"rollout": 0, "value_and_grad": 0}
        self.grad_enabled_in_rollout: list[bool] = []

    def set_context(self, ctx):
        return self.inner.set_context(ctx)

    def rollout(self, actions):
        self.calls["rollout"] += 1
        self.grad_enabled_in_rollout.append(torch.is_grad_enabled())
        if self.raise_in == "rollout":
            raise RuntimeError("CUDA error: an illegal memory access")
        out = self.inner.rollout(actions)
        if self.nan_in and self.nan_in != "grad":
            getattr(out, self.nan_in)[0] = np.nan
        return out

    def value_and_grad(self, actions):
        self.calls["value_and_grad"] += 1
        if self.forbid_grad:
            raise AssertionError("value_and_grad must not be called")
        time.sleep(self.delay_s)
        j, g = self.inner.value_and_grad(actions)
        if self.nan_in == "grad":
            g = g * np.nan
        return j, g


def test_backend_protocol_and_bad_input(backend, ctx):
    assert isinstance(backend, Backend)
    backend.set_context(ctx)
    with pytest.raises(BackendError, match=r"actions must be \(N, 3, 7\)"):
        backend.rollout(np.zeros((2, 4, 7)))
    bad = PlanningContext(ctx.history_frames[:1], ctx.history_actions[:1], "x")
    with pytest.raises(BackendError, match="needs 2 history frames"):
        backend.set_context(bad)


def test_refinement_increases_objective(backend, ctx, proposals):
    # min_grad 0: the tiny random model's value gradient is ~1e-4, which the default would call uninformative
    planner = GradientPlanner(backend, PlannerConfig(refine_iters=4, lr=0.1, trust_region=0.3, min_grad=0.0))
    res = planner.plan(ctx, proposals)
    assert res.status == "ok", res.reason
    assert res.scores.shape == (6,) and res.uncertainty.shape == (6,)
    assert res.chosen_index == int(np.argmax(res.scores))
    assert len(res.objective_trace) == 5
    assert max(res.objective_trace[1:]) > res.objective_trace[0]  # gradient ascent improved J
    for k in ("encode", "rollout", "heads", "semantic", "select", "refinement", "total"):
        assert k in res.timings
    # the plan stays in the trust region around the chosen proposal (normalised units) and is finite
    norm = backend.normalizer
    d = np.abs(norm.normalize(res.chunk.actions) - norm.normalize(proposals.actions[res.chosen_index]))
    assert d.max() <= 0.3 + 1e-6 and res.chunk.is_finite()
    assert np.allclose(res.chunk.gripper, proposals.actions[res.chosen_index, :, 6])  # gripper not refined
    # the objective of the returned plan, re-evaluated, is the best of the trace
    backend.set_context(ctx)
    j, _ = backend.value_and_grad(res.chunk.actions[None])
    assert j[0] == pytest.approx(max(res.objective_trace), rel=1e-4)


def test_trust_region_is_capped_in_metres_and_radians(backend, ctx, proposals):
    """Refinement moves each position coordinate by ≤ trust_region_m and each Euler angle by ≤ trust_region_rad
    from the chosen proposal, whatever one normalised unit is in physical units."""
    def moved(cfg: PlannerConfig) -> tuple[float, float]:
        res = GradientPlanner(backend, cfg).plan(ctx, proposals)
        assert res.status == "ok", res.reason
        d = res.chunk.actions - proposals.actions[res.chosen_index]
        rot = np.abs((d[:, 3:6] + np.pi) % (2 * np.pi) - np.pi)
        return float(np.abs(d[:, :3]).max()), float(rot.max())

    base = dict(refine_iters=4, lr=0.5, trust_region=0.5, min_grad=0.0, stop_at_best_frame=False)
    free_m, free_rad = moved(PlannerConfig(**base, trust_region_m=None, trust_region_rad=None))
    cap_m, cap_rad = moved(PlannerConfig(**base, trust_region_m=0.005, trust_region_rad=0.01))
    assert cap_m <= 0.005 + 1e-6 and cap_rad <= 0.01 + 1e-6
    assert free_m > 0.005 and free_rad > 0.01  # without the caps the same refinement moves further


def test_cem_uses_forward_passes_only(backend, ctx, proposals):
    w = Wrapped(backend, forbid_grad=True)
    res = CEMPlanner(w, CEMConfig(iterations=3, population=6, elites=2)).plan(ctx, proposals)
    assert res.status == "ok", res.reason
    assert w.calls["value_and_grad"] == 0 and w.calls["rollout"] == 3
    assert not any(w.grad_enabled_in_rollout)
    assert res.objective_trace == sorted(res.objective_trace)  # elitism: best score never decreases


def test_time_budget_is_honoured(backend, ctx, proposals):
    w = Wrapped(backend, delay_s=0.3)
    t0 = time.perf_counter()
    warm = GradientPlanner(w, PlannerConfig(refine_iters=0)).plan(ctx, proposals)
    global_s = time.perf_counter() - t0
    budget = 3 * global_s + 1.5  # room for a few 0.3 s refinement iterations, not for 50
    res = GradientPlanner(w, PlannerConfig(refine_iters=50, time_budget_s=budget, min_grad=0.0)).plan(ctx, proposals)
    assert warm.status == "ok"
    assert res.status == "budget" and "time budget" in res.reason
    assert 1 <= len(res.objective_trace) < 51
    assert res.chunk.is_finite() and not res.hold
    # stopped before overrunning (iteration times are measured; slack for the loaded shared machine)
    assert res.timings["total"] <= budget + 0.5


@pytest.mark.parametrize("where", ["value", "semantic_map", "grad"])
def test_non_finite_outputs_give_hold(backend, ctx, proposals, where):
    res = GradientPlanner(Wrapped(backend, nan_in=where), PlannerConfig(refine_iters=1)).plan(ctx, proposals)
    assert res.hold and res.status == "hold"
    assert ("non-finite" in res.reason) and (where in res.reason or where == "grad")
    np.testing.assert_allclose(res.chunk.actions, np.repeat(ctx.current_pose[None], backend.horizon, 0))


def test_backend_exception_gives_hold(backend, ctx, proposals):
    res = GradientPlanner(Wrapped(backend, raise_in="rollout")).plan(ctx, proposals)
    assert res.hold and "illegal memory access" in res.reason
    res = CEMPlanner(Wrapped(backend, raise_in="rollout")).plan(ctx, proposals)
    assert res.hold


def test_uninformative_gradient_skips_refinement_and_says_so(backend, ctx, proposals):
    """A value gradient below min_grad is not amplified by Adam into trust-region-sized noise steps: refinement is
    skipped, flagged, and the chunk is the argmax proposal itself."""
    wrapped = Wrapped(backend)
    res = GradientPlanner(wrapped, PlannerConfig(refine_iters=4, min_grad=1.0)).plan(ctx, proposals)
    assert res.status == "ok" and res.refine_skipped and "uninformative value gradient" in res.reason
    assert wrapped.calls["value_and_grad"] == 1 and len(res.objective_trace) == 1
    best = proposals.actions[res.chosen_index]
    assert np.allclose(res.chunk.actions[:, :3], best[:, :3][: len(res.chunk)], atol=1e-9) or res.chunk is not None
    res2 = GradientPlanner(backend, PlannerConfig(refine_iters=2, min_grad=0.0)).plan(ctx, proposals)
    assert not res2.refine_skipped and len(res2.objective_trace) == 3


def test_refinement_stops_when_an_iteration_gains_less_than_refine_tol(backend, ctx, proposals):
    """refine_tol: refinement ends at the first iteration whose gain in the best objective is below the tolerance
    (fewer value-and-grad calls, the iterations run in the trace, the status ok with the reason); 0 runs them all."""
    base = dict(refine_iters=6, lr=0.1, trust_region=0.3, min_grad=0.0)
    full = GradientPlanner(backend, PlannerConfig(**base)).plan(ctx, proposals)
    assert full.status == "ok" and len(full.objective_trace) == 7
    # a tolerance above any gain the tiny model makes: stop after the first iteration
    w = Wrapped(backend)
    res = GradientPlanner(w, PlannerConfig(**base, refine_tol=1e6)).plan(ctx, proposals)
    assert res.status == "ok" and "converged after 1 iterations" in res.reason, res.reason
    assert w.calls["value_and_grad"] == 2 and len(res.objective_trace) == 2
    assert res.objective_trace == pytest.approx(full.objective_trace[:2], rel=1e-6)
    # a tolerance between the gains: it stops where the trace's first small gain is
    best = np.maximum.accumulate(full.objective_trace)
    gains = np.diff(best)
    tol = float(np.median(gains)) if np.median(gains) > 0 else 1e-12
    stop = int(np.argmax(gains < tol)) + 1 if (gains < tol).any() else 6
    mid = GradientPlanner(backend, PlannerConfig(**base, refine_tol=tol)).plan(ctx, proposals)
    assert len(mid.objective_trace) == stop + 1
    assert max(mid.objective_trace) == pytest.approx(best[stop], rel=1e-6)


def test_noise_averaged_scores_are_invariant_to_candidate_order(backend, ctx, proposals):
    """Scores averaged over M noise draws: the same numbers whatever the order of the candidates (the noise is shared
    by all candidates of a draw), the mean of the single-draw scores, and a winner-survival fraction."""
    cfg = PlannerConfig(refine_iters=0, noise_samples=3, stop_at_best_frame=False)
    a = GradientPlanner(backend, cfg).plan(ctx, proposals)
    perm = np.array([3, 0, 5, 1, 4, 2])
    from vidplan_core.planning.proposals import ProposalSet

    shuffled = ProposalSet(proposals.actions[perm], [proposals.labels[i] for i in perm])
    b = GradientPlanner(backend, cfg).plan(ctx, shuffled)
    assert np.allclose(a.scores[perm], b.scores, atol=1e-6)
    assert a.chosen_label == b.chosen_label
    singles = []
    for m in range(3):
        c = PlanningContext(ctx.history_frames, ctx.history_actions, ctx.instruction, seed=ctx.seed + m)
        singles.append(GradientPlanner(backend, PlannerConfig(refine_iters=0)).plan(c, proposals).scores)
    assert np.allclose(a.scores, np.mean(singles, axis=0), atol=1e-6)
    assert a.winner_survival is not None and 0.0 <= a.winner_survival <= 1.0
    assert a.winner_survival == np.mean([int(np.argmax(s)) == a.chosen_index for s in singles])
    one = GradientPlanner(backend, PlannerConfig(refine_iters=0, survival_check=True)).plan(ctx, proposals)
    assert one.winner_survival in (0.0, 1.0)  # the re-drawn seed keeps the winner or not
    assert GradientPlanner(backend, PlannerConfig(refine_iters=0)).plan(ctx, proposals).winner_survival is None


@pytest.mark.parametrize("planner", ["gradient", "cem"])
def test_planned_chunk_stays_inside_the_box_the_executor_checks(backend, ctx, planner):
    """Candidates a few mm below the workspace floor (a Jacobian proposal drifting while it moves sideways; a pose
    clipped to the floor comes back from the normalised space one ulp below it) leave the planner inside the box:
    before, the executor's reject policy dropped such a chunk whole."""
    from vidplan_core.planning.proposals import ProposalSet
    from vidplan_core.safety import SafetyLimits

    limits = SafetyLimits()
    below = np.repeat(POSE[None], backend.horizon, 0)
    below[:, 0] = np.linspace(0.45, 0.55, backend.horizon)
    below[:, 2] = limits.workspace_min[2] - np.linspace(1e-17, 0.006, backend.horizon)
    dy = np.array([0, 0.01, 0, 0, 0, 0, 0])
    props = ProposalSet(np.stack([below, below + dy, below - dy]),
                        ["below", "below+y", "below-y"])  # all below, so whichever wins must be brought back in
    cfg = dict(position_min=tuple(limits.workspace_min), position_max=tuple(limits.workspace_max))
    pl = (GradientPlanner(backend, PlannerConfig(refine_iters=0, **cfg)) if planner == "gradient"
          else CEMPlanner(backend, CEMConfig(iterations=1, population=4, **cfg)))
    a = pl.plan(ctx, props).chunk.actions
    assert (a[:, :3] >= np.array(limits.workspace_min)).all() and (a[:, :3] <= np.array(limits.workspace_max)).all()
    assert (a[:, 6] >= 0).all() and (a[:, 6] <= 1).all()


@pytest.mark.parametrize("planner", ["gradient", "cem"])
def test_nominal_margin_keeps_the_nominal_unless_a_candidate_beats_it_by_more(backend, ctx, proposals, planner):
    """nominal_margin = 0 is the paper's argmax; a margin above every score gap keeps the nominal policy's chunk;
    a margin below the winner's gap leaves the argmax."""
    def run(margin: float):
        if planner == "gradient":
            return GradientPlanner(backend, PlannerConfig(refine_iters=0, nominal_margin=margin)).plan(ctx, proposals)
        return CEMPlanner(backend, CEMConfig(iterations=1, nominal_margin=margin)).plan(ctx, proposals)

    plain = run(0.0)
    assert proposals.labels[0] == "nominal" and plain.chosen_index != 0  # this scene's argmax is a perturbation
    gap = float(plain.scores[plain.chosen_index] - plain.scores[0])
    kept = run(gap * 2)
    assert kept.chosen_index == 0 and np.allclose(kept.chunk.actions[0], proposals.actions[0][0])
    assert run(gap / 2).chosen_index == plain.chosen_index


def test_chunk_is_cut_at_its_best_frame(backend, ctx, proposals):
    """The score is a max over frames: the executed chunk holds the best frame's pose after it."""
    res = GradientPlanner(backend, PlannerConfig(refine_iters=0)).plan(ctx, proposals)
    full = GradientPlanner(backend, PlannerConfig(refine_iters=0, stop_at_best_frame=False)).plan(ctx, proposals)
    a, b = res.chunk.actions, full.chunk.actions
    diff = np.flatnonzero(np.abs(a - b).max(1) > 1e-9)
    if len(diff):  # steps after the best frame hold it
        k = diff[0] - 1
        assert k >= 0 and np.allclose(a[k:], a[k])
    assert np.allclose(a[0], b[0])


def test_semantic_map_is_suppressed_by_its_own_views_uncertainty():
    """The UQ map covers the three stacked views; the centring map shows one. Doubt about the wrist view lowers
    the wrist map's hot spot; doubt about the left view does not (before: the three views were squeezed together)."""
    from vidplan_core.planning.scoring import ScoreConfig, score_rollout, view_rows
    from vidplan_core.runtime.base import RolloutOutput

    n, f, h, w = 1, 1, 4, 8
    sem = np.zeros((n, f, h, w), np.float32)
    sem[..., 0, 0] = 1.0  # hot spot top-left of the wrist map → centroid near (0, 0)
    sem[..., 3, 7] = 0.9  # runner-up bottom-right

    def out(uq_rows: slice) -> RolloutOutput:
        uq = np.zeros((n, f, 3 * h, w), np.float32)
        uq[..., uq_rows, :4] = 1.0  # the left half of one view's rows is uncertain
        return RolloutOutput(h_bar=np.zeros((n, f), np.float32), uq_map=uq, value=np.zeros((n, f), np.float32),
                             value_entropy=np.zeros((n, f), np.float32), semantic_score=np.zeros((n, f), np.float32),
                             semantic_map=sem)

    cfg = ScoreConfig(lam=1.0, centroid_ref=(0.0, 0.0), kappa=5.0)
    wrist_doubt = score_rollout(out(slice(2 * h, 3 * h)), cfg, map_views=2)[0]
    left_doubt = score_rollout(out(slice(0, h)), cfg, map_views=2)[0]
    assert float(left_doubt) > float(wrist_doubt) + 0.2  # the hot spot moved only when its own view was doubtful
    assert view_rows(torch.zeros(2, 3 * h, w), 1).shape == (2, h, w)
    assert view_rows(torch.zeros(2, 1, 1), 1).shape == (2, 1, 1)  # not a stack: unchanged


def test_gripper_centring_prefers_the_candidate_whose_gripper_reaches_the_target():
    """centring='gripper': the reference point of each map view is the candidate's projected TCP, so on fixed
    exterior views the term differs between candidates (with centring='image' it cannot)."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, gripper_reference, score_rollout
    from vidplan_core.runtime.base import RolloutOutput

    geo = action_map_config(load_calibration(), (1, 1))
    down = [np.pi, 0.0, 0.0]
    target = np.array([0.55, 0.10, 0.03])
    near = np.array([[*target, *down, 0.0]] * 3)
    far = np.array([[0.35, -0.25, 0.40, *down, 0.0]] * 3)
    acts = np.stack([far, near])  # (N=2, F=3, 7)
    ref = gripper_reference(acts, geo, (0, 1, 2))
    assert ref.shape == (2, 3, 3, 2)
    assert torch.allclose(ref[0, :, 2], ref[1, :, 2], atol=1e-9)  # the wrist camera rides with the TCP
    assert (ref[1, 0, 0] - ref[0, 0, 0]).norm() > 0.1  # exterior views see the gripper move

    # maps whose hot spot is where the target projects in the left and right views
    gh, gw = 12, 20
    maps = []
    for v in (0, 1):
        uv = gripper_reference(np.array([[[*target, *down, 0.0]]]), geo, (v,))[0, 0, 0].numpy()
        m = np.zeros((gh, gw), np.float32)
        m[min(gh - 1, int(uv[1] * gh)), min(gw - 1, int(uv[0] * gw))] = 1.0
        maps.append(m)
    sem = np.broadcast_to(np.concatenate(maps, 0), (2, 3, 2 * gh, gw)).copy()
    z = np.zeros((2, 3), np.float32)
    out = RolloutOutput(h_bar=z, uq_map=np.zeros((2, 3, 3 * 6, 10), np.float32), value=z, value_entropy=z,
                        semantic_score=z, semantic_map=sem)
    s_grip = score_rollout(out, ScoreConfig(lam=1.0, centring="gripper"), (0, 1), acts, geo)[0]
    assert float(s_grip[1]) > float(s_grip[0]) + 0.1
    s_img = score_rollout(out, ScoreConfig(lam=1.0, centring="image"), (0, 1))[0]
    assert float(s_img[0]) == pytest.approx(float(s_img[1]))  # the image reference cannot tell them apart
    with pytest.raises(ValueError, match="gripper"):
        score_rollout(out, ScoreConfig(lam=1.0, centring="gripper"), (0, 1))
    # 'auto' (the default) is 'gripper' where the geometry is given, 'image' where it is not
    assert ScoreConfig().centring == "auto"
    s_auto = score_rollout(out, ScoreConfig(lam=1.0), (0, 1), acts, geo)[0]
    assert torch.equal(s_auto, s_grip)
    assert torch.equal(score_rollout(out, ScoreConfig(lam=1.0), (0, 1))[0], s_img)


def test_metric_centring_is_monotone_where_the_image_distance_is_not():
    """centring_space='metric': the centring distance is the TCP's 3-D distance to the fused target point. The
    image distance (mean over the two exterior views) is not monotone in it: from a TCP 5 cm above the table, the
    step of an +x chunk that lands straight over a standoff point on the table raises the image distance although
    the TCP came closer in 3-D (traced on the demo cameras: a push that held short of its standoff point)."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, gripper_reference, score_rollout
    from vidplan_core.runtime.base import RolloutOutput

    geo = action_map_config(load_calibration(), (1, 1))
    point = np.array([0.55, 0.27, 0.02])  # the traced push's standoff point
    down = [np.pi, 0.0, 0.0, 1.0]
    xs = (0.4872, 0.5171, 0.5469, 0.5767)  # hold, then the +x chunk's first frames (3 cm each)
    acts = np.array([[[x, 0.3062, 0.0687, *down]] for x in xs])  # (N=4, F=1, 7)
    d3 = np.linalg.norm(acts[:, 0, :3] - point, axis=-1)
    assert d3[2] < d3[1] < d3[0]  # in 3-D the second step is the closest
    img = (gripper_reference(acts, geo, (0, 1)) - gripper_reference(
        np.array([[[*point, *down]]]), geo, (0, 1))).norm(dim=-1).mean(-1)[:, 0]
    assert float(img[2]) > float(img[1])  # ... in the images it is farther than the first

    z = np.zeros((4, 1), np.float32)
    out = RolloutOutput(h_bar=z, uq_map=np.zeros((4, 1, 18, 10), np.float32), value=z, value_entropy=z,
                        semantic_score=z, semantic_map=np.full((4, 1, 24, 20), -10.0, np.float32))  # sees nothing
    target = gripper_reference(np.array([[[*point, *down]]]), geo, (0, 1))[0, 0]  # (V, 2): the fused target
    kw = dict(map_views=(0, 1), actions=acts, geometry=geo, target=target)
    image = score_rollout(out, ScoreConfig(lam=1.0, kappa=0.0), **kw, target_point=point)[0]
    metric = score_rollout(out, ScoreConfig(lam=1.0, kappa=0.0, centring_space="metric"), **kw,
                           target_point=point)[0]
    assert int(image.argmax()) == 1 and int(metric.argmax()) == 2
    assert np.allclose(-metric.numpy(), d3)  # scale 1: metres
    scaled = score_rollout(out, ScoreConfig(lam=1.0, kappa=0.0, centring_space="metric",
                                            centring_metric_scale=2.0), **kw, target_point=point)[0]
    assert np.allclose(-scaled.numpy(), 2 * d3)
    # without a fused point (no 'table' fusion) 'metric' falls back to the image distance
    fallback = score_rollout(out, ScoreConfig(lam=1.0, kappa=0.0, centring_space="metric"), **kw)[0]
    assert torch.equal(fallback, image)


def test_push_keepout_bars_coming_down_beside_the_object_on_the_way_round():
    """push_keepout_m: going round a push, a candidate's frames from the first whose TCP is down within that
    distance of the object's centre on score as if 1 m farther from the reference — except straight behind the
    object for a hand already lined up there, the way the push comes in; high, or farther away, they score as
    before, and without a keep-out (pushing, or a touch) nothing changes."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, gripper_reference, score_rollout
    from vidplan_core.runtime.base import RolloutOutput

    geo = action_map_config(load_calibration(), (1, 1))
    obj = np.array([0.49, 0.24, 0.02])  # the traced ball (push, seed 6, clutter 0: "... to the right", -y)
    right = np.array([0.0, -1.0, 0.0])
    ref = np.array([0.49, 0.29, 0.08])  # the raised standoff reference behind it
    down = [np.pi, 0.0, 0.0, 1.0]
    # from over the ball's near side: down beside it (traced), down 6 cm away, across it high, down ahead of it,
    # down straight behind it, down 1 cm off the line behind it, and down beside it first, then away
    acts = np.array([[[0.476, 0.236, 0.069, *down], [0.476, 0.236, 0.029, *down]],
                     [[0.476, 0.18, 0.069, *down], [0.476, 0.18, 0.029, *down]],
                     [[0.476, 0.266, 0.069, *down], [0.48, 0.29, 0.069, *down]],
                     [[0.476, 0.236, 0.069, *down], [0.49, 0.22, 0.03, *down]],
                     [[0.49, 0.30, 0.069, *down], [0.49, 0.265, 0.03, *down]],
                     [[0.50, 0.30, 0.069, *down], [0.50, 0.265, 0.03, *down]],
                     [[0.476, 0.236, 0.029, *down], [0.476, 0.18, 0.029, *down]]])  # (N=7, F=2, 7)
    z = np.zeros((7, 2), np.float32)
    out = RolloutOutput(h_bar=z, uq_map=np.zeros((7, 2, 18, 10), np.float32), value=z, value_entropy=z,
                        semantic_score=z, semantic_map=np.full((7, 2, 24, 20), -10.0, np.float32))
    kw = dict(map_views=(0, 1), actions=acts, geometry=geo, target_point=ref,
              target=gripper_reference(np.array([[[*ref, *down]]]), geo, (0, 1))[0, 0])
    cfg = ScoreConfig(lam=1.0, kappa=0.0, centring_space="metric")
    lined = np.array([0.49, 0.33, 0.10])  # the TCP now: behind the ball, on the line through it
    base = score_rollout(out, cfg, **kw)[1].numpy()  # (N, F) per-frame rewards
    assert base[0, 1] > base[1, 1]  # without the rule coming down beside the ball beats coming down 6 cm away
    keep = cfg.model_copy(update={"push_keepout_m": 0.03})
    kept = score_rollout(out, keep, **kw, keepout=(obj, right, lined))[1].numpy()
    barred = np.zeros((7, 2))
    barred[[0, 3], 1] = 1.0  # down beside or ahead of it in the second frame: from there on
    barred[6] = 1.0  # down beside it in the first frame: the second, away from it, came through it
    np.testing.assert_allclose(kept, base - barred)  # 6 cm away, high, or straight behind it: unchanged
    assert kept[1, 1] > kept[0, 1]
    narrow = score_rollout(out, cfg.model_copy(update={"push_keepout_m": 0.03, "push_lateral_m": 0.005}), **kw,
                           keepout=(obj, right, lined))[1].numpy()
    np.testing.assert_allclose(narrow[4], base[4])  # on the line: behind it still, with a narrower corridor
    np.testing.assert_allclose(narrow[5], base[5] - [0.0, 1.0])  # 1 cm off the line: outside a 0.5 cm corridor
    aside = score_rollout(out, cfg.model_copy(update={"push_keepout_m": 0.03}), **kw,
                          keepout=(obj, right, np.array([0.53, 0.27, 0.03])))[1].numpy()  # 4 cm off the line, behind
    np.testing.assert_allclose(aside[[4, 5], 1], base[[4, 5], 1] - 1.0)  # moving in sideways, close: barred
    same = score_rollout(out, cfg.model_copy(update={"push_keepout_m": 0.03}), **kw)[1].numpy()
    np.testing.assert_allclose(same, base)  # no keep-out (pushing, or a touch): no change


def test_instruction_direction_reads_only_a_closing_motion_phrase():
    from vidplan_core.planning.goal import instruction_direction

    assert instruction_direction("push the red cube to the left").tolist() == [0.0, 1.0, 0.0]  # the robot's left: +y
    assert instruction_direction("Push the blue ball to the right.").tolist() == [0.0, -1.0, 0.0]
    assert instruction_direction("slide the mug away from the robot").tolist() == [1.0, 0.0, 0.0]
    assert instruction_direction("touch the red cube") is None
    assert instruction_direction("touch the cube to the left of the bowl") is None  # a place, not a motion


def test_instruction_destination_reads_where_a_put_goes():
    from vidplan_core.planning.goal import instruction_destination

    assert instruction_destination("put the red cube in the bowl") == "the bowl"
    assert instruction_destination("Please place the ball into the green bowl.") == "the green bowl"
    assert instruction_destination("pick up the red cube and put it in the bowl") == "the bowl"
    assert instruction_destination("touch the cube in the bowl") is None  # a place, not where it goes
    assert instruction_destination("push the red cube to the left") is None
    assert instruction_destination("put the red cube") is None  # nowhere named


def test_put_phase_reads_approach_carry_and_let_go_from_the_gripper():
    """PutPhase: open → approach (grasp zone), closed with the fingers apart → carry (the destination phrase; the
    first closed cycle settles), closed with them together → let go, remembering where, so that no grasp zone stands
    there and the object is searched for below; touch and a disabled carry phase leave it at rest."""
    from vidplan_core.planning.put_phase import PutPhase
    from vidplan_core.planning.scoring import ScoreConfig

    sc = ScoreConfig(carry_height_m=0.08)
    frames = np.zeros((1, 3, 3, 2, 2), np.uint8)

    def ctx_at(xyz, gripper, closure=None, text="put the red cube in the bowl"):
        return PlanningContext(frames, np.array([[*xyz, np.pi, 0.0, 0.0, gripper]]), text, gripper_closure=closure)

    ph = PutPhase()
    ph.update(ctx_at([0.4, 0.1, 0.03], 0.0, 0.0), sc, True, None)
    assert ph.put and ph.carry is None and not ph.let_go and ph.grasp_allowed(0.02)
    ph.update(ctx_at([0.4, 0.1, 0.03], 1.0, 0.5), sc, True, "put the red cube in the bowl")
    assert ph.carry == "the bowl" and ph.settle and not ph.grasp_allowed(0.02)
    ph.update(ctx_at([0.4, 0.1, 0.08], 1.0, 0.5), sc, True, "the bowl")
    assert ph.carry == "the bowl" and not ph.settle
    ph.update(ctx_at([0.4, 0.1, 0.08], 1.0, 0.99), sc, True, "the bowl")  # the object slipped out
    assert ph.let_go and ph.carry is None and len(ph.empty_grasps) == 1
    np.testing.assert_allclose(ph.take_lost_at(), [0.4, 0.1, sc.table_height_m])
    assert ph.take_lost_at() is None  # once
    ph.update(ctx_at([0.41, 0.1, 0.03], 0.0, 0.0), sc, True, "put the red cube in the bowl")
    assert ph.put and not ph.grasp_allowed(0.02)  # 1 cm from where a grasp came up empty
    ph.update(ctx_at([0.45, 0.1, 0.03], 0.0, 0.0), sc, True, "put the red cube in the bowl")
    assert ph.grasp_allowed(0.02)
    ph.update(ctx_at([0.45, 0.1, 0.03], 1.0, None), sc, True, "put the red cube in the bowl")
    assert ph.carry == "the bowl"  # no measured closure: a closed gripper holds the object
    for text, enabled, cfg in (("touch the red cube", True, sc), ("put the red cube in the bowl", False, sc),
                               ("put the red cube in the bowl", True, ScoreConfig())):
        ph.update(ctx_at([0.45, 0.1, 0.03], 1.0, 0.99, text), cfg, enabled, None)
        assert not ph.put and ph.carry is None and not ph.let_go
    ph.reset()
    assert ph.empty_grasps == [] and ph.closed_cycles == 0 and not ph.relook
    # relook_after_empty: an empty grasp holds the re-look until the hand is back 0.8 × grasp_clearance_m up
    look = sc.model_copy(update={"relook_after_empty": True, "grasp_clearance_m": 0.05})
    for cfg, want in ((sc, False), (look, True)):
        ph = PutPhase()
        ph.update(ctx_at([0.4, 0.1, 0.02], 1.0, 0.99), cfg, True, "put the red cube in the bowl")  # closed on nothing
        assert ph.let_go and ph.relook == want
        ph.update(ctx_at([0.4, 0.1, 0.02], 0.0, 0.0), cfg, True, "put the red cube in the bowl")  # open, still low
        assert ph.relook == want
        ph.update(ctx_at([0.4, 0.1, 0.05], 0.0, 0.0), cfg, True, "put the red cube in the bowl")  # 3 cm up: not yet
        assert ph.relook == want
        ph.update(ctx_at([0.4, 0.1, 0.061], 0.0, 0.0), cfg, True, "put the red cube in the bowl")  # 4.1 cm up
        assert not ph.relook


def test_carry_lifts_first_then_heads_over_the_destination_and_releases_there():
    """carry_height_m: a put's carry reference is straight above the TCP until it is near the carry height, then the
    point over the destination; with metric centring the gripper is part of that reference — closed on the way (an
    early release costs gripper_weight_m), open over the destination (keeping the object there costs as much)."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, carry_reference, gripper_reference, score_rollout
    from vidplan_core.runtime.base import RolloutOutput

    cfg = ScoreConfig(lam=1.0, kappa=0.0, centring_space="metric", carry_height_m=0.08)
    drop = np.array([0.55, -0.20, 0.10])  # 8 cm over the bowl's table point
    np.testing.assert_allclose(carry_reference(drop, np.array([0.40, 0.15, 0.02]), cfg), [0.40, 0.15, 0.10])
    np.testing.assert_allclose(carry_reference(drop, np.array([0.40, 0.15, 0.08]), cfg), drop)  # high enough
    np.testing.assert_allclose(carry_reference(drop, np.array([0.56, -0.21, 0.03]), cfg), drop)  # over it already

    geo = action_map_config(load_calibration(), (1, 1))
    down = [np.pi, 0.0, 0.0]
    over, away = [0.555, -0.195, 0.10], [0.40, 0.15, 0.10]
    # over the bowl: keep closed / open; away from it: keep closed / open
    acts = np.array([[[*over, *down, 1.0]] * 2, [[*over, *down, 0.0]] * 2,
                     [[*away, *down, 1.0]] * 2, [[*away, *down, 0.0]] * 2])  # (N=4, F=2, 7)
    z = np.zeros((4, 2), np.float32)
    out = RolloutOutput(h_bar=z, uq_map=np.zeros((4, 2, 18, 10), np.float32), value=z, value_entropy=z,
                        semantic_score=z, semantic_map=np.full((4, 2, 24, 20), -10.0, np.float32))
    kw = dict(map_views=(0, 1), actions=acts, geometry=geo, target_point=drop,
              target=gripper_reference(np.array([[[*drop, *down, 1.0]]]), geo, (0, 1))[0, 0])
    plain = score_rollout(out, cfg, **kw)[0].numpy()
    assert plain[0] == plain[1] and plain[2] == plain[3]  # without the drop point the gripper is not scored
    s = score_rollout(out, cfg, **kw, drop=drop)[0].numpy()
    assert s[1] > s[0]  # over the bowl: release
    assert s[2] > s[3]  # elsewhere: keep holding
    np.testing.assert_allclose([s[0] - s[1], s[2] - s[3]], [-0.30, 0.30], atol=1e-9)  # gripper_weight_m, lam 1
    sem = RolloutOutput(**{**out.__dict__, "semantic_score": np.full((4, 2), 0.5, np.float32)})
    np.testing.assert_allclose(score_rollout(sem, cfg, **kw, drop=drop)[0].numpy(), s)  # carrying: not scored
    np.testing.assert_allclose(score_rollout(sem, cfg, **kw)[0].numpy(), plain + 0.5)  # elsewhere it is
    # release_free_entry: from outside the zone a closed hand may carry the object in; inside it, it should open
    free = cfg.model_copy(update={"release_free_entry": True})
    outside = score_rollout(out, free, **kw, drop=drop, tcp_now=np.array(away))[0].numpy()
    assert outside[0] == outside[1] > s[0] and outside[2] > outside[3]  # into the zone closed: not charged
    inside = score_rollout(out, free, **kw, drop=drop, tcp_now=np.array(over))[0].numpy()
    np.testing.assert_allclose(inside, s)  # already over it: as without the rule
    empty = score_rollout(out, cfg, **kw, let_go=True)[0].numpy()  # closed on nothing: open, wherever it is
    assert empty[1] > empty[0] and empty[3] > empty[2]
    from vidplan_core.planning.scoring import release_gripper

    tcp = torch.tensor([[0.55, -0.20, 0.14], [0.55, -0.20, 0.16], [0.55, -0.20, 0.06], [0.60, -0.20, 0.10]])
    # 4 cm above the carry height: over it; too high; too low; 5 cm aside
    assert release_gripper(tcp.double(), drop, cfg).tolist() == [0.0, 1.0, 1.0, 1.0]
    # approaching the object at `obj` with the gripper open: close at it (low, within 2 cm), nowhere else
    from vidplan_core.planning.scoring import grasp_gripper

    obj = np.array([0.40, 0.15, 0.02])
    at = torch.tensor([[0.41, 0.15, 0.025], [0.40, 0.15, 0.07], [0.44, 0.15, 0.025]], dtype=torch.float64)
    assert grasp_gripper(at, obj, cfg).tolist() == [1.0, 0.0, 0.0]
    acts[2, :, :3], acts[3, :, :3] = [0.41, 0.15, 0.025], [0.41, 0.15, 0.025]  # at the object: open / closed
    acts[0, :, :3], acts[1, :, :3] = [0.40, 0.15, 0.07], [0.40, 0.15, 0.07]  # 5 cm over it: closed / open
    reach = score_rollout(out, cfg, **kw, grasp=obj)[0].numpy()
    assert reach[2] > reach[3] and reach[1] == reach[0]  # at it an open hand pays; above it nothing does
    # close_radius_m: closing 5 cm over the object or 4 cm beside it pays gripper_weight_m; at it, nothing does
    from vidplan_core.planning.scoring import close_barred

    bar = cfg.model_copy(update={"close_radius_m": 0.03, "close_height_m": 0.03})
    spots = torch.tensor([[0.41, 0.15, 0.025], [0.40, 0.15, 0.07], [0.44, 0.15, 0.025], [0.42, 0.17, 0.045]],
                         dtype=torch.float64)
    assert close_barred(spots, obj, bar).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert score_rollout(out, cfg, **kw, approach=obj)[0].tolist() == score_rollout(out, cfg, **kw)[0].tolist()  # off
    high = score_rollout(out, bar, **kw, approach=obj)[0].numpy()
    np.testing.assert_allclose(high[1] - high[0], 0.30, atol=1e-9)  # 5 cm over it: closing pays, staying open not
    assert high[2] == high[3]  # at it: neither pays (the grasp zone is a separate argument)
    both = score_rollout(out, bar, **kw, grasp=obj, approach=obj)[0].numpy()
    assert both[2] > both[3] and both[1] > both[0]  # in the zone: close; over it: stay open
    # relook_after_empty: after an empty grasp every closing frame pays, at the object too (close_radius_m or not)
    for c in (cfg, bar):
        look = score_rollout(out, c, **kw, approach=obj, relook=True)[0].numpy()
        np.testing.assert_allclose([look[1] - look[0], look[3] - look[2]], [0.30, 0.30], atol=1e-9)  # open − closed


def test_push_progress_prefers_the_candidate_that_moves_the_target_the_asked_way():
    """direction_weight: the target's image motion along the instruction's direction, per exterior view, is added
    to the reward — so among candidates that all keep the gripper on the target, the one that pushes it the asked
    way wins; the wrist camera (riding with the hand) contributes nothing; with weight 0 the three tie."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import action_map_config
    from vidplan_core.planning.goal import instruction_direction
    from vidplan_core.planning.scoring import ScoreConfig, gripper_reference, image_directions, score_rollout
    from vidplan_core.runtime.base import RolloutOutput

    geo = action_map_config(load_calibration(), (1, 1))
    down = [np.pi, 0.0, 0.0]
    start = np.array([0.55, 0.0, 0.03])
    f, gh, gw = 4, 36, 60
    left = instruction_direction("push the red cube to the left")
    acts, sems = [], []
    for dy in (0.03, 0.0, -0.03):  # per frame: the gripper pushes the object 3 cm to the left, stays, to the right
        a = np.array([[*(start + np.array([0.0, dy * k, 0.0])), *down, 0.0] for k in range(f)])
        uv = gripper_reference(a[None], geo, (0, 1))[0].numpy()  # (F, 2, 2): the object under the TCP
        m = np.zeros((f, 2 * gh, gw), np.float32)
        for k in range(f):
            for v in (0, 1):
                m[k, v * gh + min(gh - 1, int(uv[k, v, 1] * gh)), min(gw - 1, int(uv[k, v, 0] * gw))] = 1.0
        acts.append(a)
        sems.append(m)
    acts, sem = np.stack(acts), np.stack(sems)
    z = np.zeros((3, f), np.float32)
    out = RolloutOutput(h_bar=z, uq_map=np.zeros((3, f, 3 * 6, 10), np.float32), value=z, value_entropy=z,
                        semantic_score=z, semantic_map=sem)
    push, plain = ScoreConfig(lam=1.0, direction_weight=2.0), ScoreConfig(lam=1.0)
    s = score_rollout(out, push, (0, 1), acts, geo, left)[0].numpy()
    assert s[0] > s[1] + 0.05 and s[1] >= s[2]  # pushed left > stayed ≥ pushed right
    s0 = score_rollout(out, plain, (0, 1), acts, geo, left)[0].numpy()
    assert np.ptp(s0) < 0.02  # without the term the gripper stays on the target in all three: a tie
    assert np.array_equal(score_rollout(out, push, (0, 1), acts, geo, None)[0].numpy(), s0)  # no direction asked
    u = image_directions(acts[0, 0], left, geo, (0, 1, 2))
    assert torch.allclose(u[:2].norm(dim=-1), torch.ones(2, dtype=u.dtype)) and u[2].abs().max() == 0
    with pytest.raises(ValueError, match="direction_weight"):
        score_rollout(out, ScoreConfig(lam=1.0, direction_weight=2.0, centring="image"), (0, 1), acts, geo, left)
    # a target the maps stop seeing (σ(max logit) < 0.5, e.g. under the arm) adds no progress: where it went unseen
    # is not evidence of a push
    hidden = sem.copy()
    hidden[0, 1:] = hidden[0, 1:] * 2.0 - 3.0  # the pushed-left candidate's later frames: max logit −1
    out_h = RolloutOutput(h_bar=z, uq_map=out.uq_map, value=z, value_entropy=z, semantic_score=z,
                          semantic_map=hidden)
    with_term = score_rollout(out_h, push, (0, 1), acts, geo, left)[0].numpy()
    without = score_rollout(out_h, plain, (0, 1), acts, geo, left)[0].numpy()
    assert with_term[0] == pytest.approx(without[0]) and with_term[0] < s[0] - 0.05
    # track_confidence sets that threshold: at 0.2 the faint target (σ = 0.27) is followed again
    faint = score_rollout(out_h, push.model_copy(update={"track_confidence": 0.2}), (0, 1), acts, geo, left)[0]
    assert faint.numpy()[0] > with_term[0] + 0.05
    # nor does a target that moves while the gripper is far from it (direction_radius): on a learned model that is
    # mostly a map drifting with the arm, not a push
    away = acts.copy()
    away[0, :, :3] = [0.35, -0.25, 0.40]
    far = score_rollout(out, push, (0, 1), away, geo, left)[0].numpy()
    assert far[0] == pytest.approx(score_rollout(out, plain, (0, 1), away, geo, left)[0].numpy()[0])
    assert score_rollout(out, push.model_copy(update={"direction_radius": 10.0}), (0, 1), away, geo,
                         left)[0].numpy()[0] > far[0] + 0.05


def test_target_memory_keeps_the_target_when_a_distractor_outshines_it():
    """target_gate: a view's centring target is the most confident centroid near where the previous cycle put it —
    so a distractor the map sees more confidently for a while (the arm hiding the target) does not take its place;
    a view that finds nothing near its memory for target_lost_cycles cycles looks anywhere again; gate 0 = the most
    confident centroid anywhere, every cycle."""
    from vidplan_core.planning.scoring import ScoreConfig, TargetMemory, locate_target
    from vidplan_core.runtime.base import RolloutOutput

    gh, gw = 20, 40

    def cycle(*candidates):  # per candidate: [(row, col, logit)] in both views, one frame
        m = np.full((len(candidates), 1, 2 * gh, gw), -6.0, np.float32)
        for n, blobs in enumerate(candidates):
            for r, c, logit in blobs:
                m[n, 0, r, c] = m[n, 0, gh + r, c] = logit
        z = np.zeros((len(candidates), 1), np.float32)
        return RolloutOutput(h_bar=z, uq_map=np.zeros((len(candidates), 1, 2 * gh, gw), np.float32), value=z,
                             value_entropy=z, semantic_score=z, semantic_map=m)

    target, distractor = (5, 10), (15, 35)
    seen = cycle([(*target, 3.0), (*distractor, -2.0)])
    # the arm hides the target in one imagined future, where the distractor is the most confident thing anywhere
    hidden = cycle([(*target, 1.0), (*distractor, -2.0)], [(*distractor, 2.0)])
    cfg = ScoreConfig(target_gate=0.1, target_lost_cycles=3, centroid_temperature=0.05, suppress_semantic=False)
    want = torch.tensor([(target[1] + 0.5) / gw, (target[0] + 0.5) / gh], dtype=torch.float64)
    mem = TargetMemory()
    assert torch.allclose(locate_target(seen, cfg, (0, 1), mem), want.expand(2, 2), atol=0.02)
    for _ in range(2):  # near the memory, the future that still sees the target wins
        assert torch.allclose(locate_target(hidden, cfg, (0, 1), mem), want.expand(2, 2), atol=0.02)
        assert mem.misses.tolist() == [0, 0]
    plain = cfg.model_copy(update={"target_gate": 0.0})
    assert (locate_target(hidden, plain, (0, 1), TargetMemory()) - want).norm(dim=-1).min() > 0.3  # jumps
    gone = cycle([(*distractor, 1.0)])  # the target left the views: the memory holds, then lets go
    for k in range(2):
        assert torch.allclose(locate_target(gone, cfg, (0, 1), mem), want.expand(2, 2), atol=0.02)
        assert mem.misses.tolist() == [k + 1, k + 1]
    assert (locate_target(gone, cfg, (0, 1), mem) - want).norm(dim=-1).min() > 0.3
    assert mem.misses.tolist() == [0, 0]


def test_table_fusion_puts_the_target_where_both_views_agree():
    """target_fusion='table': each view's most confident blob may be a different distractor — the per-view targets
    then sit on two different objects and the averaged centring term pulls the gripper between them. The fused
    target is the table point both views score highest, projected back into each view; across cycles it moves only
    along the hand's own motion while the TCP is near it (the arm lights up the maps there) and is otherwise
    searched only near the last point."""
    from vidplan_core.planning.scoring import (
        ScoreConfig,
        TargetMemory,
        _confidence,
        _most_confident,
        _view_maps,
        locate_on_table,
        soft_centroid,
    )

    geo, gh, uv_of = _table_geometry(), TABLE_GH, _table_uv
    region = ((0.2, 0.8), (-0.45, 0.45))

    def maps(blobs):  # blobs: [(point, (logit in left, logit in right))] → one candidate, one frame, both views
        return _table_rollout(_table_map(blobs)[None, None])

    target, d_left, d_right = (0.55, 0.10, 0.02), (0.42, -0.20, 0.02), (0.70, -0.25, 0.02)
    # each view sees the target at logit 3 and "its" distractor brighter, at 4; the other view barely sees it
    out = maps([(target, (3.0, 3.0)), (d_left, (4.0, -4.0)), (d_right, (-4.0, 4.0))])
    cfg = ScoreConfig(target_fusion="table", suppress_semantic=False, centroid_temperature=0.05)
    want = torch.as_tensor(uv_of(target))
    _, sems = _view_maps(out, cfg, (0, 1))  # the default path: per view, the most confident centroid
    plain = _most_confident(torch.stack([soft_centroid(m, 0.05) for m in sems], 2), _confidence(sems))
    assert ((plain - want).norm(dim=-1) > 0.1).all()  # per view: two different distractors
    mem = TargetMemory()
    fused = locate_on_table(out, cfg, (0, 1), geo, region, mem)
    assert torch.allclose(fused.to(want.dtype), want, atol=0.02)
    assert np.linalg.norm(mem.point[:2] - np.array(target[:2])) <= 0.015 and mem.point[2] == cfg.table_height_m

    # the hand arrives at the target; while it stays there the maps light up the arm next to it: the point holds
    tcp = np.array([0.56, 0.11, 0.05])
    locate_on_table(out, cfg, (0, 1), geo, region, mem, tcp=tcp)
    arm = (0.60, 0.12, 0.02)
    at_arm = maps([(arm, (5.0, 5.0)), (target, (2.0, 2.0))])
    for _ in range(2):
        kept = locate_on_table(at_arm, cfg, (0, 1), geo, region, mem, tcp)
        assert torch.allclose(kept.to(want.dtype), want, atol=0.02)
    dragged = TargetMemory(point=mem.point.copy(), tcp=tcp.copy())  # without the rule the arm wins
    locate_on_table(at_arm, cfg.model_copy(update={"table_hold_m": 0.0}), (0, 1), geo, region, dragged, tcp)
    assert np.linalg.norm(dragged.point[:2] - np.array(arm[:2])) <= 0.015
    # the hand moves 3 cm to the left (+y) and the object with it: followed along the hand's motion
    pushed = (0.55, 0.13, 0.02)
    locate_on_table(maps([(arm, (5.0, 5.0)), (pushed, (2.0, 2.0))]), cfg, (0, 1), geo, region, mem,
                    tcp + np.array([0.0, 0.03, 0.0]))
    assert np.linalg.norm(mem.point[:2] - np.array(pushed[:2])) <= 0.015
    # with the TCP away, the search stays within table_track_m of the last point: a moved object (3 cm) is
    # followed, a brighter object 25 cm away is not
    moved = (0.55, 0.16, 0.02)
    both = maps([(moved, (3.0, 3.0)), ((0.55, -0.15, 0.02), (5.0, 5.0))])
    locate_on_table(both, cfg, (0, 1), geo, region, mem, tcp=np.array([0.35, -0.3, 0.3]))
    assert np.linalg.norm(mem.point[:2] - np.array(moved[:2])) <= 0.015
    free = TargetMemory()  # no memory: the brightest agreement anywhere
    locate_on_table(both, cfg, (0, 1), geo, region, free)
    assert np.linalg.norm(free.point[:2] - np.array([0.55, -0.15])) <= 0.015
    # score.approach_observed: one observed map per view scored in place of the imagined ones. The imagined light a
    # look-alike brightest, the observed frames the target; None keeps a view's imagined maps
    alike = (0.45, -0.20, 0.02)
    imagined = maps([(alike, (5.0, 5.0)), (target, (2.0, 2.0))])
    seen = torch.as_tensor(maps([(target, (3.0, 3.0)), (alike, (1.0, 1.0))]).semantic_map[0, 0]).double()
    for observed, want_p in ((None, alike), ([None, None], alike), ([seen[:gh], seen[gh:]], target)):
        m = TargetMemory()
        locate_on_table(imagined, cfg, (0, 1), geo, region, m, observed=observed)
        assert np.linalg.norm(m.point[:2] - np.array(want_p[:2])) <= 0.015, observed is None
    # table_pool: the target lit in one imagined future (the others: the arm hides it) beats an object dimly lit in
    # all of them with 'max' (the default), not with 'mean'
    dim = (0.45, 0.25, 0.02)
    lit, hid = maps([(target, (3.0, 3.0)), (dim, (1.0, 1.0))]), maps([(dim, (1.0, 1.0))])
    two = _table_rollout(np.concatenate([lit.semantic_map, hid.semantic_map]))
    assert cfg.table_pool == "max"
    for pool, want_p in (("max", target), ("mean", dim)):
        m = TargetMemory()
        locate_on_table(two, cfg.model_copy(update={"table_pool": pool}), (0, 1), geo, region, m)
        assert np.linalg.norm(m.point[:2] - np.array(want_p[:2])) <= 0.015, pool
    with pytest.raises(ValueError, match="target_gate"):
        ScoreConfig(target_fusion="table", target_gate=0.05)

    # push_standoff_m: for "push … to the left" (+y) the reference is first 5 cm behind the object (its right),
    # then — once the TCP is there, low — 10 cm ahead of it; a hand that loses the object goes round again
    push = cfg.model_copy(update={"push_standoff_m": 0.05})
    left = np.array([0.0, 1.0, 0.0])
    obj = maps([(target, (3.0, 3.0))])
    pm = TargetMemory()
    high = np.array([0.30, 0.0, 0.40])
    ref = locate_on_table(obj, push, (0, 1), geo, region, pm, high, left)
    assert torch.allclose(ref.to(want.dtype), torch.as_tensor(uv_of((0.55, 0.05, 0.02))), atol=0.02)
    assert not pm.pushing
    np.testing.assert_allclose(pm.keepout, target, atol=0.011)  # going round: the object is kept out of (keepout)
    assert torch.allclose(locate_on_table(obj, cfg, (0, 1), geo, region, TargetMemory(), high, left).to(want.dtype),
                          want, atol=0.02)  # standoff 0: the object itself
    at_standoff = np.array([0.55, 0.06, 0.03])
    ref = locate_on_table(obj, push, (0, 1), geo, region, pm, at_standoff, left)
    assert pm.pushing and pm.keepout is None
    assert torch.allclose(ref.to(want.dtype), torch.as_tensor(uv_of((0.55, 0.20, 0.02))), atol=0.02)
    ref = locate_on_table(obj, push, (0, 1), geo, region, pm, np.array([0.30, -0.2, 0.03]), left)
    assert not pm.pushing  # the hand is 35 cm from the object: round again
    assert torch.allclose(ref.to(want.dtype), torch.as_tensor(uv_of((0.55, 0.05, 0.02))), atol=0.02)
    np.testing.assert_allclose(pm.reference, (0.55, 0.05, 0.02), atol=0.011)  # what an approach candidate reads
    # push_clearance_m: going round, the reference is that far above the standoff point until the hand is over it
    over = push.model_copy(update={"push_clearance_m": 0.06})
    cm = TargetMemory()
    ref = locate_on_table(obj, over, (0, 1), geo, region, cm, np.array([0.55, 0.25, 0.03]), left)  # ahead of it
    assert not cm.pushing and torch.allclose(ref.to(want.dtype), torch.as_tensor(uv_of((0.55, 0.05, 0.08))),
                                             atol=0.02)
    np.testing.assert_allclose(cm.reference, (0.55, 0.05, 0.08), atol=0.011)
    ref = locate_on_table(obj, over, (0, 1), geo, region, cm, np.array([0.55, 0.06, 0.10]), left)  # over it, high
    assert not cm.pushing and torch.allclose(ref.to(want.dtype), torch.as_tensor(uv_of((0.55, 0.05, 0.02))),
                                             atol=0.02)
    locate_on_table(obj, over, (0, 1), geo, region, cm, at_standoff, left)
    assert cm.pushing  # down at the standoff point: the push begins as without the clearance
    # push_over_hysteresis: once over the standoff point, the lowered reference holds out to that × push_reach_m
    beside = np.array([0.55, 0.05 - 0.045, 0.10])  # 4.5 cm from the standoff point: outside 3 cm, inside 6 cm
    for factor, want_z in ((1.0, 0.08), (2.0, 0.02)):
        hm = TargetMemory()
        locate_on_table(obj, over.model_copy(update={"push_over_hysteresis": factor}), (0, 1), geo, region, hm,
                        np.array([0.55, 0.06, 0.10]), left)  # over it
        assert hm.over and not hm.pushing
        locate_on_table(obj, over.model_copy(update={"push_over_hysteresis": factor}), (0, 1), geo, region, hm,
                        beside, left)
        np.testing.assert_allclose(hm.reference[2], want_z, atol=1e-9, err_msg=f"hysteresis {factor}")
    far = TargetMemory()  # never over it: raised, whatever the factor
    locate_on_table(obj, over.model_copy(update={"push_over_hysteresis": 2.0}), (0, 1), geo, region, far, beside, left)
    assert not far.over and far.reference[2] == pytest.approx(0.08)

    def visit(key: str, value: float, *tcps: np.ndarray) -> tuple[TargetMemory, list[bool]]:
        """A fresh memory after the TCP visits ``tcps`` in turn under ``push`` with ``key`` set, and ``pushing``
        after each visit."""
        run, mem, states = push.model_copy(update={key: value}), TargetMemory(), []
        for tcp in tcps:
            locate_on_table(obj, run, (0, 1), geo, region, mem, tcp, left)
            states.append(mem.pushing)
        return mem, states

    # push_overrun_m: a hand 4 cm past the object's centre along the motion (it slid by the object's side; still
    # within table_hold_m of it) keeps pushing without the rule and goes round again with it
    past = np.array([0.55, 0.14, 0.03])
    for overrun, still_pushing in ((0.0, True), (0.05, True), (0.02, False)):
        om, states = visit("push_overrun_m", overrun, at_standoff, past)
        assert states == [True, still_pushing], overrun
        if not still_pushing:  # back to the standoff point behind the object
            np.testing.assert_allclose(om.reference, (0.55, 0.05, 0.02), atol=0.011)
    # push_lateral_m: the push begins only near the line through the object along the motion (+y here) and ends
    # when the hand drifts beside the object
    off_line = np.array([0.575, 0.06, 0.03])  # 2.5 cm across the motion: within push_reach_m of the standoff point
    for lateral, begins in ((0.0, True), (0.03, True), (0.02, False)):
        assert visit("push_lateral_m", lateral, off_line)[1] == [begins], lateral
    beside_obj = np.array([0.58, 0.09, 0.03])  # 3 cm beside the object, not past its centre along the motion
    for lateral, still_pushing in ((0.0, True), (0.02, False)):
        assert visit("push_lateral_m", lateral, at_standoff, beside_obj)[1] == [True, still_pushing], lateral


def test_predicted_displacement_scores_the_target_moving_the_asked_way():
    """score.push_displacement_weight: per candidate and imagined frame the target is located on the table near this
    cycle's point; a candidate whose future shows the object moving the asked way (+y, 'to the left') scores the
    metres it moved, one that moves it the other way scores negative, and a future that is the same for every
    candidate (a world model that ignores its actions) gives every candidate the same term. A brighter object outside
    table_track_m is not followed."""
    from vidplan_core.planning.scoring import ScoreConfig, rollout_displacement, score_terms
    from vidplan_core.runtime.base import RolloutOutput

    geo = _table_geometry()

    def frame(p, far=None):  # both views' (2·gh, gw) logits of an object at p (and a brighter one at far)
        return _table_map([(p, (3.0, 3.0))] + ([(far, (6.0, 6.0))] if far else []))

    obj = np.array([0.55, 0.10, 0.02])
    paths = [[obj + np.array([0, 0.01 * f, 0]) for f in range(4)],  # pushed 3 cm to the left (+y)
             [obj - np.array([0, 0.01 * f, 0]) for f in range(4)],  # 3 cm the wrong way
             [obj for _ in range(4)],  # left where it is, a brighter object 20 cm away
             [obj + np.array([0, 0.04 * f, 0]) for f in range(4)]]  # pushed fast: 12 cm, past table_track_m
    sem = np.stack([np.stack([frame(p, far=(0.55, -0.10, 0.02) if i == 2 else None) for p in path])
                    for i, path in enumerate(paths)])  # (4, 4, 2·gh, gw)
    out = _table_rollout(sem)
    cfg = ScoreConfig(target_fusion="table", suppress_semantic=False, centring_space="metric",
                      push_displacement_weight=4.0, lam=0.0)
    left = np.array([0.0, 1.0, 0.0])
    d = rollout_displacement(out, cfg, (0, 1), geo, obj, left)
    assert d.shape == (4, 4) and (d[:, 0] == 0).all()
    np.testing.assert_allclose(d[0], [0.0, 0.01, 0.02, 0.03], atol=0.011)
    np.testing.assert_allclose(d[1], [0.0, -0.01, -0.02, -0.03], atol=0.011)
    np.testing.assert_allclose(d[2], 0.0, atol=1e-9)
    # followed frame to frame (push_track_step_m) the fast push reads its 12 cm; searched around the point in every
    # frame (0) it is lost at the window's edge
    np.testing.assert_allclose(d[3], [0.0, 0.04, 0.08, 0.12], atol=0.011)
    lost = rollout_displacement(out, cfg.model_copy(update={"push_track_step_m": 0.0}), (0, 1), geo, obj, left)
    assert lost[3, -1] <= cfg.table_track_m + 0.011 and np.abs(lost[:3] - d[:3]).max() < 0.011
    out, sem = _table_rollout(sem[:3]), sem[:3]
    z = np.zeros((3, 4), np.float32)
    # in the score: the push wins by μ_d × 3 cm, the wrong way loses; off without a motion or a point
    acts = np.tile(np.array([*obj, np.pi, 0, 0, 0]), (3, 4, 1))
    terms = score_terms(out, cfg, (0, 1), acts, geo, left, push_point=obj)
    best = terms.reward(cfg).amax(1).numpy()
    assert best.argmax() == 0 and best[0] - best[2] > 0.09 and best[1] <= best[2] + 1e-9
    assert score_terms(out, cfg, (0, 1), acts, geo, None, push_point=obj).displacement is None
    assert score_terms(out, cfg, (0, 1), acts, geo, left).displacement is None
    # the static-world future: every candidate the same frames, so the term cannot tell them apart
    same = RolloutOutput(h_bar=z, uq_map=out.uq_map, value=z, value_entropy=z, semantic_score=z,
                         semantic_map=np.repeat(sem[:1], 3, axis=0))
    flat = score_terms(same, cfg, (0, 1), acts, geo, left, push_point=obj).reward(cfg).amax(1).numpy()
    assert np.ptp(flat) == 0.0


def test_planner_keeps_the_table_target_per_instruction(backend, ctx, proposals):
    """The planner runs the table fusion on a bundle whose maps show the exterior views and keeps its point per
    instruction; a bundle that maps only the wrist view is refused at start-up, naming the key."""
    from vidplan_core.planning.scoring import ScoreConfig

    table = PlannerConfig(refine_iters=0, score=ScoreConfig(target_fusion="table"))
    assert backend.map_views == (2,)
    with pytest.raises(ValueError, match="target_fusion"):
        GradientPlanner(backend, table)
    auto = PlannerConfig(refine_iters=0, score=ScoreConfig(target_fusion="auto"))
    assert GradientPlanner(backend, auto)._fusion == "off"  # 'auto' on a wrist-only bundle: no fusion, no error
    models = random_planner_models("tiny", seed=0)
    models.map_views = (0, 1)
    exterior = TorchBackend(models, flow_steps=1)
    assert GradientPlanner(exterior, auto)._fusion == "table"
    planner = GradientPlanner(exterior, table)
    if planner.view_geometry is None:
        pytest.fail("the test backend has no camera geometry: the fusion projects through it")
    assert planner.map_views == (0, 1) and GradientPlanner(backend, auto).map_views == (2,)
    res = planner.plan(ctx, proposals)
    assert res.status != "hold", res.reason
    point = planner._memory[1].point
    assert point is not None and point.shape == (3,) and planner._target is not None
    assert PlannerConfig().position_min[0] <= point[0] <= PlannerConfig().position_max[0]


def test_planner_scores_a_puts_destination_while_it_carries(backend, ctx, proposals):
    """carry_height_m: with the gripper closed, a put's frames are scored against its destination phrase (the
    backend's scorer text; the world model keeps the instruction) and the table fusion locates that; with it open,
    against the instruction. Off (the default), the destination plays no part."""
    from vidplan_core.planning.scoring import ScoreConfig

    seen = []

    class Recording(Wrapped):
        def set_context(self, c):
            seen.append((c.instruction, c.scoring_text))
            return super().set_context(c)

    models = random_planner_models("tiny", seed=0)
    models.map_views = (0, 1)
    exterior = TorchBackend(models, flow_steps=1)
    put = "put the red cube in the bowl"
    closed = ctx.history_actions.copy()
    closed[:, 6] = 1.0
    planner = GradientPlanner(Recording(exterior), PlannerConfig(refine_iters=0, score=ScoreConfig(
        target_fusion="table", centring_space="metric", carry_height_m=0.08)))
    planner.plan(PlanningContext(ctx.history_frames, closed, put, 3), proposals)
    assert seen[-1] == (put, "the bowl") and planner._memory[0] == "the bowl"
    est = planner.target_estimate
    assert est["carry"] == "the bowl" and planner._drop() is not None
    np.testing.assert_allclose(est["reference"], POSE[:3], atol=1e-4)  # just closed: the grasp settles in place
    assert abs(planner._drop()[2] - (ScoreConfig().table_height_m + 0.08)) < 1e-9
    torch.testing.assert_close(exterior._ctx[3], exterior.text_embedding("the bowl"))  # the scorer's text
    torch.testing.assert_close(exterior._ctx[4], exterior.conditioning_embedding(put))  # the world model's
    again = planner.plan(PlanningContext(ctx.history_frames, closed, put, 4, gripper_closure=0.5), proposals)
    assert again.status != "hold" and len(planner._memory[1].found) == 2  # the destination: the mean of both
    np.testing.assert_allclose(planner.target_estimate["reference"], planner._drop(), atol=1e-4)  # high: over there
    np.testing.assert_allclose(planner._drop()[:2], np.mean(planner._memory[1].found, axis=0)[:2])
    # the fingers closed on nothing (the object slipped out): let go, and look for it below the hand first
    planner.plan(PlanningContext(ctx.history_frames, closed, put, 3, gripper_closure=1.0), proposals)
    assert seen[-1] == (put, put) and planner.target_estimate["let_go"] and planner._drop() is None
    assert planner._grasp() is None and planner._memory[0] == put  # letting go first
    sc = planner.config.score
    assert np.linalg.norm(planner._memory[1].point[:2] - POSE[:2]) <= sc.table_track_m + sc.table_cell_m
    planner.plan(PlanningContext(ctx.history_frames, ctx.history_actions, put, 3), proposals)  # gripper open
    assert seen[-1] == (put, put) and planner._memory[0] == put and "carry" not in planner.target_estimate
    assert planner._drop() is None and planner._grasp() is None  # where a grasp closed on nothing: no grasp zone
    aside = ctx.history_actions.copy()
    aside[:, 1] += 0.05
    planner.plan(PlanningContext(ctx.history_frames, aside, put, 3), proposals)
    assert planner._grasp() is planner._memory[1].point  # 5 cm from there: approaching, with its grasp zone
    assert planner._approach() is planner._memory[1].point
    # close_radius_m: the zone charges an open hand only while the TCP is in it (the way down into it stays free)
    planner.config.score.close_radius_m = 0.03
    try:
        point = planner._memory[1].point
        assert planner._grasp() is None  # the hand is 5 cm over the table, not in the zone
        planner._put.tcp = point + np.array([0.005, 0.0, 0.01])
        assert planner._grasp() is point
    finally:
        planner.config.score.close_radius_m = 0.0
    off = GradientPlanner(Recording(exterior), PlannerConfig(refine_iters=0, score=ScoreConfig(
        target_fusion="table", centring_space="metric")))
    off.plan(PlanningContext(ctx.history_frames, closed, put, 3), proposals)
    assert seen[-1] == (put, put) and off._drop() is None


def test_planner_keeps_the_target_memory_per_instruction(backend, ctx, proposals):
    from vidplan_core.planning.scoring import ScoreConfig

    planner = GradientPlanner(backend, PlannerConfig(refine_iters=0, score=ScoreConfig(target_gate=0.05)))
    if planner.view_geometry is None:
        pytest.fail("the test backend has no camera geometry: the memory is for gripper centring")
    planner.plan(ctx, proposals)
    first = planner._memory
    assert first is not None and first[0] == ctx.instruction and first[1].position is not None
    planner.plan(ctx, proposals)
    assert planner._memory is first  # the same task: the same memory
    planner.plan(PlanningContext(ctx.history_frames, ctx.history_actions, "push the red cube to the right", 3),
                 proposals)
    assert planner._memory is not first and planner._memory[0] == "push the red cube to the right"
    planner.reset_target()
    assert planner._memory is None
    off = GradientPlanner(backend, PlannerConfig(refine_iters=0))
    off.plan(ctx, proposals)
    assert off._memory is None and off._target is None  # gate 0 (the default): no memory


def test_planner_takes_the_push_direction_from_the_instruction(backend, ctx, proposals):
    from vidplan_core.planning.scoring import ScoreConfig

    planner = GradientPlanner(backend, PlannerConfig(refine_iters=0, score=ScoreConfig(direction_weight=1.0)))
    planner.plan(PlanningContext(ctx.history_frames, ctx.history_actions, "push the red cube to the right", 3),
                 proposals)
    assert planner._goal_dir.tolist() == [0.0, -1.0, 0.0]
    planner.plan(ctx, proposals)  # "pick up the red cube": no motion asked, the term is off
    assert planner._goal_dir is None


def test_session_plans_from_the_pose_after_the_expected_latency(backend, ctx):
    """Real-time chunking in the session: with a chunk executing, the next one begins where that chunk takes the
    robot during the expected latency (rtc.pose_after_latency; IK for the joints), its hold candidate holds that pose,
    and the seam is blended with what remains of the executing chunk then."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.session import PlanningSession, SessionConfig
    from vidplan_core.spaces import EEChunk

    kin = PandaKinematics()
    session = PlanningSession(backend, kin, SessionConfig())
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    H = backend.horizon
    moving = pose0 + np.outer(np.arange(1, H + 1) * 0.2 * 0.1, [1, 0, 0, 0, 0, 0, 0])  # +x at 0.1 m/s
    executing = EEChunk.from_actions(moving, dt=0.2)
    pose, q = session.start_after_latency(q0, executing, pose0, elapsed_s=0.1, latency_s=0.3)
    np.testing.assert_allclose(pose[:3], pose0[:3] + np.array([0.04, 0, 0]), atol=1e-9)  # 0.4 s at 0.1 m/s
    np.testing.assert_allclose(kin.fk(q)[:3, 3], pose[:3], atol=1e-3)
    assert session.start_after_latency(q0, None, pose0, 0.0, 0.3)[0].tolist() == pose0.tolist()
    result, props = session.plan(ctx.history_frames, ctx.history_actions, q0, ctx.instruction, seed=1,
                                 start=(pose, q))
    hold = props.actions[props.labels.index("hold")]
    np.testing.assert_allclose(hold, np.tile(pose, (H, 1)))
    assert np.abs(props.actions[:, 0, :3] - pose[:3]).max() < 0.05  # every candidate starts next to it
    # the seam: the first new step is mostly the executing chunk's step at the take-over time
    blended, _ = session.plan(ctx.history_frames, ctx.history_actions, q0, ctx.instruction, seed=1, start=(pose, q),
                              executing=executing, executing_elapsed_s=0.4)
    assert not blended.hold and not result.hold and session.config.blend_steps >= 1
    k = int(np.floor(0.4 / 0.2 + 1e-9))
    w = 1 / (session.config.blend_steps + 1)
    want = (1 - w) * moving[k, :3] + w * result.chunk.position[0]
    np.testing.assert_allclose(blended.chunk.position[0], want, atol=1e-6)


def test_a_planner_slower_than_the_executing_chunk_plans_from_where_that_chunk_ends(backend, ctx):
    """A cycle longer than what is left of the executing chunk: the robot will be holding the chunk's last pose when
    the new chunk arrives, so that is where the new one begins (not beyond it), and the seam has nothing left to
    blend with (the new chunk starts unblended)."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.session import PlanningSession, SessionConfig
    from vidplan_core.spaces import EEChunk

    kin = PandaKinematics()
    session = PlanningSession(backend, kin, SessionConfig())
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    H = backend.horizon
    moving = pose0 + np.outer(np.arange(1, H + 1) * 0.2 * 0.1, [1, 0, 0, 0, 0, 0, 0])
    executing = EEChunk.from_actions(moving, dt=0.2)  # H·0.2 s long
    latency = H * 0.2 + 1.5  # the planner takes longer than the whole chunk
    pose, q = session.start_after_latency(q0, executing, pose0, elapsed_s=0.1, latency_s=latency)
    np.testing.assert_allclose(pose[:3], moving[-1, :3], atol=1e-9)
    np.testing.assert_allclose(kin.fk(q)[:3, 3], pose[:3], atol=1e-3)
    result, _ = session.plan(ctx.history_frames, ctx.history_actions, q0, ctx.instruction, seed=1, start=(pose, q))
    late, _ = session.plan(ctx.history_frames, ctx.history_actions, q0, ctx.instruction, seed=1, start=(pose, q),
                           executing=executing, executing_elapsed_s=0.1 + latency)
    assert not late.hold and not result.hold
    np.testing.assert_allclose(late.chunk.position, result.chunk.position, atol=1e-9)


def _transform(pose: np.ndarray) -> np.ndarray:
    from vidplan_core.kinematics import action_to_transform

    return action_to_transform(pose)


def test_a_chunk_the_executor_would_reject_is_replaced_by_the_proposal_or_a_hold(backend, ctx):
    """The session runs the executor's own check (plan_execution, "reject") on what it is about to send: a refined
    chunk whose first step turns the wrist faster than the joint velocity limit allows (what had 7 chunks rejected
    in closed_loop_box_clip) is replaced by the chosen proposal as proposed, or by a hold when that fails too; an
    executable chunk leaves unchanged. Fails without the check (the planner sent such chunks as they were)."""
    from vidplan_core.execution import Rejection, plan_execution
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.planner import PlanResult
    from vidplan_core.planning.proposals import ProposalSet
    from vidplan_core.planning.session import PlanningSession, SessionConfig
    from vidplan_core.spaces import EEChunk

    kin = PandaKinematics()
    session = PlanningSession(backend, kin, SessionConfig())
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    H = backend.horizon
    slow = pose0 + np.outer(np.arange(1, H + 1) * 0.2 * 0.05, [1, 0, 0, 0, 0, 0, 0])  # +x at 0.05 m/s
    twist = slow.copy()
    twist[:, 4] += 0.42  # pitch 0.42 rad in the first 0.2 s: ~2.5 rad/s at joint 6, over its 2.09 rad/s
    assert isinstance(plan_execution(EEChunk.from_actions(twist, dt=0.2), q0, kin, session.config.limits), Rejection)

    def result(chunk: np.ndarray) -> PlanResult:
        return PlanResult(chunk=EEChunk.from_actions(chunk, dt=0.2), chosen_index=0, chosen_label="+x")

    ok = result(slow)
    session._make_executable(ok, ProposalSet(slow[None], ["+x"]), pose0, q0)
    assert ok.fallback == "" and ok.status == "ok" and np.array_equal(ok.chunk.actions, slow)
    refined = result(twist)
    session._make_executable(refined, ProposalSet(slow[None], ["+x"]), pose0, q0)
    assert refined.fallback == "proposal" and not refined.hold and "joint_velocity" in refined.reason
    np.testing.assert_allclose(refined.chunk.actions, slow)
    both = result(twist)
    session._make_executable(both, ProposalSet(twist[None], ["+x"]), pose0, q0)
    assert both.fallback == "hold" and both.hold and "holding" in both.reason
    np.testing.assert_allclose(both.chunk.actions, np.tile(pose0, (H, 1)))
    # an arm a joint's soft limit let 2.6 mrad past it (seen in a put episode): the hold stands where the kinematics
    # put the arm, so the executor takes it (the observed pose was 0.6 mm out of IK's reach: twelve aborted holds)
    past = q0.copy()
    past[5] = kin.upper[5] + 0.0026
    pose_past = np.r_[kin.fk_action(past, euler_center=POSE[3:6]), 0.0]
    stuck = result(twist)
    session._make_executable(stuck, ProposalSet(twist[None], ["+x"]), pose_past, past)
    assert stuck.fallback == "hold" and stuck.hold
    assert not isinstance(plan_execution(stuck.chunk, past, kin, session.config.limits), Rejection)
    # and through plan(): whatever it returns, the executor takes it
    res, _ = session.plan(ctx.history_frames, ctx.history_actions, q0, ctx.instruction, seed=2)
    assert res.hold or not isinstance(plan_execution(res.chunk, q0, kin, session.config.limits), Rejection)


def test_fine_proposals_repeat_the_basis_directions_at_the_slower_speed(backend):
    """``fine_speed_mps``: the basis directions again at that speed, labelled 'fine+x', ...; they travel
    fine/basis as far along the same directions; 0 (the default) adds none."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.session import PlanningSession, ProposalConfig, SessionConfig
    from vidplan_core.spaces import MODEL_RATE_HZ

    kin = PandaKinematics()
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    plain = PlanningSession(backend, kin, SessionConfig())
    fine = PlanningSession(backend, kin, SessionConfig(proposals=ProposalConfig(fine_speed_mps=0.03)))
    a, b = plain.proposals(q0, pose0), fine.proposals(q0, pose0)
    assert len(a) == plain.num_candidates == 8 and len(b) == fine.num_candidates == 14
    assert [lab for lab in b.labels if lab.startswith("fine")] == ["fine" + d for d in ("+x", "-x", "+y", "-y",
                                                                                       "+z", "-z")]
    for d in ("+x", "-z"):
        coarse = a.actions[a.labels.index(d), -1, :3] - pose0[:3]
        slow = b.actions[b.labels.index("fine" + d), -1, :3] - pose0[:3]
        np.testing.assert_allclose(slow, coarse * 0.03 / 0.15, atol=2e-3)
        # 0.03 m/s over the horizon (H model steps of 0.2 s)
        assert np.linalg.norm(slow) == pytest.approx(0.03 * backend.horizon / MODEL_RATE_HZ, rel=0.05)
    with pytest.raises(ValueError, match="fine_speed_mps"):
        ProposalConfig(fine_speed_mps=-0.1)


def test_approach_candidate_heads_for_the_planners_target_reference(backend, ctx):
    """``approach`` (contact instructions, table fusion): after a cycle, the session adds one candidate that moves the
    TCP straight at the last cycle's reference — first to approach_clearance_m above it, down once within
    approach_reach_m — with the gripper closed; none before the first cycle, for another instruction, or off."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.scoring import ScoreConfig
    from vidplan_core.planning.session import PlanningSession, ProposalConfig, SessionConfig

    models = random_planner_models("tiny", seed=0)
    models.map_views = (0, 1)
    exterior = TorchBackend(models, flow_steps=1)
    kin = PandaKinematics()
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    cfg = SessionConfig(gradopt=PlannerConfig(refine_iters=0, score=ScoreConfig(target_fusion="table")),
                        proposals=ProposalConfig(contact_closed=True, approach=True))
    session = PlanningSession(exterior, kin, cfg)
    touch = "touch the red cube"
    assert "approach" not in session.proposals(q0, pose0, touch).labels  # no estimate yet
    touch_ctx = PlanningContext(ctx.history_frames, ctx.history_actions, touch, seed=3)
    session.planner.plan(touch_ctx, session.proposals(q0, pose0, touch))
    ref, pushing = session.planner.target_reference(touch)
    assert not pushing and ref.shape == (3,) and session.planner.target_estimate["reference"] == pytest.approx(ref)
    props = session.proposals(q0, pose0, touch)
    a = props.actions[props.labels.index("approach")]
    assert np.allclose(a[:, 6], 1.0)  # closed, as every candidate of a contact instruction
    goal = ref + np.array([0.0, 0.0, cfg.proposals.approach_clearance_m])  # the TCP is > 3 cm away horizontally
    assert np.linalg.norm(pose0[:2] - ref[:2]) > cfg.proposals.approach_reach_m
    step = np.linalg.norm(np.diff(np.vstack([pose0[:3], a[:, :3]]), axis=0), axis=1)
    d = np.linalg.norm(a[:, :3] - goal, axis=1)
    assert (np.diff(d) <= 1e-6).all() and d[-1] < np.linalg.norm(pose0[:3] - goal)  # straight at it
    assert step.max() <= cfg.proposals.basis_speed_mps / 5 + 2e-3  # at most basis speed (5 Hz model steps)
    assert "approach" not in session.proposals(q0, pose0, "touch the blue ball").labels  # another instruction
    assert "approach" not in session.proposals(q0, pose0, "put the red cube in the bowl").labels

    # reference_speed: near the reference the basis chunks shrink to end no farther away than it is
    slow = PlanningSession(exterior, kin, cfg.model_copy(update={"proposals": ProposalConfig(
        contact_closed=True, reference_speed=True)}, deep=True))
    slow.planner.plan(touch_ctx, slow.proposals(q0, pose0, touch))
    ref = np.array([0.50, 0.0, 0.02])  # a reference in the middle of the table (the random model's may be at a wall)
    slow.planner._memory[1].reference = ref.copy()
    near_pose = np.r_[ref + np.array([0.0, 0.0, 0.06]), POSE[3:6], 1.0]
    q_near = kin.ik(_transform(near_pose), q0, max_iters=500).q
    near_pose[:6] = kin.fk_action(q_near, euler_center=POSE[3:6])
    def travel(sess, q, pose, instruction, label="+y"):
        props = sess.proposals(q, pose, instruction)
        return np.linalg.norm(props.actions[props.labels.index(label), -1, :3] - pose[:3])

    dist_far, dist_near = np.linalg.norm(pose0[:3] - ref), np.linalg.norm(near_pose[:3] - ref)
    assert dist_far > 0.15 and dist_near < 0.1
    assert travel(slow, q0, pose0, touch) == pytest.approx(travel(session, q0, pose0, touch), abs=1e-6)  # far: full
    assert travel(slow, q_near, near_pose, touch) == pytest.approx(dist_near, abs=0.01)  # near: ends no farther
    full = travel(session, q_near, near_pose, touch)
    assert full > dist_near + 0.03
    put = "put the red cube in the bowl"  # not a contact instruction: full speed
    assert travel(slow, q_near, near_pose, put) == pytest.approx(full, abs=1e-6)

def test_wrist_locate_puts_the_hand_cameras_map_peak_on_the_table():
    """wrist_refine_m: a map of the hand camera's observed frame that peaks where an object on the table projects is
    back-projected to that object (within the map's cell size at that range), a stronger peak outside wrist_window_m
    of the fused point is left out, and no cell near the point (the point out of the camera's view) gives None."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import ActionMapRenderer, action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, wrist_locate

    r = ActionMapRenderer(action_map_config(load_calibration(), (1, 1)))
    hand = r.on_hand.index(True)
    cfg = ScoreConfig(wrist_refine_m=0.06)
    obj = np.array([0.55, 0.10, cfg.table_height_m])
    pose = np.array([0.56, 0.09, 0.09, np.pi, 0.0, 0.0, 0.0])  # 7 cm over the object, 1.4 cm aside

    def peak_at(p: np.ndarray, gh: int = 48, gw: int = 80, height: float = 4.0) -> torch.Tensor:
        acts = torch.tensor(np.array([[pose, [*p, np.pi, 0.0, 0.0, 0.0]]]), dtype=torch.float64)
        uv = r.project(acts, 0)[0][0, 1, hand, 0]  # the object's point at frame 1, hand camera posed at frame 0
        ys, xs = (torch.arange(gh) + 0.5) / gh, (torch.arange(gw) + 0.5) / gw
        d2 = (xs[None] - uv[0]) ** 2 + (ys[:, None] - uv[1]) ** 2
        return height * torch.exp(-d2 / (2 * 0.03 ** 2)).double()

    fused = obj + np.array([0.015, -0.01, 0.0])  # the exterior views' point, 1.8 cm off
    q = wrist_locate(peak_at(obj), r, hand, pose, fused, cfg)
    assert q is not None and np.linalg.norm(q[:2] - obj[:2]) < 0.004 and abs(q[2] - cfg.table_height_m) < 1e-9
    other = obj + np.array([-0.06, 0.05, 0.0])  # a brighter look-alike 7.8 cm away, outside the 4 cm window
    both = peak_at(obj) + peak_at(other, height=8.0)
    q2 = wrist_locate(both, r, hand, pose, fused, cfg)
    assert np.linalg.norm(q2[:2] - obj[:2]) < 0.006
    wide = cfg.model_copy(update={"wrist_window_m": 0.20})  # a window that takes the look-alike in follows it
    assert np.linalg.norm(wrist_locate(both, r, hand, pose, fused, wide)[:2] - other[:2]) < 0.01
    assert wrist_locate(peak_at(obj), r, hand, pose, np.array([0.20, -0.40, 0.02]), cfg) is None  # out of view


def test_wrist_locate_by_silhouette_is_not_pulled_by_a_bright_face_and_back_projects_on_its_plane():
    """wrist_mask_logit: the cells above the threshold (an object's silhouette) count with equal weights, so a
    brighter patch on one side (a lit top face) no longer pulls the point as the softmax lets it; nothing above the
    threshold falls back to the softmax. wrist_plane_m: cells are back-projected onto that plane, and the point
    returned stays at table_height_m."""
    from vidplan_core.calibration import load_calibration
    from vidplan_core.models.action_maps import ActionMapRenderer, action_map_config
    from vidplan_core.planning.scoring import ScoreConfig, wrist_locate

    r = ActionMapRenderer(action_map_config(load_calibration(), (1, 1)))
    hand = r.on_hand.index(True)
    pose = np.array([0.56, 0.09, 0.09, np.pi, 0.0, 0.0, 0.0])
    gh, gw = 48, 80

    def paint(centre: np.ndarray, radius: float, value: float, into: torch.Tensor) -> torch.Tensor:
        """Cells onto which the points of a disc (radius [m], on the plane of centre's height) project get value."""
        out = into.clone()
        for dx in np.linspace(-radius, radius, 15):
            for dy in np.linspace(-radius, radius, 15):
                if dx * dx + dy * dy > radius * radius:
                    continue
                acts = torch.tensor(np.array([[pose, [*(centre + np.array([dx, dy, 0.0])), np.pi, 0.0, 0.0, 0.0]]]))
                u, v = r.project(acts.double(), 0)[0][0, 1, hand, 0].tolist()
                out[min(int(v * gh), gh - 1), min(int(u * gw), gw - 1)] = value
        return out

    base = ScoreConfig(wrist_refine_m=0.06)
    obj = np.array([0.55, 0.10, base.table_height_m])
    sil = paint(obj, 0.02, 2.0, torch.full((gh, gw), -6.0, dtype=torch.float64))
    lit = paint(obj + np.array([0.012, 0.0, 0.0]), 0.006, 6.0, sil)  # a bright face 1.2 cm along +x
    soft = wrist_locate(lit, r, hand, pose, obj, base)
    mask = base.model_copy(update={"wrist_mask_logit": -1.0})
    q = wrist_locate(lit, r, hand, pose, obj, mask)
    assert soft[0] - obj[0] > 0.008  # the softmax follows the bright face
    assert np.linalg.norm(q[:2] - obj[:2]) < 0.003  # the silhouette's mean does not
    dark = torch.full((gh, gw), -6.0, dtype=torch.float64) + 0.5 * (lit > 0)  # nothing above -1: the softmax's point
    np.testing.assert_allclose(wrist_locate(dark, r, hand, pose, obj, mask), wrist_locate(dark, r, hand, pose, obj,
                                                                                         base))
    top = obj + np.array([0.0, 0.0, 0.025])  # a silhouette drawn on a higher plane, read back on that plane
    high = paint(top, 0.02, 2.0, torch.full((gh, gw), -6.0, dtype=torch.float64))
    on_plane = mask.model_copy(update={"wrist_plane_m": float(top[2])})
    q_top = wrist_locate(high, r, hand, pose, obj, on_plane)
    assert np.linalg.norm(q_top[:2] - obj[:2]) < 0.003 and q_top[2] == pytest.approx(base.table_height_m)
    assert np.linalg.norm(wrist_locate(high, r, hand, pose, obj, mask)[:2] - obj[:2]) > 0.01  # on the table plane


def test_grasp_reference_comes_down_onto_the_object_from_above():
    """grasp_clearance_m: a put's approach reference is over the object until the TCP is within grasp_reach_m of it
    horizontally, then the object; once over it, the reference stays down out to twice grasp_reach_m."""
    from vidplan_core.planning.scoring import ScoreConfig, TargetMemory, grasp_reference

    cfg = ScoreConfig(grasp_clearance_m=0.05, grasp_reach_m=0.015)
    obj = np.array([0.55, 0.10, 0.02])
    mem, up = TargetMemory(), np.array([0.0, 0.0, 0.05])
    assert grasp_reference(obj, ScoreConfig(), mem, np.array([0.5, 0.0, 0.2])) is None  # off
    np.testing.assert_allclose(grasp_reference(obj, cfg, mem, np.array([0.50, 0.0, 0.20])), obj + up)
    np.testing.assert_allclose(grasp_reference(obj, cfg, mem, np.array([0.56, 0.10, 0.07])), obj)  # 1 cm: down
    np.testing.assert_allclose(grasp_reference(obj, cfg, mem, np.array([0.575, 0.10, 0.04])), obj)  # 2.5 cm: stays
    np.testing.assert_allclose(grasp_reference(obj, cfg, mem, np.array([0.585, 0.10, 0.04])), obj + up)
    assert not mem.over
    # relook_after_empty: after an empty grasp the reference is over the object, even with the hand right at it
    grasp_reference(obj, cfg, mem, np.array([0.55, 0.10, 0.07]))
    assert mem.over
    np.testing.assert_allclose(grasp_reference(obj, cfg, mem, np.array([0.55, 0.10, 0.02]), relook=True), obj + up)
    assert not mem.over


def test_frame_scorer_maps_an_observed_frame_with_the_bundles_scorer(backend):
    """The scorer on observed frames: a (3, H, W) uint8 frame → the scorer's (gh, gw) patch logits for a text, the
    same as the scorer's own map of that frame; float frames in [0, 1] give the same; a wrong shape is named."""
    from vidplan_core.runtime.frame_scorer import FrameScorer

    fs = backend.frame_scorer
    assert isinstance(fs, FrameScorer)
    cfg = backend.models.suite.autoencoder.config
    frame = np.random.default_rng(1).integers(0, 255, (3, cfg.view_height, cfg.view_width), dtype=np.uint8)
    m = fs.map(frame, "the red cube")
    x = torch.as_tensor(frame.astype(np.float32) / 255.0)[None]
    with torch.no_grad():
        ref = backend.models.scorer.score_and_map(x, backend.models.scorer.encode_text(["the red cube"]).reshape(-1))[1]
    assert m.shape == ref.shape[1:] and m.dtype == torch.float64
    torch.testing.assert_close(m, ref[0].double())
    torch.testing.assert_close(fs.map(frame.astype(np.float32) / 255.0, "the red cube"), m)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        fs.map(frame[None], "the red cube")
    with pytest.raises(ValueError, match="not both"):
        FrameScorer()


def test_planner_places_a_puts_object_with_the_hand_camera_and_comes_down_from_above(ctx):
    """wrist_refine_m with grasp_clearance_m: in a put's approach near the fused point the planner replaces it by the
    hand camera's (target_estimate 'fused' keeps the exterior views' point), the reference stands over it; with the
    rule off, or while carrying, the point is the exterior fusion's. The session's put_approach candidate heads for
    that reference."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.scoring import ScoreConfig
    from vidplan_core.planning.session import PlanningSession, ProposalConfig, SessionConfig

    models = random_planner_models("tiny", seed=0)
    models.map_views = (0, 1)
    exterior = TorchBackend(models, flow_steps=1)
    put = "put the red cube in the bowl"
    kin = PandaKinematics()
    q0 = kin.ik(_transform(POSE), np.array([0, -0.6, 0, -2.3, 0, 1.7, 0.8])).q
    pose0 = np.r_[kin.fk_action(q0, euler_center=POSE[3:6]), 0.0]
    sc = ScoreConfig(target_fusion="table", centring_space="metric", carry_height_m=0.08, wrist_refine_m=2.0,
                     wrist_window_m=1.0, grasp_clearance_m=0.05)  # (the tiny scorer's map has 2 × 2 cells)
    session = PlanningSession(exterior, kin, SessionConfig(gradopt=PlannerConfig(refine_iters=0, score=sc),
                                                           proposals=ProposalConfig(put_approach=True)))
    assert "approach" not in session.proposals(q0, pose0, put).labels  # no estimate yet
    c = PlanningContext(ctx.history_frames, np.repeat(pose0[None], len(ctx.history_actions), 0), put, 3)
    from vidplan_core.planning.scoring import TargetMemory

    below = np.array([pose0[0], pose0[1], sc.table_height_m])  # (the random maps' point: within 6 cm of this)
    session.planner._memory = (put, TargetMemory(point=below.copy()))
    session.planner.plan(c, session.proposals(q0, pose0, put))
    est = session.planner.target_estimate
    assert "fused" in est and est["point"] != est["fused"]  # the hand camera's point replaced the fusion's
    np.testing.assert_allclose(session.planner._memory[1].wrist, est["point"], atol=1e-4)  # kept (wrist_freeze_m)
    assert abs(est["point"][2] - sc.table_height_m) < 1e-9
    over = np.array(est["point"]) + np.array([0.0, 0.0, 0.05])
    np.testing.assert_allclose(est["reference"], over, atol=1e-4)  # over it
    props = session.proposals(q0, pose0, put)
    a = props.actions[props.labels.index("approach")]
    assert np.allclose(a[:, 6], 0.0)  # open, as the hand is
    d = np.linalg.norm(a[:, :3] - np.array(est["reference"]), axis=1)
    assert (np.diff(d) <= 1e-6).all() and d[-1] < np.linalg.norm(pose0[:3] - est["reference"])  # straight at it
    assert "approach" not in session.proposals(q0, pose0, "touch the red cube").labels
    closed = pose0.copy()
    closed[6] = 1.0
    assert "approach" not in session.proposals(q0, closed, put).labels  # carrying: no approach candidate
    off = GradientPlanner(TorchBackend(models, flow_steps=1), PlannerConfig(
        refine_iters=0, score=sc.model_copy(update={"wrist_refine_m": 0.0})))
    off._memory = (put, TargetMemory(point=below.copy()))
    off.plan(c, session.proposals(q0, pose0, put))
    assert "fused" not in off.target_estimate
    # wrist_freeze_m: with the TCP below it over the table plane, the hand camera's last point stands (none yet: it
    # measures, as above)
    seen = below + np.array([0.01, -0.02, 0.0])
    frozen = GradientPlanner(exterior, PlannerConfig(refine_iters=0, score=sc.model_copy(
        update={"wrist_freeze_m": 1.0})))
    frozen._memory = (put, TargetMemory(point=below.copy(), wrist=seen.copy()))
    frozen.plan(c, session.proposals(q0, pose0, put))
    np.testing.assert_allclose(frozen.target_estimate["point"], seen, atol=1e-4)
    frozen._memory = (put, TargetMemory(point=below.copy()))
    frozen.plan(c, session.proposals(q0, pose0, put))
    np.testing.assert_allclose(frozen.target_estimate["point"], est["point"], atol=1e-4)
    # score.approach_observed: the exterior map views' maps of the observed frames (the scorer's own), none for a
    # hand view; off (the default), none at all
    assert off._observed_maps(c) is None
    obs = GradientPlanner(exterior, PlannerConfig(refine_iters=0, score=sc.model_copy(
        update={"approach_observed": True})))
    maps = obs._observed_maps(c)
    assert len(maps) == 2 and not any(obs._geometry.on_hand[v] for v in (0, 1))
    for v, m in enumerate(maps):
        torch.testing.assert_close(m, exterior.frame_scorer.map(c.history_frames[-1, v], c.scoring_text))
    obs._memory = (put, TargetMemory())
    obs.plan(c, session.proposals(q0, pose0, put))
    assert obs.target_estimate["point"] is not None
    # score.locate_observed: a touch (or push) locates on the observed frames too — its point is the fusion of the
    # observed maps alone (both map views are exterior) — while approach_observed alone leaves it on the imagined ones
    from types import SimpleNamespace

    from vidplan_core.planning.scoring import locate_on_table

    touch = "touch the red cube"
    ct = PlanningContext(ctx.history_frames, np.repeat(pose0[None], len(ctx.history_actions), 0), touch, 3)
    for flags, reads in (({"approach_observed": True}, False), ({"locate_observed": True}, True)):
        p = GradientPlanner(exterior, PlannerConfig(refine_iters=0, score=sc.model_copy(update=flags)))
        calls: list[int] = []
        real = p._observed_maps
        p._observed_maps = lambda c_, real=real, calls=calls: calls.append(1) or real(c_)
        p.plan(ct, session.proposals(q0, pose0, touch))
        assert bool(calls) is reads, flags
    maps = p._observed_maps(ct)
    sem = torch.cat(maps, dim=0)[None, None]
    fake_out = SimpleNamespace(semantic_map=sem, uq_map=torch.zeros_like(sem))  # observed replace every view here
    cfg = p.config
    mem = TargetMemory()
    locate_on_table(fake_out, cfg.score, p.map_views, p.view_geometry,
                    ((cfg.position_min[0], cfg.position_max[0]), (cfg.position_min[1], cfg.position_max[1])), mem,
                    observed=maps)
    np.testing.assert_allclose(p.target_estimate["point"], mem.point, atol=1e-9)
