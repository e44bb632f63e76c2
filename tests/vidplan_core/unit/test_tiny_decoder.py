"""The distilled tiny decoder for scoring (vidplan_core.models.tiny_decoder): shapes, distillation, its use by the
semantic reward, the bundle part (warning without it, start-up error when it does not fit the autoencoder)."""

from __future__ import annotations

import pytest
import torch

from vidplan_core.models import TinyDecoder, VideoAutoencoder
from vidplan_core.models.tiny_decoder import decode_gflop
from vidplan_core.runtime import loader as L
from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle import random_planner_models
from vidplan_core.runtime.graphs import SemanticGraph
from vidplan_core.training.objectives import TinyDecoderObjective

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster (conftest)


def _ae() -> VideoAutoencoder:
    torch.manual_seed(0)
    return VideoAutoencoder(kind="kl", view_height=16, view_width=16, block_out_channels=(8, 16),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4).eval()


def test_shapes_follow_the_autoencoder_and_wrong_levels_are_named():
    ae = _ae()
    tiny = TinyDecoder.for_autoencoder(ae, channels=8)
    assert tiny.latent_shape == ae.latent_shape == (4, 24, 8)
    z = torch.randn(2, 3, *ae.latent_shape)
    with torch.no_grad():
        x = tiny.decode(z)
    assert x.shape == ae.decode(z).shape == (2, 3, 3, 3, 16, 16)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match=r"latents: expected \(\.\.\., 4, 24, 8\)"):
        tiny.decode(z[..., :-1])
    with pytest.raises(ValueError, match=r"not the stacked frame 48x16"):  # 3 levels grow 24x8 by 4, not 2
        TinyDecoder(latent_channels=4, latent_height=24, latent_width=8, view_height=16, view_width=16,
                    num_blocks=(1, 1, 0))


def test_the_demo_tiny_decoder_costs_a_fifth_of_the_demo_vae_decoder():
    """The reason it exists, counted (FLOPs on the meta device: no compute, no weights)."""
    from vidplan_core.models.configs import load_suite_config

    suite, _ = load_suite_config("demo")
    ae = VideoAutoencoder(**dict(suite.autoencoder))
    full, tiny = decode_gflop(ae), decode_gflop(TinyDecoder.for_autoencoder(ae))
    assert full is not None and tiny is not None
    assert full > 3.0 and tiny < full / 4, (full, tiny)


def test_distillation_approaches_the_full_decoder():
    """A few hundred steps of the objective bring the tiny decoder's pictures towards the full decoder's on the
    same latents (PSNR rises by > 6 dB); the teacher is frozen and not part of the trained module."""
    ae = _ae()
    for p in ae.parameters():
        p.requires_grad_(False)
    tiny = TinyDecoder.for_autoencoder(ae, channels=8)
    obj = TinyDecoderObjective(tiny, ae, latent_noise=0.1)
    assert {n.split(".")[0] for n, _ in obj.named_parameters()} == {"tiny"}
    g = torch.Generator().manual_seed(1)
    z_val = torch.randn(8, *ae.latent_shape, generator=g)

    def psnr() -> float:
        with torch.no_grad():
            mse = float(((tiny.decode(z_val) - ae.decode(z_val)) ** 2).mean())
        return -10 * torch.log10(torch.tensor(mse)).item()

    before = psnr()
    opt = torch.optim.Adam(tiny.parameters(), lr=3e-3)
    for _ in range(300):
        loss = obj(torch.randn(16, *ae.latent_shape, generator=g))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert psnr() > before + 6.0, (before, psnr())


