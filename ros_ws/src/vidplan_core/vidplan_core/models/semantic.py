"""Semantic image–text reward with SigLIP or CLIP (``transformers``), fully differentiable in torch.

Loading is local only: ``SemanticScorer.from_pretrained(dir)`` reads a transformers directory
(``config.json`` + ``model.safetensors``, optional tokenizer files and ``preprocessor_config.json``) with
``local_files_only=True``; pickled ``pytorch_model.bin`` files are refused. Preprocessing (resize + normalise)
is plain torch (``F.interpolate``), so gradients flow from the score back to the pixels (and through the VAE
decoder and flow map to the actions).

Outputs:
* :meth:`SemanticScorer.score` — per-frame cosine similarity between image and text embeddings, (…,) in [−1, 1];
* :meth:`SemanticScorer.similarity_map` — per-patch cosine similarity, (…, gh, gw) (CLIP patches go through
  ``post_layernorm`` + ``visual_projection``, the MaskCLIP trick; SigLIP patch tokens share the text space);
* :func:`soft_centroid` — a differentiable (soft-argmax) centroid of the map's highest-scoring region,
  (…, 2) as (x, y) in [0, 1] image coordinates (x right, y down).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._io import ModelLoadError, check_finite

__all__ = ["SemanticScorer", "broadcast_text", "soft_centroid"]

_DEFAULT_NORM = {"siglip": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
                 "clip": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])}


def soft_centroid(sim_map: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Differentiable centroid of the highest-scoring region of a map.

    Weights = softmax((m − max m) / (temperature · std m)) over the patches (scale-free: ``temperature`` is in
    units of the map's spread; small → argmax, large → plain centroid); centroid = Σ w · patch centre.

    Args:
        sim_map: (..., gh, gw).
    Returns:
        (..., 2) (x, y) in [0, 1] of the image (patch centres at (j + 0.5)/gw, (i + 0.5)/gh).
    """
    gh, gw = sim_map.shape[-2:]
    flat = sim_map.flatten(-2)
    std = flat.std(-1, keepdim=True).clamp_min(1e-6)
    w = ((flat - flat.amax(-1, keepdim=True)) / (temperature * std)).softmax(-1).reshape(sim_map.shape)
    ys = (torch.arange(gh, device=sim_map.device, dtype=sim_map.dtype) + 0.5) / gh
    xs = (torch.arange(gw, device=sim_map.device, dtype=sim_map.dtype) + 0.5) / gw
    cx = (w.sum(-2) * xs).sum(-1)
    cy = (w.sum(-1) * ys).sum(-1)
    return torch.stack([cx, cy], dim=-1)


