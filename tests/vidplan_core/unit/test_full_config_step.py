"""The full-size DROID recipe is checked before a GPU is rented: every `full-*` training config loads, and one
optimiser step of its objective runs at the `full` model's real shapes (1.5 B-parameter UNet, 3 × 192×320 views →
latents 4×72×40, 6 + 5 frames) and the config's per-GPU batch — on the meta device (shapes and dtypes propagate,
no memory is allocated, no arithmetic is done), so a shape or config error fails here in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from vidplan_core.models.configs import build_suite
from vidplan_core.sampling import edm_loss, psd_loss
from vidplan_core.training.config import CONFIG_DIR, load_train_config

FULL = ["full-world-model", "full-flow-map", "full-heads"]


@pytest.fixture(scope="module")
def suite():
    with torch.device("meta"):
        s = build_suite("full", seed=None)
    # diffusers' AlphaBlender makes its mix_factor with the legacy torch.Tensor constructor, which ignores the
    # default device: move every part to meta explicitly
    for m in (s.autoencoder, s.world_model, s.flow_map, s.uq_head, s.reward_head):
        m.to("meta")
    return s


def _step(module: torch.nn.Module, loss: torch.Tensor) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params if p.grad is not None)
    assert any(p.grad is not None for p in params)
    torch.optim.AdamW(params, lr=1e-5).step()


@pytest.mark.parametrize("name", FULL)
def test_one_optimizer_step_at_full_shapes(name, suite):
    cfg = load_train_config(name)
    assert cfg.model == "full" and cfg.data.lerobot is not None and cfg.data.lerobot.mapping == "droid"
    assert not cfg.data.cache_latents  # DROID is read in place: no latent cache
    wm = suite.world_model
    c = wm.config
    C, h, w = suite.autoencoder.latent_shape
    assert (C, h, w) == (4, 72, 40) and sum(p.numel() for p in wm.parameters()) > 1.4e9
    B = cfg.data.batch_size
    with torch.device("meta"):
        x1 = torch.randn(B, c.num_future, C, h, w)
        hist = torch.randn(B, c.num_history, C, h, w)
        act = torch.randn(B, c.num_history + c.num_future, 7)
        text = torch.randn(B, c.text_embed_dim)
        if cfg.kind == "world-model":
            _step(wm, edm_loss(wm, x1, hist, act, text_embeds=text).mean())
        elif cfg.kind == "flow-map":
            out = psd_loss(suite.flow_map, x1, hist, act, text_embeds=text)
            assert set(out) >= {"loss", "flow", "distill"}
            _step(suite.flow_map, out["loss"])
        else:
            _step(suite.uq_head, suite.uq_head.loss(x1, x1 * 0.5))
            _step(suite.reward_head, suite.reward_head.loss(x1, act[:, c.num_history:], torch.rand(B, c.num_future)))
        # the frozen autoencoder encodes one stacked triplet of 192×320 views per frame
        z = suite.autoencoder.vae.encode(torch.rand(B, 3, 3 * 192, 320) * 2 - 1).latent_dist.mode()
        assert tuple(z.shape) == (B, C, h, w)


def test_accelerate_fsdp_configs_name_real_diffusers_blocks():
    """The FSDP wrap policy names classes that exist in the installed diffusers (a typo would silently wrap
    nothing on the cluster)."""
    import diffusers.models.resnet as resnet
    import diffusers.models.transformers.transformer_temporal as temporal

    for f in sorted((CONFIG_DIR / "accelerate").glob("*.yaml")):
        cfg = yaml.safe_load(Path(f).read_text())
        assert cfg["distributed_type"] == "FSDP" and cfg["mixed_precision"] == "bf16", f
        for cls in cfg["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(resnet, cls) or hasattr(temporal, cls), f"{f.name}: {cls} is not a diffusers class"
