"""``vidplan eval sim``: closed-loop episodes in the real MuJoCo scene with a tiny random model bundle.

Success must come from the simulator's task predicate: the scripted expert succeeds on an easy touch episode with
enough budget and fails the same episode with a 6-step budget; a random-proposal planner does not touch anything in
45 steps from the home pose. Results schema, table, plot, resume and bad-input handling are checked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")

EPISODE_KEYS = {"seed", "task", "clutter", "variant", "success", "steps", "wall_time_s", "reason", "instruction",
                "cycles", "holds", "plan_s_mean", "sim_time_s", "exec_problems", "first_exec_problem", "chosen",
                "refine_skipped", "winner_survival", "index", "final_tcp_target_m", "nominal_gaps", "exec_fallbacks"}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    import torch

    from vidplan_core.runtime.bundle import random_planner_models

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tiny_bundle")
    pm = random_planner_models("tiny", seed=0)
    pm.save(d)
    return d


def _cfg(model: Path, **kw):
    from vidplan_app.jobs.closed_loop import ClosedLoopConfig

    base = dict(model=str(model), episodes=1, episodes_other=1, clutter=[0], tasks=["touch"], seed=1, width=96,
                height=64)
    base.update(kw)
    return ClosedLoopConfig(**base)


def test_scripted_nominal_policy_indexes_the_plan_by_time():
    from vidplan_app.jobs.closed_loop_policies import ScriptedNominalPolicy

    plan = np.zeros((20, 7))
    plan[:, 0] = np.arange(20)
    k = {"t": 0}
    pol = ScriptedNominalPolicy(plan, horizon=4, clock=lambda: k["t"], stride=3)
    assert pol.infer()[:, 0].tolist() == [2, 5, 8, 11]  # pose reached 0.2, 0.4, ... s from now
    k["t"] = 15
    assert pol.infer()[:, 0].tolist() == [17, 19, 19, 19]  # held at the end
    assert not pol.done()
    k["t"] = 20
    assert pol.done()
    with pytest.raises(ValueError, match="expert plan"):
        ScriptedNominalPolicy(np.zeros((3, 6)), 4, lambda: 0)


def test_random_baseline_follows_the_products_gripper_rule():
    """The random-direction baseline takes the product's gripper rule (contact_closed: closed, no toggle, one
    candidate fewer), so that it differs from the product in its directions only; a put instruction, or the option
    off, keeps the toggle draws the runs before had."""
    from vidplan_app.jobs.closed_loop_policies import EvalSession
    from vidplan_core.kinematics import HOME_Q, PandaKinematics
    from vidplan_core.planning.config import load_planning_config

    kin = PandaKinematics()
    pose = np.append(kin.fk_action(HOME_Q), 0.0)  # gripper open
    cfg = load_planning_config().session.model_copy(deep=True)
    assert cfg.proposals.contact_closed
    session = EvalSession.__new__(EvalSession)
    session.kin, session.config, session.horizon, session.mode = kin, cfg, 5, "random"
    full = session.num_candidates
    touch = session.proposals(HOME_Q, pose, "touch the red cube", seed=3)
    assert touch.actions.shape[0] == full - 1 and np.allclose(touch.actions[..., 6], 1.0)
    put = session.proposals(HOME_Q, pose, "put the red cube in the bowl", seed=3)
    assert put.actions.shape[0] == full and set(np.unique(put.actions[..., 6])) == {0.0, 1.0}
    cfg.proposals.contact_closed = False
    off = session.proposals(HOME_Q, pose, "touch the red cube", seed=3)
    np.testing.assert_array_equal(off.actions, put.actions)  # same seed, same draws: the instruction is not read
    moved = touch.actions[:, -1, :3] - pose[:3]
    assert np.all(np.linalg.norm(moved, axis=1) > 0.05)  # random directions, each at the basis speed


@pytest.mark.slow
def test_eval_sim_scripted_succeeds_random_does_not(tiny_bundle, tmp_path):
    from vidplan_app.jobs.closed_loop import ClosedLoopError, run_closed_loop

    out = tmp_path / "run"
    calls = []

    def progress(jobs, total):
        calls.append(total)
        return jobs

    res = run_closed_loop(_cfg(tiny_bundle, variants=["scripted", "random"], overrides={"episode_steps": 45}), out,
                          progress=progress)
    assert calls == [2]
    eps = {r["variant"]: r for r in res["episodes"]}
    assert set(eps) == {"scripted", "random"}
    for r in eps.values():
        assert EPISODE_KEYS <= set(r), EPISODE_KEYS - set(r)
        assert r["seed"] == 1 and r["clutter"] == 0 and r["task"] == "touch"
        assert r["instruction"].startswith("touch the ")
    s, rnd = eps["scripted"], eps["random"]
    assert s["success"] and s["reason"] == "touched" and 0 < s["steps"] < 45
    assert not rnd["success"] and rnd["reason"] == "not touched yet" and rnd["steps"] == 45
    assert rnd["cycles"] >= 7 and rnd["plan_s_mean"] > 0 and sum(rnd["chosen"].values()) == rnd["cycles"]
    assert all(lab.startswith("rand") for lab in rnd["chosen"])
    summ = res["summary"]
    assert summ["scripted"]["touch"]["0"] == {"n": 1, "success": 1, "rate": 1.0, "ci95": [0.2065, 1.0]}
    assert summ["random"]["all"]["all"] == {"n": 1, "success": 0, "rate": 0.0, "ci95": [0.0, 0.7935]}
    assert {"variant": "random", "task": "touch", "clutter": 0, "episodes": 1, "successes": 0,
            "ci95": [0.0, 0.7935]} in res["cells"]
    assert res["variant_overrides"]["random"] == {"session.gradopt.refine_iters": 0}
    assert res["planner_configs"]["random"]["episode_steps"] == 45
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["episodes"] == res["episodes"] and on_disk["seeds"] == [1]
    table = (out / "table.md").read_text()
    assert "| scripted | 1/1 [0.21, 1.00] |" in table and "| random | 0/1 [0.00, 0.79] |" in table
    assert "seed 1, clutter 0" in table and "Partial" not in table
    png = (out / "success.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # Resume: nothing is run again; other fixed settings are refused.
    lines = (out / "episodes.jsonl").read_text().splitlines()
    res2 = run_closed_loop(_cfg(tiny_bundle, variants=["scripted", "random"], overrides={"episode_steps": 45}), out,
                          progress=progress)
    assert calls[-1] == 0 and (out / "episodes.jsonl").read_text().splitlines() == lines
    assert res2["episodes"] == res["episodes"]
    with pytest.raises(ClosedLoopError, match="episode_steps"):
        run_closed_loop(_cfg(tiny_bundle, variants=["scripted"], overrides={"episode_steps": 30}), out)


def test_blind_variant_picks_random_directions_without_the_model(tiny_bundle, tmp_path):
    """blind: random's directions with the product's gripper rule, one picked per cycle from the cycle's seed; no
    model runs (nothing is scored), and the same settings give the same episode."""
    from types import SimpleNamespace

    from vidplan_app.jobs.closed_loop import run_closed_loop
    from vidplan_app.jobs.closed_loop_policies import BlindPlanner
    from vidplan_core.planning.proposals import ProposalSet

    props = ProposalSet(np.arange(4 * 5 * 7, dtype=float).reshape(4, 5, 7), ["a", "b", "c", "d"])
    picks = {BlindPlanner().plan(SimpleNamespace(seed=s), props).chosen_label for s in range(40)}
    assert picks == {"a", "b", "c", "d"}
    res = BlindPlanner().plan(SimpleNamespace(seed=3), props)
    np.testing.assert_array_equal(res.chunk.actions, props.actions[res.chosen_index])
    assert res.scores.size == 0 and not res.hold

    runs = [run_closed_loop(_cfg(tiny_bundle, variants=["blind"], overrides={"episode_steps": 30}), tmp_path / k)
            for k in ("a", "b")]
    (ep,), (ep2,) = (r["episodes"] for r in runs)
    assert ep["variant"] == "blind" and ep["cycles"] >= 4 and sum(ep["chosen"].values()) == ep["cycles"]
    assert all(lab.startswith("rand") for lab in ep["chosen"])
    assert runs[0]["variant_overrides"]["blind"] == {"session.gradopt.refine_iters": 0}
    drop = ("wall_time_s", "plan_s_mean")
    assert {k: v for k, v in ep.items() if k not in drop} == {k: v for k, v in ep2.items() if k not in drop}


def test_static_world_gives_every_candidate_the_holds_prediction(tiny_bundle, tmp_path):
    """static-world: every candidate gets the learned rollout of holding still (the current pose over the horizon),
    once per cycle; no gradient; the bundle's other attributes pass through; the variant runs in closed loop with
    refinement off."""
    from vidplan_app.jobs.closed_loop import run_closed_loop
    from vidplan_app.jobs.closed_loop_policies import StaticWorldBackend
    from vidplan_core.runtime import loader as L
    from vidplan_core.runtime.base import Backend, BackendError, PlanningContext

    learned = L.load_planner_backend(tiny_bundle, "torch", threads=1, warm=False).backend
    be = StaticWorldBackend(learned)
    assert isinstance(be, Backend) and be.horizon == learned.horizon and be.normalizer is learned.normalizer
    assert be.num_history == learned.num_history  # passed through
    H = be.horizon
    pose = np.array([0.45, 0.05, 0.3, np.pi, 0.0, 0.0, 0.0])
    acts = np.tile(pose, (3, H, 1))
    acts[0, :, 0] += np.linspace(0.03, 0.15, H)  # +x
    acts[1, :, 1] -= np.linspace(0.03, 0.15, H)  # -y
    with pytest.raises(BackendError, match="before set_context"):
        be.rollout(acts)
    rng = np.random.default_rng(1)
    ctx = PlanningContext(rng.integers(0, 255, (learned.num_history, 3, 3, 16, 16), dtype=np.uint8),
                          np.tile(pose, (learned.num_history, 1)), "touch the red cube", seed=4)
    be.set_context(ctx)
    out = be.rollout(acts)
    learned.set_context(ctx)
    ref, moved = learned.rollout(np.tile(pose, (1, H, 1))), learned.rollout(acts)
    for k, v in out.arrays().items():
        assert v.shape[0] == 3, k
        for i in range(3):
            np.testing.assert_allclose(v[i], ref.arrays()[k][0], rtol=1e-5, atol=1e-6, err_msg=k)
    # the hold is rolled out once per cycle, and its cost is reported once: a cached call costs nothing
    again = be.rollout(acts[:2])
    assert out.timings and sum(out.timings.values()) > 0
    assert set(again.timings) == set(out.timings) and not any(again.timings.values())
    np.testing.assert_array_equal(again.value, out.value[:2])
    # the learned model itself does tell the candidates apart: the diagnostic removes that, nothing else
    assert not np.allclose(moved.semantic_map[0], moved.semantic_map[1])
    j, g = be.value_and_grad(acts)
    assert j.shape == (3,) and not j.any() and g.shape == acts.shape and not g.any()

    res = run_closed_loop(_cfg(tiny_bundle, variants=["static-world"], overrides={"episode_steps": 30}),
                          tmp_path / "sw")
    (ep,) = res["episodes"]
    assert ep["variant"] == "static-world" and ep["cycles"] >= 2
    assert res["variant_overrides"]["static-world"] == {"session.gradopt.refine_iters": 0}


def test_eval_sim_budget_decides_and_planner_variants_run(tiny_bundle, tmp_path):
    from vidplan_app.jobs.closed_loop import run_closed_loop

    res = run_closed_loop(_cfg(tiny_bundle, variants=["scripted", "no-uq", "scripted+vidplan"],
                               overrides={"episode_steps": 6, "session.gradopt.refine_iters": 1}), tmp_path / "short")
    eps = {r["variant"]: r for r in res["episodes"]}
    assert not eps["scripted"]["success"] and eps["scripted"]["steps"] == 6  # same episode, budget too short
    for v in ("no-uq", "scripted+vidplan"):
        assert eps[v]["cycles"] == 1 and eps[v]["plan_s_mean"] > 0 and not eps[v]["success"]
    # the expert's chunk, a perturbation of it or the toggle that moves like it (or the planner's own hold on a
    # low value): never a basis direction
    assert all(k.startswith("nominal") or k in ("toggle_nominal", "hold") for k in eps["scripted+vidplan"]["chosen"])
    # the best score's lead over the expert's own chunk, per cycle (≥ 0; 0 when the nominal itself won)
    gaps = eps["scripted+vidplan"]["nominal_gaps"]
    assert len(gaps) == 1 and gaps[0] >= 0 and eps["no-uq"]["nominal_gaps"] == []


def test_nominal_only_proposals_are_configuration_and_an_empty_set_is_refused():
    """The eval's scripted+vidplan runs the product's proposals with no basis and no hold (one implementation of the
    proposal set); a configuration that would give no candidate is refused at load time, naming the keys."""
    from vidplan_app.jobs.closed_loop_config import VARIANT_OVERRIDES
    from vidplan_core.kinematics import HOME_Q, PandaKinematics
    from vidplan_core.planning.config import PlanningConfigError, load_planning_config
    from vidplan_core.planning.nominal import ReplayPolicy
    from vidplan_core.planning.session import PlanningSession

    kin = PandaKinematics()
    pose = np.append(kin.fk_action(HOME_Q), 0.0)
    rec = np.tile(pose, (20, 1))
    rec[:, 1] += np.linspace(0.0, 0.1, 20)
    cfg = load_planning_config(None, VARIANT_OVERRIDES["scripted+vidplan"]).session
    session = PlanningSession.__new__(PlanningSession)
    session.kin, session.config, session.horizon = kin, cfg, 5
    session.nominal = ReplayPolicy(rec, horizon=5)
    props = PlanningSession.proposals(session, HOME_Q, pose, seed=3)
    assert props.labels[0] == "toggle_nominal" and all(lb.startswith("nominal") for lb in props.labels[1:])
    assert len(props.labels) == session.num_candidates == 1 + cfg.proposals.num_nominal
    assert props.actions.shape == (session.num_candidates, 5, 7)
    with pytest.raises(PlanningConfigError, match="no candidates"):
        load_planning_config(None, {"session.proposals.basis_directions": [], "session.proposals.include_hold": False,
                                    "session.proposals.gripper_toggle": False})


def test_planner_config_is_resolved_once_per_run_and_given_to_workers(tmp_path):
    """A run plans with the planner YAML as it was when the run started: editing (or breaking) the file meanwhile
    changes nothing, and a worker process plans with the parent's resolution, not the file."""
    import shutil

    from vidplan_app.jobs.closed_loop import ClosedLoopConfig
    from vidplan_app.jobs.closed_loop_config import VARIANTS
    from vidplan_core.planning.config import DEFAULT_PLANNER_YAML, PlanningConfig

    yaml_path = tmp_path / "planner.yaml"
    shutil.copy(DEFAULT_PLANNER_YAML, yaml_path)
    cfg = ClosedLoopConfig(planner_config=str(yaml_path), variants=["vidplan", "no-uq"],
                           overrides={"session.gradopt.score.lam": 2.0})
    first = cfg.resolved_planning()
    assert set(first) == {"vidplan", "no-uq"} and first["vidplan"]["session"]["gradopt"]["score"]["lam"] == 2.0
    copy = cfg.planning("vidplan")
    copy.session.proposals.num_nominal = 99  # a caller's change does not leak into the next episode's config
    yaml_path.write_text("this: is not\n  a planner config\n")
    assert cfg.resolved_planning() == first
    worker = ClosedLoopConfig.model_validate_json(cfg.model_dump_json())  # what a worker process gets ...
    worker.use_planning(first)  # ... with the parent's resolution
    assert worker.resolved_planning() == first
    assert isinstance(worker.planning("no-uq"), PlanningConfig)
    fresh = ClosedLoopConfig.model_validate_json(cfg.model_dump_json())  # reading the edited file instead fails
    with pytest.raises(ValueError):
        fresh.planning("vidplan")
    every = ClosedLoopConfig(variants=list(VARIANTS))  # every variant's configuration survives the trip to a worker
    resolved = every.resolved_planning()
    worker = ClosedLoopConfig.model_validate_json(every.model_dump_json())
    worker.use_planning(resolved)
    assert set(resolved) == set(VARIANTS) and worker.resolved_planning() == resolved


