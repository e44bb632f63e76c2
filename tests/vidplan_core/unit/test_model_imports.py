"""`vidplan import ctrl-world|svd-vae|siglip`: public checkpoints in their published layouts → model-directory parts.

The Ctrl-World checkpoint is generated in the layout of its public source (models/ctrl_world.py: a pickled
state_dict of the CrtlWorld module — ``unet.*`` with diffusers' key names, ``action_encoder.action_encode.{0,2,...}``
of its MLP, and the frozen ``vae.*``, ``image_encoder.*``, ``text_encoder.*`` copies), at the tiny shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from vidplan_app.cli import app
from vidplan_core.models import SemanticScorer, VideoAutoencoder, WorldModel
from vidplan_core.models.configs import CONFIG_DIR, build_suite


class NotATensor:
    """Any object a malicious pickle might carry; weights_only=True refuses it."""


def _run(*args: str):
    return CliRunner().invoke(app, ["import", *args])


@pytest.fixture(scope="module")
def tiny_wm() -> WorldModel:
    torch.manual_seed(3)
    return build_suite("tiny", seed=3).world_model


def _ctrl_world_state(wm: WorldModel) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in wm.state_dict().items()}
    assert any(k.startswith("action_encoder.action_encode.0.") for k in sd)  # Ctrl-World's Sequential indices
    sd["vae.encoder.conv_in.weight"] = torch.zeros(8, 3, 3, 3)  # frozen copies Ctrl-World saves too
    sd["image_encoder.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(4, 3, 2, 2)
    sd["text_encoder.text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 4)
    return sd


@pytest.mark.parametrize("wrap", ["plain", "accelerate"])
def test_ctrl_world_pt_imports_key_for_key(tiny_wm, tmp_path, wrap):
    sd = _ctrl_world_state(tiny_wm)
    if wrap == "accelerate":  # a DDP-wrapped save nested under state_dict
        sd = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "step": 10000}
    torch.save(sd, tmp_path / "checkpoint-10000.pt")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"p01": [-0.5, -0.5, 0.0, -3.0, -0.3, -0.3, 0.0],
                                 "p99": [0.5, 0.5, 0.8, 3.0, 0.3, 0.3, 1.0]}))
    res = _run("ctrl-world", str(tmp_path / "checkpoint-10000.pt"), "--out", str(tmp_path / "m"), "--model", "tiny",
               "--stats", str(stats))
    assert res.exit_code == 0, res.output
    assert "initialisation" in res.output  # the slot convention differs: fine-tune before use
    loaded = WorldModel.load(tmp_path / "m" / "world_model")
    for k, v in tiny_wm.state_dict().items():
        if not k.startswith("action_"):  # action statistics come from --stats
            assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.normalizer.p99.tolist() == [0.5, 0.5, 0.8, 3.0, 0.3, 0.3, 1.0]


def test_ctrl_world_bad_checkpoints_are_refused_by_name(tiny_wm, tmp_path):
    sd = _ctrl_world_state(tiny_wm)
    # a pickle with an object that is not a tensor: never unpickled beyond weights_only
    torch.save({**sd, "args": NotATensor()}, tmp_path / "evil.pt")
    res = _run("ctrl-world", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "m"), "--model", "tiny")
    assert res.exit_code == 2 and "refused" in res.output and "weights_only" in res.output, res.output
    # a key missing and a shape that differs: both named
    bad = dict(sd)
    bad.pop("unet.conv_in.weight")
    bad["unet.conv_out.bias"] = torch.zeros(5)
    torch.save(bad, tmp_path / "bad.pt")
    res = _run("ctrl-world", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "m"), "--model", "tiny")
    assert res.exit_code == 2 and "missing 'unet.conv_in.weight'" in res.output and "unet.conv_out.bias" in res.output
    assert not (tmp_path / "m").exists()  # nothing written
    res = _run("ctrl-world", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "m"), "--model", "tiny")
    assert res.exit_code == 2 and "not found" in res.output


def test_svd_vae_imports_into_a_temporal_autoencoder(tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder

    suite = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    suite["autoencoder"] = {"kind": "temporal", "view_height": 16, "view_width": 16, "block_out_channels": [32, 32],
                            "layers_per_block": 1, "latent_channels": 4}
    cfg = tmp_path / "suite.yaml"
    cfg.write_text(yaml.safe_dump(suite))
    torch.manual_seed(0)
    svd = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 2, block_out_channels=(32, 32),
                                       layers_per_block=1, latent_channels=4, scaling_factor=0.18215)
    svd.save_pretrained(tmp_path / "svd" / "vae")  # the pipeline layout: the VAE in vae/
    res = _run("svd-vae", str(tmp_path / "svd"), "--out", str(tmp_path / "m"), "--model", str(cfg))
    assert res.exit_code == 0, res.output
    ae = VideoAutoencoder.load(tmp_path / "m" / "autoencoder")
    for k, v in svd.state_dict().items():
        assert torch.equal(ae.vae.state_dict()[k], v), k
    # the tiny preset's autoencoder is a plain KL VAE: refused by name
    res = _run("svd-vae", str(tmp_path / "svd"), "--out", str(tmp_path / "m2"), "--model", "tiny")
    assert res.exit_code == 2 and "autoencoder.kind" in res.output


def test_siglip_imports_and_scores(tmp_path):
    from test_models_semantic import _save_random  # a small random SigLIP + word-level tokenizer

    _save_random("siglip", tmp_path / "siglip")
    res = _run("siglip", str(tmp_path / "siglip"), "--out", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    s = SemanticScorer.from_pretrained(tmp_path / "m" / "semantic")
    assert s.encode_text(["pick up the red cube"]).shape[0] == 1
    # weights without a tokenizer cannot score an instruction: named
    for f in Path(tmp_path / "siglip").glob("tokenizer*"):
        f.unlink()
    (tmp_path / "siglip" / "special_tokens_map.json").unlink(missing_ok=True)
    res = _run("siglip", str(tmp_path / "siglip"), "--out", str(tmp_path / "m3"))
    assert res.exit_code == 2 and "tokenizer" in res.output
