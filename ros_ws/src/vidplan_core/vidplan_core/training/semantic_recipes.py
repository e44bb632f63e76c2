"""The semantic training kinds of ``vidplan train``: ``semantic`` (a small SigLIP on frames and their instructions)
and ``grounded`` (the grounded semantic scorer on a frozen sentence encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidplan_core.config import ConfigError
from vidplan_core.data.dataset import FrameCaptionDataset, dataset_meta
from vidplan_core.models.autoencoder import VideoAutoencoder
from vidplan_core.models.grounded import GroundedScorer, SentenceEncoder
from vidplan_core.models.siglip import build_siglip, build_tokenizer, save_semantic
from vidplan_core.models.tiny_decoder import TinyDecoder
from vidplan_core.spaces import VIEW_ORDER
from vidplan_core.training.grounded import (
    GroundedObjective,
    GroundingFrames,
    PhraseBank,
    evaluate_grounding,
    load_shards,
    roundtrip_frames,
)
from vidplan_core.training.objectives import SiglipObjective
from vidplan_core.training.recipe_base import RecipeBase

__all__ = ["GroundedRecipe", "SemanticRecipe"]


class SemanticRecipe(RecipeBase):
    """A small SigLIP model on frames (the configured views) and their episodes' instructions."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        d, o = self.cfg.data, self.opts
        # a LeRobot dataset read in place is decoded at the vision tower's (square) input size
        size = (o.image_size, o.image_size)
        meta = dataset_meta(d.root, d.lerobot, size)
        self.captions = sorted({e.instruction for e in meta.episodes})
        if "" in self.captions:
            raise ConfigError(d.root, [("episodes.instruction", "some episodes have no instruction: the semantic "
                                        "model needs a caption for every frame")])
        kw = dict(lerobot=d.lerobot, view_size=size)
        self.train_dataset = FrameCaptionDataset(d.root, "train", o.frame_stride, d.max_episodes, **kw)
        val = FrameCaptionDataset(d.root, "val", o.frame_stride, d.max_episodes, **kw) if meta.split("val") else None
        self.val_dataset = val
        self.view_idx = [VIEW_ORDER.index(v) for v in o.views]
        if o.init_dir:
            from transformers import AutoTokenizer, SiglipModel

            model = SiglipModel.from_pretrained(o.init_dir, local_files_only=True, use_safetensors=True)
            self.tokenizer = AutoTokenizer.from_pretrained(o.init_dir, local_files_only=True)
        else:
            self.tokenizer = build_tokenizer(self.captions, o.max_text_len)
            model = build_siglip(o, self.tokenizer)
        self.image_size = int(model.config.vision_config.image_size)
        self.max_len = int(model.config.text_config.max_position_embeddings)
        self.model = SiglipObjective(model)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        img = frames[:, self.view_idx].flatten(0, 1).to(self.device)  # (B·V, 3, H, W) in [0, 1]
        img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                            antialias=True)
        return (img - 0.5) / 0.5

    def _ids(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        caps = list(batch["instruction"])
        uniq = sorted(set(caps))
        col = torch.tensor([uniq.index(c) for c in caps])
        labels = (col[:, None] == torch.arange(len(uniq))[None]).repeat_interleave(len(self.view_idx), dim=0)
        return {"pixel_values": self._pixels(batch["frames"]), "input_ids": self._ids(uniq),
                "labels": labels.to(self.device)}

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        m = model.model
        img = F.normalize(m.vision_model(pixel_values=inputs["pixel_values"]).pooler_output, dim=-1)
        txt = F.normalize(m.text_model(input_ids=self._ids(self.captions)).pooler_output, dim=-1)
        truth = torch.tensor([self.captions.index(c) for c in batch["instruction"]]).repeat_interleave(
            len(self.view_idx)).to(img.device)
        return {"retrieval_acc": float(((img @ txt.t()).argmax(-1) == truth).float().mean())}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:

        save_semantic(model.model, self.tokenizer, out_dir, self.image_size)


class GroundedRecipe(RecipeBase):
    """The grounded semantic scorer on labelled sim frames (:mod:`vidplan_core.training.grounded`)."""

    def setup(self, device: Any, is_main: bool) -> None:

        self.device = device
        o, root = self.opts, Path(self.cfg.data.root)
        try:
            train = load_shards(root / o.train_shards)
            val = load_shards(root / o.val_shards)
            self.bank = PhraseBank(train["colours"], train["shapes"], [tuple(p) for p in o.held_out])
            views = tuple(VIEW_ORDER.index(v) for v in o.views)
            rt = self._roundtrip(train) if o.roundtrip_autoencoder else None
            self.train_dataset = GroundingFrames(train, self.bank, o.image_pool, views, seed=self.cfg.train.seed,
                                                 hard_negative_prob=o.hard_negative_prob, roundtrip=rt,
                                                 roundtrip_prob=o.roundtrip_prob if rt is not None else 0.0,
                                                 gray_shape_prob=o.gray_shape_prob, lookalike_prob=o.lookalike_prob,
                                                 brightness_jitter=o.brightness_jitter)
        except ValueError as exc:
            raise ConfigError(str(root), [("data.root", str(exc))]) from exc
        val_bank = PhraseBank(val["colours"], val["shapes"], [])  # validation names the held-out objects
        self.val_dataset = GroundingFrames(val, val_bank, o.image_pool, views, seed=1)
        self.val_data = val
        self.encoder = SentenceEncoder.from_pretrained(o.text_encoder_dir)
        with torch.no_grad():  # the text encoder is frozen: every phrase is embedded once
            self.sentences = self.encoder.encode(self.bank.texts).to(device)
        scorer = GroundedScorer(embed_dim=o.embed_dim, text_dim=self.encoder.dim, channels=tuple(o.channels),
                                text_hidden=o.text_hidden, max_text_len=self.encoder.max_len,
                                colour_channels=o.colour_channels)
        scorer.attach_text_encoder(self.encoder)
        self.model = GroundedObjective(scorer, o.pos_weight, o.attribute_weight, n_colours=len(self.bank.colours),
                                       n_shapes=len(self.bank.shapes))

    def _roundtrip_models(self) -> tuple[Any, Any]:
        """The frozen autoencoder and decoder of the round trip, loaded once (training and the final report)."""
        if getattr(self, "_rt_models", None) is None:
            o = self.opts
            ae = VideoAutoencoder.load(o.roundtrip_autoencoder).eval()
            dec = TinyDecoder.load(o.roundtrip_decoder).eval() if o.roundtrip_decoder else None
            self._rt_models = (ae, dec)
        return self._rt_models

    def _roundtrip(self, data: dict[str, Any]) -> Any:
        """The shards' views after encode → decode (once, before training: the models are frozen)."""
        ae, dec = self._roundtrip_models()
        return roundtrip_frames(data["frames"], ae, dec, self.opts.image_pool)

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]:
        out = {"image": batch["image"].to(self.device), "sentence": self.sentences[batch["phrase"].to(self.device)],
               "target": batch["target"].to(self.device)}
        if self.opts.attribute_weight > 0:
            out["shape_map"] = batch["shape_map"].to(self.device)
            out["colour_map"] = batch["colour_map"].to(self.device)
        return out

    def val_metrics(self, model: nn.Module, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]:
        sc = model.scorer
        _, patches = sc.image_features(inputs["image"])
        logits = sc.map_logits(patches, sc.project_text(inputs["sentence"]))
        pos = inputs["target"] > 0.5
        hit = ((logits > 0) == pos).float()
        return {"patch_recall": float(hit[pos].mean()) if pos.any() else float("nan"),
                "patch_specificity": float(hit[~pos].mean())}

    def save_final(self, model: nn.Module, out_dir: Path) -> None:
        import json


        sc = model.scorer
        sc.save(out_dir)
        o = self.opts
        bank = PhraseBank(self.bank.colours, self.bank.shapes, [])  # evaluation names the held-out objects too
        with torch.no_grad():
            sentences = self.encoder.encode(bank.texts).to(self.device)
        report = {"held_out": o.held_out, "image_pool": o.image_pool,
                  "unseen_target": evaluate_grounding(sc, self.val_data, bank, sentences, o.image_pool)}
        if o.roundtrip_autoencoder:  # what the planner scores: the same views decoded
            dec = dict(self.val_data)
            dec["frames"] = roundtrip_frames(self.val_data["frames"], *self._roundtrip_models(), o.image_pool,
                                             full_size=True)
            report["unseen_target_decoded"] = evaluate_grounding(sc, dec, bank, sentences, o.image_pool)
            report["roundtrip"] = {"autoencoder": o.roundtrip_autoencoder, "decoder": o.roundtrip_decoder,
                                   "prob": o.roundtrip_prob}
        (out_dir / "grounding_eval.json").write_text(json.dumps(report, indent=2))
