"""The demo's small SigLIP-architecture image–text model: its word-level tokenizer, construction and saving.

Our stand-in for pretrained SigLIP (which users load from a local directory, :mod:`vidplan_core.models.semantic`):
``transformers.SiglipModel`` with a small configuration, trained from scratch on simulation frames and their task
captions (``vidplan train semantic``; the loss is :func:`vidplan_core.training.siglip.siglip_loss`).

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

__all__ = ["SPECIAL_TOKENS", "build_siglip", "build_tokenizer", "save_semantic", "words"]

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
    """A randomly initialised ``SiglipModel`` from the options of ``vidplan train semantic`` (``hidden_size``,
    ``intermediate_size``, ``num_layers``, ``num_heads``, ``max_text_len``, ``image_size``, ``patch_size``)."""
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
