"""Temperature scaling of the UQ head (vidplan_core.eval.calibration, UQHead.temperature): the fit recovers a known
temperature, the head divides its logits by it, bad input is refused, and an export made with another temperature
is refused by the onnxruntime backend's loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidplan_core.eval.calibration import fit_temperature, nll, top_bin_ece
from vidplan_core.models import UQHead

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def _sample(temperature: float, n: int = 20000, bins: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, bins))
    p = np.exp(z / temperature)
    p /= p.sum(-1, keepdims=True)
    target = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)  # one draw per row from softmax(z / T)
    return z, target


@pytest.mark.parametrize("true_t", [0.6, 1.0, 1.8])
def test_fit_recovers_the_temperature_and_lowers_nll_and_ece(true_t):
    z, target = _sample(true_t)
    t = fit_temperature(z, target)
    assert t == pytest.approx(true_t, rel=0.06)
    assert nll(z, target, t) <= nll(z, target, 1.0) + 1e-12
    if true_t != 1.0:  # miscalibrated at T = 1, calibrated at the fit
        assert top_bin_ece(z, target, t) < 0.02 < top_bin_ece(z, target, 1.0)


def test_fit_refuses_bad_input_and_signal_free_logits():
    z, target = _sample(1.0, n=500)
    with pytest.raises(ValueError, match=r"logits \(n, B\)"):
        fit_temperature(z[:, :, None], target)
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.where(np.arange(12) == 3, np.nan, z), target)
    with pytest.raises(ValueError, match="target bins"):
        fit_temperature(z, target + 12)
    rng = np.random.default_rng(1)  # bins independent of the logits: the flattest distribution wins, on the bound
    with pytest.raises(ValueError, match="bound"):
        fit_temperature(z, rng.integers(0, 12, len(z)))


def test_uq_head_divides_its_logits_by_the_temperature(tmp_path):
    kw = dict(latent_channels=4, latent_height=8, latent_width=8, num_bins=6, block_out_channels=(16, 32),
              norm_num_groups=8, attention_head_dim=8)
    torch.manual_seed(0)
    base = UQHead(**kw).eval()
    hot = UQHead(**kw, temperature=0.5).eval()
    hot.load_state_dict(base.state_dict())
    x = torch.randn(2, 3, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(hot(x), base(x) / 0.5, atol=1e-5)
        assert (hot.uncertainty(x)["h"] < base.uncertainty(x)["h"]).float().mean() > 0.9  # sharper: lower entropy
    hot.save_pretrained(tmp_path / "uq")
    assert UQHead.from_pretrained(tmp_path / "uq").config.temperature == 0.5
    cfg = json.loads((tmp_path / "uq" / "config.json").read_text())
    del cfg["temperature"]  # a head saved before temperatures existed loads as uncalibrated
    (tmp_path / "uq" / "config.json").write_text(json.dumps(cfg))
    assert UQHead.from_pretrained(tmp_path / "uq").config.temperature == 1.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            UQHead(**kw, temperature=bad)


def test_an_export_made_with_another_temperature_is_refused(tmp_path):
    from vidplan_core.runtime.base import BackendError
    from vidplan_core.runtime.bundle_index import read_bundle_index
    from vidplan_core.runtime.loader import check_uq_temperature

    shipped = ROOT / "models" / "demo"
    manifest = json.loads((shipped / "onnx" / "manifest.json").read_text())["model"]
    check_uq_temperature(read_bundle_index(shipped), manifest)  # the shipped export matches its head

    model = tmp_path / "demo"
    model.mkdir()
    shutil.copy(shipped / "bundle.json", model)
    for part in json.loads((model / "bundle.json").read_text())["parts"].values():
        (model / part).symlink_to(shipped / part)
    (model / "uq_head").unlink()
    shutil.copytree(shipped / "uq_head", model / "uq_head")
    cfg = json.loads((model / "uq_head" / "config.json").read_text())
    (model / "uq_head" / "config.json").write_text(json.dumps({**cfg, "temperature": 0.75}))
    index = read_bundle_index(model, check=False)
    check_uq_temperature(index, {**manifest, "uq_temperature": 0.75 * (1 + 1e-9)})
    with pytest.raises(BackendError, match="re-run `vidplan export`"):
        check_uq_temperature(index, {**manifest, "uq_temperature": 1.3})
    old = {k: v for k, v in manifest.items() if k != "uq_temperature"}  # exported before calibration: T = 1
    with pytest.raises(BackendError, match=r"temperature 0\.75 but the export"):
        check_uq_temperature(index, old)
