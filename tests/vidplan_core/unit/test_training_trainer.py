"""The generic accelerate trainer: checkpoints, resume, resume-config mismatch, NaN stop, logs; config loading.

The trainer is exercised with a small regression recipe written against its public TrainRecipe protocol (the five
real kinds run in tests/vidplan_app/e2e/test_pipeline.py); the recipe can be told to produce a NaN loss at a given step.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vidplan_core.config import ConfigError
from vidplan_core.training.config import CONFIG_DIR, TrainConfig, config_diff, load_train_config
from vidplan_core.training.trainer import Trainer, TrainError, TrainingDivergedError, latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster (conftest)


class _Regression(nn.Module):
    def __init__(self, nan_at: int | None):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            self.calls += 1
        loss = ((self.lin(x) - y) ** 2).mean()
        if self.training and self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "mse": loss.detach()}


class ToyRecipe:
    def __init__(self, nan_at: int | None = None):
        self.nan_at = nan_at
        self.setup_called = False

    def setup(self, device, is_main):
        self.setup_called = True
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
        self.train_dataset = [{"x": a, "y": b} for a, b in zip(x[:48], y[:48], strict=True)]
        self.val_dataset = [{"x": a, "y": b} for a, b in zip(x[48:], y[48:], strict=True)]
        self.model = _Regression(self.nan_at)
        self.device = device

    def inputs(self, batch, train):
        return {"x": batch["x"].to(self.device), "y": batch["y"].to(self.device)}

    def val_metrics(self, model, batch, inputs):
        return {"abs_err": float((model.lin(inputs["x"]) - inputs["y"]).abs().mean())}

    def save_final(self, model, out_dir: Path):
        out_dir.mkdir(parents=True)
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(out_dir / "model.safetensors"))


def _cfg(out: Path, **train) -> TrainConfig:
    t = {"output_dir": str(out), "max_steps": 4, "log_every": 1, "val_every": 2, "val_batches": 2, "ckpt_every": 2,
         "keep_checkpoints": 2, "progress": False}
    t.update(train)
    return TrainConfig.model_validate({"kind": "vae", "model": "tiny", "data": {"root": "unused", "batch_size": 8},
                                       "optim": {"lr": 0.05}, "train": t})


def _rows(out: Path) -> list[dict]:
    with (out / "logs" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_train_checkpoint_resume(tmp_path):
    out = tmp_path / "run"
    res = Trainer(_cfg(out), ToyRecipe()).run()
    assert res["step"] == 4 and (out / "final" / "model.safetensors").is_file()
    ck = latest_checkpoint(out)
    assert ck is not None and ck.name == "step_0000004"
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 4
    assert any(p.suffix == ".safetensors" for p in ck.iterdir())  # weights as safetensors
    rows = _rows(out)
    val1 = [float(r["value"]) for r in rows if r["split"] == "val" and r["metric"] == "loss"]
    assert len(val1) == 2 and all(v == v for v in val1)
    assert list((out / "logs" / "tensorboard").rglob("events.out.tfevents*"))
    # a new run in the same directory is refused; --resume continues where it stopped
    with pytest.raises(TrainError, match="--resume"):
        Trainer(_cfg(out), ToyRecipe())
    res2 = Trainer(_cfg(out, max_steps=8), ToyRecipe(), resume=True).run()
    assert res2["step"] == 8
    steps = sorted({int(r["step"]) for r in _rows(out) if r["split"] == "train"})
    assert steps == list(range(1, 9))  # 5..8 appended after 1..4, no step repeated
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_0000006", "step_0000008"]  # keep_checkpoints = 2
    val2 = [float(r["value"]) for r in _rows(out) if r["split"] == "val" and r["metric"] == "loss"]
    assert val2[-1] < val1[0]  # learning continued from the checkpoint


def test_resume_mismatch_fails_before_work(tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(out, max_steps=2), ToyRecipe()).run()
    other = _cfg(out, max_steps=4).model_copy(update={"optim": _cfg(out).optim.model_copy(update={"lr": 0.1})})
    recipe = ToyRecipe()
    with pytest.raises(ConfigError) as err:
        Trainer(other, recipe, resume=True)
    assert "optim.lr" in str(err.value) and "0.05" in str(err.value) and "0.1" in str(err.value)
    assert not recipe.setup_called
    with pytest.raises(TrainError, match="nothing to resume"):
        Trainer(_cfg(tmp_path / "empty"), ToyRecipe(), resume=True)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as err:
        Trainer(_cfg(out, max_steps=10), ToyRecipe(nan_at=5)).run()
    e = err.value
    assert e.step == 5 and e.name == "loss" and e.value != e.value
    assert "step 5" in str(e) and "step_0000004" in str(e)
    assert latest_checkpoint(out).name == "step_0000004"
    assert not (out / "final").exists()
    from safetensors.torch import load_file

    weights = {k: v for f in latest_checkpoint(out).glob("*.safetensors") for k, v in load_file(str(f)).items()}
    assert weights and all(bool(torch.isfinite(v).all()) for v in weights.values())


def test_bundled_configs_and_errors(tmp_path):
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    for kind in ("vae", "world-model", "flow-map", "heads", "semantic"):
        assert f"tiny-{kind}" in names and f"demo-{kind}" in names
    for n in names:
        cfg = load_train_config(n, ["train.max_steps=3"])
        assert cfg.train.max_steps == 3 and n.endswith(cfg.kind)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: heads\nmodel: tiny\ndata: {root: d, batch_sise: 3}\ntrain: {output_dir: o}\n"
                   "options: {rollout_steps: [0]}\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(bad)
    text = str(err.value)
    assert str(bad) in text and "data.batch_sise" in text
    bad.write_text("kind: heads\nmodel: tiny\ndata: {root: d}\ntrain: {output_dir: o}\n")
    with pytest.raises(ConfigError, match=r"init.autoencoder, init.flow_map"):
        load_train_config(bad)
    bad.write_text("kind: heads\nmodel: tiny\ndata: {root: d}\ninit: {autoencoder: a, flow_map: f}\n"
                   "train: {output_dir: o}\noptions: {rollout_steps: [0], reward: false, uq: false}\n")
    with pytest.raises(ConfigError, match="options"):
        load_train_config(bad)
    # runs saved before the rename call the options section "task"; they still load (and resume) unchanged
    old = tmp_path / "old.yaml"
    old.write_text("kind: vae\nmodel: tiny\ndata: {root: d}\ntrain: {output_dir: o}\ntask: {kl_weight: 0.5}\n")
    assert load_train_config(old).kind_options().kl_weight == 0.5
    new = tmp_path / "new.yaml"
    new.write_text(old.read_text().replace("task:", "options:"))
    assert config_diff(load_train_config(old), load_train_config(new)) == []
    a = load_train_config("tiny-vae")
    b = load_train_config("tiny-vae", ["train.max_steps=99", "optim.lr=0.5"])
    assert [k for k, _ in config_diff(a, b)] == ["optim.lr"]


def test_assemble_names_missing_parts(tmp_path):
    from vidplan_core.training.assemble import assemble_model_dir, default_sources

    src = default_sources(tmp_path / "runs")
    (tmp_path / "runs" / "vae" / "final").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        assemble_model_dir(tmp_path / "models", src)
    text = str(err.value)
    assert "flow_map" in text and "semantic" in text and "autoencoder" not in text.split("missing part(s):")[1]
    assert not (tmp_path / "models").exists()


def test_assemble_bad_input_leaves_the_existing_model_directory(tmp_path):
    """overwrite replaces the old directory only once the new one is complete and loads."""
    from vidplan_core.training.assemble import assemble_model_dir, default_sources

    old = tmp_path / "models"
    old.mkdir()
    (old / "keep.txt").write_text("the previous bundle")
    src = default_sources(tmp_path / "runs")
    for p in src.values():
        p.mkdir(parents=True)  # every part present but empty: the load check fails
    with pytest.raises(ValueError, match="storage_dtype"):
        assemble_model_dir(old, src, overwrite=True, storage_dtype="bfloat16")
    with pytest.raises(Exception):  # noqa: B017 — ModelLoadError / BackendError from the load check
        assemble_model_dir(old, src, overwrite=True)
    assert (old / "keep.txt").read_text() == "the previous bundle"
    assert not (tmp_path / "models.tmp").exists()


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """2 micro-batches of 8 per optimizer step train exactly as batches of 16: the same samples (one shuffle
    permutation), the mean loss's gradient averaged — so the final weights agree to float precision."""
    a = _cfg(tmp_path / "accum", grad_accum_steps=2, max_steps=5)
    b = _cfg(tmp_path / "big", max_steps=5)
    b.data.batch_size = 16
    ra, rb = Trainer(a, ToyRecipe()).run(), Trainer(b, ToyRecipe()).run()
    assert ra["step"] == rb["step"] == 5
    wa, wb = _weights(tmp_path / "accum"), _weights(tmp_path / "big")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # and differently from a single micro-batch of 8 per step (the option does something)
    c = Trainer(_cfg(tmp_path / "small", max_steps=5), ToyRecipe()).run()
    assert c["step"] == 5 and not torch.allclose(_weights(tmp_path / "small")["lin.weight"], wa["lin.weight"])
    # a resumed accumulated run skips the micro-batches it has seen: 3 + 2 steps = 5 steps straight
    Trainer(_cfg(tmp_path / "res", grad_accum_steps=2, max_steps=3), ToyRecipe()).run()
    Trainer(_cfg(tmp_path / "res", grad_accum_steps=2, max_steps=5), ToyRecipe(), resume=True).run()
    for k in wa:
        torch.testing.assert_close(_weights(tmp_path / "res")[k], wa[k], rtol=1e-5, atol=1e-6)


