"""A small SigLIP-architecture image–text model for the demo, its word-level tokenizer and the SigLIP loss.

Our stand-in for pretrained SigLIP (which users load from a local directory): ``transformers.SiglipModel`` with a
small configuration, trained from scratch on simulation frames and their task captions with the sigmoid loss of
Zhai et al. 2023 (SigLIP)::

    z_ij = exp(t')·cos(img_i, txt_j) + b,      L = −1/N Σ_i Σ_j log σ(ℓ_ij · z_ij),

where ℓ_ij = +1 when image i shows an episode whose caption is j and −1 otherwise. Several images of a batch share
a caption (frames of one task), so each text is scored once per batch and each row may have several positives —
the sigmoid loss handles that directly (unlike a softmax contrastive loss).

The model, its tokenizer and their saving live with the semantic model (:mod:`vidplan_core.models.siglip`); this
module holds what only training needs: the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["siglip_loss"]


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
