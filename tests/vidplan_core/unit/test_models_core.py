"""World model core: EDM, world model, flow map (DIFF2FLOW, PSD, K-step sampler), autoencoder, persistence."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vidplan_core.config import ConfigError
from vidplan_core.models import (
    EDMPreconditioning,
    FlowMap,
    ModelLoadError,
    ModelSuite,
    VideoAutoencoder,
    WorldModel,
    build_suite,
    diff2flow_velocity,
    import_ctrl_world,
    karras_sigmas,
    load_suite_config,
    sigma_to_t,
    t_to_sigma,
)
from vidplan_core.sampling import edm_loss, edm_sample, flow_map_sample, psd_loss, time_grid


@pytest.fixture(scope="module")
def suite() -> ModelSuite:
    torch.set_num_threads(1)  # 2 shared cores: one thread avoids OpenMP contention
    s = build_suite("tiny", seed=0)
    for m in (s.autoencoder, s.world_model, s.flow_map, s.uq_head, s.reward_head):
        m.eval()
    return s


def _batch(wm: WorldModel, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = wm.config
    shape = wm.latent_shape
    hist = torch.randn(B, c.num_history, *shape, generator=g)
    fut = torch.randn(B, c.num_future, *shape, generator=g)
    act = torch.rand(B, c.num_history + c.num_future, 7, generator=g) * 2 - 1
    return hist, fut, act


# ---------------------------------------------------------------------- EDM
@pytest.mark.parametrize("sigma_data,sign", [(1.0, -1.0), (0.5, 1.0)])
def test_edm_preconditioning_identities(sigma_data, sign):
    edm = EDMPreconditioning(sigma_data, sign)
    s = torch.tensor([0.002, 0.1, 0.5, 1.0, 3.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(edm.c_skip(s) + (edm.c_out(s) / sigma_data) ** 2, torch.ones_like(s))
    torch.testing.assert_close(edm.c_in(s) ** 2 * (s ** 2 + sigma_data ** 2), torch.ones_like(s))
    torch.testing.assert_close(edm.loss_weight(s) * edm.c_out(s) ** 2, torch.ones_like(s))
    assert torch.all(torch.sign(edm.c_out(s)) == sign)
    torch.testing.assert_close(edm.c_noise(s), s.log() / 4)
    # the ideal network output F* = (x1 − c_skip·x)/c_out makes D recover the clean signal exactly
    x1, n = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    x = x1 + s[:, None] * n
    raw = (x1 - edm.c_skip(s)[:, None] * x) / edm.c_out(s)[:, None]
    torch.testing.assert_close(edm.denoise(x, raw, s), x1)
    # closed-form noise estimate equals (x − D)/σ and recovers n
    torch.testing.assert_close(edm.x0_hat(x, raw, s), (x - edm.denoise(x, raw, s)) / s[:, None])
    torch.testing.assert_close(edm.x0_hat(x, raw, s), n)


def test_flow_time_conventions():
    t = torch.tensor([1 / 81, 0.3, 0.5, 0.9, 1.0])
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t)), t)
    assert math.isclose(float(t_to_sigma(torch.tensor(1 / 81))), 80.0, rel_tol=1e-5)
    sig = karras_sigmas(5, 0.002, 80.0)
    assert sig.shape == (6,) and sig[0] == pytest.approx(80.0) and sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])


# ---------------------------------------------------------------------- shapes
def test_tiny_shapes(suite):
    ae, wm, fm = suite.autoencoder, suite.world_model, suite.flow_map
    imgs = torch.rand(2, wm.config.num_history + wm.config.num_future, 3, 3, 16, 16)
    z = ae.encode(imgs)
    assert z.shape == (2, 5, *ae.latent_shape) == (2, 5, 4, 24, 8)
    assert ae.decode(z).shape == imgs.shape
    hist, fut, act = _batch(wm)
    assert wm.denoise(fut, torch.tensor([0.5, 2.0]), hist, act).shape == fut.shape
    assert edm_sample(wm, hist, act, num_steps=2).shape == fut.shape
    assert edm_sample(wm, hist, act, num_steps=2, solver="heun", guidance=2.0).shape == fut.shape
    te = torch.randn(2, wm.config.text_embed_dim)
    assert wm.denoise(fut, 1.0, hist, act, text_embeds=te).shape == fut.shape
    with torch.no_grad():
        for k in (1, 2, 4):
            assert flow_map_sample(fm, hist, act, num_steps=k).shape == fut.shape
    loss = edm_loss(wm, fut, hist, act, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_bad_inputs_are_clear(suite):
    wm, ae = suite.world_model, suite.autoencoder
    hist, fut, act = _batch(wm)
    msg = r"history latents: expected shape \(\*, 2, 4, 24, 8\), got \(2, 3, 4, 24, 8\)"
    with pytest.raises(ValueError, match=msg):
        wm.denoise(fut, 1.0, torch.cat([hist, hist[:, :1]], 1), act)
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 5, 7\), got \(2, 5, 6\)"):
        wm.denoise(fut, 1.0, hist, act[..., :6])
    bad = act.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        wm.denoise(fut, 1.0, hist, bad)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3, 3, 16, 16\)"):
        ae.encode(torch.rand(1, 2, 3, 16, 16))  # two views instead of three


# ---------------------------------------------------------------------- flow map
def test_flow_map_at_init_equals_teacher_diff2flow(suite):
    wm, fm = suite.world_model, suite.flow_map
    hist, x, act = _batch(wm, seed=1)
    with torch.no_grad():
        for s, t in [(0.0123, 1.0), (0.3, 0.7), (0.5, 0.5), (0.9, 1.0)]:
            v_fm = fm.velocity(x, s, t, hist, act)
            v_teacher = diff2flow_velocity(wm, x, s, hist, act)
            assert torch.equal(v_fm, v_teacher)
        # and the DIFF2FLOW velocity is x̂1 − x̂0 of the teacher's denoiser at x_edm = x/s, σ = (1 − s)/s
        s = 0.4
        sigma = torch.tensor((1 - s) / s)
        d = wm.denoise(x / s, sigma, hist, act)
        manual = d - (x / s - d) / sigma
        torch.testing.assert_close(fm.velocity(x, s, 0.8, hist, act), manual, rtol=1e-4, atol=1e-4)


def test_residual_world_model_starts_at_the_copy_baseline_and_the_flow_map_agrees(suite):
    """residual_to_current: the shift enters the denoiser exactly (D − current of the residual model = D of the
    plain one on x − current), the DIFF2FLOW velocity stays x̂1 − x̂0 of the shifted denoiser, and with the
    network's output zeroed the K=1 flow-map rollout is the current frame — the copy baseline."""
    cfg = suite.world_model.config
    wm = WorldModel.from_config(cfg, residual_to_current=True, sigma_data=0.05).eval()
    wm.load_state_dict(suite.world_model.state_dict())
    hist, x, act = _batch(wm, seed=4)
    with torch.no_grad():
        # the shift enters D: D − current of the residual model = D of the plain one at x − current
        plain = WorldModel.from_config(cfg, sigma_data=0.05).eval()
        plain.load_state_dict(suite.world_model.state_dict())
        sig = torch.tensor(0.7)
        torch.testing.assert_close(wm.denoise(x, sig, hist, act) - hist[:, -1:],
                                   plain.denoise(x - hist[:, -1:], sig, hist, act), rtol=1e-4, atol=1e-4)
        # DIFF2FLOW velocity = x̂1 − x̂0 with x̂0 = (x_edm − D)/σ (closed form with the shift)
        s = 0.4
        sigma = torch.tensor((1 - s) / s)
        d = wm.denoise(x / s, sigma, hist, act)
        torch.testing.assert_close(diff2flow_velocity(wm, x, s, hist, act), d - (x / s - d) / sigma, rtol=1e-4,
                                   atol=1e-4)
        torch.nn.init.zeros_(wm.unet.conv_out.weight)
        torch.nn.init.zeros_(wm.unet.conv_out.bias)
        fm = FlowMap.from_teacher(wm)
        noise = torch.randn(2, wm.config.num_future, *wm.latent_shape, generator=torch.Generator().manual_seed(5))
        pred = flow_map_sample(fm, hist, act, num_steps=1, noise=noise)
        shuffled = plain.denoise(noise * 80.0, torch.tensor(80.0), hist, act)  # the plain model: centred on 0
    # one step from pure noise lands on the denoiser's mean: the current frame (the copy baseline), not noise
    assert float((pred - hist[:, -1:]).abs().max()) < 0.01
    assert float((shuffled - hist[:, -1:]).abs().mean()) > 0.5


