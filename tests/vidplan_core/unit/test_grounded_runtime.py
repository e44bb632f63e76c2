"""The grounded scorer inside the planner: bundle save/load, torch backend, ONNX export without the sentence
encoder, onnxruntime matching torch (text embedding and semantic graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidplan_core.export.onnx_export import export_planner
from vidplan_core.runtime.base import PlanningContext
from vidplan_core.runtime.bundle import random_planner_models
from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
from vidplan_core.runtime.torch_backend import TorchBackend

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def models():
    m = random_planner_models("tiny", scorer="grounded")
    m.semantic_view, m.map_views = 2, (0, 1)  # score on the wrist view, maps of both exterior views (stacked)
    return m


def _ctx(m, instruction="touch the green ball"):
    rng = np.random.default_rng(0)
    vh, vw = m.suite.autoencoder.config.view_height, m.suite.autoencoder.config.view_width
    frames = rng.integers(0, 255, (m.num_history, 3, 3, vh, vw), dtype=np.uint8)
    acts = np.tile(np.array([0.5, 0.0, 0.3, np.pi, 0.0, 0.0, 0.0], np.float32), (m.num_history, 1))
    return PlanningContext(frames, acts, instruction, seed=3)


def test_bundle_roundtrip_loads_the_grounded_scorer(models, tmp_path):
    from vidplan_core.runtime.loader import load_planner_models

    models.save(tmp_path / "b", config_name="tiny")
    files = {p.name for p in (tmp_path / "b" / "semantic").iterdir()}
    assert files == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = load_planner_models(tmp_path / "b")
    assert loaded.scorer.kind == "grounded"
    assert (loaded.semantic_view, loaded.map_view_list) == (2, (0, 1))  # the views travel in bundle.json
    ids = torch.as_tensor(loaded.tokenize("push the red cube to the left"))
    assert torch.allclose(loaded.scorer.encode_text(input_ids=ids), models.scorer.encode_text(input_ids=ids), atol=1e-6)
    assert loaded.scorer.text_encoder.bert is models.scorer.text_encoder.bert  # one frozen BERT per process


def test_the_frozen_sentence_encoder_is_loaded_once_per_process():
    """SentenceEncoder.shared: every inference wrapper of one directory holds the same BERT (~90 MB), at its own
    padding length; from_pretrained (training) gets a private copy."""
    from vidplan_core.models.grounded import SentenceEncoder

    a, b = SentenceEncoder.shared(max_len=16), SentenceEncoder.shared(max_len=24)
    assert a.bert is b.bert and a.tokenizer is b.tokenizer and (a.max_len, b.max_len) == (16, 24)
    assert a.tokenize(["touch the red cube"]).shape == (1, 16)
    assert SentenceEncoder.from_pretrained().bert is not a.bert


def test_onnx_export_matches_torch_without_the_sentence_encoder(models, tmp_path):
    # no value-and-grad graph (minutes to trace; its text input is the same text_embeds as the rollout's)
    man = export_planner(models, tmp_path, flow_steps=(1,), batch_sizes=(2,), grad_batch_sizes=(), simplify="none")
    assert "text_proj" in man.graphs and "text" not in man.graphs
    assert man.model["semantic_kind"] == "grounded" and man.model["text_encoder"] == "all-MiniLM-L6-v2"
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size < 20_000_000  # no 90 MB BERT in the export
    ort = OnnxRuntimeBackend(tmp_path, flow_steps=1, threads=1, require_grad=False)
    tb = TorchBackend(models, flow_steps=1)
    ctx = _ctx(models)
    ort.set_context(ctx)
    tb.set_context(ctx)
    np.testing.assert_allclose(ort.text_embedding(ctx.instruction), tb.text_embedding(ctx.instruction).numpy(),
                               atol=1e-4)
    assert ort._sentence_encoder().bert is models.scorer.text_encoder.bert  # not a second copy beside the scorer
    lat = np.random.default_rng(1).standard_normal((2, models.horizon, *models.suite.autoencoder.latent_shape)
                                                   ).astype(np.float32)
    acts = np.tile(ctx.history_actions[-1], (2, models.horizon, 1)).astype(np.float32)
    a, b = ort.score_latents(lat, acts), tb.score_latents(lat, acts)
    np.testing.assert_allclose(a.semantic_score, b.semantic_score, atol=1e-4)
    np.testing.assert_allclose(a.semantic_map, b.semantic_map, atol=1e-3)
    assert a.semantic_map.shape[-2:] == (16, 8)  # two 16x16 views at output stride 2, stacked
    assert ort.map_views == tb.map_views == (0, 1)
    assert ort.view_geometry == tb.view_geometry


def test_scoring_given_frames_equals_scoring_their_latents_decoded(models):
    """The ladder's pixel diagnostic (oracle+learned-pixels) hands the scorer frames instead of decoded latents:
    handing it exactly the decoded latents must change nothing."""
    tb = TorchBackend(models, flow_steps=1)
    tb.set_context(_ctx(models))
    lat = np.random.default_rng(2).standard_normal((2, models.horizon, *models.suite.autoencoder.latent_shape)
                                                   ).astype(np.float32)
    acts = np.tile(_ctx(models).history_actions[-1], (2, models.horizon, 1)).astype(np.float32)
    frames = np.stack([tb.decode(x) for x in lat])  # (N, H, 3, 3, h, w) in [0, 1]
    a, b = tb.score_latents(lat, acts), tb.score_latents(lat, acts, frames=frames)
    np.testing.assert_allclose(a.semantic_score, b.semantic_score, atol=1e-5)
    np.testing.assert_allclose(a.semantic_map, b.semantic_map, atol=1e-4)
    c = tb.score_latents(lat, acts, frames=np.zeros_like(frames))
    assert not np.allclose(a.semantic_map, c.semantic_map)  # the frames are what is scored


def test_a_text_conditioner_keeps_the_world_models_text_input_while_a_new_scorer_scores(models, tmp_path):
    """A bundle whose scorer was retrained after its world model carries the old scorer as ``text_conditioner``:
    the world model (and the policy) keep reading the embedding they were trained on, the new scorer scores. Without
    it, swapping the scorer silently changes the world model's input. Saved, loaded and exported, onnxruntime
    matches torch on both embeddings. The new scorer is attribute-factorised (a luminance tower and a colour branch,
    ``colour_channels``), as the bundle's retrained scorer is, so its export is checked here too."""
    import dataclasses

    from vidplan_core.models.grounded import GroundedScorer
    from vidplan_core.runtime.base import BackendError
    from vidplan_core.runtime.loader import load_planner_models

    assert models.uses_text
    torch.manual_seed(7)
    d = models.scorer.config.embed_dim
    new = GroundedScorer(embed_dim=d, channels=(8, 16, 16), colour_channels=4
                         ).attach_text_encoder(models.scorer.text_encoder).eval()
    swapped = dataclasses.replace(models, scorer=new)  # what a scorer swap did before text_conditioner
    kept = dataclasses.replace(models, scorer=new, text_conditioner=models.scorer)
    ctx = _ctx(models)
    acts = np.tile(ctx.history_actions[-1], (2, models.horizon, 1)).astype(np.float32)
    acts[1, :, 0] += np.linspace(0.0, 0.1, models.horizon)
    out = {}
    for name, m in (("orig", models), ("swapped", swapped), ("kept", kept)):
        tb = TorchBackend(m, flow_steps=1)
        tb.set_context(ctx)
        out[name] = (tb.predict_latents(acts), tb.rollout(acts).semantic_score,
                     tb.conditioning_embedding(ctx.instruction).numpy(), tb.text_embedding(ctx.instruction).numpy())
    np.testing.assert_allclose(out["kept"][0], out["orig"][0], atol=1e-5)  # the world model's input is unchanged
    assert np.abs(out["swapped"][0] - out["orig"][0]).max() > 1e-3  # ... which a bare swap changes
    np.testing.assert_allclose(out["kept"][2], out["orig"][3], atol=1e-6)
    assert np.abs(out["kept"][3] - out["orig"][3]).max() > 1e-3  # the new scorer's embedding scores
    assert np.abs(out["kept"][1] - out["orig"][1]).max() > 1e-4

    kept.save(tmp_path / "b", config_name="tiny")
    loaded = load_planner_models(tmp_path / "b")
    assert loaded.text_conditioner is not None and "text_conditioner" in (tmp_path / "b" / "bundle.json").read_text()
    ids = torch.as_tensor(loaded.tokenize(ctx.instruction))
    assert torch.allclose(loaded.text_conditioner.encode_text(input_ids=ids), models.scorer.encode_text(input_ids=ids),
                          atol=1e-6)
    man = export_planner(loaded, tmp_path / "onnx", flow_steps=(1,), batch_sizes=(2,), grad_batch_sizes=(),
                         simplify="none")
    assert {"text_proj", "cond_text_proj"} <= set(man.graphs) and man.model["text_conditioner"] is True
    ort = OnnxRuntimeBackend(tmp_path / "onnx", flow_steps=1, threads=1, require_grad=False)
    ort.set_context(ctx)
    np.testing.assert_allclose(ort.conditioning_embedding(ctx.instruction), out["kept"][2], atol=1e-4)
    np.testing.assert_allclose(ort.text_embedding(ctx.instruction), out["kept"][3], atol=1e-4)
    np.testing.assert_allclose(ort.predict_latents(acts), out["kept"][0], atol=1e-3)
    np.testing.assert_allclose(ort.rollout(acts).semantic_score, out["kept"][1], atol=1e-4)
    lat = ort.predict_latents(acts)
    a, b = ort.score_latents(lat, acts), TorchBackend(loaded, flow_steps=1)
    b.set_context(ctx)
    np.testing.assert_allclose(a.semantic_map, b.score_latents(lat, acts).semantic_map, atol=1e-3)  # the colour branch

    # scoring with another semantic model at load time (semantic_dir) keeps the bundle's own as the conditioner
    models.save(tmp_path / "orig", config_name="tiny")
    new.save(tmp_path / "new_semantic")
    over = load_planner_models(tmp_path / "orig", semantic_dir=tmp_path / "new_semantic")
    assert torch.allclose(over.conditioning_embedding(ctx.instruction), torch.as_tensor(out["kept"][2]), atol=1e-6)
    assert torch.allclose(over.scorer.encode_text(input_ids=ids), new.encode_text(input_ids=ids), atol=1e-6)

    other = GroundedScorer(embed_dim=d, channels=(8, 16, 16), max_text_len=16)
    with pytest.raises(BackendError, match=r"text_conditioner .* does not tokenise like the semantic scorer"):
        dataclasses.replace(models, text_conditioner=other).check()
