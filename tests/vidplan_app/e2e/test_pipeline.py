"""The whole model pipeline on a handful of tiny simulated episodes:

``vidplan data generate`` (real MuJoCo scene + scripted expert) → ``vidplan data convert`` → ``vidplan train``
semantic / vae / tiny-decoder / world-model / flow-map / heads / bc (a few steps each, tiny configs) →
``vidplan assemble-models``
(strict loading of every part) → ONNX export with manifest (hashes verified) → one plan cycle with gradient
refinement and finite output (torch backend; onnxruntime with VIDPLAN_E2E_FULL_EXPORT=1, see the test body).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mujoco", reason="MuJoCo is needed for the simulation")


def _vidplan() -> list[str]:
    exe = shutil.which("vidplan")
    return [exe] if exe else [sys.executable, "-c", "from vidplan_app.cli import main; main()"]


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(_vidplan() + args, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"vidplan {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.slow
def test_generate_convert_train_plan(tmp_path):
    if not os.environ.get("VIDPLAN_MENAGERIE_DIR"):
        pytest.skip("VIDPLAN_MENAGERIE_DIR unset: source scripts/env.sh (the Panda model is needed)")
    import torch
    from typer.testing import CliRunner

    from vidplan_app.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is ~10× faster than two contended ones on a shared machine
    try:
        _pipeline(tmp_path, CliRunner(), app)
    finally:
        torch.set_num_threads(threads)


def _pipeline(tmp_path, runner, app) -> None:
    bags, ds, runs = tmp_path / "bags", tmp_path / "ds", tmp_path / "runs"
    # 1. simulate 4 short episodes (all three task kinds), record bags
    _run(["data", "generate", "--out", str(bags), "--episodes", "4", "--width", "24", "--height", "16",
          "--camera-rate", "5", "--max-steps", "24", "--failure-prob", "0.5"])
    infos = [json.loads((bags / f"episode_{i:06d}.json").read_text()) for i in range(4)]
    assert {i["task"] for i in infos} == {"put", "touch", "push"}
    # 2. convert to the tiny models' view size (16x16), one validation episode
    out = _run(["data", "convert", str(bags), "--out", str(ds), "--size", "16x16", "--val-fraction", "0.25"]).stdout
    assert "4 episodes (3 train, 1 val)" in out
    meta = json.loads((ds / "meta.json").read_text())
    assert [e["success"] for e in meta["episodes"]] == [i["success"] for i in infos]

    # 3. a few training steps of every model, each from the previous one's output
    common = ["--data", str(ds), "--max-steps", "2", "--set", "train.progress=false", "--set", "train.val_every=2",
              "--set", "train.ckpt_every=2"]
    finals: dict[str, str] = {}
    inits = {"world-model": ["init.semantic={semantic}", "init.autoencoder={vae}"],
             "flow-map": ["init.semantic={semantic}", "init.autoencoder={vae}", "init.world_model={world-model}"],
             "heads": ["init.semantic={semantic}", "init.autoencoder={vae}", "init.flow_map={flow-map}"],
             "bc": ["init.semantic={semantic}", "init.autoencoder={vae}", "init.flow_map={flow-map}"],
             "tiny-decoder": ["init.autoencoder={vae}"]}
    for kind in ("semantic", "vae", "tiny-decoder", "world-model", "flow-map", "heads", "bc"):
        sets = []
        for s in inits.get(kind, []):
            sets += ["--set", s.format(**finals)]
        res = runner.invoke(app, ["train", kind, "--config", f"tiny-{kind}", "--out", str(runs / kind), *common,
                                  *sets])
        assert res.exit_code == 0, f"train {kind}: {res.output}\n{res.exception!r}"
        assert "trained" in res.output
        finals[kind] = str(runs / kind / "final")
    # a config that does not match the checkpoint is refused on --resume (exit 2, before any work)
    res = runner.invoke(app, ["train", "vae", "--config", "tiny-vae", "--out", str(runs / "vae"), "--resume", *common,
                              "--set", "optim.lr=0.5"])
    assert res.exit_code == 2 and "optim.lr" in res.output

    # 4. assemble the planner's model directory (strict loading of every part), export to ONNX, plan one cycle
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    from vidplan_core.data.dataset import WindowDataset
    from vidplan_core.export.onnx_export import export_planner
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.session import PlanningSession, SessionConfig
    from vidplan_core.runtime.loader import load_planner_models
    from vidplan_core.runtime.manifest import load_manifest
    from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
    from vidplan_core.runtime.torch_backend import TorchBackend

    # half-precision storage, as make demo-models assembles models/demo
    res = runner.invoke(app, ["assemble-models", "--runs", str(runs), "--out", str(tmp_path / "models"),
                              "--storage-dtype", "float16"])
    assert res.exit_code == 0, res.output
    models = load_planner_models(tmp_path / "models")
    # the distilled decoder (runs/tiny-decoder/final) is assembled as the optional part tiny_decoder/: the semantic
    # reward decodes with it (the export's semantic graphs below too)
    assert models.tiny_decoder is not None and models.scoring_decoder is models.tiny_decoder
    # the behaviour-cloned policy (runs/bc/final) is assembled as the optional part policy/ and plans from frames
    from vidplan_core.planning.nominal import BCNominalPolicy, NominalObservation

    nominal = BCNominalPolicy.from_bundle(tmp_path / "models", models)
    assert nominal.horizon == models.horizon
    # the semantic views are recorded in the index (a grounded scorer centres on exterior map views)
    from vidplan_core.runtime.bundle_index import read_bundle_index

    res = runner.invoke(app, ["assemble-models", "--runs", str(runs), "--out", str(tmp_path / "models_views"),
                              "--semantic-view", "2", "--centring-view", "0", "--map-views", "0,1"])
    assert res.exit_code == 0, res.output
    idx = read_bundle_index(tmp_path / "models_views")
    assert (idx.semantic_view, idx.centring_view, list(idx.map_views)) == (2, 0, [0, 1])
    assert load_planner_models(tmp_path / "models_views").map_view_list == (0, 1)
    res = runner.invoke(app, ["assemble-models", "--runs", str(runs), "--out", str(tmp_path / "models_bad"),
                              "--map-views", "0,0"])
    assert res.exit_code == 2 and "map_views" in res.output and not (tmp_path / "models_bad").exists(), res.output
    # a scorer retrained after the world model: the one the world model was trained with stays as text_conditioner
    res = runner.invoke(app, ["assemble-models", "--runs", str(runs), "--out", str(tmp_path / "models_tc"),
                              "--text-conditioner", str(runs / "semantic" / "final")])
    assert res.exit_code == 0, res.output
    assert "text_conditioner" in read_bundle_index(tmp_path / "models_tc").parts
    assert load_planner_models(tmp_path / "models_tc").text_conditioner is not None
    res = runner.invoke(app, ["assemble-models", "--runs", str(runs), "--out", str(tmp_path / "models_tc_bad"),
                              "--text-conditioner", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "--text-conditioner" in res.output, res.output
    # re-assembled from a bundle with one part replaced: every other part, the config and the views carry over
    res = runner.invoke(app, ["assemble-models", "--from-bundle", str(tmp_path / "models_views"),
                              "--out", str(tmp_path / "models_swap"), "--semantic", str(runs / "semantic" / "final"),
                              "--text-conditioner", str(tmp_path / "models_views" / "semantic")])
    assert res.exit_code == 0, res.output
    swap, views_idx = read_bundle_index(tmp_path / "models_swap"), read_bundle_index(tmp_path / "models_views")
    assert set(swap.parts) == set(views_idx.parts) | {"text_conditioner"}
    assert (swap.config, swap.semantic_view, swap.centring_view, swap.map_views) == \
        (views_idx.config, 2, 0, [0, 1])
    assert swap.checksums["flow_map"] == views_idx.checksums["flow_map"]
    assert swap.checksums["text_conditioner"] == views_idx.checksums["semantic"]
    res = runner.invoke(app, ["assemble-models", "--from-bundle", str(tmp_path / "models_swap"),
                              "--out", str(tmp_path / "models_swap"), "--overwrite"])
    assert res.exit_code == 2 and "--from-bundle itself" in res.output, res.output
    res = runner.invoke(app, ["assemble-models", "--from-bundle", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "models_none")])
    assert res.exit_code == 2 and "--from-bundle" in res.output and "nowhere" in res.output, res.output
    assert not (tmp_path / "models_none").exists()
    w = models.suite.flow_map.state_dict()
    assert all(torch.equal(v, v.half().float()) for v in w.values() if v.is_floating_point())
    # The ONNX value-and-grad graph takes > 10 min to export even for the tiny models on this 2-core machine, so
    # by default the export covers the forward graphs (encode, text, rollout, heads, semantic) and the plan cycle
    # (with gradient refinement) runs on the torch backend; VIDPLAN_E2E_FULL_EXPORT=1 exports everything and
    # plans on onnxruntime.
    full = os.environ.get("VIDPLAN_E2E_FULL_EXPORT") == "1"
    manifest = export_planner(models, tmp_path / "export", flow_steps=(1,), batch_sizes=(8,),
                              grad_batch_sizes=(1,) if full else ())
    assert {"encode", "text", "rollout_k1_n8", "heads_n8", "semantic_n8"} <= set(manifest.graphs)
    assert manifest.model["scoring_decoder"] == "tiny"
    assert all(g.max_rel_err is not None and g.max_rel_err <= 1e-4 for g in manifest.graphs.values())
    load_manifest(tmp_path / "export", verify_hashes=True)
    backend = OnnxRuntimeBackend(tmp_path / "export") if full else TorchBackend(models, flow_steps=1)
    T = models.num_history
    val = next(e for e in meta["episodes"] if e["split"] == "val")
    shard = load_file(str(ds / val["shard"]))
    item = WindowDataset(ds, "val", T, models.horizon, pad_start=False)[0]
    frames = shard["frames"][:T]
    poses = item["actions"][:T].numpy().astype(np.float64)
    q = shard["joint_positions"][T - 1].astype(np.float64)
    cfg = SessionConfig.model_validate({"gradopt": {"refine_iters": 2}})
    result, props = PlanningSession(backend, PandaKinematics(), cfg).plan(frames, poses, q, val["instruction"])
    chunk = result.chunk.actions
    bc_chunk = nominal.infer(NominalObservation(ee_pose=poses[-1], instruction=val["instruction"], frames=frames))
    assert bc_chunk.shape == (models.horizon, 7) and np.isfinite(bc_chunk).all()
    assert result.status in ("ok", "budget"), result.reason
    assert chunk.shape == (models.horizon, 7) and np.isfinite(chunk).all() and len(props.labels) >= 2
    assert np.isfinite(result.scores).all() and len(result.scores) == len(props.labels)
    assert len(result.objective_trace) >= 1 and np.isfinite(result.objective_trace).all()