def test_motion_weights_favour_what_moves(suite):
    cfg = suite.world_model.config
    wm = WorldModel.from_config(cfg, motion_loss_weight=4.0)
    hist, _, act = _batch(wm, seed=6)
    fut = hist[:, -1:].repeat(1, wm.config.num_future, 1, 1, 1)
    fut[..., :2, :3] += 1.0  # a patch moves
    w = wm.motion_weights(fut, hist)
    assert w.shape == (2, wm.config.num_future, 1, *wm.latent_shape[1:])
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w[..., :2, :3].min()) > 3.0 * float(w[..., 3:, 3:].max())  # moving pixels weigh more
    assert suite.world_model.motion_weights(fut, hist) is None  # off by default
    torch.manual_seed(0)
    assert torch.isfinite(edm_loss(wm, fut, hist, act, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="motion_loss_weight"):
        WorldModel.from_config(cfg, motion_loss_weight=-1.0)


def test_k1_sampler_equals_one_jump_and_grid(suite):
    wm = suite.world_model
    fm = FlowMap.from_teacher(wm)
    torch.nn.init.normal_(fm.gap_embedding.linear_2.weight, std=0.05)  # make the (t − s) path non-trivial
    hist, _, act = _batch(wm, seed=2)
    noise = torch.randn(2, wm.config.num_future, *wm.latent_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        t0 = fm.t_lo
        one = fm.jump((1 - t0) * noise, t0, 1.0, hist, act)
        assert torch.allclose(flow_map_sample(fm, hist, act, num_steps=1, noise=noise), one, atol=1e-6)
        two = fm.jump(fm.jump((1 - t0) * noise, t0, 0.5, hist, act), 0.5, 1.0, hist, act)
        assert torch.allclose(flow_map_sample(fm, hist, act, time_grid=[t0, 0.5, 1.0], noise=noise), two, atol=1e-6)
    g = time_grid(fm, 4)
    assert g[0] == pytest.approx(1 / 81) and g[-1] == 1.0 and len(g) == 5
    gk = time_grid(fm, 4, "karras")
    assert torch.all(gk[1:] > gk[:-1]) and gk[0] == pytest.approx(1 / 81)
    with pytest.raises(ValueError, match="increasing"):
        flow_map_sample(fm, hist, act, time_grid=[0.5, 0.2])


def test_psd_steps_reduce_both_losses(suite):
    torch.manual_seed(0)
    fm = FlowMap.from_teacher(suite.world_model)
    hist, x1, act = _batch(fm.model, B=6, seed=4)
    x1 = x1 * 0.3  # a toy batch with data-like scale

    def evaluate():
        with torch.no_grad():
            out = [psd_loss(fm, x1, hist, act, generator=torch.Generator().manual_seed(s)) for s in range(3)]
        return (sum(float(o["flow"]) for o in out) / 3, sum(float(o["distill"]) for o in out) / 3)

    fm.eval()
    before = evaluate()
    opt = torch.optim.Adam(fm.parameters(), lr=1e-3)
    for i in range(12):  # the optimiser step the trainer takes (training.trainer), without accelerate
        fm.train()
        opt.zero_grad(set_to_none=True)
        psd_loss(fm, x1, hist, act, generator=torch.Generator().manual_seed(100 + i))["loss"].backward()
        torch.nn.utils.clip_grad_norm_(fm.parameters(), 1.0)
        opt.step()
    fm.eval()
    after = evaluate()
    assert after[0] < before[0], (before, after)
    assert after[1] < before[1], (before, after)
    # the control variant trains on the flow loss only
    out = psd_loss(fm, x1, hist, act, generator=torch.Generator().manual_seed(0), distill=False)
    assert float(out["distill"]) == 0.0 and out["loss"].requires_grad


# ---------------------------------------------------------------------- autoencoder cache
def test_history_cache_encodes_each_frame_once(suite):
    ae = suite.autoencoder
    ae.clear_cache()
    frames = torch.rand(4, 3, 3, 16, 16)
    z1 = ae.encode_history(frames[:3], [10, 11, 12])
    assert ae.last_encoded == 3
    z2 = ae.encode_history(frames[1:4], [11, 12, 13])
    assert ae.last_encoded == 1
    torch.testing.assert_close(z2[:2], z1[1:])
    torch.testing.assert_close(z2, ae.encode(frames[1:4]))


def test_pixel_autoencoder_is_exact():
    ae = VideoAutoencoder(kind="pixel", view_height=8, view_width=8, patch=2)
    x = torch.rand(2, 3, 3, 3, 8, 8)
    assert ae.latent_shape == (12, 12, 4)
    torch.testing.assert_close(ae.decode(ae.encode(x)), x)


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip_bit_exact(suite, tmp_path):
    suite.save(tmp_path)
    for sec in ("autoencoder", "world_model", "flow_map", "uq_head", "reward_head"):
        assert (tmp_path / sec / "config.json").is_file()
        assert (tmp_path / sec / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ModelSuite.load(tmp_path)
    for sec in ("autoencoder", "world_model", "flow_map", "uq_head", "reward_head"):
        a, b = getattr(suite, sec).state_dict(), getattr(loaded, sec).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sec
    hist, _, act = _batch(suite.world_model, seed=5)
    noise = torch.randn(2, 3, 4, 24, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(flow_map_sample(suite.flow_map, hist, act, 2, noise=noise),
                           flow_map_sample(loaded.flow_map, hist, act, 2, noise=noise))


def test_half_precision_storage(suite, tmp_path):
    """float16 storage halves the file, loads as float32 with the weights rounded once; buffers stay exact;
    the action statistics (in config.json) are untouched."""
    from safetensors import safe_open

    fm = suite.flow_map
    fm.save(tmp_path / "fp32")
    fm.save(tmp_path / "fp16", storage_dtype=torch.float16)
    w = "diffusion_pytorch_model.safetensors"
    size32, size16 = (tmp_path / "fp32" / w).stat().st_size, (tmp_path / "fp16" / w).stat().st_size
    assert size16 < 0.6 * size32
    params = dict(fm.named_parameters())
    with safe_open(str(tmp_path / "fp16" / w), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert all(dtypes[k] == "F16" for k in params if params[k].is_floating_point())
    assert all(dtypes[k] == "F32" for k in dtypes if k not in params)  # buffers stay fp32
    loaded = FlowMap.load(tmp_path / "fp16")
    assert loaded.dtype == torch.float32
    assert loaded.model.normalizer.p99.tolist() == fm.model.normalizer.p99.tolist()
    for k, v in loaded.state_dict().items():
        ref = fm.state_dict()[k]
        expect = ref.half().float() if k in params else ref
        assert torch.equal(v, expect), k
    # loading the same file again gives the same model: the rounding happens once, at saving
    again = dict(FlowMap.load(tmp_path / "fp16").state_dict())
    assert all(torch.equal(again[k], v) for k, v in loaded.state_dict().items())


def test_load_errors_name_files_and_shapes(suite, tmp_path):
    wm = suite.world_model
    with pytest.raises(ModelLoadError, match="missing file"):
        WorldModel.load(tmp_path / "nowhere")
    wm.save_pretrained(tmp_path / "wm")
    cfg = json.loads((tmp_path / "wm" / "config.json").read_text())
    cfg["cross_attention_dim"] = 48
    (tmp_path / "wm" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"config expects shape .*48.*file has .*32"):
        WorldModel.load(tmp_path / "wm")
    with pytest.raises(ModelLoadError, match="holds a WorldModel, expected a FlowMap"):
        FlowMap.load(tmp_path / "wm")
    (tmp_path / "wm" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"diffusion_pytorch_model\.safetensors"):
        WorldModel.load(tmp_path / "wm")


def test_action_stats_persist(tmp_path):
    from vidplan_core.spaces import ActionNormalizer

    s = build_suite("tiny", seed=1)
    norm = ActionNormalizer([-0.5, -0.5, 0.0, -3.0, -0.3, -0.3, 0.0], [0.5, 0.5, 0.8, 3.0, 0.3, 0.3, 1.0])
    s.world_model.set_action_stats(norm)
    s.world_model.save_pretrained(tmp_path)
    wm2 = WorldModel.load(tmp_path)
    assert wm2.normalizer.p99.tolist() == norm.p99.tolist()
    s.flow_map.set_action_stats(norm)
    s.flow_map.save_pretrained(tmp_path / "fm")
    assert FlowMap.load(tmp_path / "fm").model.normalizer.p01.tolist() == norm.p01.tolist()


def test_ctrl_world_import(suite, tmp_path):
    from safetensors.torch import save_file

    wm = suite.world_model
    sd = {k: v.clone() for k, v in wm.state_dict().items()}
    sd["vae.encoder.weight"] = torch.zeros(1)  # other Ctrl-World parts are ignored
    save_file(sd, str(tmp_path / "ctrl.safetensors"))
    fresh = WorldModel.from_config(dict(wm.config))
    import_ctrl_world(tmp_path / "ctrl.safetensors", fresh)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in wm.state_dict().items())
    with pytest.raises(ModelLoadError, match="checkpoint file not found"):
        import_ctrl_world(tmp_path / "checkpoint-10000.pt", fresh)
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"expected \.safetensors or a torch checkpoint"):
        import_ctrl_world(tmp_path / "weights.npz", fresh)


# ---------------------------------------------------------------------- configs
def test_presets_and_config_errors(tmp_path):
    for name in ("tiny", "demo", "full"):
        cfg, _ = load_suite_config(name)
        assert cfg.name == name
    full, _ = load_suite_config("full")
    assert full.world_model["block_out_channels"] == [320, 640, 1280, 1280]
    assert full.world_model["cross_attention_dim"] == 1024 and full.world_model["action_hidden_dims"] == [1024, 1024]
    demo = build_suite("demo")
    kinds = [type(b).__name__ for b in demo.world_model.unet.down_blocks]
    assert kinds == ["DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"]
    assert demo.world_model.latent_shape == demo.autoencoder.latent_shape == (4, 36, 20)
    with pytest.raises(ValueError, match="one flag per level"):
        WorldModel(**{**dict(demo.world_model.config), "attention_levels": [True]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("world_model: {num_histroy: 3}\n")
    with pytest.raises(ConfigError, match=r"world_model\.num_histroy: unknown key"):
        load_suite_config(bad)
    with pytest.raises(ConfigError, match="not a preset"):
        load_suite_config("huge")
