"""The training recipes of ``vidplan train``, one per kind: what each trains, on which data, with which loss (the
objectives are :mod:`vidplan_core.training.objectives`; ``semantic`` and ``grounded`` are
:mod:`vidplan_core.training.semantic_recipes`).

=============  =====================================  ==================================================  ==============
kind           trains                                 loss (vidplan_core.models / .sampling)              needs (init.)
=============  =====================================  ==================================================  ==============
vae            VideoAutoencoder (diffusers VAE)       MSE/L1 reconstruction + kl_weight·KL (here); at     —
                                                      the end scaling_factor = 1/std(latents)
world-model    WorldModel (EDM teacher)               ``sampling.edm_loss`` (Eq. 2, CFG action dropout)   autoencoder,
                                                                                                          semantic
flow-map       FlowMap initialised from the teacher   ``sampling.psd_loss`` (Alg. 2; 2:1 flow/distill)    autoencoder,
                                                                                                          world_model
heads          UQHead + RewardHead                    ``UQHead.loss`` on |pred − true| per latent element  autoencoder,
                                                      and ``RewardHead.loss`` on V = γ^(F−τ)·success;      flow_map
                                                      predictions from the frozen flow map (K drawn from
                                                      rollout_steps) under no_grad: never back-propagates
                                                      into the flow map
semantic       small SiglipModel (transformers)       SigLIP sigmoid loss (:mod:`.siglip`) on frames and   —
                                                      their task captions
tiny-decoder   TinyDecoder (diffusers DecoderTiny)    MSE to the frozen VAE decoder's output on the same   autoencoder
                                                      latent (encoded frames + noise): a distillation
=============  =====================================  ==================================================  ==============

World models with ``text_embed_dim`` (the tiny/demo/full presets) also condition on the instruction: its unit-norm
text embedding from the semantic model (``init.semantic``), tokenized exactly as the planner does; so the semantic
model is trained first. Order: semantic, vae → world-model → flow-map → heads. A scorer retrained later (e.g. on
decoded frames) goes into a model directory with this one as its ``text_conditioner`` (``vidplan assemble-models
--text-conditioner``), which keeps conditioning the world model.

Windows come from :class:`vidplan_core.data.dataset.WindowDataset` with the world model's ``num_history`` and
``num_future``; latents are cached once per autoencoder (``data.cache_latents``) or encoded on the fly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vidplan_core.config import ConfigError
from vidplan_core.data.dataset import WindowDataset, dataset_meta
from vidplan_core.data.latents import autoencoder_tag, cache_latents
from vidplan_core.data.sources import is_in_place_dataset
from vidplan_core.models import BCPolicy, FlowMap, RewardHead, TinyDecoder, UQHead, VideoAutoencoder, WorldModel
from vidplan_core.models.action_maps import normalised_view_geometry
from vidplan_core.runtime.bundle import tokenize
from vidplan_core.runtime.loader import load_semantic_scorer
from vidplan_core.sampling import edm_sample, flow_map_sample
from vidplan_core.spaces import ViewPreparation, stack_views
from vidplan_core.training.config import TrainConfig
from vidplan_core.training.objectives import (
    BCObjective,
    EdmObjective,
    HeadsObjective,
    PsdObjective,
    TinyDecoderObjective,
    VaeObjective,
)
from vidplan_core.training.recipe_base import RecipeBase, model_section, psnr
from vidplan_core.training.semantic_recipes import GroundedRecipe, SemanticRecipe

__all__ = [
    "BCRecipe",
    "FlowMapRecipe",
    "GroundedRecipe",
    "HeadsRecipe",
    "SemanticRecipe",
    "TinyDecoderRecipe",
    "VaeRecipe",
    "WorldModelRecipe",
    "make_recipe",
]


class VaeRecipe(RecipeBase):
    """Train the autoencoder on single frames."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        kw = model_section(self.cfg, "autoencoder")
        ae = VideoAutoencoder(**kw)
        if ae.vae is None:
            raise ConfigError(self.cfg.model, [("autoencoder.kind", "'pixel' has no weights to train")])
        d = self.cfg.data
        kw = dict(pad_start=False, max_episodes=d.max_episodes, lerobot=d.lerobot,
                  view_size=(ae.config.view_height, ae.config.view_width))
        self.train_dataset = WindowDataset(d.root, "train", 1, 0, d.stride, **kw)
        _check_size(self.train_dataset.meta, ae.config, d.root)
        self.val_dataset = _maybe_val(lambda: WindowDataset(d.root, "val", 1, 0, d.stride, **kw))
        self.model = VaeObjective(ae, self.opts.kl_weight, self.opts.recon)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        return {"images": batch["frames"][:, 0].to(self.device)}

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        ae = model.ae
        img = inputs["images"]
        z = ae.vae.encode(_stack(img) * 2.0 - 1.0).latent_dist.mode()
        rec = _decode_raw(ae, z)
        return {"psnr": psnr(rec, _stack(img))}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        ae = model.ae
        ae.eval()
        zs = []
        with torch.no_grad():  # latent scale: SVD-style scaling_factor so that latents have unit std
            for i, batch in enumerate(torch.utils.data.DataLoader(self.train_dataset, batch_size=8, shuffle=False)):
                if i >= self.opts.scale_batches:
                    break
                img = batch["frames"][:, 0].to(next(ae.parameters()).device)
                zs.append(ae.vae.encode(_stack(img) * 2.0 - 1.0).latent_dist.mode().float().cpu())
        std = float(torch.cat(zs).std()) if zs else 1.0
        ae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
        ae.save_pretrained(str(out_dir))


