"""Named model configurations (``tiny``, ``demo``, ``full``) and YAML config files → built models.

A config file has the sections ``autoencoder``, ``world_model``, ``flow_map``, ``uq_head``, ``reward_head``
(each: constructor keyword arguments of the class, see their docstrings) and an optional ``name``.
The latent shape (C, h, w) of the world model and heads is filled in from the autoencoder; a contradicting
value is an error. Unknown keys are errors naming file and key.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from vidplan_core.config import ConfigError, load_yaml, validate_model

from .action_maps import resolve_action_map_spec
from .autoencoder import VideoAutoencoder
from .flow_map import FlowMap, world_model_config_dict
from .heads import RewardHead, UQHead
from .world_model import WorldModel

__all__ = ["CONFIG_DIR", "PRESETS", "SUITE_SECTIONS", "ModelSuite", "ModelSuiteConfig", "build_suite",
           "load_suite_config"]

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = ("tiny", "demo", "full")
SUITE_SECTIONS = {"autoencoder": VideoAutoencoder, "world_model": WorldModel, "flow_map": FlowMap,
                  "uq_head": UQHead, "reward_head": RewardHead}  # model directory section → model class


class ModelSuiteConfig(BaseModel):
    """Constructor arguments per model (validated against the constructors' signatures)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "custom"
    autoencoder: dict[str, Any] = {}
    world_model: dict[str, Any] = {}
    flow_map: dict[str, Any] = {}
    uq_head: dict[str, Any] = {}
    reward_head: dict[str, Any] = {}


def load_suite_config(name_or_path: str | Path) -> tuple[ModelSuiteConfig, str]:
    """``"tiny"|"demo"|"full"`` or a YAML path → (validated config, source name). Raises :class:`ConfigError`."""
    s = str(name_or_path)
    path = CONFIG_DIR / f"{s}.yaml" if s in PRESETS else Path(s)
    if s not in PRESETS and not path.is_file():
        raise ConfigError(s, [("", f"not a preset ({', '.join(PRESETS)}) and no such file")])
    cfg = validate_model(ModelSuiteConfig, load_yaml(path), str(path))
    problems = []
    for sec, cls in SUITE_SECTIONS.items():
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "world_model"}
        for key in getattr(cfg, sec):
            if key not in allowed:
                problems.append((f"{sec}.{key}", f"unknown key (typo?); allowed: {', '.join(sorted(allowed))}"))
    if problems:
        raise ConfigError(str(path), problems)
    return cfg, str(path)


@dataclass
class ModelSuite:
    """The models of one configuration. Saved as ``<dir>/<section>/`` diffusers directories."""

    autoencoder: VideoAutoencoder
    world_model: WorldModel | None  # None in deployment bundles without the teacher (see load)
    flow_map: FlowMap
    uq_head: UQHead
    reward_head: RewardHead

    def save(self, directory: str | Path, storage_dtype: Any = None) -> None:
        """Write ``<directory>/<section>/`` per model; ``storage_dtype`` (``torch.float16``) halves the files
        (see :meth:`vidplan_core.models._io.StrictLoadMixin.save`)."""
        d = Path(directory)
        for sec in SUITE_SECTIONS:
            if getattr(self, sec) is not None:
                getattr(self, sec).save(d / sec, storage_dtype=storage_dtype)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> ModelSuite:
        """Load the models from ``directory`` (strict; errors name missing files / mismatched weights).

        ``world_model/`` (the EDM teacher) may be absent: planning needs only the flow map, which holds its own copy
        of the distilled network, so deployment bundles such as models/demo leave the teacher in the training run;
        ``world_model`` is then None.
        """
        d = Path(directory)
        return cls(**{sec: (None if sec == "world_model" and not (d / sec).exists() else c.load(d / sec, device=device))
                      for sec, c in SUITE_SECTIONS.items()})


def build_suite(name_or_path: str | Path, seed: int | None = 0) -> ModelSuite:
    """Build randomly initialised models for a preset name or YAML file (the flow map copies the teacher)."""
    import torch

    cfg, src = load_suite_config(name_or_path)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        ae = VideoAutoencoder(**cfg.autoencoder)
        C, h, w = ae.latent_shape
        lat = {"latent_channels": C, "latent_height": h, "latent_width": w}
        sections = {}
        for sec in ("world_model", "uq_head", "reward_head"):
            d = dict(getattr(cfg, sec))
            for k, v in lat.items():
                if k in d and d[k] != v:
                    raise ConfigError(src, [(f"{sec}.{k}", f"{d[k]} contradicts the autoencoder's latent {k} {v}")])
                d[k] = v
            sections[sec] = d
        maps = sections["world_model"].get("action_maps")
        if maps is not None:
            views = sections["world_model"].get("num_views", 3)
            try:
                sections["world_model"]["action_maps"] = resolve_action_map_spec(dict(maps), (h // views, w))
            except (ValueError, OSError) as exc:
                raise ConfigError(src, [("world_model." + str(exc).split(":")[0], str(exc))]) from exc
        wm = WorldModel(**sections["world_model"])
        fm = FlowMap(world_model=world_model_config_dict(wm), **cfg.flow_map)
        fm.model.load_state_dict(wm.state_dict())
        return ModelSuite(ae, wm, fm, UQHead(**sections["uq_head"]), RewardHead(**sections["reward_head"]))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(src, [("", str(exc))]) from exc
