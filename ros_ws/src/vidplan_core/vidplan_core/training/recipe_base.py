"""What every training kind of ``vidplan train`` shares: the base class (config, options, device) and the model
suite section a kind builds its model from."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from vidplan_core.config import ConfigError
from vidplan_core.training.config import TrainConfig

__all__ = ["LATENT_KEYS", "RecipeBase", "model_section", "psnr"]

LATENT_KEYS = ("latent_channels", "latent_height", "latent_width")


def model_section(cfg: TrainConfig, sec: str, latent: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Constructor kwargs of one model of the config's model suite, with the latent shape filled in."""
    from vidplan_core.models.configs import load_suite_config

    suite, src = load_suite_config(cfg.model)
    d = dict(getattr(suite, sec))
    if latent is not None:
        for k, v in zip(LATENT_KEYS, latent, strict=False):
            if k in d and d[k] != v:
                raise ConfigError(src, [(f"{sec}.{k}", f"{d[k]} contradicts the autoencoder's latent {k} {v}")])
            d[k] = v
    return d


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR [dB] of two image tensors in [0, 1] (MSE floored at 1e-12)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10.0 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


class RecipeBase:
    """A training kind: ``setup`` builds ``model`` (the objective accelerate prepares) and the datasets, ``inputs``
    turns a batch into the objective's keyword arguments, ``val_metrics`` and ``save_final`` are optional."""

    model: nn.Module
    train_dataset: Any = None
    val_dataset: Any = None

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.opts = cfg.kind_options()
        self.device: Any = "cpu"

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        return {}