def broadcast_text(text_emb: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """A text embedding (D,), (1, D) or (B, D) shaped to broadcast against image features with leading shape
    ``lead`` = (B, ...) (one instruction for all images, or one per batch entry)."""
    if text_emb.ndim == 1:
        return text_emb
    if text_emb.ndim == 2 and text_emb.shape[0] == 1:
        return text_emb[0]
    if text_emb.ndim == 2 and len(lead) >= 1 and text_emb.shape[0] == lead[0]:
        return text_emb.reshape(lead[0], *([1] * (len(lead) - 1)), text_emb.shape[-1])
    raise ValueError(f"text embedding: expected (D,), (1, D) or (B={lead[0] if lead else '?'}, D), "
                     f"got {tuple(text_emb.shape)}")


class SemanticScorer(nn.Module):
    """SigLIP / CLIP image–text scorer.

    Args:
        model: a ``transformers`` ``SiglipModel`` or ``CLIPModel``.
        tokenizer: optional tokenizer for :meth:`encode_text` with strings.
        image_mean, image_std: per-channel normalisation (default: the model family's).
        antialias: antialiased bilinear resize (better for big down-scaling; off by default for ONNX export).
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, image_mean: list[float] | None = None,
                 image_std: list[float] | None = None, antialias: bool = False):
        super().__init__()
        mt = getattr(model.config, "model_type", "")
        if mt not in ("siglip", "clip"):
            raise ValueError(f"SemanticScorer supports SigLIP and CLIP models, got model_type {mt!r}")
        self.kind = mt
        self.model = model.eval()
        self.tokenizer = tokenizer
        mean, std = _DEFAULT_NORM[mt]
        self.register_buffer("mean", torch.tensor(image_mean or mean).reshape(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std or std).reshape(3, 1, 1), persistent=False)
        self.image_size = int(model.config.vision_config.image_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        self.antialias = antialias
        for p in self.model.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> SemanticScorer:
        """Load from a local transformers directory (never the hub; safetensors only)."""
        from transformers import AutoTokenizer, CLIPModel, SiglipModel

        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ModelLoadError(f"semantic model directory {path} has no config.json")
        if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
            raise ModelLoadError(f"{path}: expected model.safetensors (pickled weights are not loaded)")
        mt = json.loads(cfg_file.read_text()).get("model_type")
        klass = {"siglip": SiglipModel, "clip": CLIPModel}.get(mt)
        if klass is None:
            raise ModelLoadError(f"{cfg_file}: model_type {mt!r} is not 'siglip' or 'clip'")
        model = klass.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        tok = None
        if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "spiece.model",
                                              "vocab.json")):
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        mean = std = None
        pp = path / "preprocessor_config.json"
        if pp.is_file():
            d = json.loads(pp.read_text())
            mean, std = d.get("image_mean"), d.get("image_std")
        return cls(model, tok, mean, std, **kwargs).to(device)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: list[str] | None = None, input_ids: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Texts (or token ids (N, L)) → (N, D) unit-norm text embeddings (no gradient needed; cache them)."""
        if input_ids is None:
            if texts is None or self.tokenizer is None:
                raise ValueError("encode_text needs texts and a tokenizer in the model directory, or input_ids")
            pad = "max_length" if self.kind == "siglip" else True  # SigLIP was trained on max-length padding
            enc = self.tokenizer(list(texts), padding=pad, truncation=True, return_tensors="pt",
                                 max_length=self.model.config.text_config.max_position_embeddings)
            input_ids = enc["input_ids"].to(self.mean.device)
            attention_mask = enc.get("attention_mask")
            if self.kind == "siglip":
                attention_mask = None  # SigLIP's text tower ignores padding masks by design
        tm = self.model.text_model
        out = tm(input_ids=input_ids, attention_mask=None if attention_mask is None else
                 attention_mask.to(input_ids.device)).pooler_output
        if self.kind == "clip":
            out = self.model.text_projection(out)
        return F.normalize(out, dim=-1)

    # ------------------------------------------------------------------ images
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] → (N, 3, S, S) resized (bilinear) and normalised, differentiable."""
        x = F.interpolate(images.to(self.mean.dtype), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=self.antialias)
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 3, H, W) in [0, 1] → (pooled (..., D), patches (..., gh, gw, D)), both unit-norm."""
        if images.ndim < 4 or images.shape[-3] != 3:
            raise ValueError(f"images: expected (..., 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        check_finite("images", images)
        lead = images.shape[:-3]
        x = self.preprocess(images.reshape(-1, *images.shape[-3:]))
        vm = self.model.vision_model
        out = vm(pixel_values=x)
        g = self.image_size // self.patch_size
        if self.kind == "clip":
            pooled = self.model.visual_projection(out.pooler_output)
            patches = self.model.visual_projection(vm.post_layernorm(out.last_hidden_state[:, 1:]))
        else:
            pooled = out.pooler_output
            patches = out.last_hidden_state
        pooled = F.normalize(pooled, dim=-1).reshape(*lead, -1)
        patches = F.normalize(patches, dim=-1).reshape(*lead, g, g, -1)
        return pooled, patches

    @staticmethod
    def _text(text_emb: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        return broadcast_text(text_emb, lead)

    def score(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Per-frame image–text cosine similarity: images (..., 3, H, W), text (D,) or (B, D) → (...)."""
        pooled, _ = self.image_features(images)
        return (pooled * self._text(text_emb, tuple(images.shape[:-3]))).sum(-1)

    def similarity_map(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Patch-level cosine similarity: (..., 3, H, W) → (..., gh, gw)."""
        _, patches = self.image_features(images)
        t = self._text(text_emb, tuple(images.shape[:-3]))
        return (patches * t[..., None, None, :]).sum(-1)

    def score_and_map(self, images: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One vision pass → (score (...): image–text cosine, map (..., gh, gw): patch cosines). The interface the
        planner's semantic graph calls on every scorer (:class:`~vidplan_core.models.grounded.GroundedScorer` too)."""
        pooled, patches = self.image_features(images)
        t = self._text(text_emb, tuple(images.shape[:-3]))
        return (pooled * t).sum(-1), (patches * t[..., None, None, :]).sum(-1)

    @property
    def max_text_len(self) -> int:
        """Token padding length of the text tower."""
        return int(self.model.config.text_config.max_position_embeddings)

    def score_and_centroid(self, images: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1,
                           ) -> dict[str, torch.Tensor]:
        """One vision pass → {"score": (...), "map": (..., gh, gw), "centroid": (..., 2) (x, y) in [0, 1]}."""
        pooled, patches = self.image_features(images)
        t = self._text(text_emb, tuple(images.shape[:-3]))
        m = (patches * t[..., None, None, :]).sum(-1)
        return {"score": (pooled * t).sum(-1), "map": m, "centroid": soft_centroid(m, temperature)}
