"""The losses ``vidplan train`` optimises, one ``nn.Module`` per training kind (accelerate prepares the module, so
its ``forward`` returns {"loss": ..., metrics...}); the models and samplers they call live in ``vidplan_core.models``
and ``vidplan_core.sampling``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidplan_core.sampling import edm_loss, psd_loss
from vidplan_core.spaces import stack_views
from vidplan_core.training.siglip import siglip_loss

__all__ = ["BCObjective", "EdmObjective", "HeadsObjective", "PsdObjective", "SiglipObjective", "TinyDecoderObjective",
           "VaeObjective"]


class VaeObjective(nn.Module):
    """Reconstruction + KL of the diffusers VAE inside a VideoAutoencoder; images (B, 3, 3, H, W) in [0, 1]."""

    def __init__(self, ae: nn.Module, kl_weight: float, recon: str):
        super().__init__()
        self.ae, self.kl_weight, self.recon = ae, kl_weight, recon

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from diffusers import AutoencoderKLTemporalDecoder


        x = stack_views(images) * 2.0 - 1.0  # (B, 3, 3H, W) in [−1, 1]
        post = self.ae.vae.encode(x).latent_dist
        z = post.sample()
        if isinstance(self.ae.vae, AutoencoderKLTemporalDecoder):
            rec = self.ae.vae.decode(z, num_frames=1).sample
        else:
            rec = self.ae.vae.decode(z).sample
        rl = F.mse_loss(rec, x) if self.recon == "mse" else F.l1_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()  # per pixel, so kl_weight does not depend on the image size
        return {"loss": rl + self.kl_weight * kl, "recon": rl.detach(), "kl": kl.detach()}


class TinyDecoderObjective(nn.Module):
    """Distillation of the frozen autoencoder's decoder into a :class:`~vidplan_core.models.TinyDecoder`: MSE
    between the two decodings of the same (perturbed) latent, in [0, 1] image units."""

    def __init__(self, tiny: nn.Module, ae: nn.Module, latent_noise: float):
        super().__init__()
        self.tiny, self.latent_noise = tiny, float(latent_noise)
        self._teacher = [ae]  # a list: not a submodule, so neither trained nor saved nor moved by accelerate

    def forward(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """latents (B, [F,] C, h, w), the teacher's scaled latents of real frames (F: a clip the teacher decodes
        together)."""
        ae = self._teacher[0]
        if self.latent_noise > 0:
            shape = (latents.shape[0],) + (1,) * (latents.ndim - 1)
            sigma = torch.rand(shape, device=latents.device) * self.latent_noise
            latents = latents + sigma * torch.randn_like(latents)
        with torch.no_grad():
            target = ae.decode(latents)
        loss = F.mse_loss(self.tiny.decode(latents, clamp=False), target)
        return {"loss": loss}


class EdmObjective(nn.Module):
    def __init__(self, wm: nn.Module):
        super().__init__()
        self.wm = wm

    def forward(self, history: torch.Tensor, x1: torch.Tensor, actions: torch.Tensor,
                text_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"loss": edm_loss(self.wm, x1, history, actions, text_embeds)}


class PsdObjective(nn.Module):
    def __init__(self, fm: nn.Module, distill: bool):
        super().__init__()
        self.fm, self.distill = fm, distill

    def forward(self, history: torch.Tensor, x1: torch.Tensor, actions: torch.Tensor,
                text_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return psd_loss(self.fm, x1, history, actions, text_embeds, distill=self.distill)


class HeadsObjective(nn.Module):
    """UQ and reward cross-entropy on (detached) flow-map predictions."""

    def __init__(self, uq: nn.Module | None, reward: nn.Module | None):
        super().__init__()
        self.heads = nn.ModuleDict({k: v for k, v in (("uq", uq), ("reward", reward)) if v is not None})

    def forward(self, pred: torch.Tensor, x1: torch.Tensor, future_actions: torch.Tensor,
                future_values: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=pred.device)
        if "uq" in self.heads:
            out["uq"] = self.heads["uq"].loss(pred, x1)
            total = total + out["uq"]
        if "reward" in self.heads:
            out["reward"] = self.heads["reward"].loss(pred, future_actions, future_values)
            total = total + out["reward"]
        out["loss"] = total
        return {k: (v if k == "loss" else v.detach()) for k, v in out.items()}


class SiglipObjective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor
                ) -> dict[str, torch.Tensor]:

        img = self.model.vision_model(pixel_values=pixel_values).pooler_output
        txt = self.model.text_model(input_ids=input_ids).pooler_output
        return {"loss": siglip_loss(img, txt, labels, self.model.logit_scale, self.model.logit_bias)}


class BCObjective(nn.Module):
    """Mean squared error of the policy's normalised pose deltas, on the windows ``weight`` selects."""

    def __init__(self, policy: nn.Module, gripper_weight: float):
        super().__init__()
        self.policy = policy
        dims = torch.ones(7)
        dims[6] = gripper_weight
        self.register_buffer("dims", dims, persistent=False)

    def forward(self, latents: torch.Tensor, pose: torch.Tensor, future: torch.Tensor, weight: torch.Tensor,
                text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        err = (self.policy(latents, pose, text) - self.policy.targets(pose, future)) ** 2 * self.dims  # (B, H, 7)
        per = err.mean(dim=(1, 2))
        loss = (per * weight).sum() / weight.sum().clamp_min(1.0)
        pos = ((err[..., :3].mean(dim=(1, 2)) * weight).sum() / weight.sum().clamp_min(1.0)).detach()
        return {"loss": loss, "position_mse": pos}