class TinyDecoderRecipe(RecipeBase):
    """Distil the frozen autoencoder's decoder (``init.autoencoder``) into a tiny decoder for scoring."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        ae = VideoAutoencoder.load(self.cfg.init.autoencoder).to(device).eval()
        for p in ae.parameters():
            p.requires_grad_(False)
        if ae.vae is None:
            raise ConfigError(self.cfg.init.autoencoder, [("kind", "a 'pixel' autoencoder decodes for free: "
                                                           "there is nothing to distil")])
        o = self.opts
        tiny = TinyDecoder.for_autoencoder(ae, channels=o.channels,
                                           num_blocks=tuple(o.num_blocks) if o.num_blocks else None)
        d = self.cfg.data
        kw = dict(pad_start=False, max_episodes=d.max_episodes, lerobot=d.lerobot,
                  view_size=(ae.config.view_height, ae.config.view_width))
        F = o.clip_frames  # windows of F consecutive frames: a clip, for a temporal teacher decoder
        self.train_dataset = WindowDataset(d.root, "train", F, 0, d.stride, **kw)
        _check_size(self.train_dataset.meta, ae.config, d.root)
        self.val_dataset = _maybe_val(lambda: WindowDataset(d.root, "val", F, 0, d.stride, **kw))
        self.ae = ae
        self.model = TinyDecoderObjective(tiny, ae, o.latent_noise)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        """latents (B, F, C, h, w) of the clip (F = clip_frames)."""
        with torch.no_grad():
            return {"latents": self.ae.encode(batch["frames"].to(self.device)).float()}

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        """PSNR [dB] of the tiny decoder against the full decoder (on clean latents) and of both against the frames."""
        z = inputs["latents"]
        with torch.no_grad():
            full, tiny = self.ae.decode(z), model.tiny.decode(z)
        frames = batch["frames"].to(self.device)
        return {"psnr_vs_full_decoder": psnr(tiny, full), "psnr_vs_frames": psnr(tiny, frames),
                "full_decoder_psnr_vs_frames": psnr(full, frames)}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        model.tiny.save_pretrained(str(out_dir))


def _stack(img: torch.Tensor) -> torch.Tensor:

    return stack_views(img)


def _decode_raw(ae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    from diffusers import AutoencoderKLTemporalDecoder

    if isinstance(ae.vae, AutoencoderKLTemporalDecoder):
        x = ae.vae.decode(z, num_frames=1).sample
    else:
        x = ae.vae.decode(z).sample
    return ((x + 1.0) * 0.5).clamp(0, 1)


def _check_size(meta: Any, ae_config: Any, root: str) -> None:
    if tuple(meta.view_hw) != (ae_config.view_height, ae_config.view_width):
        raise ConfigError(root, [("image_size", f"dataset views are {meta.view_hw[0]}×{meta.view_hw[1]} px but the "
                                  f"autoencoder expects {ae_config.view_height}×{ae_config.view_width}; convert "
                                  f"with --size {ae_config.view_height}x{ae_config.view_width}")])


def _check_views(meta: Any, action_maps: dict[str, Any] | None, root: str) -> None:
    """The dataset's views must be cut as the model will cut camera images at run time: the crop recorded by
    ``vidplan data convert --crop`` equals the world model's ``action_maps.crop`` (both none, or the same boxes)."""
    h, w = meta.view_hw
    rec = (meta.info or {}).get("view_preparation")
    data = ViewPreparation.from_dict(rec) if rec else ViewPreparation(h, w)
    model = ViewPreparation.from_geometry(normalised_view_geometry(action_maps) if action_maps else None, h, w)
    if not data.same_as(model):
        hint = ("convert with --crop workspace (the shipped calibration and workspace box)" if model.crops else
                "convert without --crop, or give the world model action_maps.crop: workspace")
        raise ConfigError(root, [("view_preparation", f"dataset views are {data.describe()} but the world model "
                                  f"cuts camera images as {model.describe()} (action_maps.crop); {hint}")])


