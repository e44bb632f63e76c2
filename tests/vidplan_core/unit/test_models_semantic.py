"""Semantic reward: SigLIP / CLIP from a local directory (small random configs), differentiable end to end."""

from __future__ import annotations

import pytest
import torch

from vidplan_core.models import ModelLoadError, SemanticScorer, build_suite, soft_centroid
from vidplan_core.sampling import flow_map_sample

VOCAB = {"[PAD]": 0, "[UNK]": 1, "pick": 2, "up": 3, "the": 4, "red": 5, "cube": 6, "[EOS]": 7}


def _save_random(kind: str, path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    text = dict(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=8, pad_token_id=0, bos_token_id=7, eos_token_id=7)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    if kind == "siglip":
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    else:
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    model.save_pretrained(path)
    tk = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(path)


@pytest.fixture(scope="module", params=["siglip", "clip"])
def scorer(request, tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp(request.param)
    _save_random(request.param, d)
    return SemanticScorer.from_pretrained(d)


def test_scores_maps_and_centroids(scorer):
    te = scorer.encode_text(["pick up the red cube", "the cube"])
    assert te.shape[0] == 2
    torch.testing.assert_close(te.norm(dim=-1), torch.ones(2))
    imgs = torch.rand(2, 3, 3, 24, 40)  # (B, F, RGB, H, W), any size: resized in torch
    out = scorer.score_and_centroid(imgs, te[0])
    assert out["score"].shape == (2, 3) and out["map"].shape == (2, 3, 4, 4) and out["centroid"].shape == (2, 3, 2)
    assert float(out["score"].abs().max()) <= 1 + 1e-5
    assert float(out["centroid"].min()) >= 0 and float(out["centroid"].max()) <= 1
    torch.testing.assert_close(scorer.score(imgs, te[:1].expand(2, -1)), out["score"])
    torch.testing.assert_close(scorer.similarity_map(imgs, te[0]), out["map"])


def test_soft_centroid_finds_peak():
    m = torch.zeros(1, 8, 10)
    m[0, 6, 2] = 5.0
    c = soft_centroid(m, temperature=0.05)
    torch.testing.assert_close(c, torch.tensor([[2.5 / 10, 6.5 / 8]]), atol=1e-3, rtol=0)
    flat = soft_centroid(torch.zeros(1, 4, 4) + torch.randn(1, 4, 4) * 1e-9, temperature=1e6)
    torch.testing.assert_close(flat, torch.tensor([[0.5, 0.5]]), atol=1e-3, rtol=0)


def test_semantic_gradient_reaches_actions(scorer):
    s = build_suite("tiny", seed=0)
    fm, ae = s.flow_map, s.autoencoder
    c = fm.model.config
    g = torch.Generator().manual_seed(0)
    hist = torch.randn(1, c.num_history, *fm.model.latent_shape, generator=g)
    act = (torch.rand(1, c.num_history + c.num_future, 7, generator=g) * 2 - 1).requires_grad_(True)
    te = scorer.encode_text(["pick up the red cube"])[0]
    pred = flow_map_sample(fm, hist, act, num_steps=1, noise=torch.zeros(1, c.num_future, *fm.model.latent_shape))
    views = ae.decode(pred, clamp=False)  # (1, H, 3 views, 3, 16, 16)
    out = scorer.score_and_centroid(views[:, :, 0], te)  # left view
    (out["score"].sum() - out["centroid"][..., 0].sum()).backward()
    assert act.grad is not None and float(act.grad[:, c.num_history:].abs().sum()) > 0


def test_loading_errors(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        SemanticScorer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "siglip"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match=r"expected model\.safetensors"):
        SemanticScorer.from_pretrained(tmp_path)