def test_eval_sim_cli_bad_input(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    r = CliRunner().invoke(app, ["eval", "sim", "--clutter", "0,7", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--clutter" in r.output
    r = CliRunner().invoke(app, ["eval", "sim", "--variants", "vidplan,magic", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "magic" in r.output
    r = CliRunner().invoke(app, ["eval", "sim", "--model", str(tmp_path / "nope"), "--variants", "argmax",
                                 "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "nope" in r.output and not (tmp_path / "y").exists()
    r = CliRunner().invoke(app, ["eval", "sim", "--variants", "scripted", "--set", "session.gradopt.kapa=1",
                                 "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "session.gradopt.kapa" in r.output and not (tmp_path / "z").exists()


def test_oracle_backend_reproduces_the_executed_chunk():
    """The oracle's rollout of a chunk ends where executing that chunk for real ends (< 1 mm), and leaves the scene
    as it found it."""
    from vidplan_app.jobs.closed_loop import SimExecutor
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.proposals import basis_velocity_proposals
    from vidplan_core.runtime.base import PlanningContext
    from vidplan_core.safety import SafetyLimits
    from vidplan_core.spaces import EEChunk
    from vidplan_sim.env import SimEnv
    from vidplan_sim.oracle import OracleBackend
    from vidplan_sim.privileged import PrivilegedReward

    env, kin = SimEnv(render=False), PandaKinematics()
    env.reset(seed=3, clutter=1, task="touch the red cube")
    be = OracleBackend(env, kin, reward=PrivilegedReward())
    q, pose, T0 = env.joint_positions(), env.ee_action(), env.ee_pose()
    props = basis_velocity_proposals(kin, q, 5, speed=0.15, gripper=0.0, euler_center=pose[3:6])
    be.set_context(PlanningContext(np.zeros((1, 3, 3, 1, 1), np.uint8), pose[None], "touch the red cube"))
    out = be.rollout(props.actions)
    assert out.semantic_score.shape == (6, 5) and np.isfinite(out.semantic_score).all()
    assert np.allclose(env.ee_pose(), T0) and env.time == 0.0  # restored
    i = props.labels.index("+x")
    gripper, problem = SimExecutor(env, kin, SafetyLimits()).start(EEChunk.from_actions(props.actions[i]), 5)
    assert problem == "" and len(gripper) == 5
    for _ in range(5 * 3):
        env.step(1.0 / 15)
    assert np.linalg.norm(env.ee_pose()[:3, 3] - be.last_tcp[i, -1]) < 1e-3
    assert be.last_tcp[i, -1, 0] - pose[0] > 0.1  # it did move along +x (15 cm planned)
    # the target object's positions per candidate and step: where the executed chunk left it (untouched here)
    assert be.last_target.shape == (6, 5, 3)
    assert np.linalg.norm(env.object_pose(env.layout.target.name)[:3] - be.last_target[i, -1]) < 1e-3


def test_oracle_privileged_planner_picks_the_direction_towards_the_target():
    """On a fixed scene, the planner with the oracle world model and the privileged reward chooses the basis direction
    that brings the TCP closest to the touch target, and its first executed step moves that way."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.config import load_planning_config
    from vidplan_core.planning.session import PlanningSession
    from vidplan_sim.env import SimEnv
    from vidplan_sim.oracle import OracleBackend
    from vidplan_sim.privileged import PrivilegedReward

    env, kin = SimEnv(render=False), PandaKinematics()
    env.reset(seed=0, clutter=0, task="touch the green cylinder")
    cfg = load_planning_config(None, {"session.gradopt.refine_iters": 0, "session.gradopt.score.kappa": 0.0,
                                      "session.gradopt.score.lam": 0.0, "session.proposals.gripper_toggle": False})
    session = PlanningSession(OracleBackend(env, kin, limits=cfg.limits, reward=PrivilegedReward()), kin, cfg.session)
    pose = env.ee_action()
    res, props = session.plan(np.zeros((1, 3, 3, 1, 1), np.uint8), pose[None], env.joint_positions(),
                              "touch the green cylinder")
    target = env.object_pose(env.task.object_name)[:3]
    final = {lab: np.linalg.norm(a[:, :3] - target, axis=1).min() for lab, a in zip(props.labels, props.actions,
                                                                                     strict=True)}
    assert res.chosen_label == min(final, key=final.get)
    assert res.chosen_label == "-z"  # the target is 0.46 m below and 0.08 m ahead of the home TCP
    assert res.chunk.actions[0, 2] < pose[2] - 0.01


@pytest.mark.slow
def test_eval_sim_workers_give_the_same_episodes(tmp_path):
    """Two worker processes (both cores; the CLI in its own process, so its pool and resource tracker end with it) run
    the same episodes as one in-process run: every episode is seeded by its spec."""
    import subprocess
    import sys

    from vidplan_app.jobs.closed_loop import ClosedLoopConfig, run_closed_loop

    cfg = ClosedLoopConfig(variants=["scripted"], episodes=2, clutter=[0, 1], tasks=["touch"], width=96, height=64)
    one = run_closed_loop(cfg, tmp_path / "one")
    out = tmp_path / "two"
    code = ("from vidplan_app.cli import app; app(['eval', 'sim', '--variants', 'scripted', '--episodes', '2', "
            f"'--clutter', '0,1', '--tasks', 'touch', '--workers', '2', '--no-progress', '--out', r'{out}'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    key = ("seed", "clutter", "task", "success", "steps", "reason")
    assert sorted(tuple(r[k] for k in key) for r in one["episodes"]) == \
        sorted(tuple(r[k] for k in key) for r in two["episodes"])
    assert len(two["episodes"]) == 4 and two["complete"]


def test_oracle_learned_pixels_scores_the_simulator_frames_with_gripper_centring(tmp_path):
    """The pixel diagnostic rung runs with a grounded-scorer bundle whose maps are the two exterior views and the
    gripper-referenced centring term; it is not in the default variant list."""
    from vidplan_app.jobs.closed_loop import DEFAULT_VARIANTS, VARIANTS, run_closed_loop
    from vidplan_core.runtime.bundle import random_planner_models

    assert "oracle+learned-pixels" in VARIANTS and "oracle+learned-pixels" not in DEFAULT_VARIANTS
    pm = random_planner_models("tiny", seed=0, scorer="grounded")
    pm.semantic_view, pm.map_views = 2, (0, 1)
    pm.save(tmp_path / "g")
    res = run_closed_loop(_cfg(tmp_path / "g", variants=["oracle+learned-pixels"],
                               overrides={"episode_steps": 6, "session.gradopt.score.centring": "gripper"}),
                          tmp_path / "out")
    (ep,) = res["episodes"]
    assert ep["cycles"] == 1 and ep["plan_s_mean"] > 0 and ep["final_tcp_target_m"] > 0.05


def test_privileged_rungs_run_under_a_gripper_centring_planner_config(tmp_path):
    """A ladder run with centring='gripper' in the planner config (the grounded bundle's setting) still runs the
    learned+privileged rung: its score switches centring off (lam 0), so its state-predicting backend needs no
    semantic maps or camera geometry."""
    from vidplan_app.jobs.closed_loop import run_closed_loop
    from vidplan_core.runtime.bundle import random_planner_models

    pm = random_planner_models("tiny", seed=0, scorer="grounded")
    pm.semantic_view, pm.map_views = 2, (0, 1)
    pm.save(tmp_path / "g")
    res = run_closed_loop(_cfg(tmp_path / "g", variants=["learned+privileged"],
                               overrides={"episode_steps": 6, "session.gradopt.score.centring": "gripper",
                                          "session.gradopt.score.lam": 2.0}), tmp_path / "out")
    (ep,) = res["episodes"]
    assert ep["variant"] == "learned+privileged" and ep["cycles"] == 1 and ep["plan_s_mean"] > 0


def test_trace_writes_one_row_per_cycle_beside_the_episode_record(tmp_path):
    """``trace=True`` (``vidplan eval sim --trace``): a per-cycle file per episode, its rows naming the chosen
    proposal among the scored ones; episodes.jsonl stays one trace-free line per episode; the same run resumes
    with tracing off."""
    from vidplan_app.jobs.closed_loop import run_closed_loop, trace_path

    cfg = _cfg(tmp_path / "unused", variants=["oracle+privileged"], overrides={"episode_steps": 12}, trace=True)
    res = run_closed_loop(cfg, tmp_path / "out")
    (ep,) = res["episodes"]
    rows = [json.loads(line) for line in trace_path(tmp_path / "out", ep).read_text().splitlines()]
    assert len(rows) == ep["cycles"] >= 2
    assert [r["cycle"] for r in rows] == list(range(ep["cycles"]))
    assert rows[0]["step"] == 0 and rows[1]["step"] > 0
    for r in rows:
        assert len(r["tcp"]) == 3 and len(r["target"]) == 3 and 0.0 <= r["gripper_width_m"] <= 0.081
        assert r["chosen"] in r["scores"] and r["best_score"] == max(r["scores"].values())
    lines = (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "trace" not in json.loads(lines[0])
    again = run_closed_loop(cfg.model_copy(update={"trace": False}), tmp_path / "out")  # resumes, runs nothing
    assert again["episodes"][0]["cycles"] == ep["cycles"]
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["trace"]  # its trace is still there


def test_trace_records_the_table_target_estimate(tmp_path):
    """With score.target_fusion 'table', each traced cycle of a learned planner carries the planner's target point
    on the table (inside the workspace box) and whether it is pushing."""
    from vidplan_app.jobs.closed_loop import run_closed_loop, trace_path
    from vidplan_core.runtime.bundle import random_planner_models

    pm = random_planner_models("tiny", seed=0, scorer="grounded")
    pm.semantic_view, pm.map_views = 2, (0, 1)
    pm.save(tmp_path / "g")
    cfg = _cfg(tmp_path / "g", variants=["argmax"], trace=True,
               overrides={"episode_steps": 6, "session.gradopt.score.target_fusion": "table"})
    res = run_closed_loop(cfg, tmp_path / "out")
    (ep,) = res["episodes"]
    rows = [json.loads(line) for line in trace_path(tmp_path / "out", ep).read_text().splitlines()]
    assert rows and all("target_estimate" in r for r in rows)
    lo, hi = res["planner_configs"]["argmax"]["limits"]["workspace_min"], \
        res["planner_configs"]["argmax"]["limits"]["workspace_max"]
    for r in rows:
        x, y, _ = r["target_estimate"]["point"]
        assert lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1] and r["target_estimate"]["pushing"] is False
    # each candidate's terms at its best frame explain its score (frame_reward: b − (1 − w(h̄))·|b|)
    sc = res["planner_configs"]["argmax"]["session"]["gradopt"]["score"]
    for r in rows:
        assert set(r["terms"]) == set(r["scores"])
        for lab, t in r["terms"].items():
            assert 0 <= t["frame"] < 5 and 0.0 <= t["h_bar"] <= 1.0 and t["dist"] >= 0.0
            b = t["r_s"] - sc["lam"] * t["dist"] + sc["direction_weight"] * t.get("progress", 0.0)
            assert b - (1 - np.exp(-sc["kappa"] * t["h_bar"])) * abs(b) == pytest.approx(r["scores"][lab], abs=1e-3)


def test_resuming_a_run_of_other_settings_names_what_differs(tmp_path):
    from vidplan_app.jobs.closed_loop import _prepare
    from vidplan_app.jobs.closed_loop_config import ClosedLoopConfig, ClosedLoopError

    _prepare(tmp_path / "run", ClosedLoopConfig(seed=0, episodes=1))
    assert _prepare(tmp_path / "run", ClosedLoopConfig(seed=0, episodes=3, variants=["vidplan"])) == []  # may grow
    with pytest.raises(ClosedLoopError, match="other settings \\(seed: 0 → 1\\)"):
        _prepare(tmp_path / "run", ClosedLoopConfig(seed=1, episodes=1))