def _maybe_val(make: Any) -> Any:
    ds = make()
    return ds if len(ds.episodes) else None


class _LatentRecipe(RecipeBase):
    """Shared data path of world-model, flow-map and heads: windows of latents (cached or encoded here)."""

    num_history: int
    num_future: int

    def _load_autoencoder(self) -> Any:

        ae = VideoAutoencoder.load(self.cfg.init.autoencoder).to(self.device).eval()
        for p in ae.parameters():
            p.requires_grad_(False)
        return ae

    def _datasets(self, ae: Any, is_main: bool, action_maps: dict[str, Any] | None = None) -> None:

        d = self.cfg.data
        view_size = (ae.config.view_height, ae.config.view_width)
        meta = dataset_meta(d.root, d.lerobot, view_size)  # bad shards / keys: a clear error before any work
        _check_size(meta, ae.config, d.root)
        _check_views(meta, action_maps, d.root)
        lat_dir = None
        if d.cache_latents and is_in_place_dataset(d.root):
            raise ConfigError(d.root, [("data.cache_latents", "a dataset read in place (LeRobot, RLDS) decodes frames "
                                        "per window and caches no latents: set data.cache_latents: false (or import a "
                                        "subset with 'vidplan data import lerobot|rlds' and cache its latents)")])
        if d.cache_latents:
            tag = autoencoder_tag(self.cfg.init.autoencoder)
            progress = None
            if is_main and self.cfg.train.progress:
                from tqdm.auto import tqdm

                progress = lambda it: tqdm(it, desc="cache latents", unit="episode")  # noqa: E731
            lat_dir = cache_latents(d.root, ae, tag, progress=progress)
        kw = dict(history=self.num_history, future=self.num_future, stride=d.stride, frames=lat_dir is None,
                  latents_dir=lat_dir, max_episodes=d.max_episodes, lerobot=d.lerobot, view_size=view_size)
        self.train_dataset = WindowDataset(d.root, "train", **kw)
        self.val_dataset = _maybe_val(lambda: WindowDataset(d.root, "val", **kw))
        self.ae = ae
        self.normalizer = meta.normalizer()

    def _load_text_encoder(self, text_embed_dim: int | None) -> None:
        """The semantic scorer whose text embedding conditions the world model (as at planning time)."""
        self.scorer = None
        self._text_cache: dict[str, torch.Tensor] = {}
        if text_embed_dim is None:
            return
        if not self.cfg.init.semantic:
            raise ConfigError(self.cfg.model, [("world_model.text_embed_dim", f"the world model conditions on the "
                                                f"instruction's text embedding (width {text_embed_dim}): set "
                                                f"init.semantic to a trained semantic model (vidplan train "
                                                f"semantic), the one the planner will use")])

        scorer = load_semantic_scorer(self.cfg.init.semantic, device=self.device)  # SigLIP/CLIP or grounded
        if scorer.tokenizer is None:
            raise ConfigError(self.cfg.init.semantic, [("tokenizer", "the semantic model has no tokenizer")])
        self.scorer = scorer
        d = int(self._text(["x"]).shape[-1])
        if d != text_embed_dim:
            raise ConfigError(self.cfg.init.semantic, [("text embedding", f"width {d}, but the world model expects "
                                                        f"{text_embed_dim} (world_model.text_embed_dim)")])

    def _text(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit-norm text embeddings of instructions, tokenized as the planner does (runtime.bundle)."""
        s = self.scorer
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for t in missing:
            ids = torch.as_tensor(tokenize(s.tokenizer, s.kind, s.max_text_len, t), device=self.device)
            with torch.no_grad():
                self._text_cache[t] = s.encode_text(input_ids=ids)[0].float()
        return torch.stack([self._text_cache[t] for t in texts])

    def _latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].to(self.device)
        with torch.no_grad():
            return self.ae.encode(batch["frames"].to(self.device)).float()

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        lat = self._latents(batch)
        T = self.num_history
        out = {"history": lat[:, :T], "x1": lat[:, T:], "actions": batch["actions"].to(self.device)}
        if self.scorer is not None:
            out["text_embeds"] = self._text(list(batch["instruction"]))
        return out


class WorldModelRecipe(_LatentRecipe):
    """The EDM teacher (a warm start from ``init.world_model`` if given)."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        ae = self._load_autoencoder()
        if self.cfg.init.world_model:
            wm = WorldModel.load(self.cfg.init.world_model)
            if tuple(wm.latent_shape) != tuple(ae.latent_shape):
                raise ConfigError(self.cfg.init.world_model, [("latent", f"world model latent {wm.latent_shape} "
                                                               f"differs from the autoencoder's {ae.latent_shape}")])
        else:
            wm = WorldModel(**model_section(self.cfg, "world_model", ae.latent_shape))
        self.num_history, self.num_future = wm.config.num_history, wm.config.num_future
        self._load_text_encoder(wm.config.text_embed_dim)
        self._datasets(ae, is_main, wm.config.action_maps)
        wm.set_action_stats(self.normalizer)
        self.model = EdmObjective(wm)

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        n = self.opts.val_sample_steps
        if not n:
            return {}
        pred = edm_sample(model.wm, inputs["history"], inputs["actions"], num_steps=n,
                          text_embeds=inputs.get("text_embeds"))
        return {f"latent_mse_n{n}": float(((pred - inputs["x1"]) ** 2).mean())}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        model.wm.save_pretrained(str(out_dir))


class FlowMapRecipe(_LatentRecipe):
    """PSD fine-tuning of a flow map initialised from the teacher (equal to it at step 0)."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        ae = self._load_autoencoder()
        teacher = WorldModel.load(self.cfg.init.world_model)
        if tuple(teacher.latent_shape) != tuple(ae.latent_shape):
            raise ConfigError(self.cfg.init.world_model, [("latent", f"teacher latent {teacher.latent_shape} differs "
                                                           f"from the autoencoder's {ae.latent_shape}")])
        fm = FlowMap.from_teacher(teacher, **model_section(self.cfg, "flow_map"))
        del teacher
        self.num_history, self.num_future = fm.model.config.num_history, fm.model.config.num_future
        self._load_text_encoder(fm.model.config.text_embed_dim)
        self._datasets(ae, is_main, fm.model.config.action_maps)
        self.model = PsdObjective(fm, self.opts.distill)

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        out = {}
        for k in self.opts.val_steps:
            pred = flow_map_sample(model.fm, inputs["history"], inputs["actions"], num_steps=k,
                                   text_embeds=inputs.get("text_embeds"))
            out[f"latent_mse_k{k}"] = float(((pred - inputs["x1"]) ** 2).mean())
        return out

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        model.fm.save_pretrained(str(out_dir))


class HeadsRecipe(_LatentRecipe):
    """UQ and reward heads on the frozen flow map's predictions."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        ae = self._load_autoencoder()
        fm = FlowMap.load(self.cfg.init.flow_map).to(device).eval()
        for p in fm.parameters():
            p.requires_grad_(False)  # the heads never back-propagate into the flow map
        if tuple(fm.model.latent_shape) != tuple(ae.latent_shape):
            raise ConfigError(self.cfg.init.flow_map, [("latent", f"flow map latent {fm.model.latent_shape} differs "
                                                        f"from the autoencoder's {ae.latent_shape}")])
        self.fm = fm
        self.num_history, self.num_future = fm.model.config.num_history, fm.model.config.num_future
        self._load_text_encoder(fm.model.config.text_embed_dim)
        self._datasets(ae, is_main, fm.model.config.action_maps)
        uq = UQHead(**model_section(self.cfg, "uq_head", ae.latent_shape)) if self.opts.uq else None
        reward = None
        if self.opts.reward:
            reward = RewardHead(**model_section(self.cfg, "reward_head", ae.latent_shape))
            reward.set_action_stats(self.normalizer)
        self.model = HeadsObjective(uq, reward)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        base = super().inputs(batch, train)
        steps = self.opts.rollout_steps
        k = steps[int(torch.randint(len(steps), ()))] if train else steps[0]
        with torch.no_grad():
            pred = flow_map_sample(self.fm, base["history"], base["actions"], num_steps=k,
                                   text_embeds=base.get("text_embeds")).detach()
        T = self.num_history
        return {"pred": pred, "x1": base["x1"], "future_actions": base["actions"][:, T:],
                "future_values": batch["value"][:, T:].to(self.device)}

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        out = {}
        heads = model.heads
        if "uq" in heads:
            u = heads["uq"].uncertainty(inputs["pred"])
            err = (inputs["pred"] - inputs["x1"]).abs()
            out["uq_expected_error_mae"] = float((u["expected_error"] - err).abs().mean())
            out["uq_mean_h"] = float(u["h"].mean())
        if "reward" in heads:
            v = heads["reward"].value(inputs["pred"], inputs["future_actions"])
            out["value_mae"] = float((v["value"] - inputs["future_values"]).abs().mean())
        return out

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        for name, head in model.heads.items():
            head.save_pretrained(str(Path(out_dir) / f"{name}_head"))


class BCRecipe(_LatentRecipe):
    """The behaviour-cloned nominal policy on the latents of the flow map's autoencoder (the planner's context)."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        ae = self._load_autoencoder()
        wm = FlowMap.load(self.cfg.init.flow_map).model  # history, horizon, crop, text: the planner's
        fm_cfg = wm.config
        if tuple(ae.latent_shape) != tuple(wm.latent_shape):
            raise ConfigError(self.cfg.init.flow_map, [("latent", f"flow map latent {tuple(wm.latent_shape)} "
                                                        f"differs from the autoencoder's {ae.latent_shape}")])
        del wm
        self.num_history, self.num_future = fm_cfg.num_history, fm_cfg.num_future
        self._load_text_encoder(fm_cfg.text_embed_dim)
        self._datasets(ae, is_main, fm_cfg.action_maps)
        o = self.opts
        C, h, w = ae.latent_shape
        policy = BCPolicy(latent_channels=C, latent_height=h, latent_width=w, num_history=self.num_history,
                          horizon=self.num_future, text_dim=int(fm_cfg.text_embed_dim or 0),
                          channels=tuple(o.channels), pooled=tuple(o.pooled), hidden=o.hidden)
        policy.set_action_stats(self.normalizer)
        self.model = BCObjective(policy, o.gripper_weight)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        base = super().inputs(batch, train)
        T = self.num_history
        acts = base["actions"]
        success = batch["success"].to(self.device).float().reshape(-1)
        weight = success if self.opts.successful_only else torch.ones_like(success)
        return {"latents": base["history"], "pose": acts[:, T - 1], "future": acts[:, T:], "weight": weight,
                "text": base.get("text_embeds")}

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        """Position error of the answered chunk [m] on successful windows: mean over H, at the last step, and that of
        answering "hold" (the baseline the policy must beat)."""
        pol = model.policy
        with torch.no_grad():
            chunk = pol.act(inputs["latents"], inputs["pose"], inputs.get("text"))
        err = (chunk[..., :3] - inputs["future"][..., :3]).norm(dim=-1)  # (B, H) [m]
        w = inputs["weight"]
        if float(w.sum()) == 0:
            return {}
        hold = (inputs["pose"][:, None, :3] - inputs["future"][..., :3]).norm(dim=-1)  # answering "stay" [m]
        return {"position_error_m": float((err.mean(-1) * w).sum() / w.sum()),
                "final_position_error_m": float((err[:, -1] * w).sum() / w.sum()),
                "hold_position_error_m": float((hold.mean(-1) * w).sum() / w.sum())}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        model.policy.save_pretrained(str(out_dir))


_TASKS = {"vae": VaeRecipe, "world-model": WorldModelRecipe, "flow-map": FlowMapRecipe, "heads": HeadsRecipe,
          "semantic": SemanticRecipe, "grounded": GroundedRecipe, "bc": BCRecipe,
          "tiny-decoder": TinyDecoderRecipe}


def make_recipe(cfg: TrainConfig) -> Any:
    """The training recipe of ``cfg.kind``."""
    return _TASKS[cfg.kind](cfg)
