"""A small SigLIP-architecture image–text model for the demo, its word-level tokenizer and the SigLIP loss.

Our stand-in for pretrained SigLIP (which users load from a local directory): ``transformers.SiglipModel`` with a
small configuration, trained from scratch on simulation frames and their task captions with the sigmoid loss of
Zhai et al. 2023 (SigLIP)::

    z_ij = exp(t')·cos(img_i, txt_j) + b,      L = −1/N Σ_i Σ_j log σ(ℓ_ij · z_ij),

where ℓ_ij = +1 when image i shows an episode whose caption is j and −1 otherwise. Several images of a batch share
a caption (frames of one task), so each text is scored once per batch and each row may have several positives —
the sigmoid loss handles that directly (unlike a softmax contrastive loss).

The tokenizer is a word-level ``tokenizers`` model over the captions' vocabulary (lower-cased, punctuation
split; unknown words → ``[UNK]``), saved as ``tokenizer.json`` so that
:meth:`vidplan_core.models.semantic.SemanticScorer.from_pretrained` loads it with ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SPECIAL_TOKENS", "build_siglip", "build_tokenizer", "save_semantic", "siglip_loss", "words"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
#: words of every instruction template of the simulation, so captions unseen in training still tokenize
TEMPLATE_WORDS = "put the in bowl touch push to left right a an of on".split()


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a caption."""
    return re.findall(r"[a-z0-9]+", text.lower())


def build_tokenizer(captions: Iterable[str], max_len: int) -> Any:
    """A ``PreTrainedTokenizerFast`` (word level, padding to ``max_len`` on the right, [EOS] appended)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab_words = sorted({w for c in captions for w in words(c)} | set(TEMPLATE_WORDS))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=max_len, padding_side="right")


def build_siglip(opts: Any, tokenizer: Any) -> Any:
    """A randomly initialised ``SiglipModel`` from :class:`vidplan_core.training.config.SemanticOptions`."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    common = dict(hidden_size=opts.hidden_size, intermediate_size=opts.intermediate_size,
                  num_hidden_layers=opts.num_layers, num_attention_heads=opts.num_heads)
    tc = SiglipTextConfig(vocab_size=len(tokenizer), max_position_embeddings=opts.max_text_len,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, **common)
    vc = SiglipVisionConfig(image_size=opts.image_size, patch_size=opts.patch_size, **common)
    model = SiglipModel(SiglipConfig(text_config=tc.to_dict(), vision_config=vc.to_dict()))
    with torch.no_grad():  # the SigLIP paper's initialisation: t' = log 10, b = −10
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


def siglip_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP sigmoid loss.

    Args:
        img_emb: (N, D) image embeddings; txt_emb: (M, D) text embeddings (normalised here).
        labels: (N, M) bool, True where image i matches text j.
        logit_scale, logit_bias: learnable scalars t' (the temperature is exp(t')) and b.
    Returns:
        scalar: −1/N Σ_ij log σ(ℓ_ij z_ij).
    """
    img = F.normalize(img_emb, dim=-1)
    txt = F.normalize(txt_emb, dim=-1)
    z = img @ txt.t() * logit_scale.exp() + logit_bias
    sign = labels.to(z.dtype) * 2.0 - 1.0
    return -F.logsigmoid(sign * z).sum() / img.shape[0]


def save_semantic(model: Any, tokenizer: Any, out_dir: str | Path, image_size: int) -> None:
    """Save a transformers directory the semantic scorer loads (model.safetensors, tokenizer, preprocessor)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"height": image_size, "width": image_size},
        "do_normalize": True, "do_resize": True, "image_processor_type": "SiglipImageProcessor"}, indent=2))