def test_the_semantic_reward_decodes_with_the_tiny_decoder():
    m = random_planner_models("tiny", seed=0, tiny_decoder=True)
    assert m.scoring_decoder is m.tiny_decoder
    lat = torch.randn(2, m.horizon, *m.suite.autoencoder.latent_shape)
    text = torch.nn.functional.normalize(torch.randn(1, m.text_dim()), dim=-1)
    with torch.no_grad():
        graph = SemanticGraph(m.scoring_decoder, m.scorer, 0)
        score, _ = graph(lat, text)
        via_tiny, _ = graph.score_frames(m.tiny_decoder.decode(lat), text)
        via_full, _ = graph.score_frames(m.suite.autoencoder.decode(lat), text)
    assert torch.equal(score, via_tiny) and not torch.allclose(score, via_full)


def test_a_bundle_without_it_warns_once_naming_the_cost_and_a_wrong_one_is_a_startup_error(tmp_path):
    plain = tmp_path / "plain"
    random_planner_models("tiny", seed=0).save(plain)
    lb = L.load_planner_backend(plain, "torch", threads=1, warm=False)
    assert len(lb.warnings) == 1 and "no tiny_decoder" in lb.warnings[0] and "GFLOP per frame" in lb.warnings[0]
    assert "vidplan train tiny-decoder" in lb.warnings[0]
    with_tiny = tmp_path / "tiny"
    random_planner_models("tiny", seed=0, tiny_decoder=True).save(with_tiny)
    assert L.load_planner_backend(with_tiny, "torch", threads=1, warm=False).warnings == []
    # a tiny decoder distilled for another autoencoder (here: another latent width)
    other = TinyDecoder(latent_channels=4, latent_height=24, latent_width=16, view_height=16, view_width=32,
                        channels=8, num_blocks=(1, 0))
    other.save_pretrained(str(with_tiny / "tiny_decoder"))
    from vidplan_core.runtime.bundle_index import write_bundle_index

    write_bundle_index(with_tiny)
    with pytest.raises(BackendError, match=r"tiny_decoder decodes latents \(4, 24, 16\).*autoencoder's latents are "
                                           r"\(4, 24, 8\)"):
        L.load_planner_models(with_tiny)


def test_the_torch_backend_places_every_part_of_the_bundle_on_its_device(monkeypatch):
    """TorchBackend moves PlannerModels.modules() to its device, and that list holds every torch module of the bundle.
    The tiny decoder was once left out: on an H200 every CUDA plan of a bundle with one held ("Input type
    (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same")."""
    import dataclasses

    from vidplan_core.runtime.torch_backend import TorchBackend

    pm = random_planner_models("tiny", seed=0, tiny_decoder=True)
    parts = [getattr(pm, f.name) for f in dataclasses.fields(pm)]
    # the teacher (world_model) trains the flow map and is never run by the planner
    parts += [getattr(pm.suite, f.name) for f in dataclasses.fields(pm.suite) if f.name != "world_model"]
    listed = {id(m) for m in pm.modules()}
    assert pm.tiny_decoder is not None and id(pm.tiny_decoder) in listed
    assert [type(m).__name__ for m in parts if isinstance(m, torch.nn.Module) and id(m) not in listed] == []
    moved: list[int] = []
    to = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        moved.append(id(self))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    TorchBackend(pm, flow_steps=1, device="cpu")
    assert listed <= set(moved)


def test_a_bundle_already_on_a_device_reports_its_text_width_from_there():
    """PlannerModels.text_dim() (run by check(), so by every backend built on the bundle) asks the scorer on the
    scorer's own device. It once made its token ids on the CPU: the second backend built on one bundle (K=1 then K=4
    on an H200) failed with "index is on cpu, different from other tensors on cuda:0". The meta device stands in for
    CUDA here: it checks shapes, and the ids the scorer receives must be on it."""
    pm = random_planner_models("tiny", seed=0)
    width = pm.text_dim()
    pm.scorer.to("meta")
    seen: list[torch.device] = []
    encode = pm.scorer.encode_text

    def recording_encode(*args, **kwargs):
        seen.append(kwargs["input_ids"].device)
        return encode(*args, **kwargs)

    pm.scorer.encode_text = recording_encode
    assert pm.text_dim() == width
    assert seen == [torch.device("meta")]
