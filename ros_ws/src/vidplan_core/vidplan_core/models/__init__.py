"""World model core: autoencoder, action-conditioned video diffusion (teacher), flow map, UQ/reward heads,
semantic reward. torch + diffusers + transformers; weights are diffusers-style directories (config.json +
safetensors) loaded strictly with ``Class.load(dir)``.

Shapes: images (B, F, 3 views, 3, H, W) in [0, 1]; latents (B, F, C, h, w) (views stacked along h);
actions (B, F, 7) raw EE poses [x, y, z (m), rx, ry, rz (rad, Euler xyz), gripper 0..1]; the world model and
flow map take history latents (B, T, C, h, w) and the actions of all T + H frames (history first).
"""

from ._io import ModelLoadError
from .autoencoder import VideoAutoencoder
from .bc_policy import BCPolicy
from .configs import PRESETS, ModelSuite, ModelSuiteConfig, build_suite, load_suite_config
from .ctrl_world import import_ctrl_world
from .edm import EDMPreconditioning, karras_sigmas, sigma_to_t, t_to_sigma
from .flow_map import FlowMap, diff2flow_velocity, world_model_config_dict
from .heads import (
                    RewardHead,
                    UQHead,
                    bin_centers,
                    bin_edges,
                    entropy,
                    expected_value,
                    monte_carlo_value,
                    normalized_entropy,
                    to_bins,
)
from .semantic import SemanticScorer, soft_centroid
from .tiny_decoder import TinyDecoder
from .world_model import ActionEncoder, WorldModel

__all__ = [
                    "PRESETS",
                    "ActionEncoder",
                    "BCPolicy",
                    "EDMPreconditioning",
                    "FlowMap",
                    "ModelLoadError",
                    "ModelSuite",
                    "ModelSuiteConfig",
                    "RewardHead",
                    "SemanticScorer",
                    "TinyDecoder",
                    "UQHead",
                    "VideoAutoencoder",
                    "WorldModel",
                    "bin_centers",
                    "bin_edges",
                    "build_suite",
                    "diff2flow_velocity",
                    "entropy",
                    "expected_value",
                    "import_ctrl_world",
                    "karras_sigmas",
                    "load_suite_config",
                    "monte_carlo_value",
                    "normalized_entropy",
                    "sigma_to_t",
                    "soft_centroid",
                    "t_to_sigma",
                    "to_bins",
                    "world_model_config_dict",
]