def test_ema_is_the_final_model_and_resumes(tmp_path):
    raw = Trainer(_cfg(tmp_path / "raw", max_steps=6), ToyRecipe()).run()
    ema = Trainer(_cfg(tmp_path / "ema", max_steps=6, ema_decay=0.9), ToyRecipe()).run()
    assert raw["step"] == ema["step"] == 6
    w_raw, w_ema = _weights(tmp_path / "raw"), _weights(tmp_path / "ema")
    assert not torch.allclose(w_raw["lin.weight"], w_ema["lin.weight"])  # the average lags the raw weights
    ck = latest_checkpoint(tmp_path / "ema")
    assert any(p.name.startswith("custom_checkpoint") for p in ck.iterdir())  # EMA state saved with the optimizer
    # resuming restores the average: 3 + 3 steps give the 6-step run's EMA weights
    Trainer(_cfg(tmp_path / "ema2", max_steps=4, ckpt_every=4, ema_decay=0.9), ToyRecipe()).run()
    Trainer(_cfg(tmp_path / "ema2", max_steps=6, ema_decay=0.9), ToyRecipe(), resume=True).run()
    torch.testing.assert_close(_weights(tmp_path / "ema2")["lin.weight"], w_ema["lin.weight"], rtol=1e-5, atol=1e-6)


def test_tracker_and_checkpointing_options(tmp_path):
    Trainer(_cfg(tmp_path / "none", max_steps=2, tracker="none"), ToyRecipe()).run()
    assert not (tmp_path / "none" / "logs" / "tensorboard").exists() and _rows(tmp_path / "none")
    import importlib.util

    if importlib.util.find_spec("wandb") is None:  # the named error, where wandb is absent (as here)
        with pytest.raises(ConfigError, match=r"train\.tracker.*wandb is not installed"):
            Trainer(_cfg(tmp_path / "wandb", tracker="wandb"), ToyRecipe()).run()
    # the toy network has no diffusers module to checkpoint: named, before any step
    with pytest.raises(ConfigError, match=r"train\.gradient_checkpointing"):
        Trainer(_cfg(tmp_path / "gc", gradient_checkpointing=True), ToyRecipe()).run()
    assert not (tmp_path / "gc" / "checkpoints").exists()
